"""The fleet over MQTT: the topic layout, the broker URL, and the payloads collectors publish.

One home for what the collector's publisher, the archiver, ``edgescope ls --mqtt`` and the TUI
share (the TUI imports no collector). Modelled on Sparkplug B: a retained *birth* with a session
number ``bd_seq``, the *death* as the connection's retained Last Will with the same ``bd_seq``,
and sequence numbers on data::

    edgescope/v1/<device>/birth     retained, QoS 1: device facts, bd_seq
    edgescope/v1/<device>/death     retained, QoS 1: the Last Will (or said on a clean stop)
    edgescope/v1/<device>/data      QoS 1: batches of the stream's records, with their seq
    edgescope/v1/<device>/summary   retained, QoS 0: the device at a glance, once a second
    edgescope/v1/<device>/runs      retained, QoS 1: the runs open now (their run starts), on
                                    each change: a subscriber that joins mid-run knows them

Every payload is a msgpack map with ``v`` (:data:`PAYLOAD_VERSION`). A data batch covers the
store's sequence numbers ``[first, next)``: its ``recs`` are the records of that range as trace
wire arrays (the format of ``docs/trace-format.md``, with their own ``seq``; the interning
tables start afresh in each batch, so every batch decodes alone), without the store's
keyframes, which the range still covers. A batch whose ``first`` is above the previous batch's
``next`` says ``gap``: the ring itself no longer had those records. A subscriber that sees a
jump without ``gap`` missed messages (the broker dropped them).

Decoding never trusts the bytes: any payload that is not what it claims raises
:class:`FleetPayloadError` with one sentence, never anything else.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import msgpack

from ._codec import Decoder, Encoder
from .errors import DecodeError, TraceError
from .records import (
    Event,
    GpuSample,
    JsonValue,
    Keyframe,
    Metrics,
    ProcessSample,
    Record,
    RunEnd,
    RunStart,
    ThermalSample,
)
from .signals import PI_THROTTLED_NOW_MASK, gpu_throttled, step_time_unit

__all__ = [
    "DEFAULT_PORT",
    "DEFAULT_TLS_PORT",
    "LEAVES",
    "MAX_PAYLOAD_BYTES",
    "PAYLOAD_VERSION",
    "TOPIC_ROOT",
    "Batch",
    "Birth",
    "BrokerUrl",
    "Death",
    "FleetPayloadError",
    "SummaryFold",
    "client_options",
    "decode_batch",
    "decode_birth",
    "decode_death",
    "decode_runs",
    "decode_summary",
    "device_topic",
    "encode_batch",
    "encode_birth",
    "encode_death",
    "encode_runs",
    "encode_summary",
    "is_online",
    "parse_broker_url",
    "parse_topic",
    "valid_device",
]

TOPIC_ROOT = "edgescope/v1"
LEAVES = ("birth", "death", "data", "summary", "runs")
PAYLOAD_VERSION = 1
DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
"""A payload above this is refused unread (a publisher's batches stay far below it)."""
MAX_BATCH_RECORDS = 100_000

_DEVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class FleetPayloadError(TraceError, ValueError):
    """A payload on a fleet topic that is not what it claims; the message says why."""


def valid_device(name: str) -> bool:
    """A device name fits one topic level and a file name: letters, digits, ``.``, ``_``,
    ``-``, at most 64, not starting with a dot or dash (no ``/``, ``+``, ``#``)."""
    return bool(_DEVICE_RE.match(name))


def device_topic(device: str, leaf: str) -> str:
    if not valid_device(device):
        raise ValueError(f"{device!r} is not a device name (letters, digits, . _ -; at most 64)")
    if leaf not in LEAVES:
        raise ValueError(f"{leaf!r} is not a fleet topic ({', '.join(LEAVES)})")
    return f"{TOPIC_ROOT}/{device}/{leaf}"


def parse_topic(topic: str) -> tuple[str, str] | None:
    """``(device, leaf)`` of a fleet topic, None for anything else."""
    parts = topic.split("/")
    if len(parts) != 4 or "/".join(parts[:2]) != TOPIC_ROOT:
        return None
    device, leaf = parts[2], parts[3]
    if not valid_device(device) or leaf not in LEAVES:
        return None
    return device, leaf


# --- the broker's address --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """``mqtt://[user@]host[:port]`` or ``mqtts://`` (TLS). The password never comes in it."""

    host: str
    port: int
    tls: bool
    user: str | None = None

    def __str__(self) -> str:
        who = f"{self.user}@" if self.user else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{who}{host}:{self.port}"


def parse_broker_url(text: str) -> BrokerUrl:
    """The broker's URL, or ValueError with one sentence."""
    try:
        u = urlsplit(text)
        port = u.port
    except ValueError as e:
        raise ValueError(f"{text!r} is not a broker URL: {e}") from None
    if u.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"{text!r} is not a broker URL: use mqtt://[user@]host[:port] or mqtts://")
    if u.password is not None:
        raise ValueError("a password in the URL would show in the process list: use a file")
    if not u.hostname:
        raise ValueError(f"{text!r} names no host")
    if u.path not in ("", "/") or u.query or u.fragment:
        raise ValueError(f"{text!r}: a broker URL has no path or query")
    tls = u.scheme == "mqtts"
    return BrokerUrl(
        host=u.hostname,
        port=port if port is not None else (DEFAULT_TLS_PORT if tls else DEFAULT_PORT),
        tls=tls,
        user=unquote(u.username) if u.username else None,
    )


