"""The edgescope trace format: records, the byte-level encoder and decoder, files.

A run is a trace: a stream of records in frames. The SDK writes it, the collector stores and
serves it, the wire carries it, the file keeps it. This package is the format and nothing else:
no policy, no UI. The spec is ``docs/trace-format.md``.
"""

from ._frames import (
    FORMAT_MAJOR,
    FORMAT_MINOR,
    MAGIC,
    MAX_PAYLOAD,
    Damage,
    IndexEntry,
    StreamDecoder,
    StreamEncoder,
)
from .errors import (
    DecodeError,
    NotATraceError,
    RecordTooLargeError,
    TraceError,
    UnsupportedVersionError,
)
from .reader import TraceReader
from .records import (
    CoolingDevice,
    CpuFreq,
    Event,
    GpuSample,
    Keyframe,
    Kind,
    Metrics,
    PowerReading,
    PowerSample,
    ProcessSample,
    Record,
    RunEnd,
    RunStart,
    StackFrame,
    StackSamples,
    SystemSample,
    ThermalSample,
    ThermalZone,
)
from .writer import FsyncPolicy, TraceWriter

__version__ = "0.1.0"

__all__ = [
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "MAGIC",
    "MAX_PAYLOAD",
    "CoolingDevice",
    "CpuFreq",
    "Damage",
    "DecodeError",
    "Event",
    "FsyncPolicy",
    "GpuSample",
    "IndexEntry",
    "Keyframe",
    "Kind",
    "Metrics",
    "NotATraceError",
    "PowerReading",
    "PowerSample",
    "ProcessSample",
    "Record",
    "RecordTooLargeError",
    "RunEnd",
    "RunStart",
    "StackFrame",
    "StackSamples",
    "StreamDecoder",
    "StreamEncoder",
    "SystemSample",
    "ThermalSample",
    "ThermalZone",
    "TraceError",
    "TraceReader",
    "TraceWriter",
    "UnsupportedVersionError",
    "__version__",
]
