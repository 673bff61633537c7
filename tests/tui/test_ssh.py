"""SSH against a real OpenSSH server: host key checks, auth, forwarding, missing collector."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from edgescope_tracing.extras import COLLECTOR_INSTALL
from edgescope_tui.discovery import Device, SshTarget
from edgescope_tui.discovery.probe import Prober, ProbeSettings
from edgescope_tui.ssh import (
    INSTALL_COMMAND,
    HostKeyError,
    NoCollectorError,
    SshAuthError,
    SshError,
    SshSettings,
    SshUnreachable,
    connect,
)
from sshd import Sshd, free_port, keygen
from sshd.collector import Collector
from sshd.fixtures import (  # noqa: F401 (fixtures)
    ssh_home_fixture,
    sshd_fixture,
    sshd_with_edgescope_fixture,
)

from edgescope.cli import main


def settings_for(server: Sshd, tmp_path: Path, **over: object) -> SshSettings:
    empty_config = tmp_path / "ssh_config"
    empty_config.touch()
    kw: dict[str, object] = {
        "known_hosts": str(server.known_hosts),
        "identities": (str(server.user_key),),
        "agent": False,
        "config": str(empty_config),
        "connect_timeout": 5.0,
    }
    kw.update(over)
    return SshSettings(**kw)  # type: ignore[arg-type]


def fingerprint(pub: Path) -> str:
    out = subprocess.run(["ssh-keygen", "-l", "-f", str(pub)], capture_output=True, text=True)
    return out.stdout.split()[1]


@pytest_asyncio.fixture
async def echo_server() -> AsyncIterator[int]:
    """A TCP server on 127.0.0.1 that answers each line with ``echo: `` and the line."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        writer.write(b"echo: " + line)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.asyncio
async def test_forwards_to_the_devices_loopback_port(
    sshd: Sshd, tmp_path: Path, echo_server: int
) -> None:
    target = SshTarget("127.0.0.1", "root", sshd.port, collector_port=echo_server)
    async with await connect(target, settings_for(sshd, tmp_path)) as dev:
        reader, writer = await dev.open_collector()
        writer.write(b"hello\n")
        assert await reader.readline() == b"echo: hello\n"
        writer.close()
    # The forward went through sshd (direct-tcpip), not around it.
    assert f"target 127.0.0.1 port {echo_server}" in sshd.log.read_text()


@pytest.mark.asyncio
async def test_unknown_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.touch()
    target = SshTarget("127.0.0.1", "root", sshd.port)
    with pytest.raises(HostKeyError) as e:
        await connect(target, settings_for(sshd, tmp_path, known_hosts=str(empty)))
    assert not e.value.changed
    msg = str(e.value)
    assert msg.startswith(f"ssh://root@127.0.0.1:{sshd.port}: REFUSED: the host key is not known")
    assert fingerprint(sshd.host_key.with_suffix(".pub")) in msg
    assert f"ssh -p {sshd.port} root@127.0.0.1" in msg
    assert "\n" not in msg


@pytest.mark.asyncio
async def test_changed_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other_host_key")
    kind, b64 = other.with_suffix(".pub").read_text().split()[:2]
    stale = tmp_path / "known_hosts"
    stale.write_text(f"[127.0.0.1]:{sshd.port} {kind} {b64}\n")
    target = SshTarget("127.0.0.1", "root", sshd.port)
    with pytest.raises(HostKeyError) as e:
        await connect(target, settings_for(sshd, tmp_path, known_hosts=str(stale)))
    assert e.value.changed
    msg = str(e.value)
    assert "REFUSED: the host key has changed" in msg
    assert fingerprint(sshd.host_key.with_suffix(".pub")) in msg
    assert f"ssh-keygen -R '[127.0.0.1]:{sshd.port}'" in msg


@pytest.mark.asyncio
async def test_auth_failure(sshd: Sshd, tmp_path: Path) -> None:
    stranger = keygen(tmp_path / "stranger")
    target = SshTarget("127.0.0.1", "root", sshd.port)
    with pytest.raises(SshAuthError, match=r"authentication failed: .* for root"):
        await connect(target, settings_for(sshd, tmp_path, identities=(str(stranger),)))


@pytest.mark.asyncio
async def test_no_collector_and_not_installed(sshd: Sshd, tmp_path: Path) -> None:
    target = SshTarget("127.0.0.1", "root", sshd.port, collector_port=free_port())
    async with await connect(target, settings_for(sshd, tmp_path)) as dev:
        with pytest.raises(NoCollectorError) as e:
            await dev.open_collector()
    assert e.value.runner is None
    assert e.value.hint == INSTALL_COMMAND
    assert f"no collector on port {target.collector_port}" in str(e.value)
    assert "edgescope is not installed there" in str(e.value)


