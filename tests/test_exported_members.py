"""The public surface of ``edgescope_tracing`` is what we meant, no more and no less.

What the SDK, the collector and the TUI build on. A name added to the package must be added
here on purpose; the submodules ``summary``, ``paths`` and ``protocol`` are reached by name.
"""

from __future__ import annotations

import types

import edgescope_tracing

EXPECTED = {
    # the format's constants
    "FORMAT_MAJOR",
    "FORMAT_MINOR",
    "MAGIC",
    "MAX_PAYLOAD",
    # records
    "Kind",
    "Record",
    "RunStart",
    "RunEnd",
    "Metrics",
    "SystemSample",
    "ProcessSample",
    "ThermalSample",
    "ThermalZone",
    "CpuFreq",
    "CoolingDevice",
    "GpuSample",
    "PowerSample",
    "PowerReading",
    "StackSamples",
    "StackFrame",
    "Event",
    "Keyframe",
    # bytes and files
    "StreamEncoder",
    "StreamDecoder",
    "Damage",
    "IndexEntry",
    "TraceWriter",
    "FsyncPolicy",
    "TraceReader",
    # errors
    "TraceError",
    "NotATraceError",
    "UnsupportedVersionError",
    "RecordTooLargeError",
    "DecodeError",
    "__version__",
}


def test_all_is_what_we_meant() -> None:
    assert set(edgescope_tracing.__all__) == EXPECTED
    assert len(edgescope_tracing.__all__) == len(EXPECTED)


def test_every_exported_name_exists_and_nothing_public_is_left_out() -> None:
    for name in edgescope_tracing.__all__:
        assert hasattr(edgescope_tracing, name), name
    public = {
        name
        for name, value in vars(edgescope_tracing).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= EXPECTED
    assert edgescope_tracing.__version__ == "0.1.0"


def test_exported_classes_say_where_they_live() -> None:
    for name in edgescope_tracing.__all__:
        value = getattr(edgescope_tracing, name)
        if isinstance(value, type):
            assert value.__module__.startswith("edgescope_tracing."), name
            assert value.__doc__, f"{name} has no docstring"
