"""One wording and one exit code for "not installed", whichever part, command or option.

``edgescope_tracing.extras`` words the sentence and holds the exit code; the ``edgescope``
command, the framework hooks and the collector's own command (``python -m
edgescope_collector``, ``edgescope collector``) all use it. Each command below runs in a fresh
interpreter where the library it needs cannot be imported (a meta-path finder refuses it, as if
it were not installed).
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from edgescope_tracing.extras import NOT_INSTALLED, not_installed
from withoutparts import COLLECTOR_MAIN, EDGESCOPE_MAIN, run_without

from edgescope.errors import NotInstalled

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [
    ROOT / "tracing" / "src",
    ROOT / "collector" / "src",
    ROOT / "tui" / "src",
    ROOT / "edgescope",
    ROOT / "tools",
]


def _run(blocked: tuple[str, ...], entry: str, argv: list[str], cwd: Path) -> tuple[int, str]:
    proc = run_without(blocked, entry, argv, cwd)
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_the_sentence_and_the_code() -> None:
    assert NotInstalled.exit_code == NOT_INSTALLED == 3
    assert not_installed("edgescope ls", "the UI", "pip install x") == (
        "edgescope ls needs the UI, which is not installed here: pip install x"
    )


@pytest.mark.parametrize("entry", [COLLECTOR_MAIN, EDGESCOPE_MAIN], ids=["python -m", "edgescope"])
def test_collector_mqtt_without_the_client(entry: str, tmp_path: Path) -> None:
    argv = ["--mqtt", "mqtt://127.0.0.1:1", "--data-dir", str(tmp_path / "d")]
    if entry == EDGESCOPE_MAIN:
        argv = ["collector", *argv]
    code, err = _run(("aiomqtt", "paho"), entry, argv, tmp_path)
    assert code == NOT_INSTALLED, err
    assert err.count("\n") == 1
    assert (
        "--mqtt needs the MQTT client (aiomqtt), which is not installed here: "
        "pip install aiomqtt paho-mqtt" in err
    )
    assert not (tmp_path / "d").exists()


def test_collector_prometheus_without_the_client(tmp_path: Path) -> None:
    argv = [
        "--prometheus",
        f"127.0.0.1:{_free_port()}",
        "--data-dir",
        str(tmp_path / "d"),
        "--ingest",
        str(tmp_path / "i.sock"),
        "--listen",
        f"127.0.0.1:{_free_port()}",
        "--no-mdns",
    ]
    code, err = _run(("prometheus_client",), COLLECTOR_MAIN, argv, tmp_path)
    assert code == NOT_INSTALLED, err
    assert err.count("\n") == 1
    assert "--prometheus needs prometheus_client, which is not installed here: pip install" in err


def test_the_sentence_is_worded_in_one_place() -> None:
    """No module words "not installed here" itself: it calls ``not_installed``."""
    home = ROOT / "tracing" / "src" / "edgescope_tracing" / "extras.py"
    wording = [
        path
        for folder in SOURCES
        for path in folder.rglob("*.py")
        if path != home and "which is not installed here" in path.read_text()
    ]
    assert wording == []
    assert "which is not installed here" in home.read_text()
