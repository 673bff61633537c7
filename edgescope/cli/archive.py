"""``edgescope archive --mqtt URL -o DIR``: the whole fleet from a broker, one trace per device
and day.

Subscribes to every device's data (``edgescope/v1/+/data``, QoS 1, a persistent session:
the broker keeps what comes while the archiver is away) and open runs (``+/runs``: a device it
first hears of mid-run has its run start written before its records), and writes
``DIR/<device>/<device>-<UTC day>.est``, normal traces that ``inspect``, ``replay`` and
``export`` read. Records keep their order; a batch whose range does not start where the last
one ended is a gap, written into the trace as a ``gap`` event (``detail``: ``from_seq``,
``to_seq``, ``dropped``, ``from_us``, ``to_us``, ``reason``: whether the device's ring no
longer held them, or the broker did not deliver them). A batch already archived (sent again
after broker trouble) is skipped.

Nothing acknowledged is lost: messages are acknowledged to the broker (PUBACK, by hand) only
after their records are in the file and the device's checkpoint (``.<device>.cursor``: the
file's length and encoder state, the next device ``seq``) is written beside it. On a restart the
archiver cuts each file back to its checkpoint and goes on from it, and the broker sends again
whatever was not acknowledged. A broker restart is a reconnection. A payload that is not what it
claims is counted and said (a few lines, then a count), acknowledged, and never stops the
archiver.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
from edgescope_tracing import Event, RunStart, TraceError, TraceWriter
from edgescope_tracing.files import NotRegularFileError, read_regular
from edgescope_tracing.fleet import (
    TOPIC_ROOT,
    Batch,
    FleetPayloadError,
    decode_batch,
    decode_runs,
    parse_topic,
)

from edgescope.errors import EdgescopeError, UsageError

if TYPE_CHECKING:
    import aiomqtt

__all__ = ["Archiver", "DeviceArchive", "add_parser"]

log = logging.getLogger("edgescope.archive")

CURSOR_SUFFIX = ".cursor"
ACK_INTERVAL = 0.25
"""Seconds between checkpoints (flush, cursor, acknowledgements)."""


def add_parser(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "archive",
        help="archive the fleet from an MQTT broker: one trace per device and day",
        description="Subscribe to every device on the broker and write one trace per device "
        "and day (docs/fleet.md).",
    )
    p.add_argument(
        "--mqtt", metavar="URL", required=True, help="mqtt://[user@]host[:port] or mqtts://"
    )
    p.add_argument("-o", "--output", metavar="DIR", required=True, help="where the traces go")
    p.add_argument("--mqtt-ca", metavar="FILE", help="CA certificate(s) for mqtts://")
    p.add_argument("--mqtt-password-file", metavar="FILE", help="file holding the broker password")
    p.add_argument(
        "--client-id",
        metavar="ID",
        default="edgescope-archiver",
        help="the persistent session's id on the broker (default edgescope-archiver; one per "
        "archiver)",
    )
    p.set_defaults(func=_run)


def _day(t: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(t))


@dataclass
class DeviceArchive:
    """One device's traces: the open day file, its checkpoint, the next ``seq`` expected."""

    root: Path
    device: str
    writer: TraceWriter | None = None
    day: str | None = None
    next_seq: int | None = None
    records = 0
    duplicates = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)
    dirty = False

    @property
    def dir(self) -> Path:
        return self.root / self.device

    @property
    def cursor_path(self) -> Path:
        return self.dir / f".{self.device}{CURSOR_SUFFIX}"

    def _load_cursor(self) -> dict[str, Any] | None:
        try:
            data = read_regular(self.cursor_path)  # a FIFO there would hang read_bytes()
        except FileNotFoundError:
            return None
        except NotRegularFileError as e:
            log.warning("archive: %s; %s starts a new file", e, self.device)
            return None
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
            if type(obj) is not dict:
                raise ValueError("not a map")
            return obj
        except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError) as e:
            log.warning("archive: %s is damaged (%s); %s starts a new file", self.cursor_path, e,
                        self.device)  # fmt: skip
            return None

    def open(self, day: str) -> None:
        """The day's file: resumed from the checkpoint where there is one, else a new one."""
        self.dir.mkdir(parents=True, exist_ok=True)
        cur = self._load_cursor()
        runs: dict[int, RunStart] = {}
        if cur is not None:
            self.next_seq = cur.get("next") if type(cur.get("next")) is int else None
            name = cur.get("file")
            if cur.get("day") == day and type(name) is str and "/" not in name:
                try:
                    self.writer = TraceWriter.resume(self.dir / name, cur["writer"])
                    self.day = day
                    return
                except (OSError, TraceError, KeyError) as e:
                    log.warning("archive: cannot go on writing %s (%s): a new file", name, e)
            runs = self._runs_of(cur)
        self._new_file(day, runs)

    @staticmethod
    def _runs_of(cur: dict[str, Any]) -> dict[int, RunStart]:
        try:
            return {r.run: r for r in TraceWriter.checkpoint_runs(cur["writer"])}
        except (KeyError, TypeError, TraceError) as e:
            log.warning("archive: the runs of the last checkpoint cannot be read (%s)", e)
            return {}

    def _new_file(self, day: str, runs: dict[int, RunStart]) -> None:
        base = f"{self.device}-{day}"
        path = self.dir / f"{base}.est"
        n = 0
        while os.path.lexists(path):  # never overwrite a file (nor a link): another part of the day
            n += 1
            path = self.dir / f"{base}.{n}.est"
        self.writer = TraceWriter(path, exclusive=True, flush_interval=3600)
        self.day = day
        for r in runs.values():
            self.writer.append(r)  # the runs still open restated at the top of the new day
        self.dirty = True

    def roll(self, day: str) -> None:
        """A new UTC day: the old file is closed (with its index), the new one restates runs."""
        assert self.writer is not None
        runs = self.writer.runs
        self.writer.close()
        self._new_file(day, runs)

    def take(self, batch: Batch, now: float) -> None:
        day = _day(now)
        if self.writer is None:
            self.open(day)
        elif day != self.day:
            self.roll(day)
        w = self.writer
        assert w is not None
        expected = self.next_seq
        if expected is not None and batch.next <= expected:
            self.duplicates += 1  # sent again after broker trouble: already here
            return
        if expected is not None and batch.first > expected:
            self._gap(expected, batch)
        elif expected is None and batch.gap is not None:
            self._gap(batch.gap[0], batch)  # the first we hear of it: its own ring's gap
        open_runs = w.runs
        for rec in batch.records:
            if expected is not None and rec.seq < expected:
                continue
            if isinstance(rec, RunStart) and _same_run(open_runs.get(rec.run), rec):
                continue  # already written from the device's runs message
            w.append(rec)
            self.records += 1
        self.next_seq = batch.next
        self.dirty = True

    def runs(self, runs: list[RunStart], now: float) -> None:
        """The device's open runs (its retained ``runs``): any this archive does not have open
        yet (it joined mid-run, or a new day) is written, so that its records have their run."""
        day = _day(now)
        if self.writer is None:
            self.open(day)
        elif day != self.day:
            self.roll(day)
        assert self.writer is not None
        open_runs = self.writer.runs
        for r in runs:
            if not _same_run(open_runs.get(r.run), r):
                self.writer.append(r)
                self.dirty = True

    def _gap(self, expected: int, batch: Batch) -> None:
        assert self.writer is not None
        last = batch.first - 1
        # The device says which of them its ring no longer held; the rest the broker lost.
        said = batch.gap is not None and batch.gap[0] <= expected <= batch.gap[1]
        reason = (
            "the device's ring no longer held them"
            if said
            else "the broker did not deliver them (its queue overflowed, or it lost them)"
        )
        t = batch.records[0].t_us if batch.records else time.time_ns() // 1000
        self.gaps.append((expected, last))
        log.warning("archive: %s: seq %d-%d missing: %s", self.device, expected, last, reason)
        self.writer.append(
            Event(
                kind="gap",
                message=f"{self.device}: records seq {expected}-{last} are missing: {reason}",
                severity=1,
                detail={
                    "device": self.device,
                    "from_seq": expected,
                    "to_seq": last,
                    "dropped": last - expected + 1,
                    "from_us": t,
                    "to_us": t,
                    "reason": reason,
                },
                t_us=t,
            )
        )

    def checkpoint(self) -> None:
        """Frames to the file, then the cursor beside it (written whole, then renamed)."""
        if not self.dirty or self.writer is None:
            return
        self.writer.flush()
        cur = {
            "file": self.writer.path.name,
            "day": self.day,
            "next": self.next_seq,
            "writer": self.writer.checkpoint(),
        }
        tmp = self.cursor_path.with_name(self.cursor_path.name + ".tmp")
        _write_new(tmp, msgpack.packb(cur, use_bin_type=True))
        os.replace(tmp, self.cursor_path)
        self.dirty = False

    def close(self) -> None:
        if self.writer is not None and not self.writer.closed:
            self.checkpoint()
            # Not closed with an index: the next start goes on in this file (a reader rebuilds
            # the index by a scan; a new day closes the old file properly).
            self.writer.close(index=False)