@pytest.mark.asyncio
async def test_refused_and_silent_servers(tmp_path: Path) -> None:
    settings = SshSettings(
        known_hosts=str(tmp_path / "kh"), identities=(), agent=False, connect_timeout=0.5
    )
    closed = SshTarget("127.0.0.1", "root", free_port())
    with pytest.raises(SshUnreachable, match=r"connection refused on port \d+ \(is sshd"):
        await connect(closed, settings)
    # A server that accepts and never speaks: the login times out, one line.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        target = SshTarget("127.0.0.1", "root", silent.getsockname()[1])
        with pytest.raises(SshUnreachable, match=r"no answer from the SSH server within 0.5 s"):
            await connect(target, settings)
    with pytest.raises(SshUnreachable, match=r"host name 'no-such-host\.invalid' not found"):
        await connect(SshTarget("no-such-host.invalid"), settings)


@pytest.mark.asyncio
async def test_start_the_collector_over_ssh_where_it_is_installed(
    sshd_with_edgescope: Sshd, tmp_path: Path
) -> None:
    server = sshd_with_edgescope
    port = free_port()
    target = SshTarget("127.0.0.1", "root", server.port, collector_port=port)
    base = tmp_path / "device"
    args = ("--data-dir", str(base / "data"), "--ingest", str(base / "in.sock"), "--no-mdns")
    prober = Prober(ProbeSettings(ssh=settings_for(server, tmp_path), collector_args=args))
    pid: int | None = None
    try:
        device = await prober.probe(Device(target.key, target.label, "ssh", target))
        assert device.state == "no-collector"
        assert device.can_start_collector
        assert device.hint == f"edgescope collector --listen 127.0.0.1:{port}"
        assert "no collector is listening on port" in device.error
        dev = await prober.ssh_device(target)
        command, pid = await dev.start_collector(extra_args=args)
        assert command.startswith(f"edgescope collector --listen 127.0.0.1:{port} --data-dir")
        online = await prober.probe(device)
        assert online.state == "online", online.error
        assert online.error == "" and not online.can_start_collector
        assert online.mem_total
    finally:
        await prober.close()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[Collector]:
    c = Collector(tmp_path / "collector")
    try:
        yield c.start()
    finally:
        c.stop()


def test_tail_through_ssh(
    collector: Collector, ssh_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["tail", f"ssh://testbox/{collector.port}", "--since", "0", "--count", "5", "--json"]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    recs = [json.loads(line) for line in out]
    assert len(recs) == 5
    assert [r["seq"] for r in recs] == list(range(recs[0]["seq"], recs[0]["seq"] + 5))
    assert all("kind" in r for r in recs)


def test_tail_through_ssh_without_a_collector(
    ssh_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    assert main(["tail", f"ssh://root@testbox/{port}", "--count", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgescope: ssh://root@testbox: no collector on port")
    assert COLLECTOR_INSTALL in err
    assert err.count("\n") == 1


@pytest.mark.asyncio
async def test_keys_from_the_agent(
    sshd: Sshd, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No key file offered: the identity comes from a real ssh-agent at $SSH_AUTH_SOCK."""
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    try:
        for _ in range(100):
            if sock.exists():
                break
            await asyncio.sleep(0.02)
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        subprocess.run(["ssh-add", "-q", str(sshd.user_key)], env=env, check=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        target = SshTarget("127.0.0.1", "root", sshd.port)
        without = settings_for(sshd, tmp_path, identities=(), agent=False)
        with pytest.raises(SshAuthError):
            await connect(target, without)
        settings = settings_for(sshd, tmp_path, identities=(), agent=True)
        async with await connect(target, settings) as dev:
            result = await dev.conn.run("echo hello", check=True)
            assert result.stdout == "hello\n"
    finally:
        agent.terminate()
        agent.wait(5)


@pytest.mark.asyncio
async def test_user_known_hosts_file_none_is_refused_not_a_silent_pass(
    sshd: Sshd, tmp_path: Path
) -> None:
    """asyncssh takes ``UserKnownHostsFile none`` as "check no host key": refused, one line."""
    config = tmp_path / "ssh_config_none"
    config.write_text(f"Host 127.0.0.1\n    UserKnownHostsFile none\n    Port {sshd.port}\n")
    target = SshTarget("127.0.0.1", "root", sshd.port)
    settings = settings_for(sshd, tmp_path, known_hosts=None, config=str(config))
    with pytest.raises(SshError) as e:
        await connect(target, settings)
    msg = str(e.value)
    assert msg == (
        f"ssh://root@127.0.0.1:{sshd.port}: REFUSED: the SSH config sets UserKnownHostsFile "
        "none for this host, which here would accept any host key unchecked; point it at a "
        "known_hosts file (e.g. ~/.ssh/known_hosts) or remove that line"
    )
    # The same server, the same config but for that line: it connects (the key is known).
    config.write_text(
        f"Host 127.0.0.1\n    UserKnownHostsFile {sshd.known_hosts}\n    Port {sshd.port}\n"
    )
    async with await connect(target, settings) as dev:
        assert (await dev.conn.run("echo ok", check=True)).stdout == "ok\n"


def test_tail_refuses_user_known_hosts_file_none(
    ssh_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ssh_home / ".ssh" / "config"
    config.write_text(config.read_text() + "    UserKnownHostsFile none\n")
    assert main(["tail", "ssh://testbox", "--count", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgescope: ssh://testbox: REFUSED: the SSH config sets ")
    assert err.count("\n") == 1
