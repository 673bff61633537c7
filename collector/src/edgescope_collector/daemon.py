"""The collector: one asyncio process that ingests, samples, detects, stores and serves.

Wiring (everything on one event loop; blocking reads in worker threads)::

    SDK processes ──▶ IngestServer ──┐
    samplers (to_thread, each tick) ─┼──▶ record() ──▶ SegmentStore ──▶ StreamServer
    stack backends (drained) ────────┘       │              ▲      (segments)      (clients)
                                             └─▶ detectors ─┘ (anomaly events)

The collector reports on itself in its own stream:

- every tick, a :class:`ProcessSample` with ``run = -1`` and its own pid: CPU % of one core
  since the last tick, RSS, peak RSS (VmHWM) and threads;
- an :class:`Event` of kind ``collector_lag`` (severity 1) when a tick starts more than a
  quarter interval late or its sampling takes longer than the interval, with ``lag_ms``,
  ``sample_ms`` and ``skipped_ticks`` in ``detail``: the collector never falls behind silently;
- ``collector`` events when it starts (with the samplers that run, and why the others do not)
  and when it stops, and ``sampler_error`` events when a sampler fails (once per message).

SIGTERM and SIGINT stop it cleanly: sampling and ingest stop, the last frames reach the disk
and the clients (which get ``end``), the segment is closed with its index, the mDNS advert is
withdrawn and the sockets are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING

from edgescope_tracing import Event, ProcessSample, Record, RunEnd, RunStart

from .auth import Authenticator, TokenError, load_token
from .config import Config
from .server import StreamServer
from .store import SegmentStore, StoreError

if TYPE_CHECKING:
    from .mdns import Advertiser
    from .samplers import ProcessWatch, Sampler
    from .stacks import StackBackend

__all__ = ["Collector", "CollectorError", "run"]

log = logging.getLogger("edgescope.collector")

COLLECTOR_RUN = -1
"""The ``run`` of the collector's own samples and events: the device, not a training run."""
POLL_INTERVAL = 0.1


class CollectorError(Exception):
    """The collector cannot start or go on (one sentence); ``exit_code`` for the command."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class SelfMonitor:
    """The collector's own CPU, RSS, peak RSS and threads, read from /proc/self."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._last_cpu = _cpu_seconds()
        self._last_wall = time.monotonic()
        self.cpu_percent = 0.0

    def sample(self, t_us: int) -> ProcessSample:
        cpu, wall = _cpu_seconds(), time.monotonic()
        if wall > self._last_wall:
            self.cpu_percent = 100.0 * (cpu - self._last_cpu) / (wall - self._last_wall)
        self._last_cpu, self._last_wall = cpu, wall
        status = _self_status()
        return ProcessSample(
            run=COLLECTOR_RUN,
            pid=self.pid,
            cpu_percent=round(self.cpu_percent, 3),
            rss=status.get("VmRSS"),
            rss_peak=status.get("VmHWM"),
            threads=status.get("Threads"),
            t_us=t_us,
        )


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _self_status() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                key, _, rest = line.partition(b":")
                if key in (b"VmRSS", b"VmHWM", b"Threads"):
                    value = rest.split()
                    n = int(value[0])
                    out[key.decode()] = n * 1024 if key != b"Threads" else n
    except (OSError, ValueError, IndexError):
        pass  # Not Linux, or /proc is hidden: the sample carries None for these.
    return out