def client_options(
    url: BrokerUrl,
    *,
    password_file: str | os.PathLike[str] | None = None,
    ca_file: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """The connection arguments of an ``aiomqtt.Client`` for ``url``, as every fleet client
    (archiver, ``ls``, TUI) makes them: the password from a file (the token file's rule, at
    least 16 bytes), TLS that checks the broker's certificate and name. ValueError with one
    sentence for a file that cannot be used."""
    import ssl
    import stat

    from .files import file_kind
    from .tokens import TokenError, read_token

    opts: dict[str, Any] = {"hostname": url.host, "port": url.port}
    if password_file is not None:
        if url.user is None:
            raise ValueError("a password file needs a user in the URL (mqtt://user@host)")
        try:
            opts["password"] = read_token(password_file).value.decode()
        except TokenError as e:
            raise ValueError(str(e).replace("token", "password")) from None
    if url.user is not None:
        opts["username"] = url.user
    if ca_file is not None and not url.tls:
        raise ValueError("a CA file is for TLS: use an mqtts:// URL")
    if url.tls:
        try:
            if ca_file is not None:
                # OpenSSL opens the path itself: a FIFO there would hang it. Check first.
                mode = os.stat(ca_file).st_mode
                if not stat.S_ISREG(mode):
                    raise OSError(f"it is {file_kind(mode)}, not a regular file")
            ctx = ssl.create_default_context(cafile=os.fspath(ca_file) if ca_file else None)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"the CA file {ca_file} cannot be used: {e}") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        opts["tls_context"] = ctx
    return opts


# --- payload helpers -------------------------------------------------------------------------


