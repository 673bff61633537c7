"""Flower's deployment engine on loopback, for ``test_flower.py`` and
``benchmarks/bench_flower_run.py``: a SuperLink and SuperNodes on free ports (``--insecure``, no
dependency installation), each SuperNode with its own real edgescope collector, and ``flwr run``
of an app against them (the SuperLink's address in ``$FLWR_HOME/config.toml``).

Everything waits on conditions (a port that listens, a process that ends), with limits wide
enough for a loaded machine; none is a sleep.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "flower"
BIN = Path(sys.executable).parent
FEDERATION = "local-deployment"
START_S = 180.0
"""How long a collector or the SuperLink may take to listen: seconds on an idle machine, and
the limit is only reached where something is wrong."""

__all__ = ["BIN", "EXAMPLE", "FEDERATION", "Deployment", "copy_app", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited {proc.returncode}: {log.read_text()[-1500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {START_S:g} s: {log.read_text()[-1500:]}")


def copy_app(dst: Path, clientapp: str | None = None) -> Path:
    """The example app copied to ``dst`` (a Flower app is built from its directory), its
    ClientApp component set to ``clientapp`` (``module:attribute``) where given."""
    shutil.copytree(EXAMPLE, dst, ignore=shutil.ignore_patterns("__pycache__", "*.md"))
    if clientapp is not None:
        pyproject = dst / "pyproject.toml"
        text = pyproject.read_text()
        assert "digits_fl.client_app:app" in text
        pyproject.write_text(text.replace("digits_fl.client_app:app", clientapp))
    return dst


class Deployment:
    """Collectors, a SuperLink and SuperNodes under ``base``; :meth:`run` runs an app."""

    def __init__(self, base: Path, nodes: int, *, interval: float = 0.5) -> None:
        self.base = base
        self.nodes = nodes
        self.interval = interval
        self.link = free_port()
        self.node_dirs = [base / f"node{i}" for i in range(nodes)]
        self.collector_ports = [free_port() for _ in range(nodes)]
        self.server_dir = base / "server"
        """The ServerApp's edgescope trace files (``EDGESCOPE_DIR`` of the SuperLink)."""
        self.collectors: list[subprocess.Popen[bytes]] = []
        self.flower: list[subprocess.Popen[bytes]] = []

    @property
    def data_dirs(self) -> list[Path]:
        """Each SuperNode's collector data directory, by partition."""
        return [d / "data" for d in self.node_dirs]

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGESCOPE_", "FLWR_"))}
        xdg = self.base / "xdg"
        xdg.mkdir(exist_ok=True)
        env.update(
            PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            FLWR_HOME=str(self.base / "flwr"),
            XDG_RUNTIME_DIR=str(xdg),  # no default ingest socket in reach
            PYTHONUNBUFFERED="1",
            **extra,
        )
        return env

    def _spawn(
        self, argv: Sequence[str], log: Path, cwd: Path, env: dict[str, str]
    ) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            return subprocess.Popen(
                list(argv), stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env
            )

    def start(
        self,
        *,
        collector_args: dict[int, Sequence[str]] | None = None,
        node_config: dict[int, str] | None = None,
    ) -> Deployment:
        """Start everything; ``collector_args`` and ``node_config`` add to a partition's
        collector command line and ``--node-config``."""
        (self.base / "flwr").mkdir(parents=True, exist_ok=True)
        (self.base / "flwr" / "config.toml").write_text(
            f'[superlink]\ndefault = "{FEDERATION}"\n\n'
            f'[superlink.{FEDERATION}]\naddress = "127.0.0.1:{self.link}"\ninsecure = true\n'
        )
        try:
            for i, d in enumerate(self.node_dirs):
                d.mkdir(parents=True, exist_ok=True)
                argv = [
                    sys.executable, "-m", "edgescope_collector",
                    "--listen", f"127.0.0.1:{self.collector_ports[i]}",
                    "--data-dir", str(d / "data"),
                    "--ingest", str(d / "ingest.sock"),
                    "--interval", str(self.interval),
                    "--no-mdns",
                    *(collector_args or {}).get(i, ()),
                ]  # fmt: skip
                self.collectors.append(self._spawn(argv, d / "collector.log", d, self.env()))
            for i, d in enumerate(self.node_dirs):
                _wait_port(self.collector_ports[i], self.collectors[i], d / "collector.log")
            log = self.base / "superlink.log"
            link = self._spawn(
                [
                    str(BIN / "flower-superlink"),
                    "--insecure",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.link),
                    "--disable-runtime-dependency-installation",
                ],
                log,
                self.base,
                self.env(EDGESCOPE_DIR=str(self.server_dir)),
            )
            self.flower.append(link)
            _wait_port(self.link, link, log)
            for i, d in enumerate(self.node_dirs):
                config = f"partition-id={i} num-partitions={self.nodes}"
                extra = (node_config or {}).get(i)
                if extra:
                    config += f" {extra}"
                argv = [
                    str(BIN / "flower-supernode"),
                    "--insecure",
                    "--superlink", f"127.0.0.1:{self.link}",
                    "--host", "127.0.0.1",
                    "--port", str(free_port()),
                    "--node-config", config,
                ]  # fmt: skip
                env = self.env(
                    EDGESCOPE_SOCKET=str(d / "ingest.sock"),
                    EDGESCOPE_DIR=str(d / "runs"),
                    # the Mod's thermal figures come from the node's own collector
                    EDGESCOPE_COLLECTOR=f"127.0.0.1:{self.collector_ports[i]}",
                )
                self.flower.append(self._spawn(argv, d / "supernode.log", d, env))
        except BaseException:
            self.stop()
            raise
        return self

    def run(self, app: Path, run_config: str, timeout: float) -> subprocess.CompletedProcess[str]:
        """``flwr run APP local-deployment --stream``: returns when the run has ended."""
        return subprocess.run(
            [str(BIN / "flwr"), "run", str(app), FEDERATION, "--stream",
             "--run-config", run_config],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            cwd=self.base,
        )  # fmt: skip

    def stop(self) -> None:
        """Flower first, then the collectors: every message's run is in before they close."""
        for group in (self.flower, self.collectors):
            for p in reversed(group):
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in reversed(group):
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
            group.clear()
