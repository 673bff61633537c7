"""Records to msgpack-ready arrays and back, with the per-stream interning state.

The encoder owns the stream's state: the sequence counter, the string, frame and stack tables,
the active runs (restated at each keyframe) and the highest step seen. The decoder mirrors it.
Both restart their tables at a keyframe, so decoding can begin at any keyframe.
"""

from __future__ import annotations

import logging
import operator
import sys
from array import array
from collections.abc import Callable
from itertools import accumulate
from typing import Any

import msgpack

from ._fit import (
    CONFIG_LIMIT,
    DETAIL_LIMIT,
    DEVICE_LIMIT,
    MESSAGE_LIMIT,
    RUN_ID_LIMIT,
    TRUNCATED_KEY,
    fit_map,
    fit_tags,
    fit_text,
)
from .errors import DecodeError, RecordTooLargeError
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

Wire = list[Any]

log = logging.getLogger("edgescope.tracing")

MAX_PAYLOAD = 64 * 1024
"""No frame payload is larger: one damaged spot costs at most this much."""
FRAME_RESERVE = 8
"""Payload bytes a frame keeps for its array header (and a margin) beside its records."""

METRIC_CHUNK = 2048
"""Values per metric batch on the wire: keeps the worst case (float64, 8-byte deltas) ~50 KiB."""

_PROCESS_CGROUP_FIGURES = (
    "cgroup_version",
    "cpu_quota_us",
    "cpu_period_us",
    "cpu_periods",
    "cpu_throttled",
    "cpu_throttled_us",
    "memory_high",
    "memory_high_events",
    "memory_max_events",
    "oom_events",
    "swap_current",
)
"""The process record's 1.3 cgroup figures after its path, in wire order."""

INDEX_POINTER = 12
"""Kind tag of the fixed-size last frame of a closed file: ``[12, index_offset]``."""
KEYFRAME_PART = 13
"""Kind tag (format 1.2) of the continuation of a keyframe whose runs did not fit one frame:
``[13, seq, t_us, number, [run_start, ...]]``, with the seq and time of its keyframe."""

_LITTLE = sys.byteorder == "little"
_FLOAT = frozenset({float})
_INT_CODES = (
    (1, "b", -(1 << 7), (1 << 7) - 1),
    (2, "h", -(1 << 15), (1 << 15) - 1),
    (4, "i", -(1 << 31), (1 << 31) - 1),
    (8, "q", -(1 << 63), (1 << 63) - 1),
)
_CODE_OF_WIDTH = {w: c for w, c, _, _ in _INT_CODES}
_CODE_OF_WIDTH.update({-4: "f", -8: "d"})


def _pack_array(code: str, values: Any) -> bytes:
    a = array(code, values)
    if not _LITTLE:
        a.byteswap()
    return a.tobytes()


def _unpack_array(code: str, data: bytes) -> list[Any]:
    a = array(code)
    a.frombytes(data)
    if not _LITTLE:
        a.byteswap()
    return a.tolist()


def encode_ints(values: tuple[int, ...] | list[int]) -> Wire:
    """An integer column: ``[first, stride]`` if evenly spaced, else ``[first, width, deltas]``.

    Where a difference does not fit 64 bits (values near both ends of the int64 range), the
    column is ``[first, 0, [every value]]``.
    """
    n = len(values)
    if n == 0:
        return [0, 0]
    first = values[0]
    if n == 1:
        return [first, 0]
    deltas = list(map(operator.sub, values[1:], values[:-1]))  # C speed: the SDK's hot spot
    lo, hi = min(deltas), max(deltas)
    if lo == hi:
        return [first, lo]
    for width, code, wmin, wmax in _INT_CODES:
        if wmin <= lo and hi <= wmax:
            return [first, width, _pack_array(code, deltas)]
    return [first, 0, list(values)]


