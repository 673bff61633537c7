"""``edgescope tail`` against a real stream server (store and server on a loop in a thread)."""

from __future__ import annotations

import asyncio
import json
import os
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
from edgescope_collector.auth import Authenticator
from edgescope_collector.server import StreamServer
from edgescope_collector.store import SegmentStore
from edgescope_tracing import Event, Metrics, Record, RunStart

from edgescope.cli import main

TOKEN = b"a-token-of-twenty-bytes"


class Served:
    """A store and stream server on a free loopback port, on an event loop in a thread."""

    def __init__(self, directory: Path, token: bytes | None = None, **store_kw: object) -> None:
        self.loop = asyncio.new_event_loop()
        self.store = SegmentStore(directory, max_disk=64 << 20, **store_kw)  # type: ignore[arg-type]
        self.store.open()
        self.server = StreamServer(self.store, Authenticator(token), "127.0.0.1", 0)
        self._stop = asyncio.Event()
        started: Future[None] = Future()

        async def serve() -> None:
            await self.server.start()
            started.set_result(None)
            await self._stop.wait()
            await self.server.close(grace=1.0)

        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(serve(),))
        self.thread.start()
        started.result(timeout=10)

    @property
    def port(self) -> int:
        return self.server.port

    def append(self, records: list[Record]) -> None:
        done: Future[None] = Future()

        def run() -> None:
            for r in records:
                self.store.append(r)
            self.store.flush()
            done.set_result(None)

        self.loop.call_soon_threadsafe(run)
        done.result(timeout=10)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self._stop.set)
        self.thread.join(timeout=10)
        self.loop.close()
        self.store.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    s = Served(tmp_path / "data")
    s.append(
        [RunStart(0, "ab12", "mlp", "pi", 7, t_us=1_000_000)]
        + [
            Metrics(0, "loss", (i,), (1_000_000 + i,), (float("nan") if i == 3 else 0.5,))
            for i in range(10)
        ]
        + [Event("mark", "checkpoint", run=0, detail={"path": "/x"}, t_us=2_000_000)]
    )
    yield s
    s.close()