class Collector:
    """One collector instance; :meth:`run` until ``stop`` is set."""

    def __init__(self, cfg: Config, *, hostname: str | None = None) -> None:
        self.cfg = cfg
        self.hostname = hostname or socket.gethostname()
        self.token: bytes | None = None
        if cfg.token_file is not None:
            try:
                self.token, warning = load_token(cfg.token_file)
            except TokenError as e:
                raise CollectorError(str(e), 2) from None
            if warning:
                log.warning("%s", warning)
        self.store = SegmentStore(
            cfg.data_dir,
            max_disk=cfg.max_disk,
            segment_bytes=cfg.segment_size,
            segment_age=cfg.segment_age,
        )
        self.server = StreamServer(
            self.store, Authenticator(self.token), cfg.host, cfg.port, hostname=self.hostname
        )
        self.monitor = SelfMonitor()
        from .detectors import Detectors

        self.detectors: Detectors | None = Detectors()
        self.records_in = 0
        self.rejected = 0
        self._sampler_errors: set[tuple[str, str]] = set()
        self._samplers: list[Sampler] = []
        self._skipped: dict[str, str] = {}
        self._watch: ProcessWatch | None = None
        self._advertiser: Advertiser | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stacks: dict[int, StackBackend] = {}
        """External stack samplers (--profile perf|bpftrace), by run."""
        self._side_tasks: set[asyncio.Task[None]] = set()

    # --- records in ----------------------------------------------------------------------

    def record(self, rec: Record) -> None:
        """Everything enters the stream here, on the event loop."""
        try:
            self.store.append(rec)
        except (TypeError, ValueError) as e:
            # A record that cannot be encoded is refused alone; the stream stays valid.
            self.rejected += 1
            if self.rejected == 1 or self.rejected % 1000 == 0:
                log.warning("refused a record (%d so far): %s", self.rejected, e)
            return
        self.records_in += 1
        if self.detectors is None:
            return
        try:
            events = self.detectors.feed(rec)
        except Exception as e:  # a detector's bug must not stop storing: said once, then off
            self.detectors = None
            self._detector_failed(e)
            return
        for ev in events:
            self.store.append(ev)

    def _detector_failed(self, e: Exception) -> None:
        log.error("detectors stopped after an error: %s: %s", type(e).__name__, e)
        self.store.append(
            Event(
                kind="collector",
                message=f"detectors stopped after an error: {type(e).__name__}: {e}",
                severity=2,
                t_us=time.time_ns() // 1000,
            )
        )

    def _on_run_start(self, rs: RunStart) -> None:
        if self._watch is not None:
            self._watch.add(rs.run, rs.pid)
        log.info("run %d started: %s (pid %d)", rs.run, rs.name, rs.pid)
        if self.cfg.profile != "python":
            self._spawn(self._start_stacks(rs))

    def _on_run_end(self, re: RunEnd) -> None:
        if self._watch is not None:
            self._watch.remove_run(re.run)
        log.info("run %d ended (exit code %s)", re.run, re.exit_code)
        backend = self._stacks.pop(re.run, None)
        if backend is not None:
            self._spawn(self._stop_stacks(backend))

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._side_tasks.add(task)  # referenced until done
        task.add_done_callback(self._side_tasks.discard)

    async def _start_stacks(self, rs: RunStart) -> None:
        from .stacks import StackBackendError, open_backend

        name = self.cfg.profile
        try:
            backend = await asyncio.to_thread(open_backend, name, rs.run, rs.pid)
        except StackBackendError as e:
            self.record(
                Event(
                    kind="stacks",
                    message=f"no {name} stack samples for run {rs.run}: {e}",
                    run=rs.run,
                    severity=1,
                    detail={"backend": name},
                    t_us=time.time_ns() // 1000,
                )
            )
            return
        if not self.store.writable or (self._watch is not None and rs.run not in self._runs()):
            await asyncio.to_thread(backend.stop)  # the run ended (or we stop) meanwhile
            return
        self._stacks[rs.run] = backend
        self.record(
            Event(
                kind="stacks",
                message=f"sampling stacks of run {rs.run} with {name} at {backend.hz} Hz",
                run=rs.run,
                detail={"backend": name, "hz": backend.hz, "pid": rs.pid},
                t_us=time.time_ns() // 1000,
            )
        )

    def _runs(self) -> set[int]:
        return {run for run, _ in self._watch.items()} if self._watch is not None else set()

    async def _stop_stacks(self, backend: StackBackend) -> None:
        for rec in await asyncio.to_thread(backend.stop):
            if self.store.writable:
                self.record(rec)

    # --- life cycle ----------------------------------------------------------------------

    async def run(
        self, stop: asyncio.Event, ready: Callable[[Collector], None] | None = None
    ) -> None:
        cfg = self.cfg
        if cfg.profile != "python":
            from .stacks import backend_problem

            problem = await asyncio.to_thread(backend_problem, cfg.profile)
            if problem is not None:
                raise CollectorError(f"--profile {cfg.profile}: {problem}", 2)
        try:
            # Reading old segments (and repairing one a crash left open) is file I/O.
            await asyncio.to_thread(self.store.open)
        except StoreError as e:
            raise CollectorError(str(e)) from None
        ingest = None
        try:
            try:
                await self.server.start()
            except OSError as e:
                raise CollectorError(
                    f"cannot listen on {cfg.host}:{cfg.port}: {(e.strerror or str(e)).lower()}"
                ) from None
            from .ingest import IngestServer
            from .samplers import ProcessWatch, Roots, default_samplers

            ingest = IngestServer(
                cfg.ingest,
                self.record,
                on_run_start=self._on_run_start,
                on_run_end=self._on_run_end,
                flush=self.store.flush,
            )
            try:
                await ingest.start()
            except OSError as e:
                raise CollectorError(
                    f"cannot open the ingest socket {cfg.ingest}: {(e.strerror or str(e)).lower()}"
                ) from None
            self._watch = ProcessWatch()
            roots = Roots(procfs=cfg.procfs, sysfs=cfg.sysfs)
            self._samplers, self._skipped = await asyncio.to_thread(
                default_samplers, roots, self._watch
            )
            if cfg.mdns:
                await self._advertise()
            self._started_event()
            log.info(
                "listening on %s:%d; ingest at %s; data in %s",
                cfg.host,
                self.server.port,
                cfg.ingest,
                cfg.data_dir,
            )
            if ready is not None:
                ready(self)
            unknown = sorted(set(cfg.rates) - {s.name for s in self._samplers})
            for name in unknown:
                why = self._skipped.get(name, "no sampler has that name")
                log.warning("--sample-every %s: not sampled here (%s)", name, why)
            self._tasks = [asyncio.create_task(self._poll_loop(), name="poll")]
            for k, (interval, group) in enumerate(self._groups()):
                self._tasks.append(
                    asyncio.create_task(
                        self._sample_loop(interval, group, k == 0), name=f"sample-{interval:g}s"
                    )
                )
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait(
                [stopper, *self._tasks], return_when=asyncio.FIRST_COMPLETED
            )
            stopper.cancel()
            for t in done:
                if t is not stopper and t.exception() is not None:
                    raise CollectorError(f"the collector failed: {t.exception()}")
        finally:
            await self._shutdown(ingest)

    async def _shutdown(self, ingest: object) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            # Cancelled just above: their end is expected.
            with contextlib.suppress(asyncio.CancelledError):
                await t
        if ingest is not None:
            close = getattr(ingest, "close", None)
            if close is not None:
                await close()
        if self._side_tasks:
            await asyncio.wait(set(self._side_tasks), timeout=15)
        backends, self._stacks = list(self._stacks.values()), {}
        for backend in backends:
            await self._stop_stacks(backend)
        if self.store.writable:
            if self.detectors is not None:
                try:
                    held = self.detectors.flush()
                except Exception as e:  # as in record(): said, not raised
                    held = []
                    self._detector_failed(e)
                for ev in held:
                    self.store.append(ev)
            for ev in self.store.take_notices():
                self.store.append(ev)
            self.record(
                Event(
                    kind="collector",
                    message="collector stopped",
                    detail={"records": self.records_in, "refused": self.rejected},
                    t_us=time.time_ns() // 1000,
                )
            )
            self.store.flush()
        await self.server.close()
        if self._advertiser is not None:
            try:
                await self._advertiser.close()
            except OSError as e:
                log.warning("could not withdraw the mDNS advert: %s", e)
        self.store.close()
        log.info("stopped")

    async def _advertise(self) -> None:
        from .mdns import Advertiser, board_model

        cfg = self.cfg
        self._advertiser = Advertiser(
            listen_host=cfg.host,
            port=self.server.port,
            hostname=self.hostname,
            board=board_model(cfg.procfs, cfg.sysfs),
            auth=self.token is not None,
        )
        try:
            await self._advertiser.start()
        except OSError as e:
            # mDNS is a convenience: the collector serves without it, and says so.
            self._advertiser = None
            log.warning("not advertising over mDNS: %s", e)

    def _started_event(self) -> None:
        cfg = self.cfg
        self.record(
            Event(
                kind="collector",
                message="collector started",
                detail={
                    "pid": os.getpid(),
                    "host": self.hostname,
                    "listen": f"{cfg.host}:{self.server.port}",
                    "auth": self.token is not None,
                    "interval_s": cfg.interval,
                    "intervals_s": {
                        s.name: cfg.rates.get(s.name, cfg.interval) for s in self._samplers
                    },
                    "samplers": [s.name for s in self._samplers],
                    "skipped": dict(self._skipped),
                    "profile": cfg.profile,
                    "mdns": self._advertiser is not None,
                },
                t_us=time.time_ns() // 1000,
            )
        )

    # --- loops ---------------------------------------------------------------------------

    def _sample_all(
        self, samplers: list[Sampler], main: bool, t_us: int
    ) -> tuple[list[Record], list[tuple[str, str]]]:
        """Runs in a worker thread: each sampler once. Failures are returned, not raised."""
        out: list[Record] = []
        errors: list[tuple[str, str]] = []
        for s in samplers:
            try:
                out.extend(s.sample(t_us))
            except Exception as e:  # one sampler's failure must not stop the rest: reported
                errors.append((s.name, f"{type(e).__name__}: {e}"))
        if main:
            for backend in list(self._stacks.values()):
                out.extend(backend.drain())
                problem = backend.error()
                if problem is not None:
                    errors.append((f"{backend.name} stacks of run {backend.run}", problem))
        return out, errors

    def _groups(self) -> list[tuple[float, list[Sampler]]]:
        """Samplers by interval: ``--interval`` unless ``--sample-every NAME=SECONDS`` says."""
        by: dict[float, list[Sampler]] = {self.cfg.interval: []}
        for s in self._samplers:
            by.setdefault(self.cfg.rates.get(s.name, self.cfg.interval), []).append(s)
        return sorted(by.items(), key=lambda kv: kv[0] != self.cfg.interval)

    async def _sample_loop(self, interval: float, samplers: list[Sampler], main: bool) -> None:
        """One tick every ``interval``; the main loop also drains stacks and samples itself."""
        loop = asyncio.get_running_loop()
        names = ",".join(s.name for s in samplers) or "collector"
        due = loop.time()
        while True:
            due += interval
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            now = loop.time()
            late = now - due
            skipped = 0
            if late >= interval:
                skipped = int(late // interval)
                due += skipped * interval
            t_us = time.time_ns() // 1000
            records, errors = await asyncio.to_thread(self._sample_all, samplers, main, t_us)
            took = loop.time() - now
            for rec in records:
                self.record(rec)
            for name, message in errors:
                self._sampler_error(name, message, t_us)
            if main:
                self.record(self.monitor.sample(t_us))
            if late > max(interval / 4, 0.02) or took > interval:
                self.record(
                    Event(
                        kind="collector_lag",
                        message=f"the collector ran {late * 1000:.0f} ms late "
                        f"(sampling {names} took {took * 1000:.0f} ms)",
                        severity=1,
                        detail={
                            "lag_ms": round(late * 1000, 1),
                            "sample_ms": round(took * 1000, 1),
                            "skipped_ticks": skipped,
                            "samplers": names,
                            "interval_s": interval,
                        },
                        t_us=t_us,
                    )
                )

    def _sampler_error(self, name: str, message: str, t_us: int) -> None:
        if (name, message) in self._sampler_errors:
            return
        self._sampler_errors.add((name, message))
        log.warning("sampler %s failed: %s", name, message)
        self.record(
            Event(
                kind="sampler_error",
                message=f"sampler {name} failed: {message}",
                severity=1,
                detail={"sampler": name},
                t_us=t_us,
            )
        )

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            self.store.poll()
            for ev in self.store.take_notices():  # the disk full, or writing again
                self.record(ev)


def run(cfg: Config, ready: Callable[[Collector], None] | None = None) -> int:
    """Run a collector in this process until SIGTERM or SIGINT; the exit code."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        try:
            await Collector(cfg).run(stop, ready)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    asyncio.run(main())
    return 0


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="edgescope collector: %(message)s",
    )