def decode_ints(col: Any, n: int) -> tuple[int, ...]:
    if not isinstance(col, list) or not col or not isinstance(col[0], int):
        raise DecodeError("integer column is malformed")
    first = col[0]
    if len(col) == 2:
        stride = col[1]
        if not isinstance(stride, int):
            raise DecodeError("integer column stride is not an integer")
        if n == 0:
            return ()
        return tuple(range(first, first + stride * n, stride)) if stride else (first,) * n
    if len(col) == 3 and col[1] == 0 and type(col[2]) is list:
        plain = tuple(_int(v) for v in col[2])
        if len(plain) != n or (n and plain[0] != first):
            raise DecodeError(f"integer column holds {len(plain)} values, expected {n}")
        return plain
    if len(col) != 3 or col[1] not in (1, 2, 4, 8) or not isinstance(col[2], bytes):
        raise DecodeError("integer column is malformed")
    width: int = col[1]
    data: bytes = col[2]
    if len(data) != width * (n - 1):
        raise DecodeError(f"integer column holds {len(data) // width + 1} values, expected {n}")
    return tuple(accumulate(_unpack_array(_CODE_OF_WIDTH[width], data), initial=first))


def encode_floats(values: tuple[float, ...] | list[float]) -> tuple[int, bytes]:
    """Float32 where every value survives it exactly, else float64. Never lossy."""
    as32 = array("f", values)
    if as32.tolist() == list(values):
        if not _LITTLE:
            as32.byteswap()
        return 4, as32.tobytes()
    return 8, _pack_array("d", values)


def decode_floats(width: Any, data: Any) -> tuple[float, ...]:
    if width not in (4, 8) or not isinstance(data, bytes) or len(data) % width:
        raise DecodeError("float column is malformed")
    return tuple(_unpack_array(_CODE_OF_WIDTH[-width], data))


# --- scalar checks for decoding untrusted input -------------------------------------------


def _int(x: Any) -> int:
    if not isinstance(x, int):
        raise DecodeError(f"expected an integer, got {type(x).__name__}")
    return x


def _oint(x: Any) -> int | None:
    return None if x is None else _int(x)


def _num(x: Any) -> float:
    if isinstance(x, float | int):
        return x
    raise DecodeError(f"expected a number, got {type(x).__name__}")


def _onum(x: Any) -> float | None:
    return None if x is None else _num(x)


def _str(x: Any) -> str:
    if type(x) is not str:
        raise DecodeError(f"expected a string, got {type(x).__name__}")
    return x


def _ostr(x: Any) -> str | None:
    return None if x is None else _str(x)


def _list(x: Any) -> list[Any]:
    if type(x) is not list:
        raise DecodeError(f"expected an array, got {type(x).__name__}")
    return x


def _dict(x: Any) -> dict[str, Any]:
    if type(x) is not dict:
        raise DecodeError(f"expected a map, got {type(x).__name__}")
    return x


def _pairs(x: Any) -> list[tuple[Any, Any]]:
    """A flat ``[a, b, a, b, ...]`` array as pairs; an odd length is damage."""
    flat = _list(x)
    if len(flat) % 2:
        raise DecodeError(f"a flat array of pairs has {len(flat)} items")
    return list(zip(flat[::2], flat[1::2], strict=True))


def _appended(wire: Wire, n: int, *, nil: bool = False) -> Wire:
    """Leave out trailing fields beyond the first ``n`` (fields that a minor version appended)
    while they hold their default, an empty array (``nil`` with ``nil=True``: the 1.3 figures):
    a reader of any 1.x takes an absent field as its default, and a record without the new
    figures stays as short as a 1.0 writer made it."""
    while len(wire) > n and (wire[-1] == [] or (nil and wire[-1] is None)):
        wire.pop()
    return wire


def _checked_processes(processes: Any) -> Any:
    """GpuSample.processes, refused (TypeError) unless ``(pid, bytes)`` pairs of integers: what
    a reader would otherwise refuse as damage."""
    for pair in processes:
        if len(pair) != 2 or not all(isinstance(x, int) for x in pair):
            raise TypeError(f"gpu processes: {pair!r} is not a (pid, bytes) pair of integers")
    return processes


def _checked_sensors(sensors: dict[str, float]) -> Any:
    """ThermalSample.sensors items, refused (TypeError) unless each value is a number."""
    for k, v in sensors.items():
        if not isinstance(v, float | int):
            raise TypeError(f"thermal sensor {k!r}: {v!r} is not a number")
    return sensors.items()


def _checked_uint(v: int | None) -> int | None:
    """A power reading's figure, refused (TypeError) unless None or an integer >= 0 that
    msgpack holds: what a reader would otherwise refuse as damage."""
    if v is None:
        return None
    if type(v) is not int or not 0 <= v < 1 << 64:
        raise TypeError(f"power reading: {v!r} is not an integer between 0 and 2**64")
    return v