def _write_new(path: Path, data: bytes) -> None:
    """``data`` into a file created new at ``path`` (``O_EXCL|O_NOFOLLOW``: never through a
    symbolic link or into a FIFO put there). One a killed archiver left is removed first.

    Not :func:`edgescope_tracing.files.open_binary_output`: that one fsyncs, and a cursor is
    written four times a second per device, beside a trace that is not synced either."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        path.unlink()  # removes the name (a link, a FIFO), never what a link points at
        fd = os.open(path, flags, 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _same_run(a: RunStart | None, b: RunStart) -> bool:
    return a is not None and a.run_id == b.run_id


class Archiver:
    """Many devices' archives, fed by decoded messages; acknowledgements wait for checkpoints."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.devices: dict[str, DeviceArchive] = {}
        self.malformed = 0
        self.messages = 0
        self._said_malformed = 0

    def device(self, name: str) -> DeviceArchive:
        d = self.devices.get(name)
        if d is None:
            d = self.devices[name] = DeviceArchive(self.root, name)
        return d

    def handle(self, topic: str, payload: bytes, now: float | None = None) -> None:
        """One message from the broker (never raises for what a message holds)."""
        self.messages += 1
        where = parse_topic(topic)
        if where is None or where[1] not in ("data", "runs") or not payload:
            return
        t = time.time() if now is None else now
        try:
            if where[1] == "runs":
                device, runs = decode_runs(payload)
                if device != where[0]:
                    raise FleetPayloadError(f"names device {device!r} on {where[0]!r}'s topic")
                self.device(where[0]).runs(runs, t)
                return
            batch = decode_batch(payload)
        except FleetPayloadError as e:
            self._malformed(topic, str(e))
            return
        self.device(where[0]).take(batch, t)

    def _malformed(self, topic: str, why: str) -> None:
        self.malformed += 1
        if self._said_malformed < 5:
            self._said_malformed += 1
            log.warning("archive: ignored a message on %s: %s", ascii(topic)[:120], why)
        elif self.malformed % 1000 == 0:
            log.warning("archive: %d malformed messages ignored so far", self.malformed)

    def checkpoint(self) -> None:
        for d in self.devices.values():
            d.checkpoint()

    def close(self) -> None:
        for d in self.devices.values():
            d.close()


