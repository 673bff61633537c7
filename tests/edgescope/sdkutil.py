"""Helpers for the SDK and ``record`` tests: isolated environments, scripts, real collectors."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from edgescope_collector.ingest import IngestServer
from edgescope_tracing import Metrics, Record, StreamDecoder, TraceReader

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
R = TypeVar("R")


def sdk_env(tmp: Path, **extra: str) -> dict[str, str]:
    """An environment with no collector in reach and runs written under ``tmp/runs``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGESCOPE_")}
    xdg = tmp / "xdg"
    xdg.mkdir(exist_ok=True)
    env.update(
        EDGESCOPE_DIR=str(tmp / "runs"),
        XDG_RUNTIME_DIR=str(xdg),
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def script(tmp: Path, code: str, name: str = "job.py") -> Path:
    p = tmp / name
    p.write_text(textwrap.dedent(code))
    return p


def run_script(
    tmp: Path, code: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    path = script(tmp, code)
    return subprocess.run(
        [PYTHON, str(path)], env=env, cwd=tmp, capture_output=True, text=True, timeout=timeout
    )


def trace_files(tmp: Path) -> list[Path]:
    return sorted((tmp / "runs").glob("*.est"))


def read(path: Path) -> list[Record]:
    with TraceReader(path) as r:
        out = list(r)
        assert not [d for d in r.damage if not d.truncated], r.damage
    return out


def of(records: list[Record], kind: type[R]) -> list[R]:
    return [r for r in records if isinstance(r, kind)]


def values(records: list[Record], key: str) -> list[tuple[int, float]]:
    """(step, value) of one metric, in record order."""
    out: list[tuple[int, float]] = []
    for m in of(records, Metrics):
        if m.key == key:
            out.extend(zip(m.steps, m.values, strict=True))
    return out


def count_values(records: list[Record]) -> int:
    return sum(len(m.values) for m in of(records, Metrics))


def decode(data: bytes) -> list[Record]:
    dec = StreamDecoder()
    out = dec.feed(data)
    out += dec.close()
    return out


@contextmanager
def ingest_in_thread(
    path: Path, *, seconds_per_value: float = 0.0
) -> Iterator[tuple[IngestServer, list[Record]]]:
    """A real :class:`IngestServer` on its own event loop thread; records collect in a list.

    ``seconds_per_value`` makes it a slow collector: its loop sleeps that long for each metric
    value it takes, so it reads the socket more slowly than the SDK writes.
    """
    got: list[Record] = []
    loop = asyncio.new_event_loop()

    def sink(rec: Record) -> None:
        if seconds_per_value and isinstance(rec, Metrics):
            time.sleep(seconds_per_value * len(rec.values))
        got.append(rec)

    server = IngestServer(path, sink)
    started = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        started.set()
        loop.run_forever()

    t = threading.Thread(target=main, name="test-ingest", daemon=True)
    t.start()
    assert started.wait(10)
    closed = False

    def close() -> None:
        nonlocal closed
        if not closed:
            closed = True
            asyncio.run_coroutine_threadsafe(server.close(), loop).result(10)

    server.close_now = close  # type: ignore[attr-defined]
    try:
        yield server, got
    finally:
        close()
        loop.call_soon_threadsafe(loop.stop)
        t.join(10)
        loop.close()


class HungCollector:
    """A Unix socket that accepts connections and never reads from them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._accept, daemon=True)
        self._t.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.05)
        while not self._stop.is_set():
            try:
                c, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.conns.append(c)

    def read_all(self) -> bytes:
        """What the connections hold, read only now (after the fact)."""
        out = b""
        for c in self.conns:
            c.setblocking(False)
            while True:
                try:
                    chunk = c.recv(1 << 16)
                except BlockingIOError:
                    break
                if not chunk:
                    break
                out += chunk
        return out

    def close(self) -> None:
        self._stop.set()
        self._t.join(5)
        self.sock.close()
        for c in self.conns:
            c.close()


class CollectorProcess:
    """``python -m edgescope_collector`` as users run it: a real process, its own data dir."""

    def __init__(self, tmp: Path) -> None:
        self.data = tmp / "data"
        self.ingest = tmp / "run" / "ingest.sock"
        self.log = tmp / f"collector-{time.monotonic_ns()}.log"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        args = [PYTHON, "-m", "edgescope_collector", "--listen", f"127.0.0.1:{port}"]
        args += ["--data-dir", str(self.data), "--ingest", str(self.ingest), "--no-mdns"]
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(args, stderr=err, env={**os.environ})
        deadline = time.monotonic() + 20
        while "listening on" not in self.log.read_text():
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: no chance to flush or end anything."""
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stored(self) -> list[Record]:
        """Every record in the store's segments, oldest first (unclosed ones scanned)."""
        out: list[Record] = []
        for seg in sorted(self.data.glob("seg-*.est")):
            with TraceReader(seg) as r:
                out.extend(r)
        return out


def wait_until(cond: object, timeout: float = 20.0) -> None:
    """Poll ``cond()`` every 10 ms until it is true; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.01)


def log_from_threads(n: int, threads: int) -> dict[str, list[tuple[int, float]]]:
    """``threads`` threads of the active run log at once: each ``n`` one-key calls (``t{t}``) and
    every other step a ten-key call (``b{t}`` and ``w{t}.0`` .. ``w{t}.8``). Returns what each key
    must hold, (step, value) in order."""
    import edgescope

    def work(t: int) -> None:
        wide = [f"w{t}.{j}" for j in range(9)]
        for i in range(n):
            edgescope.log({f"t{t}": float(i)}, step=i)
            if i % 2 == 0:
                edgescope.log({f"b{t}": float(i), **dict.fromkeys(wide, 1.0)}, step=i)

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for th in ts:
        th.start()
    for th in ts:
        th.join()
    want: dict[str, list[tuple[int, float]]] = {}
    for t in range(threads):
        want[f"t{t}"] = [(i, float(i)) for i in range(n)]
        want[f"b{t}"] = [(i, float(i)) for i in range(0, n, 2)]
        for j in range(9):
            want[f"w{t}.{j}"] = [(i, 1.0) for i in range(0, n, 2)]
    return want


def forking_job(n: int) -> str:
    """A script whose live run (``forks``, one value logged) forks: parent and child each log
    ``n`` values under their own name and finish; it prints the child's exit status and the
    parent run's file (``None`` where it went to a collector)."""
    return f"""
        import os, edgescope
        run = edgescope.init(name="forks", buffer_size=1024)
        edgescope.log({{"before": 1.0}}, step=0)  # the run is live when it forks
        pid = os.fork()
        who = "child" if pid == 0 else "parent"
        for i in range({n}):
            edgescope.log({{who: float(i)}}, step=i)
        if pid == 0:
            edgescope.finish(0)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        edgescope.finish(0)
        print(status, run.path)
        """
