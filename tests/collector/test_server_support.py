"""Helpers for the store, server, security and tail tests (no tests here).

A real :class:`SegmentStore` on a temporary directory and a real :class:`StreamServer` on a free
loopback port, either on the test's own event loop (:func:`served`) or on a loop in a thread
(:class:`ThreadedServer`) for blocking clients such as ``edgescope tail``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

from edgescope_collector.auth import Authenticator
from edgescope_collector.server import ServerLimits, StreamServer
from edgescope_collector.store import SegmentStore
from edgescope_tracing import Metrics, Record, RunStart

T = TypeVar("T")

RUN = RunStart(0, "00ff", "mlp", "testhost", 4242, config={"lr": 0.1}, t_us=1_000_000)


def metric(i: int, key: str = "loss", n: int = 1) -> Metrics:
    """A batch of ``n`` values of ``key`` at steps ``i*n ..``."""
    steps = tuple(range(i * n, i * n + n))
    return Metrics(
        0,
        key,
        steps,
        tuple(1_000_000 + s * 1000 for s in steps),
        tuple(1.0 / (1 + s) for s in steps),
        t_us=1_000_000 + i * n * 1000,
    )


def noisy(i: int, n: int = 512) -> Metrics:
    """A batch that does not compress: float64 values, so bytes grow quickly."""
    steps = tuple(range(i * n, i * n + n))
    return Metrics(
        0,
        "noise",
        steps,
        tuple(1_000_000 + s * 1000 for s in steps),
        tuple(((s * 2654435761) % 1000003) / 1000003.0 + 1e-9 for s in steps),
        t_us=1_000_000 + i * n * 1000,
    )


def make_store(directory: Path, **kw: Any) -> SegmentStore:
    kw.setdefault("max_disk", 64 << 20)
    store = SegmentStore(directory, **kw)
    store.open()
    return store


@contextlib.asynccontextmanager
async def served(
    directory: Path,
    *,
    token: bytes | None = None,
    limits: ServerLimits | None = None,
    **store_kw: Any,
) -> AsyncIterator[tuple[SegmentStore, StreamServer]]:
    store = make_store(directory, **store_kw)
    server = StreamServer(
        store, Authenticator(token), "127.0.0.1", 0, limits=limits, hostname="testhost"
    )
    await server.start()
    try:
        yield store, server
    finally:
        await server.close(grace=1.0)
        store.close()


def append_all(store: SegmentStore, records: list[Record]) -> list[int]:
    seqs = [store.append(r) for r in records]
    store.flush()
    return seqs


class ThreadedServer:
    """A store and server on an event loop in a thread; ``call`` runs code on that loop."""

    def __init__(self, directory: Path, **kw: Any) -> None:
        self._kw = kw
        self._dir = directory
        self.loop = asyncio.new_event_loop()
        self._ready: Future[None] = Future()
        self._stop: asyncio.Event | None = None
        self.store: SegmentStore
        self.server: StreamServer
        self.thread = threading.Thread(target=self._main, daemon=True)
        self.thread.start()
        self._ready.result(timeout=10)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())
        self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with served(self._dir, **self._kw) as (store, server):
                self.store, self.server = store, server
                self._ready.set_result(None)
                await self._stop.wait()
        except BaseException as e:
            if not self._ready.done():
                self._ready.set_exception(e)
            raise

    @property
    def port(self) -> int:
        return self.server.port

    def call(self, fn: Callable[[], T]) -> T:
        fut: Future[T] = Future()

        def run() -> None:
            try:
                fut.set_result(fn())
            except BaseException as e:
                fut.set_exception(e)

        self.loop.call_soon_threadsafe(run)
        return fut.result(timeout=10)

    def append(self, records: list[Record]) -> list[int]:
        return self.call(lambda: append_all(self.store, records))

    def close(self) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout=10)