def test_since_count_json(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tail", f"127.0.0.1:{served.port}", "--since", "2", "--count", "4", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    objs = [json.loads(x) for x in lines]
    assert [o["seq"] for o in objs] == [2, 3, 4, 5]
    assert all(o["kind"] == "metrics" for o in objs)
    assert objs[0]["key"] == "loss" and objs[0]["steps"] == [0] and objs[0]["run"] == 0
    assert objs[3]["values"] == ["NaN"], "NaN becomes a JSON-safe string"


def test_events_and_history_then_live(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    done: list[int] = []

    def run() -> None:
        done.append(main(["tail", f"127.0.0.1:{served.port}", "--since", "12", "--count", "3"]))

    t = threading.Thread(target=run)
    t.start()
    served.append([Event("log", f"live {i}", t_us=3_000_000 + i) for i in range(2)])
    t.join(timeout=20)
    assert done == [0]
    lines = capsys.readouterr().out.splitlines()
    assert "[mark] checkpoint" in lines[0] and lines[0].split()[0] == "12"
    assert "[log] live 0" in lines[1] and "[log] live 1" in lines[2]


def test_without_since_only_new_records(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    done: list[int] = []

    def run() -> None:
        done.append(main(["tail", f"127.0.0.1:{served.port}", "--count", "1", "--json"]))

    t = threading.Thread(target=run)
    t.start()
    deadline = 50
    while served.server.served == 0 and deadline:
        threading.Event().wait(0.05)
        deadline -= 1
    served.append([Event("log", "new")])
    t.join(timeout=20)
    assert done == [0]
    (obj,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert obj["seq"] == 13 and obj["kind"] == "event" and obj["message"] == "new"
    assert obj["event_kind"] == "log"


def test_errors_are_one_sentence(served: Served, capsys: pytest.CaptureFixture[str]) -> None:
    free = served.port
    served.close()
    assert main(["tail", f"127.0.0.1:{free}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"edgescope: cannot connect to 127.0.0.1:{free}: connection refused")
    assert len(err.splitlines()) == 1
    for argv, text in (
        (["tail", "127.0.0.1:0"], "port '0' is not a number from 1 to 65535"),
        (["tail", "host:port"], "port 'port' is not a number from 1 to 65535"),
        (["tail", "127.0.0.1", "--count", "0"], "--count must be at least 1"),
        (["tail", "127.0.0.1", "--since", "x"], "--since must be a whole number"),
        (["tail", "127.0.0.1", "--since", str(1 << 64)], "--since must be at most"),
        (["tail", "127.0.0.1", "--since", "-1"], "--since must be at least 0"),
        (["tail", "127.0.0.1", "--count", "9" * 30], "--count must be at most"),
        (["tail", "127.0.0.1", "--token-file", "/nonexistent/t"], "/nonexistent/t does not exist"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert text in err and len(err.splitlines()) == 1


def test_a_fifo_token_file_is_refused_not_waited_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "token"
    os.mkfifo(fifo)
    assert main(["tail", "127.0.0.1:1", "--token-file", str(fifo)]) == 2
    err = capsys.readouterr().err
    assert f"token file {fifo} is a FIFO (named pipe), not a regular file" in err
    assert err.count("\n") == 1


def test_auth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = Served(tmp_path / "data", token=TOKEN)
    try:
        s.append([Event("mark", "x", t_us=1)])
        good = tmp_path / "good"
        good.write_bytes(TOKEN + b"\n")
        bad = tmp_path / "bad"
        bad.write_bytes(b"not-the-token-at-all")
        port = str(s.port)
        assert main(["tail", f"127.0.0.1:{port}", "--since", "0", "--count", "2"]) == 1
        assert "requires a token (--token-file)" in capsys.readouterr().err
        argv = ["tail", f"127.0.0.1:{port}", "--since", "0", "--count", "2", "--token-file"]
        assert main([*argv, str(bad)]) == 1
        assert "refused the token" in capsys.readouterr().err
        assert main([*argv, str(good)]) == 0
        assert len(capsys.readouterr().out.splitlines()) == 2
    finally:
        s.close()


def test_gap_goes_to_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = Served(tmp_path / "data", segment_bytes=128 * 1024)
    try:
        values = tuple(((i * 2654435761) % 1000003) / 1000003.0 + 1e-9 for i in range(4000))
        big = [
            Metrics(0, "noise", tuple(range(4000)), tuple(range(4000)), values) for _ in range(10)
        ]
        s.append(big)
        # Simulate retention: drop the oldest segment as the ring would.
        done: Future[None] = Future()

        def drop() -> None:
            s.store.max_disk = s.store.disk_bytes - 1
            s.store._enforce_limit()
            done.set_result(None)

        s.loop.call_soon_threadsafe(drop)
        done.result(timeout=10)
        first = s.store.first_seq
        assert first > 0
        assert main(["tail", f"127.0.0.1:{s.port}", "--since", "0", "--count", "1"]) == 0
        cap = capsys.readouterr()
        assert f"gap: records 0 to {first - 1} will not come" in cap.err
        assert cap.out.split()[0] == str(first)
    finally:
        s.close()


def test_human_lines_and_json_of_device_records() -> None:
    from edgescope_tracing import GpuSample, ThermalSample, ThermalZone

    from edgescope.cli.tail import record_json, record_line

    t = 1_700_000_000_000_000
    th = ThermalSample(
        zones=(ThermalZone("cpu-thermal", 81.2, (("passive", 80.0, 2.0),)),),
        throttle={"pi.throttled": 0x50005},
        t_us=t,
        seq=5,
    )
    assert record_line(th).endswith("thermal   cpu-thermal 81.2°C pi.throttled=0x50005")
    assert record_json(th)["zones"] == [
        {"name": "cpu-thermal", "temp_c": 81.2, "trips": [["passive", 80.0, 2.0]]}
    ]
    gpu = GpuSample(0, "NVIDIA H200", temp_c=56.0, util_gpu=99.0, power_mw=630000, t_us=t, seq=6)
    assert record_line(gpu).endswith("gpu       gpu0 NVIDIA H200 56°C util 99% power 630 W")
    assert json.loads(json.dumps(record_json(gpu)))["power_mw"] == 630000
    # format 1.1's fields: per-process GPU memory as [pid, bytes] pairs, sensors as a map
    gpu = GpuSample(0, "NVIDIA H200", processes=((413, 23_332 << 20),), t_us=t, seq=7)
    assert json.loads(json.dumps(record_json(gpu)))["processes"] == [[413, 23_332 << 20]]
    th = ThermalSample(sensors={"hwmon.ina3221.in1": 5.072, "hwmon.x.fan1": float("nan")}, t_us=t)
    assert json.loads(json.dumps(record_json(th), allow_nan=False))["sensors"] == {
        "hwmon.ina3221.in1": 5.072,
        "hwmon.x.fan1": "NaN",
    }


def test_names_and_messages_from_the_stream_are_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A producer's run name, host, key and message cannot drive the terminal (issue #11.11)."""
    evil = "\x1b]52;c;cHduZWQ=\x07\x1b[2J\rfake\u202egpj\x9b31m"
    s = Served(tmp_path / "data")
    try:
        s.append(
            [
                RunStart(0, "ab12", evil, evil, 7, t_us=1_000_000),
                Metrics(0, evil, (1,), (1_000_001,), (0.5,)),
                Event("log", evil, t_us=1_000_002),
            ]
        )
        assert main(["tail", f"127.0.0.1:{s.port}", "--since", "0", "--count", "4"]) == 0
        human = capsys.readouterr().out
        assert main(["tail", f"127.0.0.1:{s.port}", "--since", "0", "--count", "4", "--json"]) == 0
        js = capsys.readouterr().out
    finally:
        s.close()
    for out in (human, js):
        assert not any(c in out for c in ("\x1b", "\x07", "\r", "\u202e", "\x9b"))
    assert human.count("\\x1b]52;c;cHduZWQ=\\x07") == 4  # run start (name, host), metric, event
    assert json.loads(js.splitlines()[-1])["message"] == evil  # JSON keeps every character


def test_a_run_end_names_the_signal() -> None:
    from edgescope_tracing import RunEnd

    from edgescope.cli.tail import record_line

    line = record_line(RunEnd(4, 137, 2, t_us=1_700_000_000_000_000, seq=9))
    assert line.endswith("run_end   run 4 ended: exit code 137 (killed by SIGKILL), dropped 2")