def _pack(obj: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


def _unpack(data: bytes, what: str) -> dict[str, Any]:
    if len(data) > MAX_PAYLOAD_BYTES:
        raise FleetPayloadError(f"a {what} of {len(data)} bytes is over {MAX_PAYLOAD_BYTES}")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        raise FleetPayloadError(f"a {what} that is not msgpack") from None
    if type(obj) is not dict:
        raise FleetPayloadError(f"a {what} that is not a map")
    if obj.get("v") != PAYLOAD_VERSION:
        raise FleetPayloadError(f"a {what} of version {obj.get('v')!r}, not {PAYLOAD_VERSION}")
    return obj


def _int_field(obj: dict[str, Any], key: str, what: str, *, low: int = 0) -> int:
    v = obj.get(key)
    if type(v) is not int or v < low or v >= 1 << 63:
        raise FleetPayloadError(f"a {what} whose {key!r} is not a non-negative integer")
    return v


def _str_field(obj: dict[str, Any], key: str, what: str, limit: int = 200) -> str:
    v = obj.get(key, "")
    if type(v) is not str or len(v) > limit:
        raise FleetPayloadError(f"a {what} whose {key!r} is not a short string")
    return v


# --- birth and death -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Birth:
    """A collector's session began: who it is, and its session number."""

    device: str
    bd_seq: int
    t_us: int
    facts: dict[str, JsonValue] = field(default_factory=dict)
    """host, board, cpu, cpus, mem_total, gpus, thermal_zones, samplers, collector version."""


@dataclass(frozen=True, slots=True)
class Death:
    """A collector's session ended (its Last Will, or said on a clean stop)."""

    device: str
    bd_seq: int
    clean: bool = False
    """True when the collector said it on stopping; False from the Last Will."""


def encode_birth(b: Birth) -> bytes:
    return _pack({"v": PAYLOAD_VERSION, "device": b.device, "bd_seq": b.bd_seq, "t_us": b.t_us,
                  "facts": b.facts})  # fmt: skip


def decode_birth(data: bytes) -> Birth:
    obj = _unpack(data, "birth")
    device = _str_field(obj, "device", "birth", 64)
    if not valid_device(device):
        raise FleetPayloadError("a birth without a valid device name")
    facts = obj.get("facts", {})
    if type(facts) is not dict:
        raise FleetPayloadError("a birth whose facts are not a map")
    return Birth(device, _int_field(obj, "bd_seq", "birth"), _int_field(obj, "t_us", "birth"),
                 {str(k): v for k, v in facts.items()})  # fmt: skip


def encode_death(d: Death) -> bytes:
    return _pack({"v": PAYLOAD_VERSION, "device": d.device, "bd_seq": d.bd_seq, "clean": d.clean})


def decode_death(data: bytes) -> Death:
    obj = _unpack(data, "death")
    device = _str_field(obj, "device", "death", 64)
    if not valid_device(device):
        raise FleetPayloadError("a death without a valid device name")
    return Death(device, _int_field(obj, "bd_seq", "death"), obj.get("clean") is True)


def is_online(birth: Birth | None, death: Death | None) -> bool:
    """Online: a birth that no death of the same (or a later) session followed."""
    if birth is None:
        return False
    return death is None or death.bd_seq < birth.bd_seq


# --- data batches ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Batch:
    """Records of the store's sequence range ``[first, next)``, in order."""

    bd_seq: int
    first: int
    next: int
    records: tuple[Record, ...]
    gap: tuple[int, int] | None = None
    """``(first, last)`` before ``first`` that the ring no longer held (the device says so)."""


def encode_batch(batch: Batch) -> bytes:
    """The batch's payload: each record encoded with its own ``seq``, tables fresh."""
    enc = Encoder()
    wires: list[Any] = []
    for rec in batch.records:
        if isinstance(rec, Keyframe):
            continue  # the store's own; the range covers its seq
        if not batch.first <= rec.seq < batch.next:
            raise ValueError(
                f"record seq {rec.seq} outside the batch [{batch.first}, {batch.next})"
            )
        enc.next_seq = rec.seq
        wires.extend(enc.encode(rec))
    obj: dict[str, Any] = {
        "v": PAYLOAD_VERSION,
        "bd_seq": batch.bd_seq,
        "first": batch.first,
        "next": batch.next,
        "recs": wires,
    }
    if batch.gap is not None:
        obj["gap"] = list(batch.gap)
    return _pack(obj)


def decode_batch(data: bytes) -> Batch:
    """A data payload back into its batch; FleetPayloadError for anything malformed."""
    obj = _unpack(data, "data batch")
    bd_seq = _int_field(obj, "bd_seq", "data batch")
    first = _int_field(obj, "first", "data batch")
    nxt = _int_field(obj, "next", "data batch")
    if nxt < first:
        raise FleetPayloadError("a data batch whose range ends before it starts")
    wires = obj.get("recs")
    if type(wires) is not list or len(wires) > MAX_BATCH_RECORDS:
        raise FleetPayloadError("a data batch without a list of records")
    gap: tuple[int, int] | None = None
    if "gap" in obj:
        g = obj["gap"]
        if (
            type(g) is not list
            or len(g) != 2
            or not all(type(x) is int and 0 <= x < 1 << 63 for x in g)
            or not g[0] <= g[1] < first
        ):
            raise FleetPayloadError("a data batch whose gap is not a range before it")
        gap = (g[0], g[1])
    dec = Decoder()
    records: list[Record] = []
    last = first - 1
    for w in wires:
        try:
            rec = dec.decode(w)
        except DecodeError as e:
            raise FleetPayloadError(f"a data batch with an undecodable record: {e}") from None
        if rec is None:
            continue
        if isinstance(rec, Keyframe):
            raise FleetPayloadError("a data batch holding a keyframe")
        if not first <= rec.seq < nxt or rec.seq < last:
            raise FleetPayloadError(f"a data batch whose record seq {rec.seq} is out of order")
        last = rec.seq
        records.append(rec)
    if dec.unresolved:
        raise FleetPayloadError("a data batch referring to strings it does not define")
    return Batch(bd_seq, first, nxt, tuple(records), gap)


# --- the open runs ---------------------------------------------------------------------------


def encode_runs(device: str, bd_seq: int, runs: list[RunStart]) -> bytes:
    """The runs open on the device now, as trace run-start wire arrays with their ``seq``."""
    return _pack({"v": PAYLOAD_VERSION, "device": device, "bd_seq": bd_seq,
                  "runs": [Encoder._run_start(r, r.seq) for r in runs]})  # fmt: skip


def decode_runs(data: bytes) -> tuple[str, list[RunStart]]:
    obj = _unpack(data, "runs message")
    device = _str_field(obj, "device", "runs message", 64)
    if not valid_device(device):
        raise FleetPayloadError("a runs message without a valid device name")
    wires = obj.get("runs")
    if type(wires) is not list or len(wires) > 10_000:
        raise FleetPayloadError("a runs message without a list of runs")
    dec = Decoder()
    out: list[RunStart] = []
    for w in wires:
        if type(w) is not list or not w or w[0] != RunStart.KIND:
            raise FleetPayloadError("a runs message holding something else than run starts")
        try:
            rec = dec.decode(w)
        except DecodeError as e:
            raise FleetPayloadError(f"a runs message with an undecodable run start: {e}") from None
        assert isinstance(rec, RunStart)
        out.append(rec)
    return device, out


# --- the summary -----------------------------------------------------------------------------

SUMMARY_FIELDS = (
    "t_us",
    "run",
    "step",
    "loss",
    "step_time_s",
    "hottest_c",
    "throttled",
    "mem_peak",
    "mem_limit",
    "warning",
    "seq",
)
"""What a summary holds (each may be None): the time it was made, the current run's name, its
last step, last loss, last step time (seconds), the hottest temperature (°C) of any zone or GPU,
whether anything throttles now, the run's memory peak and limit (bytes), the last warning
event's message, and the stream's next seq."""


def encode_summary(device: str, bd_seq: int, values: dict[str, JsonValue]) -> bytes:
    obj: dict[str, Any] = {"v": PAYLOAD_VERSION, "device": device, "bd_seq": bd_seq}
    obj.update({k: values.get(k) for k in SUMMARY_FIELDS})
    return _pack(obj)


_SUMMARY_TYPES: dict[str, tuple[type, ...]] = {
    "t_us": (int,),
    "run": (str,),
    "step": (int,),
    "loss": (float, int),
    "step_time_s": (float, int),
    "hottest_c": (float, int),
    "throttled": (bool,),
    "mem_peak": (int,),
    "mem_limit": (int,),
    "warning": (str,),
    "seq": (int,),
}


def decode_summary(data: bytes) -> dict[str, JsonValue]:
    """The summary's fields (:data:`SUMMARY_FIELDS`, each None or of its type) and ``device``,
    ``bd_seq``."""
    obj = _unpack(data, "summary")
    device = _str_field(obj, "device", "summary", 64)
    if not valid_device(device):
        raise FleetPayloadError("a summary without a valid device name")
    out: dict[str, JsonValue] = {"device": device, "bd_seq": _int_field(obj, "bd_seq", "summary")}
    for k in SUMMARY_FIELDS:
        v = obj.get(k)
        if v is not None and (
            type(v) not in _SUMMARY_TYPES[k] or (type(v) is str and len(v) > 500)
        ):
            raise FleetPayloadError(
                f"a summary whose {k!r} is not a {_SUMMARY_TYPES[k][0].__name__}"
            )
        if type(v) is float and not math.isfinite(v) and k != "loss":
            v = None
        out[k] = v
    return out


class SummaryFold:
    """The summary of a stream, record by record (the publisher folds what it publishes)."""

    def __init__(self) -> None:
        self.runs: dict[int, RunStart] = {}
        """The runs open now, by number."""
        self.runs_changed = True
        """Set when a run starts or ends (the publisher says the runs again, and clears it)."""
        self.current: int | None = None
        self.step: int | None = None
        self.loss: float | None = None
        self.step_time_s: float | None = None
        self.zones: dict[str, float] = {}
        self.gpus: dict[int, float] = {}
        self.throttled = False
        self.gpu_throttle: dict[int, bool] = {}
        self.mem_peak: int | None = None
        self.mem_limit: int | None = None
        self.warning: str | None = None
        self.next_seq = 0
        self._throttle_counts: dict[str, int] = {}

    def feed(self, rec: Record) -> None:
        self.next_seq = max(self.next_seq, rec.seq + 1)
        if isinstance(rec, Keyframe):
            runs = {r.run: r for r in rec.runs}
            if runs.keys() != self.runs.keys():
                self.runs_changed = True
            self.runs = runs
            if self.current not in self.runs:
                self.current = max(self.runs) if self.runs else None
        elif isinstance(rec, RunStart):
            self.runs[rec.run] = rec
            self.runs_changed = True
            self.current = rec.run
            self.step = self.loss = self.step_time_s = None
            self.mem_peak = self.mem_limit = None
        elif isinstance(rec, RunEnd):
            self.runs.pop(rec.run, None)
            self.runs_changed = True
            if self.current == rec.run:
                self.current = max(self.runs) if self.runs else None
        elif isinstance(rec, Metrics) and rec.values and rec.run == self.current:
            self.step = max(rec.steps) if self.step is None else max(self.step, *rec.steps)
            if rec.key == "loss":
                self.loss = rec.values[-1]
            unit = step_time_unit(rec.key)
            if unit is not None:
                self.step_time_s = rec.values[-1] * unit
        elif isinstance(rec, ThermalSample):
            self.zones = {z.name: z.temp_c for z in rec.zones}
            rising = False
            for k, v in rec.throttle.items():
                if k == "pi.throttled":
                    rising = rising or bool(v & PI_THROTTLED_NOW_MASK)
                    continue
                before = self._throttle_counts.get(k)
                self._throttle_counts[k] = v
                rising = rising or (before is not None and v > before) or (
                    before is None and k.endswith("_alarm") and v > 0
                )  # fmt: skip
            self.throttled = rising or any(self.gpu_throttle.values())
        elif isinstance(rec, GpuSample):
            if rec.temp_c is not None:
                self.gpus[rec.index] = rec.temp_c
            self.gpu_throttle[rec.index] = gpu_throttled(rec.clock_event_reasons)
            self.throttled = self.throttled or self.gpu_throttle[rec.index]
        elif isinstance(rec, ProcessSample) and rec.run >= 0 and rec.run == self.current:
            peak = rec.cgroup_peak or rec.rss_peak
            if peak is not None:
                self.mem_peak = peak if self.mem_peak is None else max(self.mem_peak, peak)
            if rec.cgroup_limit is not None:
                self.mem_limit = rec.cgroup_limit
        elif isinstance(rec, Event) and rec.severity >= 1:
            self.warning = rec.message[:500]

    def values(self, t_us: int) -> dict[str, JsonValue]:
        temps = [*self.zones.values(), *self.gpus.values()]
        temps = [t for t in temps if math.isfinite(t)]
        return {
            "t_us": t_us,
            "run": self.runs[self.current].name if self.current in self.runs else None,
            "step": self.step,
            "loss": self.loss,
            "step_time_s": self.step_time_s,
            "hottest_c": max(temps) if temps else None,
            "throttled": self.throttled,
            "mem_peak": self.mem_peak,
            "mem_limit": self.mem_limit,
            "warning": self.warning,
            "seq": self.next_seq,
        }