def _fields_of(w: Wire, n: int, what: str) -> Wire:
    """An item of a record (a power reading) with at least ``n`` fields."""
    if len(w) < n:
        raise DecodeError(f"{what} has {len(w)} fields, expected at least {n}")
    return w


def _fields(w: Wire, n: int) -> Wire:
    """The record's fields, at least ``n`` of them (later minor versions may append more)."""
    if len(w) < n:
        raise DecodeError(f"record of kind {w[0]} has {len(w)} fields, expected at least {n}")
    return w


class Encoder:
    """Turns records into wire arrays, assigning sequence numbers and interning strings."""

    def __init__(self) -> None:
        self.next_seq = 0
        self.runs: dict[int, RunStart] = {}
        self.last_step = -1
        self.last_t: int | None = None
        """The highest time of any record encoded so far (None before the first)."""
        self.keyframes = 0
        self.truncated_runs = 0
        """Run starts whose config (or another field) was cut to fit the format (logged)."""
        self.truncated_events = 0
        """Events whose kind, message or detail was cut to fit the format (logged)."""
        # Interned ids are never reused in a stream, though the tables restart at keyframes: a
        # reader that lost a keyframe to damage then finds a reference undefined (and says so)
        # instead of resolving it to a stale string from the interval before.
        self._next_sid = 0
        self._next_fid = 0
        self._next_stid = 0
        self._reset_tables()

    def _reset_tables(self) -> None:
        self._strings: dict[str, int] = {}
        self._new_strings: list[str] = []
        self._new_strings_first = 0
        self._frames: dict[StackFrame, int] = {}
        self._stacks: dict[tuple[int, ...], int] = {}

    def _sid(self, s: str) -> int:
        sid = self._strings.get(s)
        if sid is None:
            sid = self._next_sid
            self._next_sid += 1
            if not self._new_strings:
                self._new_strings_first = sid
            self._strings[s] = sid
            self._new_strings.append(s)
        return sid

    def _with_strings(self, wire: Wire) -> list[Wire]:
        if not self._new_strings:
            return [wire]
        strings = [Kind.STRINGS.value, wire[1], wire[2], self._new_strings_first, self._new_strings]
        self._new_strings = []
        return [strings, wire]

    def _take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq = seq + 1
        return seq

    def keyframe(self, t_us: int) -> list[Wire]:
        """Restart the tables and restate the active runs: reading may begin here.

        The keyframe's time is the highest time of the records before it (``t_us``, the time
        of the record about to follow, for the first): no record before a keyframe is later
        than the keyframe, which is what seeking by time relies on.

        Returns the keyframe record and, where the runs do not fit one frame with it, its
        parts (kind 13, same seq and time), each of which fits a frame; the keyframe then
        carries the number of records it is made of (format 1.2). A single-part keyframe is
        the 1.0 record, byte for byte.
        """
        if self.last_t is not None:
            t_us = self.last_t
        self._reset_tables()
        number = self.keyframes
        self.keyframes += 1
        seq = self._take_seq()
        groups: list[list[Wire]] = [[]]
        room = MAX_PAYLOAD - FRAME_RESERVE - 64  # the record's own fields, at their largest
        used = 0
        for r in self.runs.values():
            w = self._run_start(r, r.seq)
            n = len(msgpack.packb(w, use_bin_type=True))
            if groups[-1] and used + n > room:
                groups.append([])
                used = 0
            groups[-1].append(w)
            used += n
        head: Wire = [Kind.KEYFRAME.value, seq, t_us, number, self.last_step, groups[0]]
        if len(groups) > 1:
            head.append(len(groups))
        return [head, *([KEYFRAME_PART, seq, t_us, number, g] for g in groups[1:])]

    def _event_cut(self, kind: str, cut_kind: bool, cut_message: bool, cut_detail: bool) -> None:
        self.truncated_events += 1
        n = self.truncated_events
        if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th, ...: said, never a flood
            cut = [
                w
                for w, c in (("kind", cut_kind), ("message", cut_message), ("detail", cut_detail))
                if c
            ]
            log.warning(
                "an event (%s) had its %s truncated to fit the trace format (%d event(s) so far)",
                kind[:80],
                " and ".join(cut),
                n,
            )

    def _bounded(self, rec: RunStart, seq: int) -> RunStart:
        """The run start as the stream keeps it: every field within its bound (see ``_fit``)."""
        if len(rec.run_id) > RUN_ID_LIMIT:
            raise RecordTooLargeError(
                f"run id of {len(rec.run_id)} characters; a run id has at most {RUN_ID_LIMIT}"
            )
        config, cut_config = fit_map(rec.config, CONFIG_LIMIT)
        device, cut_device = fit_map(rec.device, DEVICE_LIMIT)
        name, cut_name = fit_text(rec.name)
        host, cut_host = fit_text(rec.host)
        tags, cut_tags = fit_tags(rec.tags)
        cut = [
            what
            for what, c in (
                ("config", cut_config),
                ("device", cut_device),
                ("name", cut_name),
                ("host", cut_host),
                ("tags", cut_tags),
            )
            if c
        ]
        if cut:
            self.truncated_runs += 1
        if cut and _first_warning(rec.run_id):
            detail = ""
            if cut_config:
                m = config[TRUNCATED_KEY]
                detail = (
                    f": its config is {m['bytes']} bytes encoded, over the {CONFIG_LIMIT} a run "
                    f"start keeps; {m['kept']} of its {m['keys']} items kept"
                )
            log.warning(
                "run %d (%s): %s truncated to fit the trace format%s (marked %r)",
                rec.run,
                name[:80],
                ", ".join(cut),
                detail,
                TRUNCATED_KEY,
            )
        return RunStart(
            rec.run, rec.run_id, name, host, rec.pid, config, tags, device, rec.t_us, seq
        )

    @staticmethod
    def _run_start(r: RunStart, seq: int) -> Wire:
        return [
            Kind.RUN_START.value,
            seq,
            r.t_us,
            r.run,
            r.run_id,
            r.name,
            r.host,
            r.pid,
            r.config,
            list(r.tags),
            r.device,
        ]

    def encode(self, rec: Record) -> list[Wire]:
        """Wire arrays for one record: maybe a string table first, maybe several chunks."""
        if isinstance(rec, Metrics):
            return self._metrics(rec)
        if isinstance(rec, StackSamples):
            return self._stacks_rec(rec)
        seq = self._take_seq()
        t = rec.t_us
        if self.last_t is None or t > self.last_t:
            self.last_t = t
        wire: Wire
        if isinstance(rec, RunStart):
            kept = self.runs[rec.run] = self._bounded(rec, seq)
            return [self._run_start(kept, seq)]
        if isinstance(rec, RunEnd):
            self.runs.pop(rec.run, None)
            cause = None if rec.cause is None else fit_text(rec.cause)[0]
            wire = _appended(
                [Kind.RUN_END.value, seq, t, rec.run, rec.exit_code, rec.dropped, cause],
                6,
                nil=True,
            )
        elif isinstance(rec, SystemSample):
            psi = [x for k, v in rec.psi.items() for x in (self._sid(k), v)]
            wire = [
                Kind.SYSTEM.value,
                seq,
                t,
                rec.cpu_percent,
                list(rec.per_cpu_percent),
                rec.mem_used,
                rec.mem_total,
                rec.mem_available,
                rec.swap_used,
                rec.swap_total,
                rec.load1,
                rec.load5,
                rec.load15,
                psi,
                rec.disk_read_bps,
                rec.disk_write_bps,
                rec.net_rx_bps,
                rec.net_tx_bps,
            ]
        elif isinstance(rec, ProcessSample):
            wire = [
                Kind.PROCESS.value,
                seq,
                t,
                rec.run,
                rec.pid,
                rec.cpu_percent,
                rec.rss,
                rec.rss_peak,
                rec.threads,
                rec.cgroup_current,
                rec.cgroup_peak,
                rec.cgroup_limit,
                rec.oom_kills,
                # 1.3: the process tree, state and command (interned: it repeats every sample)
                rec.ppid,
                rec.state,
                None if rec.command is None else self._sid(rec.command),
                # 1.3: the run's cgroup, its CPU quota and throttling, memory.high, events, swap
                None if rec.cgroup is None else self._sid(rec.cgroup),
                rec.cgroup_version,
                rec.cpu_quota_us,
                rec.cpu_period_us,
                rec.cpu_periods,
                rec.cpu_throttled,
                rec.cpu_throttled_us,
                rec.memory_high,
                rec.memory_high_events,
                rec.memory_max_events,
                rec.oom_events,
                rec.swap_current,
            ]
            wire = _appended(wire, 13, nil=True)  # absent: the 1.2 record, byte for byte
        elif isinstance(rec, ThermalSample):
            zones = [
                [self._sid(z.name), z.temp_c, [[self._sid(ty), tc, hy] for ty, tc, hy in z.trips]]
                for z in rec.zones
            ]
            freqs = [[f.cpu, f.cur_khz, f.hw_khz, f.max_khz, f.scaling_max_khz] for f in rec.freqs]
            cooling = [
                [self._sid(c.name), c.cur_state, c.max_state, c.transitions] for c in rec.cooling
            ]
            throttle = [x for k, v in rec.throttle.items() for x in (self._sid(k), v)]
            sensors = [x for k, v in _checked_sensors(rec.sensors) for x in (self._sid(k), v)]
            wire = _appended(
                [Kind.THERMAL.value, seq, t, zones, freqs, cooling, throttle, sensors], 7
            )
        elif isinstance(rec, GpuSample):
            wire = [
                Kind.GPU.value,
                seq,
                t,
                rec.index,
                self._sid(rec.name),
                rec.temp_c,
                rec.power_mw,
                rec.power_limit_mw,
                rec.sm_clock_mhz,
                rec.mem_clock_mhz,
                rec.max_sm_clock_mhz,
                rec.max_mem_clock_mhz,
                rec.clock_event_reasons,
                rec.util_gpu,
                rec.util_mem,
                rec.mem_used,
                rec.mem_total,
                [x for pid, used in _checked_processes(rec.processes) for x in (pid, used)],
            ]
            wire = _appended(wire, 17)
        elif isinstance(rec, PowerSample):
            wire = [
                Kind.POWER.value,
                seq,
                t,
                [
                    [
                        self._sid(r.source),
                        self._sid(r.name),
                        _checked_uint(r.energy_uj),
                        _checked_uint(r.power_uw),
                        _checked_uint(r.range_uj),
                        _checked_uint(r.limit_uw),
                        bool(r.total),
                    ]
                    for r in rec.readings
                ],
            ]
        elif isinstance(rec, Event):
            kind, cut_kind = fit_text(rec.kind)
            message, cut_message = fit_text(rec.message, MESSAGE_LIMIT)
            detail, cut_detail = fit_map(rec.detail, DETAIL_LIMIT)
            if cut_kind or cut_message or cut_detail:
                self._event_cut(kind, cut_kind, cut_message, cut_detail)
            wire = [
                Kind.EVENT.value,
                seq,
                t,
                self._sid(kind),
                message,
                rec.run,
                rec.severity,
                detail,
            ]
        elif isinstance(rec, Keyframe):
            raise ValueError("keyframes are written by the encoder itself, not appended")
        else:
            raise TypeError(f"not an edgescope record: {type(rec).__name__}")
        return self._with_strings(wire)

    def _metrics(self, rec: Metrics) -> list[Wire]:
        key = self._sid(rec.key)
        out: list[Wire] = []
        n = len(rec.values)
        if rec.steps:
            self.last_step = max(self.last_step, max(rec.steps))
            t_max = max(rec.times_us)
        else:
            t_max = rec.t_us
        if self.last_t is None or t_max > self.last_t:
            self.last_t = t_max
        for lo in range(0, max(n, 1), METRIC_CHUNK):
            hi = min(n, lo + METRIC_CHUNK)
            values = rec.values[lo:hi]
            if not set(map(type, values)) <= _FLOAT:  # the common case at C speed
                for v in values:
                    if not isinstance(v, float):
                        raise TypeError(f"metric {rec.key!r}: value {v!r} is not a float")
            times = rec.times_us[lo:hi]
            width, data = encode_floats(values)
            t = times[0] if times else rec.t_us
            wire = [
                Kind.METRICS.value,
                self._take_seq(),
                t,
                rec.run,
                key,
                hi - lo,
                encode_ints(rec.steps[lo:hi]),
                encode_ints(times),
                width,
                data,
            ]
            out.extend(self._with_strings(wire))
        return out

    def _stacks_rec(self, rec: StackSamples) -> list[Wire]:
        backend = self._sid(rec.backend)
        new_frames: list[Wire] = []
        new_stacks: list[Wire] = []
        first_frame = self._next_fid
        first_stack = self._next_stid
        samples: list[int] = []
        for stack, count in rec.samples:
            fids = []
            for fr in stack:
                fid = self._frames.get(fr)
                if fid is None:
                    fid = self._frames[fr] = self._next_fid
                    self._next_fid += 1
                    new_frames.append([self._sid(fr.function), self._sid(fr.file), fr.line])
                fids.append(fid)
            key = tuple(fids)
            stid = self._stacks.get(key)
            if stid is None:
                stid = self._stacks[key] = self._next_stid
                self._next_stid += 1
                new_stacks.append(fids)
            samples.extend((stid, count))
        if self.last_t is None or rec.t_us > self.last_t:
            self.last_t = rec.t_us
        wire = [
            Kind.STACKS.value,
            self._take_seq(),
            rec.t_us,
            rec.run,
            backend,
            rec.period_us,
            first_frame,
            new_frames,
            first_stack,
            new_stacks,
            samples,
        ]
        return self._with_strings(wire)


