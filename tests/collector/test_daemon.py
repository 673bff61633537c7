"""The collector as users run it: a real process, a producer on its ingest socket, tail, signals."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgescope_tracing import (
    Event,
    Metrics,
    RunEnd,
    RunStart,
    StackSamples,
    StreamEncoder,
    TraceReader,
)
from edgescope_tracing.protocol import Client

ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Collector:
    """``python -m edgescope_collector`` on a free loopback port with its own data dir."""

    def __init__(self, tmp: Path, *extra: str, port: int | None = None) -> None:
        self.tmp = tmp
        self.port = port or free_port()
        self.data = tmp / "data"
        self.ingest = tmp / "run" / "ingest.sock"
        self.log = tmp / f"collector-{time.monotonic_ns()}.log"
        self.args = [
            sys.executable,
            "-m",
            "edgescope_collector",
            "--listen",
            f"127.0.0.1:{self.port}",
            "--data-dir",
            str(self.data),
            "--ingest",
            str(self.ingest),
            "--interval",
            "0.2",
            *(() if "--mdns" in extra else ("--no-mdns",)),
            *extra,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Collector:
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(self.args, stderr=err, env=ENV)
        deadline = time.monotonic() + 20
        while "listening on" not in self.stderr():
            if self.proc.poll() is not None:
                raise AssertionError(f"collector exited: {self.stderr()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"collector did not start: {self.stderr()}")
            time.sleep(0.05)
        return self

    def stderr(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(tmp_path).start()
    yield c
    c.stop()


def produce(sock_path: Path, batches: int, *, values: int = 50, run_id: str = "beef") -> None:
    """An SDK-like producer: one run, ``batches`` metric batches, then its end."""
    enc = StreamEncoder()
    now = time.time_ns() // 1000
    enc.add(RunStart(0, run_id, "mlp", "testhost", os.getpid(), t_us=now))
    for b in range(batches):
        steps = tuple(range(b * values, (b + 1) * values))
        enc.add(
            Metrics(
                0,
                "loss",
                steps,
                tuple(now + s for s in steps),
                tuple(1.0 / (1 + s) + (s % 7) * 1e-7 for s in steps),
                t_us=now + b,
            )
        )
    enc.add(RunEnd(0, exit_code=0, t_us=now + batches))
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(sock_path))
        s.sendall(enc.take())


def tail(port: int, *args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgescope", "tail", f"127.0.0.1:{port}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


def json_lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


def test_ingest_store_serve_stop_restart_resume(collector: Collector) -> None:
    produce(collector.ingest, 40)
    # Everything from the start: the collector's own records and the run, in one seq space.
    first = tail(collector.port, "--since", "0", "--count", "60", "--json")
    assert first.returncode == 0, first.stderr
    recs = json_lines(first.stdout)
    assert [r["seq"] for r in recs] == list(range(60))
    kinds = {r["kind"] for r in recs}
    assert {"keyframe", "event", "run_start", "metrics"} <= kinds
    run = next(r for r in recs if r["kind"] == "run_start")
    assert run["run_id"] == "beef" and run["name"] == "mlp"
    # The collector's own footprint: a ProcessSample of itself with run -1.
    mine = [r for r in recs if r["kind"] == "process" and r["run"] == -1]
    assert mine and mine[-1]["pid"] == collector.proc.pid  # type: ignore[union-attr]
    assert isinstance(mine[-1]["rss"], int) and mine[-1]["rss"] > 1 << 20

    assert collector.stop() == 0
    assert not collector.ingest.exists(), "the ingest socket is removed on exit"
    segs = sorted(collector.data.glob("seg-*.est"))
    with TraceReader(segs[-1]) as r:
        assert r.indexed, "the segment was closed cleanly"
        last = max(x.seq for x in r)
        stored = [x for x in r if isinstance(x, Metrics)]
    assert sum(len(m.values) for m in stored) == 40 * 50
    assert "collector stopped" in "".join(str(x) for x in TraceReader(segs[-1]))

    # A restart goes on in the same sequence space; resuming at last + 1 loses nothing.
    again = Collector(collector.tmp, port=collector.port).start()
    try:
        out = tail(again.port, "--since", str(last + 1), "--count", "3", "--json")
        assert out.returncode == 0, out.stderr
        assert [r["seq"] for r in json_lines(out.stdout)] == [last + 1, last + 2, last + 3]
        assert "gap" not in out.stderr
    finally:
        assert again.stop() == 0


def test_retention_drops_old_segments_and_tail_says_the_gap(tmp_path: Path) -> None:
    c = Collector(tmp_path, "--max-disk", "256K", "--segment-size", "64K").start()
    try:
        for i in range(6):
            produce(c.ingest, 60, values=400, run_id=f"run{i}")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(list(c.data.glob("seg-*.est"))) < 3:
            time.sleep(0.1)
        time.sleep(0.5)
        total = sum(p.stat().st_size for p in c.data.glob("seg-*.est"))
        assert total <= 256 * 1024
        assert "dropped segment" in c.stderr()
        out = tail(c.port, "--since", "0", "--count", "5")
        assert out.returncode == 0, out.stderr
        assert "gap: records 0 to" in out.stderr
        assert "no longer retained" in out.stderr
    finally:
        assert c.stop() == 0


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--listen", "0.0.0.0:7313"], "refusing to listen on 0.0.0.0 without --token-file"),
        (["--max-disk", "lots"], "--max-disk: 'lots' is not a size"),
        (["--interval", "0"], "--interval must be between"),
        (["--listen", "example:99999"], "port '99999' is not a number from 1 to 65535"),
        (["--profile", "dtrace"], "--profile must be python, perf or bpftrace"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["--sample-every", "nvml"], "--sample-every takes NAME=SECONDS"),
        (["--sample-every", "nvml=fast"], "--sample-every nvml must be a number of seconds"),
    ],
)
def test_bad_flags_are_one_sentence_and_exit_2(flags: list[str], says: str) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "edgescope_collector", *flags],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert p.returncode == 2
    assert says in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "Traceback" not in p.stderr


def test_edgescope_collector_command_refuses_the_network_without_a_token() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "edgescope", "collector", "--listen", "0.0.0.0:7313"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert p.returncode == 2
    assert p.stderr.startswith("edgescope: refusing to listen on 0.0.0.0")
    assert len(p.stderr.strip().splitlines()) == 1


def test_port_in_use_and_token_problems_are_one_sentence(collector: Collector) -> None:
    busy = Collector(collector.tmp / "other", port=collector.port)
    p = subprocess.run(busy.args, capture_output=True, text=True, timeout=20)
    assert p.returncode == 1
    assert f"cannot listen on 127.0.0.1:{collector.port}" in p.stderr
    assert "Traceback" not in p.stderr
    t = subprocess.run(
        [*busy.args, "--token-file", str(collector.tmp / "nope")],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert t.returncode == 2 and "does not exist" in t.stderr
    same_dir = Collector(collector.tmp)
    d = subprocess.run(same_dir.args, capture_output=True, text=True, timeout=20)
    assert d.returncode == 1
    assert d.stderr.strip() == (
        f"edgescope collector: another collector (pid {collector.proc.pid}) "  # type: ignore[union-attr]
        f"is using the data directory {collector.data}"
    )


def test_token_protected_collector(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("correct horse battery staple\n")
    token.chmod(0o600)
    wrong = tmp_path / "wrong"
    wrong.write_text("incorrect horse battery staple\n")
    wrong.chmod(0o600)
    c = Collector(tmp_path, "--token-file", str(token)).start()
    try:
        ok = tail(c.port, "--since", "0", "--count", "1", "--token-file", str(token))
        assert ok.returncode == 0, ok.stderr
        bad = tail(c.port, "--since", "0", "--count", "1", "--token-file", str(wrong))
        assert bad.returncode == 1
        assert "refused the token" in bad.stderr and len(bad.stderr.splitlines()) == 1
        none = tail(c.port, "--count", "1")
        assert none.returncode == 1 and "requires a token" in none.stderr
        assert "authentication failed" in c.stderr()
    finally:
        assert c.stop() == 0


def test_profile_perf_samples_the_runs_process(tmp_path: Path) -> None:
    from edgescope_collector.stacks import backend_problem

    problem = backend_problem("perf")
    if problem is not None:
        pytest.skip(f"perf cannot run here: {problem}")
    busy = subprocess.Popen([sys.executable, "-c", "while True: sum(i * i for i in range(10000))"])
    c = Collector(tmp_path, "--profile", "perf").start()
    try:
        enc = StreamEncoder()
        enc.add(RunStart(0, "cafe", "busy", "testhost", busy.pid, t_us=time.time_ns() // 1000))
        stacks: list[StackSamples] = []
        said: list[Event] = []
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(c.ingest))
            s.sendall(enc.take())
            with Client.connect("127.0.0.1", c.port, since=0, idle_timeout=20) as client:
                deadline = time.monotonic() + 20
                for item in client:
                    if isinstance(item, StackSamples):
                        stacks.append(item)
                        break
                    if isinstance(item, Event) and item.kind == "stacks":
                        said.append(item)
                    assert time.monotonic() < deadline, "no stack samples within 20 s"
        assert said and "with perf at 99 Hz" in said[0].message
        assert stacks[0].backend == "perf" and stacks[0].run == 0
        assert sum(n for _, n in stacks[0].samples) > 0
    finally:
        busy.kill()
        busy.wait()
        assert c.stop() == 0


def test_profile_with_an_unusable_backend_is_refused_at_start(tmp_path: Path) -> None:
    from edgescope_collector.stacks import backend_problem

    problem = backend_problem("bpftrace")
    if problem is None:
        pytest.skip("bpftrace works here: nothing to refuse")
    p = subprocess.run(
        [*Collector(tmp_path).args, "--profile", "bpftrace"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert p.returncode == 2
    assert p.stderr.strip() == f"edgescope collector: --profile bpftrace: {problem}"


def test_detectors_turn_the_stream_into_anomaly_events(collector: Collector) -> None:
    enc = StreamEncoder()
    now = time.time_ns() // 1000
    enc.add(RunStart(0, "dead", "diverges", "testhost", os.getpid(), t_us=now))
    for b in range(10):
        steps = tuple(range(b * 20, (b + 1) * 20))
        values = tuple(float("nan") if s == 150 else 2.0 / (1 + s) for s in steps)
        enc.add(Metrics(0, "loss", steps, tuple(now + s * 1000 for s in steps), values))
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(collector.ingest))
        s.sendall(enc.take())
        anomalies: list[Event] = []
        with Client.connect("127.0.0.1", collector.port, since=0, idle_timeout=10) as client:
            for item in client:
                if isinstance(item, Event) and item.kind == "anomaly":
                    anomalies.append(item)
                    break
    assert anomalies[0].run == 0 and anomalies[0].severity == 2
    assert anomalies[0].detail["detector"] == "nonfinite_loss"
    assert "150" in anomalies[0].message


def test_each_sampler_can_have_its_own_rate(tmp_path: Path) -> None:
    c = Collector(tmp_path, "--interval", "1", "--sample-every", "system=0.1").start()
    try:
        system = own = 0
        with Client.connect("127.0.0.1", c.port, since=0, idle_timeout=10) as client:
            for item in client:
                if type(item).__name__ == "SystemSample":
                    system += 1
                elif type(item).__name__ == "ProcessSample" and item.run == -1:  # type: ignore[union-attr]
                    own += 1
                if system >= 25:
                    break
        # 2.5 s of 10 Hz system samples hold 2 or 3 of the 1 Hz self-samples.
        assert own <= 4
    finally:
        assert c.stop() == 0


def test_sigint_is_a_clean_stop_too(tmp_path: Path) -> None:
    c = Collector(tmp_path).start()
    produce(c.ingest, 3)
    time.sleep(0.3)
    assert c.proc is not None
    c.proc.send_signal(signal.SIGINT)
    assert c.proc.wait(timeout=15) == 0
    assert not c.ingest.exists()
    (seg,) = c.data.glob("seg-*.est")
    with TraceReader(seg) as r:
        assert r.indexed
        ends = [x for x in r if isinstance(x, RunEnd)]
    assert ends and ends[0].exit_code == 0
    assert "Traceback" not in c.stderr()


def test_sigkill_then_restart_keeps_what_was_written_and_the_sequence(tmp_path: Path) -> None:
    c = Collector(tmp_path).start()
    produce(c.ingest, 20)
    time.sleep(0.8)  # flushed (every 0.25 s) and sampled a few times
    assert c.proc is not None
    c.proc.kill()
    c.proc.wait()
    (seg,) = c.data.glob("seg-*.est")
    with TraceReader(seg) as r:
        assert not r.indexed, "a killed collector leaves its segment open"
        before = [x.seq for x in r]
    again = Collector(tmp_path, port=c.port).start()
    try:
        out = tail(again.port, "--since", "0", "--count", str(len(before) + 3), "--json")
        assert out.returncode == 0, out.stderr
        seqs = [r["seq"] for r in json_lines(out.stdout)]
        assert seqs == list(range(len(before) + 3)), "no gap, no repeat across the crash"
        assert "gap" not in out.stderr
        assert "repaired" in again.stderr()
        with TraceReader(seg) as r:
            assert r.indexed and [x.seq for x in r] == before
    finally:
        assert again.stop() == 0


def test_a_fifo_named_like_a_segment_neither_hangs_the_start_nor_deafens_sigterm(
    tmp_path: Path,
) -> None:
    """Issue #11 item 12: the collector used to block opening it, deaf to SIGTERM."""
    c = Collector(tmp_path)
    c.data.mkdir(parents=True)
    os.mkfifo(c.data / "seg-00000000000000000000.est")
    c.start()  # within its 20 s: it did not wait for a writer
    assert "seg-00000000000000000000.est.damaged" in c.stderr()
    assert "a FIFO" in c.stderr()
    assert c.stop() == 0
    assert "Traceback" not in c.stderr()
    assert not c.ingest.exists()
    assert (c.data / "seg-00000000000000000000.est.damaged").exists()