async def archive(
    url: str,
    root: Path,
    stop: asyncio.Event,
    *,
    password_file: str | None = None,
    ca_file: str | None = None,
    client_id: str = "edgescope-archiver",
    archiver: Archiver | None = None,
    retry: float = 0.5,
) -> Archiver:
    """Archive until ``stop`` is set; reconnects after broker trouble."""
    import aiomqtt
    from edgescope_tracing.fleet import client_options, parse_broker_url

    try:
        broker = parse_broker_url(url)
        opts = client_options(broker, password_file=password_file, ca_file=ca_file)
    except ValueError as e:
        raise UsageError(f"--mqtt: {e}") from None
    arch = archiver or Archiver(root)
    said: str | None = None
    pause = retry
    try:
        while not stop.is_set():
            client = aiomqtt.Client(
                **opts,
                identifier=client_id,
                clean_session=False,
                keepalive=10,
                logger=logging.getLogger("edgescope.archive.paho"),
            )
            client._client.manual_ack_set(True)  # acknowledged once on disk (module docstring)
            try:
                async with client:
                    await client.subscribe(f"{TOPIC_ROOT}/+/data", qos=1)
                    await client.subscribe(f"{TOPIC_ROOT}/+/runs", qos=1)
                    log.info("archive: subscribed to %s on %s", TOPIC_ROOT, broker)
                    said, pause = None, retry
                    await _consume(client, arch, stop)
            except aiomqtt.MqttCodeError as e:
                if "not authori" in str(e).lower() or getattr(e, "rc", None) in (4, 5, 134, 135):
                    raise EdgescopeError(f"the broker refused the archiver: {e}") from None
                said = _say_trouble(said, broker, e)
            except aiomqtt.MqttError as e:
                said = _say_trouble(said, broker, e)
            arch.checkpoint()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)
            pause = min(10.0, pause * 2)
    finally:
        arch.close()
    return arch


