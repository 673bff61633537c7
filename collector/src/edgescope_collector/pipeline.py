"""The one pipeline: ingest → sample → detect → encode → sink, which the daemon and ``record`` run.

::

    SDK processes ──▶ IngestServer ──┐
    samplers (to_thread, each tick) ─┼──▶ Pipeline.record() ──▶ Sink (store | one file)
    stack backends (drained) ────────┘         │                  ▲
                                               └──▶ detectors ────┘ (anomaly events)

What enters the stream enters it through :meth:`Pipeline.record`, on the event loop: into the
sink, then through the detectors, whose events go into the sink too; each record the sink took
is also shown to the pipeline's ``observers`` (the daemon's Prometheus exporter). A record the
sink cannot encode is refused alone (counted, said once per thousand); a detector or an observer
that raises is turned off and said, and storing goes on; a sampler that raises is said once per
message and goes on being asked. Samplers run in worker threads, grouped by interval; each tick
that starts late, or whose sampling outlasts the interval, is said in a ``collector_lag`` event.

The daemon (:mod:`.daemon`) puts a :class:`StoreSink` under it and adds the stream server, the
mDNS advert and its own process samples; ``edgescope record`` puts a single trace file under it
and adds the command it runs. The differences that remain are deliberate:

- the sink: the daemon's segment ring, served to clients; ``record``'s one file;
- stack backends (``--profile perf|bpftrace``): the daemon attaches one to each SDK run as it
  starts (``stacks_per_run``); ``record`` attaches one to its command's pid
  (:meth:`Pipeline.attach_stacks`);
- the daemon samples itself (``self_monitor``: a ``run = -1`` process sample each main tick) and
  takes per-sampler intervals (``--sample-every``); ``record`` samples at one interval;
- sources that cannot be sampled: the daemon lists them in its ``collector started`` event;
  ``record`` writes one ``not sampled`` event per source (what ``inspect`` shows).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from edgescope_tracing import Event, ProcessSample, Record, RunEnd, RunStart

from .errors import CollectorError

if TYPE_CHECKING:
    from edgescope_tracing import TraceWriter

    from .detectors import Detectors
    from .ingest import IngestServer
    from .samplers import ProcessWatch, Roots, Sampler
    from .stacks import StackBackend
    from .store import SegmentStore

__all__ = ["POLL_INTERVAL", "FileSink", "Pipeline", "Sink", "StoreSink"]

log = logging.getLogger("edgescope.collector")

POLL_INTERVAL = 0.1
"""Seconds between the sink's polls (its time-based flushes and its notices)."""


class Sink(Protocol):
    """Where the stream goes. ``append`` raises ``TypeError``/``ValueError`` (or a
    ``TraceError``) for a record that cannot be encoded; its own I/O trouble it handles itself,
    and says through :meth:`poll`."""

    @property
    def writable(self) -> bool:
        """Whether it still takes records (False once closed, or after it gave up)."""
        ...

    def append(self, rec: Record) -> object: ...

    def poll(self) -> list[Event]:
        """Write what waited long enough; the events it has to tell (a full disk, say)."""
        ...

    def flush(self) -> None: ...


class StoreSink:
    """The daemon's segment ring as a :class:`Sink`."""

    def __init__(self, store: SegmentStore) -> None:
        self.store = store

    @property
    def writable(self) -> bool:
        return self.store.writable

    def append(self, rec: Record) -> object:
        return self.store.append(rec)

    def poll(self) -> list[Event]:
        self.store.poll()
        return self.store.take_notices()

    def flush(self) -> None:
        self.store.flush()


class FileSink:
    """One trace file as a :class:`Sink` (``edgescope record``). A write that fails (a full
    disk, a file size limit) is said once through ``say``; the file then takes nothing more
    and what it held up to the last whole frame stays readable."""

    def __init__(self, writer: TraceWriter, say: Callable[[str], None]) -> None:
        self.writer = writer
        self.say = say
        self.error: str | None = None
        """Why writing stopped, once it has."""
        self.records = 0

    @property
    def writable(self) -> bool:
        return self.error is None and not self.writer.closed

    def _failed(self, e: OSError) -> None:
        self.error = f"writing {self.writer.path} failed: {e.strerror or e}"
        self.say(self.error)

    def append(self, rec: Record) -> object:
        if not self.writable:
            return None
        try:
            seq = self.writer.append(rec)
        except OSError as e:
            self._failed(e)
            return None
        self.records += 1
        return seq

    def poll(self) -> list[Event]:
        if self.writable:
            try:
                self.writer.poll()
            except OSError as e:
                self._failed(e)
        return []

    def flush(self) -> None:
        if self.writable:
            try:
                self.writer.flush()
            except OSError as e:
                self._failed(e)