def test_a_run_left_open_by_a_killed_collector_ends_as_lost_contact(tmp_path: Path) -> None:
    """kill -9 mid-run: the run has no RunEnd. The next collector ends it as lost contact (an
    anomaly event with the reason, then RunEnd with no exit code) before anything new, and
    inspect reads it as lost, not running forever."""
    c = Collector(tmp_path).start()
    enc = StreamEncoder()
    now = time.time_ns() // 1000
    enc.add(RunStart(0, "cafe", "mlp", "testhost", 4242, t_us=now))
    enc.add(Metrics(0, "loss", (0, 1), (now, now + 1), (1.0, 0.5), t_us=now + 1))
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(c.ingest))
        s.sendall(enc.take())
        deadline = time.monotonic() + 10
        while True:  # the collector has written it (its ack comes after the flush)
            s.settimeout(max(0.1, deadline - time.monotonic()))
            if s.recv(64):
                break
        assert c.proc is not None
        c.proc.kill()  # while the producer is still connected: nobody ends the run
        c.proc.wait(10)
    again = Collector(tmp_path, port=c.port).start()
    try:
        assert "run 0 (mlp) lost contact" in again.stderr()
    finally:
        assert again.stop() == 0
    recs = [r for seg in sorted(c.data.glob("seg-*.est")) for r in TraceReader(seg)]
    ends = [r for r in recs if isinstance(r, RunEnd) and r.run == 0]
    assert len(ends) == 1 and ends[0].exit_code is None
    (lost,) = [r for r in recs if isinstance(r, Event) and "lost contact" in r.message]
    assert lost.detail["run_id"] == "cafe" and lost.t_us == ends[0].t_us
    out = subprocess.run(
        [sys.executable, "-m", "edgescope", "inspect", str(sorted(c.data.glob("seg-*.est"))[-1])],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert out.returncode == 0, out.stderr
    assert "lost contact" in out.stdout