class Decoder:
    """Turns wire arrays back into records, mirroring the encoder's tables."""

    def __init__(self) -> None:
        self.strings: dict[int, str] = {}
        self.frames: dict[int, StackFrame] = {}
        self.stacks: dict[int, tuple[StackFrame, ...]] = {}
        self.runs: dict[int, RunStart] = {}
        self.unknown_kinds = 0
        """Records of kinds this version does not know (a newer minor version wrote them)."""
        self.unresolved = 0
        """References to strings, frames or stacks whose definition was lost to damage (and
        parts of a keyframe that never came)."""
        self._pending: tuple[Keyframe, int] | None = None
        """A keyframe whose parts (kind 13) are still to come, and how many."""
        self._dispatch: dict[int, Callable[[Wire], Record | None]] = {
            Kind.STRINGS: self._strings_rec,
            Kind.KEYFRAME: self._keyframe,
            Kind.RUN_START: self._run_start,
            Kind.RUN_END: self._run_end,
            Kind.METRICS: self._metrics,
            Kind.SYSTEM: self._system,
            Kind.PROCESS: self._process,
            Kind.THERMAL: self._thermal,
            Kind.GPU: self._gpu,
            Kind.STACKS: self._stacks_rec,
            Kind.EVENT: self._event,
            Kind.POWER: self._power,
            KEYFRAME_PART: self._keyframe_part,
        }

    def decode(self, w: Any) -> Record | None:
        """One record, or None for format internals (string tables, index) and unknown kinds.

        A keyframe in parts is returned whole, with the last of its parts; call
        :meth:`incomplete` before each record that is not a part, and at the end, for one
        whose parts were lost.
        """
        if type(w) is not list or not w or type(w[0]) is not int:
            raise DecodeError("a record is not an array starting with its kind")
        fn = self._dispatch.get(w[0])
        if fn is None:
            if w[0] not in (Kind.INDEX, INDEX_POINTER):
                self.unknown_kinds += 1
            return None
        _fields(w, 3)
        _int(w[1])
        _int(w[2])
        try:
            return fn(w)
        except DecodeError:
            raise
        except (TypeError, ValueError, OverflowError, IndexError, KeyError) as e:
            raise DecodeError(f"record of kind {w[0]}: {type(e).__name__}: {e}") from None

    def _s(self, x: Any) -> str:
        s = self.strings.get(_int(x))
        if s is None:
            self.unresolved += 1
            return f"<lost string #{x}>"
        return s

    def _reset_tables(self) -> None:
        self.strings = {}
        self.frames = {}
        self.stacks = {}

    def _strings_rec(self, w: Wire) -> None:
        first = _int(_fields(w, 5)[3])
        for i, s in enumerate(_list(w[4])):
            self.strings[first + i] = _str(s)
        return None

    def incomplete(self, w: Any = None) -> Keyframe | None:
        """The keyframe still waiting for parts, if ``w`` (the next record) is not one of them.

        Its parts were lost (damage, or the stream ended): it is given with the runs that came,
        and each missing part is counted in ``unresolved``.
        """
        pending = self._pending
        if pending is None or (type(w) is list and w and w[0] == KEYFRAME_PART):
            return None
        self._pending = None
        self.unresolved += pending[1]
        return pending[0]

    def _keyframe(self, w: Wire) -> Keyframe | None:
        _fields(w, 6)
        self._reset_tables()
        runs = []
        for rw in _list(w[5]):
            r = self._run_start(_fields(_list(rw), 11))
            runs.append(r)
        parts = _int(w[6]) if len(w) > 6 else 1  # 1.2: a keyframe in parts
        if not 1 <= parts <= 1 << 16:
            raise DecodeError(f"keyframe claims {parts} parts")
        self.runs = {r.run: r for r in runs}
        kf = Keyframe(_int(w[3]), _int(w[4]), tuple(runs), w[2], w[1])
        if parts > 1:
            self._pending = (kf, parts - 1)
            return None
        return kf

    def _keyframe_part(self, w: Wire) -> Keyframe | None:
        _fields(w, 5)
        number = _int(w[3])
        runs = [self._run_start(_fields(_list(rw), 11)) for rw in _list(w[4])]
        pending = self._pending
        if pending is None or pending[0].number != number or pending[0].seq != w[1]:
            # Its keyframe was lost to damage: the runs are known, the keyframe is not.
            self.unresolved += 1
            return None
        kf, left = pending
        kf = Keyframe(kf.number, kf.last_step, (*kf.runs, *runs), kf.t_us, kf.seq)
        if left > 1:
            self._pending = (kf, left - 1)
            return None
        self._pending = None
        return kf

    def _run_start(self, w: Wire) -> RunStart:
        _fields(w, 11)
        r = RunStart(
            _int(w[3]),
            _str(w[4]),
            _str(w[5]),
            _str(w[6]),
            _int(w[7]),
            _dict(w[8]),
            tuple(_str(t) for t in _list(w[9])),
            _dict(w[10]),
            _int(w[2]),
            _int(w[1]),
        )
        self.runs[r.run] = r
        return r

    def _run_end(self, w: Wire) -> RunEnd:
        _fields(w, 6)
        self.runs.pop(_int(w[3]), None)
        cause = w[6] if len(w) > 6 else None  # 1.3: why the run ended; absent before
        return RunEnd(
            w[3], _oint(w[4]), _int(w[5]), w[2], w[1], None if cause is None else _str(cause)
        )

    def _metrics(self, w: Wire) -> Metrics:
        _fields(w, 10)
        n = _int(w[5])
        if n < 0 or n > METRIC_CHUNK * 64:
            raise DecodeError(f"metric batch claims {n} values")
        values = decode_floats(w[8], w[9])
        if len(values) != n:
            raise DecodeError(f"metric batch holds {len(values)} values, expected {n}")
        return Metrics(
            _int(w[3]),
            self._s(w[4]),
            decode_ints(w[6], n),
            decode_ints(w[7], n),
            values,
            w[2],
            w[1],
        )

    def _system(self, w: Wire) -> SystemSample:
        _fields(w, 18)
        psi_flat = _list(w[13])
        psi = {self._s(psi_flat[i]): _num(psi_flat[i + 1]) for i in range(0, len(psi_flat) - 1, 2)}
        return SystemSample(
            _onum(w[3]),
            tuple(_num(x) for x in _list(w[4])),
            _oint(w[5]),
            _oint(w[6]),
            _oint(w[7]),
            _oint(w[8]),
            _oint(w[9]),
            _onum(w[10]),
            _onum(w[11]),
            _onum(w[12]),
            psi,
            _onum(w[14]),
            _onum(w[15]),
            _onum(w[16]),
            _onum(w[17]),
            w[2],
            w[1],
        )

    def _process(self, w: Wire) -> ProcessSample:
        _fields(w, 13)
        # 1.3: parent, state, command, then the cgroup path, CPU quota and throttling,
        # memory.high, events, swap (absent: nil)
        more = [*w[13:28], *[None] * (28 - len(w))]
        cgroup = None if more[3] is None else self._s(more[3])
        return ProcessSample(
            _int(w[3]),
            _int(w[4]),
            _onum(w[5]),
            _oint(w[6]),
            _oint(w[7]),
            _oint(w[8]),
            _oint(w[9]),
            _oint(w[10]),
            _oint(w[11]),
            _oint(w[12]),
            # 1.3: parent, state, command; absent from older records
            ppid=_oint(more[0]),
            state=None if more[1] is None else _str(more[1]),
            command=None if more[2] is None else self._s(more[2]),
            t_us=w[2],
            seq=w[1],
            cgroup=cgroup,
            **dict(zip(_PROCESS_CGROUP_FIGURES, (_oint(x) for x in more[4:]), strict=True)),
        )

    def _thermal(self, w: Wire) -> ThermalSample:
        _fields(w, 7)
        zones = []
        for z in _list(w[3]):
            z = _list(z)
            trips = tuple((self._s(_list(tr)[0]), _num(tr[1]), _num(tr[2])) for tr in _list(z[2]))
            zones.append(ThermalZone(self._s(z[0]), _num(z[1]), trips))
        freqs = tuple(
            CpuFreq(_int(f[0]), _oint(f[1]), _oint(f[2]), _oint(f[3]), _oint(f[4]))
            for f in map(_list, _list(w[4]))
        )
        cooling = tuple(
            CoolingDevice(self._s(c[0]), _int(c[1]), _int(c[2]), _int(c[3]))
            for c in map(_list, _list(w[5]))
        )
        flat = _list(w[6])
        throttle = {self._s(flat[i]): _int(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}
        # 1.1: hwmon and other readings; absent from a 1.0 record
        sensors = {self._s(k): _num(v) for k, v in _pairs(w[7])} if len(w) > 7 else {}
        return ThermalSample(
            tuple(zones), freqs, cooling, throttle, sensors=sensors, t_us=w[2], seq=w[1]
        )

    def _gpu(self, w: Wire) -> GpuSample:
        _fields(w, 17)
        return GpuSample(
            _int(w[3]),
            self._s(w[4]),
            _onum(w[5]),
            _oint(w[6]),
            _oint(w[7]),
            _oint(w[8]),
            _oint(w[9]),
            _oint(w[10]),
            _oint(w[11]),
            _oint(w[12]),
            _onum(w[13]),
            _onum(w[14]),
            _oint(w[15]),
            _oint(w[16]),
            # 1.1: per-process GPU memory; absent from a 1.0 record
            processes=tuple((_int(p), _int(m)) for p, m in _pairs(w[17])) if len(w) > 17 else (),
            t_us=w[2],
            seq=w[1],
        )

    def _stacks_rec(self, w: Wire) -> StackSamples:
        _fields(w, 11)
        first_frame = _int(w[6])
        for i, fw in enumerate(_list(w[7])):
            fw = _list(fw)
            self.frames[first_frame + i] = StackFrame(self._s(fw[0]), self._s(fw[1]), _int(fw[2]))
        first_stack = _int(w[8])
        lost = StackFrame("<lost frame>")
        for i, sw in enumerate(_list(w[9])):
            fr = []
            for fid in _list(sw):
                f = self.frames.get(_int(fid))
                if f is None:
                    self.unresolved += 1
                    f = lost
                fr.append(f)
            self.stacks[first_stack + i] = tuple(fr)
        flat = _list(w[10])
        samples = []
        for i in range(0, len(flat) - 1, 2):
            st = self.stacks.get(_int(flat[i]))
            if st is None:
                self.unresolved += 1
                st = (StackFrame("<lost stack>"),)
            samples.append((st, _int(flat[i + 1])))
        return StackSamples(_int(w[3]), self._s(w[4]), _int(w[5]), tuple(samples), w[2], w[1])

    def _power(self, w: Wire) -> PowerSample:
        _fields(w, 4)
        readings = []
        for r in map(_list, _list(w[3])):
            _fields_of(r, 7, "power reading")
            readings.append(
                PowerReading(
                    self._s(r[0]),
                    self._s(r[1]),
                    _oint(r[2]),
                    _oint(r[3]),
                    _oint(r[4]),
                    _oint(r[5]),
                    bool(r[6]),
                )
            )
        return PowerSample(tuple(readings), w[2], w[1])

    def _event(self, w: Wire) -> Event:
        _fields(w, 8)
        return Event(self._s(w[3]), _str(w[4]), _int(w[5]), _int(w[6]), _dict(w[7]), w[2], w[1])


_warned: dict[str, None] = {}
"""Run ids whose run start was said to be cut (the last 1,024): a producer that checks a run
start with an encoder of its own before it writes one says it once, not twice."""


def _first_warning(run_id: str) -> bool:
    if run_id in _warned:
        return False
    _warned[run_id] = None
    if len(_warned) > 1024:
        del _warned[next(iter(_warned))]
    return True


def too_large(size: int, limit: int, what: str) -> RecordTooLargeError:
    return RecordTooLargeError(f"{what} is {size} bytes encoded; a frame holds at most {limit}")