class Pipeline:
    """Ingest, samplers, stack backends and detectors, feeding one :class:`Sink`.

    :meth:`open` starts the ingest socket and the samplers, :meth:`start` the loops;
    :meth:`close` stops them in order, flushing the detectors' held events into the sink.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        ingest_path: Path,
        roots: Roots,
        interval: float,
        rates: Mapping[str, float] | None = None,
        profile: str = "python",
        stacks_per_run: bool = True,
        self_sample: Callable[[int], ProcessSample] | None = None,
        say: Callable[[str], None] | None = None,
        on_run_start: Callable[[RunStart], None] | None = None,
        on_run_end: Callable[[RunEnd], None] | None = None,
    ) -> None:
        from .detectors import Detectors
        from .samplers import ProcessWatch

        self.sink = sink
        self.ingest_path = ingest_path
        self.roots = roots
        self.interval = interval
        self.rates = dict(rates or {})
        self.profile = profile
        self.stacks_per_run = stacks_per_run and profile != "python"
        self.self_sample = self_sample
        """The daemon's own process sample, taken every main tick (``None``: not sampled)."""
        self.say = say or (lambda line: log.warning("%s", line))
        """Where a warning goes: the daemon's log, ``record``'s closing notes."""
        self._on_run_start = on_run_start
        self._on_run_end = on_run_end
        self.first_run = 0
        """Where the run numbers of this session start (the daemon: above its store's)."""
        self.detectors: Detectors | None = Detectors()
        self.watch: ProcessWatch = ProcessWatch()
        self.samplers: list[Sampler] = []
        self.skipped: dict[str, str] = {}
        """Sources this machine cannot sample, and why."""
        self.ingest: IngestServer | None = None
        self.records_in = 0
        self.rejected = 0
        self._sampler_errors: set[tuple[str, str]] = set()
        self._stacks: dict[int, StackBackend] = {}
        """External stack samplers (--profile perf|bpftrace), by run."""
        self.observers: list[Callable[[Record], None]] = []
        """Called with each record the sink took (the Prometheus exporter); one that raises
        is said once and removed, and storing goes on."""
        self._tasks: list[asyncio.Task[None]] = []
        self._side_tasks: set[asyncio.Task[None]] = set()

    # --- records in ----------------------------------------------------------------------

    def record(self, rec: Record) -> None:
        """Everything enters the stream here, on the event loop."""
        from edgescope_tracing import TraceError

        if isinstance(rec, RunEnd) and rec.cause is None:
            rec = self._end_cause(rec)
        try:
            self.sink.append(rec)
        except (TypeError, ValueError, TraceError) as e:
            # A record that cannot be encoded is refused alone; the stream stays valid.
            self.rejected += 1
            if self.rejected == 1 or self.rejected % 1000 == 0:
                self.say(f"a {type(rec).__name__} record was refused ({self.rejected} so far): {e}")
            return
        self.records_in += 1
        if self.observers:
            self._observe(rec)
        if self.detectors is None:
            return
        try:
            events = self.detectors.feed(rec)
        except Exception as e:  # a detector's bug must not stop storing: said once, then off
            self._detectors_failed(e)
            return
        for ev in events:
            self._append(ev)

    def _end_cause(self, end: RunEnd) -> RunEnd:
        """The run end, with why the run ended where the run's cgroup says (the OOM killer):
        first the cgroup's last figures, if the run's process has gone (see
        ``ProcessSampler.final_sample``), then the detectors' verdict."""
        from .samplers.process import ProcessSampler

        for sampler in self.samplers:
            if isinstance(sampler, ProcessSampler):
                last = sampler.final_sample(end.run, end.t_us)
                if last is not None:
                    self.record(last)
        if self.detectors is None:
            return end
        cause = self.detectors.end_cause(end)
        return end if cause is None else dataclasses.replace(end, cause=cause)

    def _append(self, rec: Record) -> None:
        """Into the sink without the detectors (their own events, the sink's notices)."""
        from edgescope_tracing import TraceError

        try:
            self.sink.append(rec)
        except (TypeError, ValueError, TraceError) as e:
            self.rejected += 1
            self.say(f"a {type(rec).__name__} record was refused: {e}")
            return
        if self.observers:
            self._observe(rec)

    def _observe(self, rec: Record) -> None:
        for observer in list(self.observers):
            try:
                observer(rec)
            except Exception as e:  # an observer's bug must not stop storing: said, then off
                self.observers.remove(observer)
                why = f"{getattr(observer, '__qualname__', observer)} stopped: {e!r}"
                log.error("%s", why)
                self.say(why)

    def event(
        self,
        message: str,
        *,
        kind: str = "collector",
        severity: int = 0,
        run: int = -1,
        t_us: int | None = None,
        detail: Mapping[str, object] | None = None,
    ) -> None:
        """An event of the collector's own into the stream (through the detectors)."""
        self.record(
            Event(
                kind=kind,
                message=message,
                run=run,
                severity=severity,
                detail=dict(detail or {}),
                t_us=time.time_ns() // 1000 if t_us is None else t_us,
            )
        )

    def _detectors_failed(self, e: Exception) -> None:
        self.detectors = None
        why = f"detectors stopped after an error: {type(e).__name__}: {e}"
        log.error("%s", why)
        self.say(why)
        self._append(Event(kind="collector", message=why, severity=2, t_us=time.time_ns() // 1000))

    def _run_started(self, rs: RunStart) -> None:
        self.watch.add(rs.run, rs.pid)
        log.info("run %d started: %s (pid %d)", rs.run, rs.name, rs.pid)
        if self._on_run_start is not None:
            self._on_run_start(rs)
        if self.stacks_per_run:
            self._spawn(self.attach_stacks(rs.run, rs.pid))

    def _run_ended(self, re: RunEnd) -> None:
        self.watch.remove_run(re.run)
        log.info("run %d ended (exit code %s)", re.run, re.exit_code)
        if self._on_run_end is not None:
            self._on_run_end(re)
        backend = self._stacks.pop(re.run, None)
        if backend is not None:
            self._spawn(self._stop_stacks(backend))

    def _spawn(self, coro: Coroutine[object, object, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._side_tasks.add(task)  # referenced until done
        task.add_done_callback(self._side_tasks.discard)

    # --- stacks from outside (perf, bpftrace) --------------------------------------------

    async def attach_stacks(self, run: int, pid: int) -> None:
        """Sample ``pid``'s stacks with the ``profile`` backend for ``run``; a backend that
        cannot start is said in a ``stacks`` event, and the run goes on without stacks."""
        from .stacks import StackBackendError, open_backend

        name = self.profile
        try:
            backend = await asyncio.to_thread(open_backend, name, run, pid)
        except StackBackendError as e:
            self.event(
                f"no {name} stack samples for run {run}: {e}",
                kind="stacks",
                run=run,
                severity=1,
                detail={"backend": name},
            )
            return
        if not self.sink.writable or run not in {r for r, _ in self.watch.items()}:
            await asyncio.to_thread(backend.stop)  # the run ended (or we stop) meanwhile
            return
        self._stacks[run] = backend
        self.event(
            f"sampling stacks of run {run} with {name} at {backend.hz} Hz",
            kind="stacks",
            run=run,
            detail={"backend": name, "hz": backend.hz, "pid": pid},
        )

    async def detach_stacks(self, run: int) -> StackBackend | None:
        """Stop ``run``'s stack backend now (its last samples go in); the backend it stopped,
        for what it can still tell (its frames), or None when the run had none."""
        backend = self._stacks.pop(run, None)
        if backend is not None:
            await self._stop_stacks(backend)
        return backend

    async def _stop_stacks(self, backend: StackBackend) -> None:
        error = backend.error()
        for rec in await asyncio.to_thread(backend.stop):
            if self.sink.writable:
                self.record(rec)
        if error is not None and self.sink.writable:
            self.event(
                f"{backend.name} stacks of run {backend.run}: {error}",
                kind="stacks",
                run=backend.run,
                severity=1,
            )

    # --- life cycle ----------------------------------------------------------------------

    async def open(self) -> None:
        """Open the ingest socket and find the samplers this machine has."""
        from .ingest import IngestServer
        from .samplers import default_samplers

        self.ingest = IngestServer(
            self.ingest_path,
            self.record,
            on_run_start=self._run_started,
            on_run_end=self._run_ended,
            flush=self._flush_sink,
        )
        self.ingest.runs_from(self.first_run)
        try:
            await self.ingest.start()
        except OSError as e:
            self.ingest = None
            raise CollectorError(
                f"cannot open the ingest socket {self.ingest_path}: "
                f"{(e.strerror or str(e)).lower()}"
            ) from None
        try:
            self.samplers, self.skipped = await asyncio.to_thread(
                default_samplers, self.roots, self.watch
            )
        except (OSError, ImportError) as e:
            self.samplers, self.skipped = [], {"all samplers": f"they could not start: {e}"}
            self.say(f"no system or process samples: {e}")

    def start(self) -> list[asyncio.Task[None]]:
        """Start the poll loop and one sampling loop per interval; the tasks, for the caller
        to watch (a loop that fails ends with its exception)."""
        unknown = sorted(set(self.rates) - {s.name for s in self.samplers})
        for name in unknown:
            why = self.skipped.get(name, "no sampler has that name")
            self.say(f"--sample-every {name}: not sampled here ({why})")
        self._tasks = [asyncio.create_task(self._poll_loop(), name="poll")]
        for k, (interval, group) in enumerate(self._groups()):
            self._tasks.append(
                asyncio.create_task(
                    self._sample_loop(interval, group, k == 0), name=f"sample-{interval:g}s"
                )
            )
        return list(self._tasks)

    def intervals(self) -> dict[str, float]:
        """Each sampler's interval, by name."""
        return {s.name: self.rates.get(s.name, self.interval) for s in self.samplers}

    async def close(self) -> None:
        """Stop sampling and ingest, stop the stack backends (their last samples go in), and
        flush the detectors' held events and the sink's notices into the sink."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            # Cancelled just above: their end is expected.
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        if self.ingest is not None:
            await self.ingest.close()
        if self._side_tasks:
            await asyncio.wait(set(self._side_tasks), timeout=15)
        backends, self._stacks = list(self._stacks.values()), {}
        for backend in backends:
            await self._stop_stacks(backend)
        if not self.sink.writable:
            return
        if self.detectors is not None:
            try:
                held = self.detectors.flush()
            except Exception as e:  # as in record(): said, not raised
                held = []
                self._detectors_failed(e)
            for ev in held:
                self._append(ev)
        for ev in self.sink.poll():
            self._append(ev)

    def _flush_sink(self) -> None:
        """Before an acknowledgement to a producer: what it sent is written (OSError if not,
        and no acknowledgement goes out: the producer keeps what it sent)."""
        self.sink.flush()
        if not self.sink.writable:
            raise OSError("the stream's sink takes nothing more")

    def close_samplers(self) -> None:
        for s in self.samplers:
            with contextlib.suppress(Exception):  # a sampler's close must not cost the trace
                s.close()

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
        """Samplers by interval: ``interval`` unless ``rates`` says otherwise for a name."""
        by: dict[float, list[Sampler]] = {self.interval: []}
        for s in self.samplers:
            by.setdefault(self.rates.get(s.name, self.interval), []).append(s)
        return sorted(by.items(), key=lambda kv: kv[0] != self.interval)

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
            if main and self.self_sample is not None:
                self.record(self.self_sample(t_us))
            if late > max(interval / 4, 0.02) or took > interval:
                self.event(
                    f"the collector ran {late * 1000:.0f} ms late "
                    f"(sampling {names} took {took * 1000:.0f} ms)",
                    kind="collector_lag",
                    severity=1,
                    t_us=t_us,
                    detail={
                        "lag_ms": round(late * 1000, 1),
                        "sample_ms": round(took * 1000, 1),
                        "skipped_ticks": skipped,
                        "samplers": names,
                        "interval_s": interval,
                    },
                )

    def _sampler_error(self, name: str, message: str, t_us: int) -> None:
        if (name, message) in self._sampler_errors:
            return
        self._sampler_errors.add((name, message))
        log.warning("sampler %s failed: %s", name, message)
        self.event(
            f"sampler {name} failed: {message}",
            kind="sampler_error",
            severity=1,
            t_us=t_us,
            detail={"sampler": name},
        )

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            for ev in self.sink.poll():  # the disk full, or writing again
                self.record(ev)
