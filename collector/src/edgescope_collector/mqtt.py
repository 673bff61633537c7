"""The MQTT publisher: the collector's stream to a broker, for the fleet (``--mqtt URL``).

A sink beside the store, never a second pipeline: it reads the store by sequence number (a
:class:`StoreCursor`, as the stream server does) and publishes what it reads, so that what
reaches the broker is exactly what the store holds, with the same ``seq``. The layout and the
payloads are :mod:`edgescope_tracing.fleet`'s.

A session (one connection) goes:

1. connect with the Last Will: a retained ``death`` carrying this session's ``bd_seq`` (a
   number kept in the data directory, one up per connection);
2. a retained ``birth`` with the device's facts and the same ``bd_seq``;
3. data batches (QoS 1), up to ``window`` awaiting their PUBACK at once, in order, from the
   first record the broker has not acknowledged; and a retained ``summary`` once a second.

Nothing is lost across broker trouble: while the broker is unreachable or slow the store keeps
the stream as ever; the next session starts again from the first record whose batch was not
acknowledged (kept across restarts of the collector in ``mqtt.state``), reading it back from
the store, in order. A gap is published only where the ring itself no longer holds records (the
batch after it says ``gap``). A clean stop publishes the death itself and disconnects.

aiomqtt (over paho-mqtt) is the optional extra ``edgescope-collector[mqtt]``; this module
imports it only when a session starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgescope_tracing import Keyframe, Record, RunStart, StreamDecoder
from edgescope_tracing.fleet import (
    Batch,
    Birth,
    BrokerUrl,
    Death,
    SummaryFold,
    client_options,
    device_topic,
    encode_batch,
    encode_birth,
    encode_death,
    encode_runs,
    encode_summary,
)
from edgescope_tracing.framing import HEADER_SIZE, frame_span

from .errors import CollectorError
from .store import Segment, SegmentStore

if TYPE_CHECKING:
    import aiomqtt

__all__ = ["MqttPublisher", "MqttSettings", "StoreCursor", "load_password"]

log = logging.getLogger("edgescope.collector.mqtt")

STATE_NAME = "mqtt.state"
READ_CHUNK = 256 * 1024
BATCH_RECORDS = 2000
BATCH_BYTES = 256 * 1024
"""A batch ends after this many bytes of frames read (its payload stays well below 1 MiB)."""


@dataclass(frozen=True, slots=True)
class MqttSettings:
    url: BrokerUrl
    device: str
    password: str | None = None
    ca_file: Path | None = None
    keepalive: int = 10
    """Seconds; the broker says the Last Will after 1.5 times this without a packet."""
    summary_interval: float = 1.0
    window: int = 16
    """Data batches awaiting their PUBACK at once."""
    retry_interval: float = 1.0
    """Seconds before the first reconnection try (doubling to 30)."""


def load_password(path: Path) -> str:
    """The password in ``path``: the token file's one rule (one non-blank, non-comment line,
    at least 16 bytes, the file not writable by others); CollectorError (exit 2) if not."""
    from edgescope_tracing.tokens import TokenError, read_token

    try:
        token = read_token(path)
    except TokenError as e:
        raise CollectorError(f"--mqtt-password-file: {e}".replace("token", "password"), 2) from None
    for w in token.warnings:
        log.warning("%s", w.replace("token", "password"))
    return token.value.decode()


class StoreCursor:
    """Reads the store's records from a sequence number on, as batches, and says the gaps."""

    def __init__(self, store: SegmentStore) -> None:
        self.store = store
        self.start = 0
        """The first sequence number not yet handed out in a batch."""
        self._seg: Segment | None = None
        self._pos = HEADER_SIZE
        self._dec = StreamDecoder(header=False)
        self._pending: list[Record] = []
        self._gap: tuple[int, int] | None = None

    def seek(self, seq: int) -> None:
        """Read from ``seq`` on (a gap first where the ring no longer holds it)."""
        seg, pos, gap = self.store.locate(seq)
        self.start = seq
        self._pending = []
        self._gap = gap
        if gap is not None:
            self.start = gap[1] + 1
        self._open(seg, pos)

    def _open(self, seg: Segment, pos: int) -> None:
        """Read ``seg`` from ``pos`` (records read but not yet batched stay pending)."""
        self._seg, self._pos = seg, pos
        self._dec = StreamDecoder(header=False, name=seg.path.name, offset=pos)

    def _skip_to(self, first: int, why: str) -> None:
        if first > self.start:
            log.warning("mqtt: seq %d-%d %s (a gap)", self.start, first - 1, why)
            self._gap = (self._gap[0] if self._gap else self.start, first - 1)
            self.start = first

    def _read_more(self) -> bool:
        """Decode more of the store into the pending records; False when there is nothing new."""
        store, seg = self.store, self._seg
        if seg is None:
            self.seek(self.store.next_seq)
            seg = self._seg
            assert seg is not None
        if not store.retained(seg):
            # Dropped for space (or its records never reached the disk) before we read it all.
            first = store.segments[0]
            self._skip_to(max(first.first_seq, self.start), "no longer retained by the ring")
            self.seek(self.start)
            return True
        if self._pos < seg.data_end:
            n = min(READ_CHUNK, seg.data_end - self._pos)
            try:
                if seg.memory is not None:
                    data = bytes(seg.memory[self._pos : self._pos + n])
                else:
                    with open(seg.path, "rb", buffering=0) as f:
                        data = os.pread(f.fileno(), n, self._pos)
            except FileNotFoundError:
                return self._read_more_after_loss()
            good, skip = frame_span(data)
            if good:
                for rec in self._dec.feed(data[:good]):
                    if rec.seq >= self.start:
                        self._pending.append(rec)
            if skip > good:
                log.warning("mqtt: skipped %d damaged bytes in %s", skip - good, seg.path.name)
            elif good == 0:
                skip = seg.data_end - self._pos
            self._pos += max(good, skip)
            return True
        if not seg.closed:
            return False
        after, between = store.after(seg)
        if after is None:
            return False
        if between is not None:
            self._skip_to(between[1] + 1, "no longer retained by the ring")
        self._open(after, HEADER_SIZE)
        return True

    def _read_more_after_loss(self) -> bool:
        first = self.store.segments[0]
        self._skip_to(max(first.first_seq, self.start), "no longer retained by the ring")
        self.seek(self.start)
        return True

    def next_batch(self, bd_seq: int) -> Batch | None:
        """The next batch of records (at least one that is not a keyframe), or None for now."""
        while True:
            real = [r for r in self._pending if not isinstance(r, Keyframe)]
            if len(real) >= BATCH_RECORDS:
                break
            before = self._pos
            if not self._read_more():
                break
            if self._pos - before >= BATCH_BYTES:
                break
        real = [r for r in self._pending if not isinstance(r, Keyframe)]
        if not real:
            return None
        take = real[:BATCH_RECORDS]
        last = take[-1].seq
        held = [r for r in self._pending if r.seq > last]
        kept = [r for r in self._pending if r.seq <= last]  # keyframes among them too
        batch = Batch(bd_seq, self.start, last + 1, tuple(kept), self._gap)
        self._pending = held
        self._gap = None
        self.start = last + 1
        return batch


