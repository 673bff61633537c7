"""``edgescope ls`` end to end: real collector, real sshd, real mDNS adverts on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from edgescope_tracing.extras import COLLECTOR_INSTALL
from sshd import Sshd, free_port
from sshd.collector import Collector
from sshd.fixtures import ssh_home_fixture, sshd_fixture  # noqa: F401 (fixtures)
from zeroconf import IPVersion, ServiceInfo, Zeroconf

from edgescope.cli import main

SERVICE = "_edgescope._tcp.local."
RUN = uuid.uuid4().hex[:6]
PI, BROKEN = f"lab-pi-{RUN}", f"broken-{RUN}"
"""Our adverts' names: other runs on this machine advertise on loopback too."""


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(tmp_path / "collector")
    try:
        yield c.start()
    finally:
        c.stop()


@pytest.fixture
def adverts() -> Iterator[Zeroconf]:
    zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    try:
        yield zc
    finally:
        zc.unregister_all_services()
        zc.close()


def advertise(zc: Zeroconf, name: str, port: int, txt: dict[str, str]) -> None:
    info = ServiceInfo(
        SERVICE,
        f"{name}.{SERVICE}",
        addresses=[socket.inet_aton("127.0.0.1")],
        port=port,
        properties=txt,
        server=f"{name}.local.",
    )
    zc.register_service(info, cooperating_responders=True)


def test_ls_json_lists_each_device_with_its_state(
    collector: Collector,
    adverts: Zeroconf,
    sshd: Sshd,
    ssh_home: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    advertise(adverts, PI, collector.port, {"proto": "1", "host": "lab", "auth": "0"})
    advertise(adverts, BROKEN, 7313, {"proto": "1", "host": "x"})
    nothing = free_port()
    devices = ssh_home / ".config" / "edgescope" / "devices.toml"
    devices.parent.mkdir(parents=True)
    devices.write_text(
        f'[[device]]\nname = "via-ssh"\nssh = "testbox"\ncollector_port = {collector.port}\n'
    )
    code = main(
        [
            "ls",
            "--json",
            "--timeout",
            "4",
            "--mdns-interface",
            "127.0.0.1",
            "--ssh",
            f"root@127.0.0.1:{sshd.port}",
            "--collector-port",
            str(nothing),
            "--address",
            f"127.0.0.1:{nothing}",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    by_name = {d["name"]: d for d in json.loads(out)}
    # Devices other than ours (adverts of other runs on this machine) may be listed too.
    assert set(by_name) >= {
        PI,
        BROKEN,
        "via-ssh",
        f"ssh://root@127.0.0.1:{sshd.port}",
        f"127.0.0.1:{nothing}",
    }
    pi = by_name[PI]
    assert (pi["state"], pi["via"], pi["error"]) == ("online", "mdns", None)
    assert pi["hostname"] == socket.gethostname()
    assert pi["mem_total"] and pi["mem_used"]
    assert by_name["via-ssh"]["state"] == "online"
    assert by_name["via-ssh"]["via"] == "config"
    assert by_name["via-ssh"]["head_seq"] > 0
    broken = by_name[BROKEN]
    assert broken["state"] == "error"
    assert broken["error"] == "malformed advert: TXT record lacks 'auth'"
    no_collector = by_name[f"ssh://root@127.0.0.1:{sshd.port}"]
    assert no_collector["state"] == "no-collector"
    assert "edgescope is not installed there" in no_collector["error"]
    assert no_collector["hint"] == COLLECTOR_INSTALL
    refused = by_name[f"127.0.0.1:{nothing}"]
    assert refused["state"] == "unreachable"
    assert "connection refused" in refused["error"]


def test_ls_table_and_an_unknown_host_key(
    collector: Collector, sshd: Sshd, ssh_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (ssh_home / ".ssh" / "known_hosts").write_text("")
    code = main(
        [
            "ls",
            "--no-mdns",
            "--timeout",
            "3",
            "--ssh",
            "root@testbox",
            "--address",
            f"127.0.0.1:{collector.port}",
        ]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert out[0].split() == ["DEVICE", "VIA", "STATE", "RUNS", "TEMP", "MEMORY", "THROTTLE"]
    assert out[1].split()[:2] == ["ssh://root@testbox", "ssh"]
    assert out[1].split()[2] == "error"
    assert out[2].strip().startswith("ssh://root@testbox: REFUSED: the host key is not known")
    assert out[3].split()[:3] == [f"127.0.0.1:{collector.port}", "tcp", "online"]
    assert "GiB" in out[3]


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--timeout", "soon"], "--timeout must be a number of seconds, not 'soon'"),
        (["--timeout", "0"], "--timeout must be more than 0"),
        (["--ssh", "pi@host:99999"], "port '99999' is not a number from 1 to 65535"),
        (["--collector-port", "0"], "--collector-port: port '0' is not a number from 1 to 65535"),
        (["--address", "host"], "give the collector's address as HOST:PORT"),
        (["--no-mdns"], "nothing to list: mDNS is off"),
        (["--devices", "/nonexistent/devices.toml"], "does not exist"),
        (["--token-file", "/nonexistent/token"], "does not exist"),
    ],
)
def test_ls_bad_arguments_are_one_sentence(
    argv: list[str],
    error: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert main(["ls", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("edgescope: ") and error in err
    assert err.count("\n") == 1


def test_ls_without_mdns_still_lists_configured_devices(
    collector: Collector, capsys: pytest.CaptureFixture[str]
) -> None:
    # An interface address this machine does not have: browsing can't start there.
    argv = ["ls", "--json", "--timeout", "2", "--mdns-interface", "203.0.113.5"]
    assert main([*argv, "--address", f"127.0.0.1:{collector.port}"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("edgescope: mDNS unavailable: ")
    assert captured.err.endswith("; listing configured devices only\n")
    [device] = json.loads(captured.out)
    assert device["state"] == "online"


def test_ls_ssh_config_hosts(ssh_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``Host testbox`` in ~/.ssh/config: reached by its alias, as ``ssh testbox`` would."""
    port = free_port()
    argv = ["ls", "--json", "--no-mdns", "--ssh-config", "--collector-port", str(port)]
    assert main(argv) == 0
    [device] = json.loads(capsys.readouterr().out)
    assert (device["name"], device["via"], device["state"]) == (
        "ssh://testbox",
        "ssh-config",
        "no-collector",
    )
    assert f"no collector on port {port}" in device["error"]


def test_ls_lists_both_entries_for_one_address(
    collector: Collector, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two entries of the devices file for one address are both listed, the second saying
    so: neither vanishes."""
    f = tmp_path / "devices.toml"
    address = f"127.0.0.1:{collector.port}"
    f.write_text(
        f'[[device]]\nname = "bench"\naddress = "{address}"\n\n'
        f'[[device]]\nname = "bench-again"\naddress = "{address}"\n'
    )
    argv = ["ls", "--no-mdns", "--timeout", "3", "--devices", str(f)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].startswith("bench ")
    assert out.splitlines()[2].startswith("bench-again ")
    assert "    the same address as bench: both are listed and checked" in out
    assert main([*argv, "--json"]) == 0
    devices = json.loads(capsys.readouterr().out)
    assert [(d["name"], d["state"], d["duplicate_of"]) for d in devices] == [
        ("bench", "online", None),
        ("bench-again", "online", "bench"),
    ]
