"""The collector: one asyncio process that ingests, samples, detects, stores and serves.

Wiring (everything on one event loop; blocking reads in worker threads): the pipeline that
``edgescope record`` runs too (:mod:`.pipeline`), into the segment store, which the stream
server serves::

    SDK processes ──▶ IngestServer ──┐
    samplers (to_thread, each tick) ─┼──▶ Pipeline.record() ──▶ SegmentStore ──▶ StreamServer
    stack backends (drained) ────────┘         │                  ▲   (segments)   (clients)
                                               └──▶ detectors ────┘ (anomaly events)

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
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from edgescope_tracing import Event, ProcessSample, Record, RunEnd
from edgescope_tracing.extras import NOT_INSTALLED, not_installed

from .auth import Authenticator, TokenError, load_token
from .config import Config
from .errors import CollectorError
from .pipeline import Pipeline, StoreSink
from .server import StreamServer
from .store import SegmentStore, StoreError

if TYPE_CHECKING:
    from .mdns import Advertiser
    from .mqtt import MqttPublisher
    from .prometheus import PrometheusExporter

__all__ = ["Collector", "CollectorError", "run"]

log = logging.getLogger("edgescope.collector")

COLLECTOR_RUN = -1
"""The ``run`` of the collector's own samples and events: the device, not a training run."""


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
    """One collector instance: the :class:`~.pipeline.Pipeline` into the segment store, the
    stream server, the mDNS advert and its own samples; :meth:`run` until ``stop`` is set."""

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
        self.mqtt: MqttPublisher | None = None
        self._mqtt_task: asyncio.Task[None] | None = None
        self._mqtt_stop = asyncio.Event()
        self._session_seq = 0
        from .samplers import Roots

        self.pipeline = Pipeline(
            StoreSink(self.store),
            ingest_path=cfg.ingest,
            roots=Roots(procfs=cfg.procfs, sysfs=cfg.sysfs),
            interval=cfg.interval,
            rates=cfg.rates,
            profile=cfg.profile,
            stacks_per_run=True,
            self_sample=self.monitor.sample,
        )
        self._advertiser: Advertiser | None = None
        self.exporter: PrometheusExporter | None = None
        if cfg.prometheus is not None:
            self.exporter = _exporter(cfg.prometheus, self.token)
            self.pipeline.observers.append(self.exporter.observe)

    def record(self, rec: Record) -> None:
        """Everything enters the stream here, on the event loop (see :class:`.Pipeline`)."""
        self.pipeline.record(rec)

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
        self._session_seq = self.store.next_seq
        self._end_orphans()
        self.pipeline.first_run = self.store.next_run
        try:
            try:
                await self.server.start()
            except OSError as e:
                raise CollectorError(
                    f"cannot listen on {cfg.host}:{cfg.port}: {(e.strerror or str(e)).lower()}"
                ) from None
            if self.exporter is not None:
                self.exporter.start()
            await self.pipeline.open()
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
            if self.exporter is not None:
                log.info(
                    "prometheus metrics on http://%s:%d/metrics",
                    self.exporter.host,
                    self.exporter.port,
                )
            if cfg.mqtt is not None:
                self._start_mqtt()
            if ready is not None:
                ready(self)
            tasks = self.pipeline.start()
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
            stopper.cancel()
            for t in done:
                if t is not stopper and t.exception() is not None:
                    raise CollectorError(f"the collector failed: {t.exception()}")
        finally:
            await self._shutdown()

    def _end_orphans(self) -> None:
        """End the runs the last session left open as lost contact, before anything new comes
        (an SDK that is still running re-attaches its run under a new number)."""
        now = time.time_ns() // 1000
        for rs in self.store.orphans:
            reason = "the collector stopped without ending it (killed, or the power went)"
            log.warning("run %d (%s) lost contact: %s", rs.run, rs.name, reason)
            self.record(
                Event(
                    kind="anomaly",
                    message=f"run {rs.name!r} lost contact: {reason}",
                    run=rs.run,
                    severity=2,
                    detail={"pid": rs.pid, "reason": reason, "run_id": rs.run_id},
                    t_us=now,
                )
            )
            self.record(RunEnd(rs.run, None, 0, now))
        self.store.orphans = []

    async def _shutdown(self) -> None:
        await self.pipeline.close()
        if self.store.writable:
            p = self.pipeline
            self.record(
                Event(
                    kind="collector",
                    message="collector stopped",
                    detail={"records": p.records_in, "refused": p.rejected},
                    t_us=time.time_ns() // 1000,
                )
            )
            self.store.flush()
        await self._stop_mqtt()
        await self.server.close()
        if self.exporter is not None:
            await asyncio.to_thread(self.exporter.close)
        if self._advertiser is not None:
            try:
                await self._advertiser.close()
            except OSError as e:
                log.warning("could not withdraw the mDNS advert: %s", e)
        self.pipeline.close_samplers()
        self.store.close()
        log.info("stopped")

    def _start_mqtt(self) -> None:
        """The fleet publisher (``--mqtt``), beside the pipeline: :mod:`.mqtt`."""
        from .mqtt import MqttPublisher, device_facts

        cfg = self.cfg
        assert cfg.mqtt is not None
        samplers = [s.name for s in self.pipeline.samplers]
        self.mqtt = MqttPublisher(
            cfg.mqtt,
            self.store,
            cfg.data_dir,
            facts=lambda: device_facts(self.hostname, cfg.procfs, cfg.sysfs, samplers),
            first_seq=self._session_seq,
        )
        self._mqtt_task = asyncio.create_task(self.mqtt.run(self._mqtt_stop), name="mqtt")

    async def _stop_mqtt(self) -> None:
        """Publish what is left (a few seconds at most) and say the death."""
        task = self._mqtt_task
        if task is None:
            return
        self._mqtt_stop.set()
        try:
            await asyncio.wait_for(task, 10)
        except TimeoutError:
            log.warning("mqtt: the broker did not take the last records within 10 s")
        except Exception as e:  # the publisher's bug must not stop the store from closing
            log.error("mqtt: the publisher failed: %s: %s", type(e).__name__, e)

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
        p = self.pipeline
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
                    "intervals_s": p.intervals(),
                    "samplers": [s.name for s in p.samplers],
                    "skipped": dict(p.skipped),
                    "profile": cfg.profile,
                    "mdns": self._advertiser is not None,
                    "prometheus": None
                    if self.exporter is None
                    else f"{self.exporter.host}:{self.exporter.port}",
                },
                t_us=time.time_ns() // 1000,
            )
        )


PROMETHEUS_EXTRA = (
    "pip install prometheus-client (or './collector[prometheus]' from a clone of edgescope)"
)


def _exporter(where: tuple[str, int], token: bytes | None) -> PrometheusExporter:
    """The Prometheus exporter, or CollectorError (``NOT_INSTALLED``) where prometheus_client is
    absent."""
    try:
        from .prometheus import PrometheusExporter
    except ImportError as e:
        if e.name is None or not e.name.startswith("prometheus_client"):
            raise
        raise CollectorError(
            not_installed("--prometheus", "prometheus_client", PROMETHEUS_EXTRA), NOT_INSTALLED
        ) from None
    return PrometheusExporter(where[0], where[1], token)


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
    from .logtext import OneLineFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(OneLineFormatter("edgescope collector: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), handlers=[handler])