class MqttPublisher:
    """Publishes a collector's store to a broker until stopped (see the module docstring)."""

    def __init__(
        self,
        settings: MqttSettings,
        store: SegmentStore,
        data_dir: Path,
        *,
        facts: Callable[[], dict[str, object]] | None = None,
        first_seq: int | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.state_path = data_dir / STATE_NAME
        self.facts = facts or (lambda: {})
        self.first_seq = first_seq
        """Where a first start (no ``mqtt.state`` yet) publishes from: this session's start."""
        self.bd_seq = 0
        self.acked = -1
        """One past the last seq the broker acknowledged (-1: nothing yet this install)."""
        self.connected = False
        self.sessions = 0
        self.batches_acked = 0
        self.fold = SummaryFold()
        self.wake = asyncio.Event()
        self._saved: tuple[int, int] | None = None
        self._state_error = False
        self._last_error: str | None = None

    # --- state kept across restarts ------------------------------------------------------

    def load_state(self) -> None:
        try:
            obj = json.loads(self.state_path.read_text())
            self.bd_seq = int(obj["bd_seq"])
            self.acked = int(obj["acked"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("mqtt: ignoring %s (%s): publishing from now on", self.state_path, e)
            self.bd_seq, self.acked = 0, -1

    def save_state(self) -> None:
        now = (self.bd_seq, self.acked)
        if now == self._saved:
            return
        tmp = self.state_path.with_name(STATE_NAME + ".tmp")
        try:
            tmp.write_text(json.dumps({"bd_seq": self.bd_seq, "acked": self.acked}))
            os.replace(tmp, self.state_path)
            self._saved = now
            self._state_error = False
        except OSError as e:
            if not self._state_error:  # said once until it works again (a full disk)
                log.warning("mqtt: cannot keep the publishing state in %s: %s", self.state_path, e)
            self._state_error = True

    # --- running -------------------------------------------------------------------------

    def on_flush(self, seg: Segment, offset: int, data: bytes) -> None:
        """The store's listener: new frames are there to read."""
        self.wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Sessions until ``stop`` is set; reconnects with a growing pause after trouble."""
        import aiomqtt

        self.load_state()
        if self.acked < 0:
            # A first start publishes this session's stream, not the whole ring before it.
            self.acked = self.store.next_seq if self.first_seq is None else self.first_seq
        elif self.acked > self.store.next_seq:
            # The state is from a ring that is not this one (its segments were removed).
            log.warning(
                "mqtt: %s says seq %d was published, but the store ends at %d: publishing "
                "all it holds",
                self.state_path,
                self.acked,
                self.store.next_seq,
            )
            self.acked = self.store.first_seq
        self.store.listeners.append(self.on_flush)
        _quiet_closed_socket_callbacks(asyncio.get_running_loop())
        pause = self.settings.retry_interval
        try:
            while not stop.is_set():
                sessions = self.sessions
                try:
                    await self._session(stop)
                except aiomqtt.MqttError as e:
                    self._trouble(str(e))
                except OSError as e:
                    self._trouble(e.strerror or str(e))
                if self.sessions != sessions:  # it was connected: the pauses start again
                    pause = self.settings.retry_interval
                self.connected = False
                self.save_state()
                if stop.is_set():
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)
                pause = min(30.0, pause * 2)
        finally:
            with contextlib.suppress(ValueError):
                self.store.listeners.remove(self.on_flush)
            self.save_state()

    def _trouble(self, why: str) -> None:
        if why != self._last_error:
            log.warning(
                "mqtt: %s: %s; the store keeps the stream, publishing goes on from seq %d",
                self.settings.url,
                why,
                self.acked,
            )
        self._last_error = why

    def _client(self, will: aiomqtt.Will) -> aiomqtt.Client:
        import aiomqtt

        s = self.settings
        opts = client_options(s.url, ca_file=s.ca_file)  # the one way fleet clients connect
        return aiomqtt.Client(
            **opts,
            password=s.password,
            identifier=f"edgescope-{s.device}",
            will=will,
            clean_session=True,
            keepalive=s.keepalive,
            timeout=max(5.0, 2.0 * s.keepalive),
            max_inflight_messages=s.window,
            logger=logging.getLogger("edgescope.collector.mqtt.paho"),
        )

    async def _session(self, stop: asyncio.Event) -> None:
        import aiomqtt

        s = self.settings
        self.bd_seq += 1
        self.save_state()
        death = encode_death(Death(s.device, self.bd_seq))
        will = aiomqtt.Will(device_topic(s.device, "death"), death, qos=1, retain=True)
        client = self._client(will)
        async with client:
            self.connected = True
            self.sessions += 1
            if self._last_error is not None:
                log.info("mqtt: connected to %s again", s.url)
            else:
                log.info("mqtt: publishing to %s as %s", s.url, s.device)
            self._last_error = None
            birth = Birth(s.device, self.bd_seq, time.time_ns() // 1000, self.facts())
            await client.publish(device_topic(s.device, "birth"), encode_birth(birth), 1, True)
            cursor = StoreCursor(self.store)
            cursor.seek(self.acked)
            await self._publish_loop(client, cursor, stop)
            # A clean stop: the death is said, not left to the will.
            clean = encode_death(Death(s.device, self.bd_seq, clean=True))
            with contextlib.suppress(aiomqtt.MqttError):
                await client.publish(device_topic(s.device, "death"), clean, 1, True, timeout=5)

    def _say_runs(
        self,
        client: aiomqtt.Client,
        topic: str,
        inflight: deque[tuple[int, asyncio.Task[None]]],
        runs_open: list[RunStart],
    ) -> None:
        """The open runs, retained, in order with the batches (its ack moves nothing on)."""
        self.fold.runs_changed = False
        runs = encode_runs(self.settings.device, self.bd_seq, runs_open)
        task = asyncio.get_running_loop().create_task(client.publish(topic, runs, 1, True))
        inflight.append((_inflight_mark(inflight, self.acked), task))

    async def _publish_loop(
        self, client: aiomqtt.Client, cursor: StoreCursor, stop: asyncio.Event
    ) -> None:
        import aiomqtt

        s = self.settings
        data_topic = device_topic(s.device, "data")
        summary_topic = device_topic(s.device, "summary")
        runs_topic = device_topic(s.device, "runs")
        first = True  # each session says the runs it knows with its first batch
        inflight: deque[tuple[int, asyncio.Task[None]]] = deque()
        next_summary = 0.0
        loop = asyncio.get_running_loop()
        try:
            while True:
                stopping = stop.is_set()
                while len(inflight) < s.window:
                    batch = cursor.next_batch(self.bd_seq)
                    if batch is None:
                        break
                    # The runs open where the batch starts (from the session before, or the
                    # store's keyframe) are said before it, so that they come first; runs that
                    # start or end inside it are said after it.
                    before = dict(self.fold.runs)
                    lead: dict[int, RunStart] | None = None
                    for rec in batch.records:
                        if lead is None and not isinstance(rec, Keyframe):
                            lead = dict(self.fold.runs)
                        self.fold.feed(rec)
                    lead = lead if lead is not None else dict(self.fold.runs)
                    if first or lead.keys() != before.keys():
                        first = False
                        self._say_runs(client, runs_topic, inflight, list(lead.values()))
                        self.fold.runs_changed = self.fold.runs.keys() != lead.keys()
                    payload = encode_batch(batch)
                    task = loop.create_task(client.publish(data_topic, payload, 1))
                    inflight.append((batch.next, task))
                if self.fold.runs_changed:
                    self._say_runs(client, runs_topic, inflight, list(self.fold.runs.values()))
                while inflight and inflight[0][1].done():
                    nxt, task = inflight.popleft()
                    task.result()  # an MqttError ends the session: the rest is sent again
                    self.acked = nxt
                    self.batches_acked += 1
                now = loop.time()
                if now >= next_summary:
                    next_summary = now + s.summary_interval
                    values = self.fold.values(time.time_ns() // 1000)
                    payload = encode_summary(s.device, self.bd_seq, values)
                    await client.publish(summary_topic, payload, 0, True)
                    self.save_state()
                if stopping and not inflight and cursor.next_batch(self.bd_seq) is None:
                    return
                self.wake.clear()
                wake = loop.create_task(self.wake.wait())
                stopper = loop.create_task(stop.wait())
                # aiomqtt sets this future when the connection drops; waiting on it ends the
                # session at once rather than when a PUBACK times out.
                gone: asyncio.Future[None] = client._disconnected
                waits: list[asyncio.Future[Any]] = [wake, stopper, gone]
                if inflight:
                    waits.append(inflight[0][1])
                timeout = max(0.0, next_summary - loop.time())
                if stopping:
                    timeout = min(timeout, 0.05)
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
                wake.cancel()
                stopper.cancel()
                if gone.done() or not client._client.is_connected():
                    raise aiomqtt.MqttError("the connection to the broker was lost")
        finally:
            for _, task in inflight:
                task.cancel()
            for _, task in inflight:
                with contextlib.suppress(BaseException):
                    await task


def _inflight_mark(inflight: deque[tuple[int, asyncio.Task[None]]], acked: int) -> int:
    return inflight[-1][0] if inflight else acked


def _quiet_closed_socket_callbacks(loop: asyncio.AbstractEventLoop) -> None:
    """aiomqtt registers paho's socket with the loop from callbacks that may run after the
    socket closed (the broker went away): asyncio then reports an ``OSError`` (EBADF) from
    ``add_writer``/``add_reader`` with a traceback. That is a dropped connection, which the
    session already handles: say it at debug level, and leave every other error to the handler
    that was there."""
    previous = loop.get_exception_handler()

    def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        handle = repr(context.get("handle", ""))
        if isinstance(exc, OSError) and ("add_writer" in handle or "add_reader" in handle):
            log.debug("mqtt: a socket callback after the connection closed: %s", exc)
            return
        if previous is not None:
            previous(lp, context)
        else:
            lp.default_exception_handler(context)

    loop.set_exception_handler(handler)


def device_facts(
    hostname: str, procfs: Path, sysfs: Path, samplers: list[str]
) -> dict[str, object]:
    """What a birth says about the device: host, board, CPU, memory, GPUs, thermal zones."""
    from . import __version__
    from .mdns import board_model

    cpu = ""
    mem_total: int | None = None
    try:
        for line in (procfs / "cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and not cpu:
                cpu = value.strip()[:200]
        for line in (procfs / "meminfo").read_text(errors="replace").splitlines():
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass  # not Linux, or a hidden /proc: the facts say less
    zones = []
    with contextlib.suppress(OSError):
        for z in sorted((sysfs / "class" / "thermal").glob("thermal_zone*")):
            with contextlib.suppress(OSError):
                zones.append((z / "type").read_text().strip()[:64])
    gpus = []
    with contextlib.suppress(OSError):
        for g in sorted((procfs / "driver" / "nvidia" / "gpus").iterdir()):
            with contextlib.suppress(OSError):
                for line in (g / "information").read_text().splitlines():
                    if line.startswith("Model:"):
                        gpus.append(line.partition(":")[2].strip()[:100])
    return {
        "host": hostname or socket.gethostname(),
        "board": board_model(procfs, sysfs),
        "cpu": cpu or platform.machine(),
        "cpus": os.cpu_count(),
        "mem_total": mem_total,
        "gpus": gpus,
        "thermal_zones": zones[:64],
        "samplers": samplers,
        "collector": __version__,
    }