def _say_trouble(said: str | None, broker: object, e: Exception) -> str:
    text = str(e) or type(e).__name__
    if text != said:
        log.warning("archive: %s: %s; reconnecting", broker, text)
    return text


async def _consume(client: aiomqtt.Client, arch: Archiver, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    unacked: list[int] = []
    next_ack = loop.time() + ACK_INTERVAL
    messages = aiter(client.messages)
    getter: asyncio.Task[aiomqtt.Message] | None = None
    stopper = loop.create_task(stop.wait())
    try:
        while not stop.is_set():
            if getter is None:
                getter = loop.create_task(anext(messages))  # type: ignore[arg-type]
            timeout = max(0.0, next_ack - loop.time())
            await asyncio.wait(
                [getter, stopper], timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if getter.done():
                msg = getter.result()  # an MqttError (the connection went) ends the session
                getter = None
                payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else b""
                arch.handle(str(msg.topic), bytes(payload))
                if msg.qos > 0:
                    unacked.append(msg.mid)
                while len(client.messages) and len(unacked) < 5000:
                    m = await anext(messages)
                    p = m.payload if isinstance(m.payload, bytes | bytearray) else b""
                    arch.handle(str(m.topic), bytes(p))
                    if m.qos > 0:
                        unacked.append(m.mid)
            if loop.time() >= next_ack or len(unacked) >= 5000:
                next_ack = loop.time() + ACK_INTERVAL
                arch.checkpoint()
                for mid in unacked:
                    client._client.ack(mid, 1)
                unacked.clear()
        arch.checkpoint()
        for mid in unacked:
            client._client.ack(mid, 1)
    finally:
        stopper.cancel()
        if getter is not None:
            getter.cancel()
            with contextlib.suppress(BaseException):
                await getter


def _run(args: argparse.Namespace) -> int:
    from edgescope_tracing.fleet import parse_broker_url

    try:
        parse_broker_url(args.mqtt)
    except ValueError as e:
        raise UsageError(f"--mqtt: {e}") from None
    root = Path(args.output)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"-o {root}: {e.strerror or e}") from None
    if not os.access(root, os.W_OK):
        raise UsageError(f"-o {root}: not writable")
    logging.basicConfig(level=logging.INFO, format="edgescope: %(message)s", stream=sys.stderr)

    async def main() -> Archiver:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        return await archive(
            args.mqtt,
            root,
            stop,
            password_file=args.mqtt_password_file,
            ca_file=args.mqtt_ca,
            client_id=args.client_id,
        )

    arch = asyncio.run(main())
    n = sum(d.records for d in arch.devices.values())
    gaps = sum(len(d.gaps) for d in arch.devices.values())
    print(
        f"archived {n} records from {len(arch.devices)} device(s) into {root}; "
        f"{gaps} gap(s), {arch.malformed} malformed message(s) ignored",
        file=sys.stderr,
    )
    return 0
