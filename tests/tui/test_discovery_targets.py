"""Targets as users write them: ``--ssh``, ``HOST:PORT``, the devices file, ``~/.ssh/config``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from edgescope_tui.discovery import (
    DEFAULT_COLLECTOR_PORT,
    SshTarget,
    TargetError,
    TcpTarget,
    load_devices_file,
    parse_ssh_target,
    parse_tcp_target,
    ssh_config_hosts,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("pi.local", SshTarget("pi.local")),
        ("pi@pi.local", SshTarget("pi.local", "pi")),
        ("pi@pi.local:2222", SshTarget("pi.local", "pi", 2222)),
        ("ssh://root@10.0.0.5:22/", SshTarget("10.0.0.5", "root", 22)),
        ("ssh://jetson", SshTarget("jetson")),
        ("ssh://pi@jetson:2222/7400", SshTarget("jetson", "pi", 2222, 7400)),
        ("me@[fe80::1%eth0]:2200", SshTarget("fe80::1%eth0", "me", 2200)),
        ("fe80::1", SshTarget("fe80::1")),
        ("a.b@host", SshTarget("host", "a.b")),
    ],
)
def test_ssh_targets_parse_as_ssh_takes_them(text: str, expected: SshTarget) -> None:
    assert parse_ssh_target(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "no host name"),
        ("pi@", "no host name"),
        ("@host", "'' is not a user name"),
        ("pi@host:0", "port '0' is not a number from 1 to 65535"),
        ("pi@host:ssh", "port 'ssh' is not a number"),
        ("host:99999", "port '99999'"),
        ("[::1", "missing ']'"),
        ("http://host", "only ssh:// targets"),
        ("ssh://host/0", "(collector port): port '0'"),
        ("ho st", "is not a host name"),
    ],
)
def test_bad_ssh_targets_say_why(text: str, error: str) -> None:
    with pytest.raises(TargetError, match=re.escape(error)):
        parse_ssh_target(text)


def test_labels_read_like_the_target() -> None:
    assert parse_ssh_target("pi@pi.local:2222").label == "ssh://pi@pi.local:2222"
    assert parse_ssh_target("[::1]:22").label == "ssh://[::1]:22"
    assert parse_tcp_target("10.0.0.5:7000").label == "10.0.0.5:7000"
    assert parse_tcp_target("10.0.0.5").port == DEFAULT_COLLECTOR_PORT
    with pytest.raises(TargetError, match="HOST:PORT"):
        parse_tcp_target("10.0.0.5", default_port=None)


def test_devices_file(tmp_path: Path) -> None:
    token = tmp_path / "jetson.token"
    token.write_text("s3cret-0123456789\n")
    token.chmod(0o600)
    f = tmp_path / "devices.toml"
    f.write_text(
        f"""
ssh_config_hosts = true

[[device]]
name = "pi-kitchen"
ssh = "pi@192.168.1.20:2222"
collector_port = 7900

[[device]]
name = "jetson"
address = "10.0.0.5:7313"
token_file = "{token}"

[[device]]
ssh = "root@box"
"""
    )
    loaded = load_devices_file(f)
    assert loaded.ssh_config_hosts is True
    assert loaded.targets == (
        SshTarget("192.168.1.20", "pi", 2222, 7900, "pi-kitchen"),
        TcpTarget("10.0.0.5", 7313, "s3cret-0123456789", "jetson", str(token)),
        SshTarget("box", "root"),
    )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("[[device]\n", "is not valid TOML"),
        ("devices = 1\n", "unknown top-level key 'devices'"),
        ('[[device]]\nname = "a"\n', "device 'a': give exactly one of ssh"),
        ('[[device]]\nssh = "a"\naddress = "b:1"\n', "device 1: give exactly one"),
        ('[[device]]\nssh = "a"\nport = 3\n', "unknown key 'port'"),
        ('[[device]]\nssh = "a:x"\n', "port 'x' is not a number"),
        (
            '[[device]]\nssh = "a"\ncollector_port = 0\n',
            "collector_port: port '0' is not a number from 1 to 65535",
        ),
        ('[[device]]\naddress = "a"\n', "give the collector's address as HOST:PORT"),
        ('[[device]]\naddress = "a:1"\ntoken_file = "/nonexistent/t"\n', "does not exist"),
        ("ssh_config_hosts = 1\n", "must be true or false"),
    ],
)
def test_bad_devices_file_names_the_entry(tmp_path: Path, body: str, error: str) -> None:
    f = tmp_path / "devices.toml"
    f.write_text(body)
    with pytest.raises(TargetError) as e:
        load_devices_file(f)
    assert error in str(e.value)
    assert str(f) in str(e.value)


def test_missing_devices_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert load_devices_file().targets == ()
    with pytest.raises(TargetError, match="does not exist"):
        load_devices_file(tmp_path / "nope.toml")


def test_ssh_config_hosts_are_the_concrete_aliases(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.write_text(
        """
Host *
    ServerAliveInterval 30
Host pi5 pi4 # two boards
    User pi
Host=jetson
    HostName 10.0.0.7
Host *.lab !bad gpu-? ok
Match host foo
"""
    )
    assert [t.host for t in ssh_config_hosts(cfg)] == ["pi5", "pi4", "jetson", "ok"]
    assert ssh_config_hosts(tmp_path / "missing") == []
