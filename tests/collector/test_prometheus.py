"""Prometheus exposition: a real Prometheus server scrapes a real collector, and promtool checks
the text.

The collector samples a recorded x86 laptop tree (``--sysfs``) and takes a real SDK run on its
ingest socket; Prometheus (Debian's ``prometheus``, started here with its own config, data dir
and port) scrapes it every second with the collector's token as a bearer token, and is asked
over its HTTP API for a thermal zone's temperature and the run's loss.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("prometheus_client", reason="prometheus_client is not installed")

from edgescope_collector.prometheus import MAX_ENDED_RUNS, MetricsState, families
from edgescope_collector.samplers import Roots
from edgescope_collector.samplers.thermal import ThermalSampler
from edgescope_tracing import Event, Metrics, ProcessSample, RunEnd, RunStart
from prometheus_client.core import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from test_daemon import ENV, Collector, free_port
from withoutparts import EDGESCOPE_MAIN, run_without

TREES = Path(__file__).parent / "trees"
TOKEN = "prometheus-test-token-0123456789abcdef"

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")


def _text(state: MetricsState) -> str:
    class Scrape:
        def collect(self):  # type: ignore[no-untyped-def]
            yield from families(state.snapshot())

    reg = CollectorRegistry(auto_describe=False)
    reg.register(Scrape())
    return generate_latest(reg).decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _run(state: MetricsState, run: int, name: str) -> None:
    state.observe(RunStart(run, f"id{run}", name, "host", 100 + run, t_us=1))


def test_state_holds_last_values_step_time_memory_and_events() -> None:
    state = MetricsState()
    _run(state, 0, "mlp")
    state.observe(Metrics(0, "loss", (0, 1, 2), (1_000_000, 1_500_000, 2_000_000), (3.0, 2.0, 1.5)))
    state.observe(Metrics(0, "loss", (3,), (2_250_000,), (1.25,)))
    state.observe(
        ProcessSample(
            0,
            100,
            rss=10 << 20,
            rss_peak=30 << 20,
            cgroup_limit=1 << 30,
            cgroup_current=12 << 20,
            cgroup_peak=40 << 20,
            t_us=5,
        )
    )
    state.observe(ProcessSample(0, 101, rss=5 << 20, rss_peak=6 << 20, t_us=5))
    for _ in range(3):
        state.observe(Event("anomaly", "loss spiked", run=0, severity=1))
    state.observe(Event("mark", "epoch 1", run=0))
    got = _samples(_text(state))
    run = (("name", "mlp"), ("run", "id0"))
    assert got[("edgescope_run_metric", (("metric", "loss"), *run))] == 1.25
    assert got[("edgescope_run_step", run)] == 3
    assert got[("edgescope_run_step_time_seconds", run)] == pytest.approx(0.25)  # derived
    assert got[("edgescope_run_memory_rss_bytes", run)] == 15 << 20
    assert got[("edgescope_run_memory_peak_bytes", (run[0], run[1], ("source", "vmhwm")))] == (
        30 << 20
    )
    assert got[("edgescope_run_memory_peak_bytes", (run[0], run[1], ("source", "cgroup")))] == (
        40 << 20
    )
    assert got[("edgescope_run_memory_limit_bytes", run)] == 1 << 30
    assert got[("edgescope_events_total", (("kind", "anomaly"), ("severity", "1")))] == 3
    assert got[("edgescope_events_total", (("kind", "mark"), ("severity", "0")))] == 1
    assert got[("edgescope_run_running", run)] == 1
    # A step-time metric, once logged, is the step time (in seconds whatever its unit).
    state.observe(Metrics(0, "step_time_ms", (4,), (2_300_000,), (80.0,)))
    state.observe(Metrics(0, "loss", (5,), (9_000_000,), (1.0,)))
    state.observe(RunEnd(0, exit_code=0))
    got = _samples(_text(state))
    assert got[("edgescope_run_step_time_seconds", run)] == pytest.approx(0.08)
    assert got[("edgescope_run_running", run)] == 0


def test_the_series_cap_is_enforced_and_what_it_leaves_out_is_counted() -> None:
    state = MetricsState(max_series=3)
    _run(state, 0, "a")
    for key in ("m0", "m1", "m2", "m3", "m4"):
        state.observe(Metrics(0, key, (1,), (1,), (1.0,)))
        state.observe(Metrics(0, key, (2,), (2,), (2.0,)))  # the same series again: once
    got = _samples(_text(state))
    exposed = {dict(k[1])["metric"] for k in got if k[0] == "edgescope_run_metric"}
    assert exposed == {"m0", "m1", "m2"}
    assert got[("edgescope_run_metric_series_left_out_total", ())] == 2
    assert got[("edgescope_run_metric_series_limit", ())] == 3
    # Ended runs are dropped, oldest first, past MAX_ENDED_RUNS: their series free up.
    state.observe(RunEnd(0))
    for n in range(1, MAX_ENDED_RUNS + 1):
        _run(state, n, f"r{n}")
        state.observe(RunEnd(n))
    _run(state, 99, "new")
    state.observe(Metrics(99, "loss", (1,), (1,), (0.5,)))
    got = _samples(_text(state))
    names = {dict(k[1])["name"] for k in got if k[0] == "edgescope_run_running"}
    assert "a" not in names and {"new", "r1", f"r{MAX_ENDED_RUNS}"} <= names
    assert got[("edgescope_run_metric", (("metric", "loss"), ("name", "new"), ("run", "id99")))]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (Debian's prometheus) is not installed")
def test_promtool_accepts_the_text_of_every_recorded_board(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    texts = {}
    for board in ("x86-laptop", "rpi4", "jetson-orin"):
        state = MetricsState()
        sampler = ThermalSampler(Roots(procfs=TREES / board / "proc", sysfs=TREES / board / "sys"))
        for rec in sampler.sample(1_000_000) + sampler.sample(2_000_000):
            state.observe(rec)
        _run(state, 0, "mlp")
        state.observe(Metrics(0, "loss", (1,), (1,), (float("nan"),)))
        text = _text(state)
        assert "edgescope_thermal_zone_temp_celsius" in text, board
        check = subprocess.run(
            [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 0 and not check.stdout.strip(), (board, check.stdout)
        texts[board] = _samples(text)
    assert texts["rpi4"][("edgescope_pi_throttled", (("flag", "under_voltage"),))] in (0, 1)
    assert any(k[0] == "edgescope_hwmon_in_volts" for k in texts["jetson-orin"])
    assert any(k[0] == "edgescope_cpu_core_throttles_total" for k in texts["x86-laptop"])


def _get(url: str, token: str | None = None, accept: str | None = None) -> tuple[int, str, str]:
    req = urllib.request.Request(url)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if accept is not None:
        req.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type", ""), e.read().decode()


SDK_RUN = """
import sys, time, edgescope
edgescope.init(name="promrun")
step = 0
while step < 100000:
    edgescope.log({"loss": 0.5, "acc": 0.75}, step=step)
    step += 1
    time.sleep(0.01)
    if step % 20 == 0 and open(sys.argv[1]).read() == "stop":
        break
edgescope.finish()
"""


@pytest.fixture
def scraped(tmp_path: Path) -> Iterator[tuple[Collector, int]]:
    tree = tmp_path / "tree"
    shutil.copytree(TREES / "x86-laptop", tree, symlinks=True)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    mport = free_port()
    c = Collector(
        tmp_path,
        "--sysfs",
        str(tree / "sys"),
        "--token-file",
        str(token),
        "--prometheus",
        f"127.0.0.1:{mport}",
    ).start()
    try:
        yield c, mport
    finally:
        c.stop()


@pytest.mark.skipif(PROMETHEUS is None, reason="Debian's prometheus is not installed")
def test_a_real_prometheus_scrapes_thermal_and_run_metrics(
    tmp_path: Path, scraped: tuple[Collector, int]
) -> None:
    collector, mport = scraped
    assert PROMETHEUS is not None and PROMTOOL is not None
    assert f"prometheus metrics on http://127.0.0.1:{mport}/metrics" in collector.stderr()
    stop = tmp_path / "stop"
    stop.write_text("go")
    job = tmp_path / "job.py"
    job.write_text(SDK_RUN)
    env = {k: v for k, v in ENV.items() if not k.startswith("EDGESCOPE_")}
    env.update(EDGESCOPE_SOCKET=str(collector.ingest), EDGESCOPE_DIR=str(tmp_path / "runs"))
    sdk = subprocess.Popen([sys.executable, str(job), str(stop)], env=env, stderr=subprocess.PIPE)
    pport = free_port()
    (tmp_path / "prom.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: edgescope\n    scrape_interval: 1s\n"
        f"    authorization:\n      type: Bearer\n      credentials_file: {tmp_path / 'token'}\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{mport}']\n"
    )
    with open(tmp_path / "prom.log", "wb") as log:
        prom = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prom.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{pport}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    api = f"http://127.0.0.1:{pport}/api/v1/query?query="

    def query(q: str) -> list[dict[str, object]]:
        status, _, body = _get(api + urllib.parse.quote(q))
        if status != 200:
            return []
        result: list[dict[str, object]] = json.loads(body)["data"]["result"]
        return result

    try:
        deadline = time.monotonic() + 30
        thermal: list[dict[str, object]] = []
        loss: list[dict[str, object]] = []
        step_time: list[dict[str, object]] = []
        rss: list[dict[str, object]] = []
        while not (thermal and loss and step_time and rss):
            assert time.monotonic() < deadline, (tmp_path / "prom.log").read_text()[-2000:]
            assert prom.poll() is None, (tmp_path / "prom.log").read_text()[-2000:]
            time.sleep(0.5)
            thermal = query('edgescope_thermal_zone_temp_celsius{zone="TCPU",type="TCPU"}')
            loss = query('edgescope_run_metric{name="promrun",metric="loss"}')
            step_time = query('edgescope_run_step_time_seconds{name="promrun"} > 0')
            rss = query('edgescope_run_memory_rss_bytes{name="promrun"} > 1e6')
        assert thermal[0]["value"][1] == "61"  # type: ignore[index]
        assert loss[0]["value"][1] == "0.5"  # type: ignore[index]
        up = query('up{job="edgescope"}')
        assert up and up[0]["value"][1] == "1"  # type: ignore[index]
        steps = query('edgescope_run_step{name="promrun"}')
        assert steps and float(steps[0]["value"][1]) > 0  # type: ignore[index]

        # What Prometheus scraped, promtool accepts; OpenMetrics when asked for.
        status, ctype, text = _get(f"http://127.0.0.1:{mport}/metrics", TOKEN)
        assert status == 200 and ctype.startswith("text/plain")
        check = subprocess.run(
            [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 0 and not check.stdout.strip(), check.stdout
        status, ctype, om = _get(
            f"http://127.0.0.1:{mport}/metrics",
            TOKEN,
            accept="application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
        assert status == 200 and ctype.startswith("application/openmetrics-text")
        assert om.rstrip().endswith("# EOF")
    finally:
        stop.write_text("stop")
        prom.terminate()
        prom.wait(timeout=15)
        _, err = sdk.communicate(timeout=30)
    assert sdk.returncode == 0, err


def test_the_token_is_required_as_a_bearer_token(scraped: tuple[Collector, int]) -> None:
    _, mport = scraped
    url = f"http://127.0.0.1:{mport}/metrics"
    assert _get(url)[0] == 401
    assert _get(url, "not-the-token-at-all-0123456789")[0] == 401
    assert _get(url, TOKEN + "x")[0] == 401
    assert _get(url, TOKEN[:-1])[0] == 401
    req = urllib.request.Request(url, headers={"Authorization": f"Basic {TOKEN}"})
    with pytest.raises(urllib.error.HTTPError, match="401"):
        urllib.request.urlopen(req, timeout=10).close()
    assert _get(url.replace("/metrics", "/metrics/"), TOKEN)[0] == 200
    status, _, text = _get(url, TOKEN)
    assert status == 200 and 'edgescope_events_total{kind="collector"' in text
    assert _get(f"http://127.0.0.1:{mport}/other", TOKEN)[0] == 404


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--prometheus", "0.0.0.0:9464"], "refusing to serve --prometheus on 0.0.0.0 without"),
        (["--prometheus", "somehost:9464"], "--prometheus: 'somehost' is not an IP address"),
        (
            ["--prometheus", "127.0.0.1:99999"],
            "--prometheus: '127.0.0.1:99999': port '99999' is not a number",
        ),
    ],
)
def test_bad_prometheus_addresses_are_one_line_errors(
    tmp_path: Path, args: list[str], says: str
) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "edgescope", "collector", "--data-dir", str(tmp_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=ENV,
    )
    assert p.returncode == 2
    assert says in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_the_port_in_use_is_said(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        c = Collector(tmp_path, "--prometheus", f"127.0.0.1:{port}")
        with pytest.raises(AssertionError, match=r"--prometheus: cannot listen on 127\.0\.0\.1"):
            c.start()
        assert c.proc is not None and c.proc.wait(timeout=15) == 1


def test_without_prometheus_client_the_command_names_the_extra(tmp_path: Path) -> None:
    port = free_port()
    argv = [
        "collector",
        "--data-dir",
        str(tmp_path / "d"),
        "--ingest",
        str(tmp_path / "i.sock"),
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--no-mdns",
        "--prometheus",
        f"127.0.0.1:{port}",
    ]
    p = run_without(("prometheus_client",), EDGESCOPE_MAIN, argv, env=ENV)
    assert p.returncode == 3, p.stderr
    assert "pip install prometheus-client (or './collector[prometheus]'" in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_the_pipeline_shows_observers_what_the_sink_took(tmp_path: Path) -> None:
    from edgescope_collector.pipeline import Pipeline
    from test_pipeline import ListSink

    sink = ListSink(refuse=lambda r: isinstance(r, Metrics) and r.key == "unencodable")
    said: list[str] = []
    p = Pipeline(
        sink,
        ingest_path=tmp_path / "i.sock",
        roots=Roots(procfs=TREES / "rpi4" / "proc", sysfs=TREES / "rpi4" / "sys"),
        interval=1.0,
        say=said.append,
    )
    seen: list[object] = []

    def broken(rec: object) -> None:
        raise RuntimeError("observer bug")

    p.observers += [seen.append, broken]
    p.record(RunStart(0, "id0", "mlp", "host", 1, t_us=1))
    p.record(Metrics(0, "unencodable", (1,), (1,), (1.0,)))
    p.record(Metrics(0, "loss", (1,), (1,), (1.0,)))
    assert seen == [r for r in sink.records]  # what the sink took, the refused one not
    assert [type(r).__name__ for r in seen] == ["RunStart", "Metrics"]
    assert p.observers == [seen.append]  # the broken one: removed, said once
    assert sum("observer bug" in line for line in said) == 1
