"""Reaching a device's collector through SSH, as OpenSSH would, and saying clearly what failed.

The SSH connection is made with asyncssh using what ``ssh`` itself would use: ``~/.ssh/config``
(``HostName``, ``User``, ``Port``, ``IdentityFile``...), the keys in ``~/.ssh`` and the agent,
and ``~/.ssh/known_hosts``. A host key that is not known, or that changed, is refused, never
accepted silently; so is a config with ``UserKnownHostsFile none``, which asyncssh would take as
"check nothing". The collector is then reached by direct-tcpip forwarding to its loopback
port on the device: nothing is opened on the device's network.

Errors::

    SshError                one sentence: what failed, on which target, what to do
    ├── HostKeyError        the host key is unknown (``changed`` False) or changed (True)
    ├── SshAuthError        no key or agent identity was accepted
    ├── SshUnreachable      refused, timed out, no route, name not found
    └── NoCollectorError    SSH works, but nothing listens on the collector's port; says
                            whether edgescope is installed there and the command to run
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import shlex
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
from edgescope_tracing.extras import COLLECTOR_INSTALL

from .discovery import SshTarget
from .errors import TuiError

__all__ = [
    "INSTALL_COMMAND",
    "HostKeyError",
    "NoCollectorError",
    "SshAuthError",
    "SshDevice",
    "SshError",
    "SshSettings",
    "SshUnreachable",
    "Tunnel",
    "connect",
    "open_tunnel",
]

INSTALL_COMMAND = COLLECTOR_INSTALL
"""What the device needs where edgescope is missing there (edgescope is not on PyPI)."""


class SshError(TuiError):
    """An SSH-side failure, with a one-sentence message that names the target."""


class HostKeyError(SshError):
    """The server's host key is not trusted: unknown, or different from the one on record."""

    def __init__(self, message: str, *, changed: bool, fingerprint: str | None) -> None:
        super().__init__(message)
        self.changed = changed
        self.fingerprint = fingerprint


class SshAuthError(SshError):
    """The server accepted none of our identities."""


class SshUnreachable(SshError):
    """The SSH server can't be reached: refused, timed out, no route, unknown name."""


class NoCollectorError(SshError):
    """Logged in, but no collector listens on the device's loopback port.

    ``runner`` is the command that runs the collector there (``edgescope`` or ``python3 -m
    edgescope_collector``), or ``None`` when edgescope is not installed; then ``hint`` is the
    install command.
    """

    def __init__(self, message: str, *, runner: str | None, hint: str) -> None:
        super().__init__(message)
        self.runner = runner
        self.hint = hint


@dataclass(frozen=True, slots=True)
class SshSettings:
    """Where keys and trust come from. ``None`` everywhere means: as OpenSSH would."""

    known_hosts: str | None = None
    """A known_hosts file; ``None``: ``~/.ssh/known_hosts`` (or ``UserKnownHostsFile``)."""
    identities: tuple[str, ...] | None = None
    """Private key files; ``None``: ``IdentityFile`` from the config, else ``~/.ssh/id_*``."""
    agent: bool = True
    """Offer the identities of the agent at ``$SSH_AUTH_SOCK``."""
    config: str | None = None
    """An SSH client config file; ``None``: ``~/.ssh/config``."""
    connect_timeout: float = 10.0


def _options(target: SshTarget, settings: SshSettings) -> asyncssh.SSHClientConnectionOptions:
    kwargs: dict[str, Any] = {
        "connect_timeout": settings.connect_timeout,
        "login_timeout": settings.connect_timeout,
        # Interactive prompts have no place here: keys and the agent only, as BatchMode=yes.
        "password_auth": False,
        "kbdint_auth": False,
    }
    if settings.known_hosts is not None:
        # As OpenSSH: a known_hosts file that does not exist trusts nobody.
        known = settings.known_hosts
        kwargs["known_hosts"] = known if os.path.exists(known) else b""
    if settings.identities is not None:
        kwargs["client_keys"] = list(settings.identities)
    if not settings.agent:
        kwargs["agent_path"] = None
    # ``()`` is asyncssh's "~/.ssh/config if readable" (its options' own default is no config
    # at all; connect() would load it later): the options checked here are those used.
    kwargs["config"] = [settings.config] if settings.config is not None else ()
    if target.user is not None:
        kwargs["username"] = target.user
    return asyncssh.SSHClientConnectionOptions(
        host=target.host, port=target.port if target.port is not None else (), **kwargs
    )


def _where(target: SshTarget) -> str:
    return target.label


async def connect(target: SshTarget, settings: SshSettings | None = None) -> SshDevice:
    """Log in to ``target``; every failure is an :class:`SshError` with one clear sentence."""
    settings = settings or SshSettings()
    where = _where(target)
    try:
        options = _options(target, settings)
    except (asyncssh.ConfigParseError, asyncssh.KeyImportError, OSError, ValueError) as e:
        raise SshError(f"{where}: cannot use the SSH settings: {_reason(e)}") from None
    if options.known_hosts is None:
        # asyncssh reads ``UserKnownHostsFile none`` as "check no host key at all" (OpenSSH
        # reads it as "no user file": unknown keys are still refused). Never connect unchecked.
        raise SshError(
            f"{where}: REFUSED: the SSH config sets UserKnownHostsFile none for this host, "
            "which here would accept any host key unchecked; point it at a known_hosts file "
            "(e.g. ~/.ssh/known_hosts) or remove that line"
        )
    try:
        conn = await asyncssh.connect(target.host, options=options)
    except asyncssh.HostKeyNotVerifiable:
        raise await _host_key_error(target, options) from None
    except asyncssh.PermissionDenied:
        user = options.username or "the user"
        raise SshAuthError(
            f"{where}: authentication failed: the server accepted none of the keys offered "
            f"for {user} (from ~/.ssh, IdentityFile and the agent)"
        ) from None
    except asyncssh.DisconnectError as e:
        raise SshError(f"{where}: the SSH server closed the connection: {e.reason}") from None
    except TimeoutError:
        raise SshUnreachable(
            f"{where}: no answer from the SSH server within {settings.connect_timeout:g} s"
        ) from None
    except ConnectionRefusedError:
        port = options.port or 22
        raise SshUnreachable(
            f"{where}: connection refused on port {port} (is sshd running there?)"
        ) from None
    except socket.gaierror:
        raise SshUnreachable(f"{where}: host name {target.host!r} not found") from None
    except OSError as e:
        raise SshUnreachable(f"{where}: cannot connect: {_reason(e)}") from None
    except (asyncssh.Error, asyncssh.KeyImportError, ValueError) as e:
        raise SshError(f"{where}: SSH failed: {_reason(e)}") from None
    return SshDevice(target, conn)


def _reason(e: BaseException) -> str:
    if isinstance(e, asyncssh.Error):
        return e.reason
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _known_hosts_name(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


async def _host_key_error(
    target: SshTarget, options: asyncssh.SSHClientConnectionOptions
) -> HostKeyError:
    """Tell an unknown key from a changed one, and show the key the server offers."""
    where = _where(target)
    host = options.host_key_alias or options.host or target.host
    port = int(options.port or 22)
    known: Any = options.known_hosts
    if not known:
        default = Path("~", ".ssh", "known_hosts").expanduser()
        known = str(default) if default.is_file() else b""
    try:
        addr = socket.getaddrinfo(options.host or target.host, port)[0][4][0]
    except (OSError, IndexError):
        addr = ""
    try:
        trusted = asyncssh.match_known_hosts(known, host, str(addr), port if port != 22 else None)
        on_record = bool(trusted[0] or trusted[1])
    except (OSError, ValueError, asyncssh.Error):
        on_record = False
    fingerprint: str | None = None
    with contextlib.suppress(OSError, TimeoutError, asyncssh.Error, ValueError):
        key = await asyncio.wait_for(
            asyncssh.get_server_host_key(options.host or target.host, port, config=None), 5
        )
        if key is not None:
            fingerprint = f"{key.get_algorithm()} {key.get_fingerprint()}"
    offered = f" ({fingerprint})" if fingerprint else ""
    name = _known_hosts_name(host, port)
    if on_record:
        return HostKeyError(
            f"{where}: REFUSED: the host key has changed{offered} and differs from the one in "
            f"known_hosts; someone may be intercepting the connection, or the device was "
            f"reinstalled (then remove the old key with: ssh-keygen -R {shlex.quote(name)})",
            changed=True,
            fingerprint=fingerprint,
        )
    login = f"{options.username}@{host}" if options.username else host
    ssh_cmd = f"ssh -p {port} {login}" if port != 22 else f"ssh {login}"
    return HostKeyError(
        f"{where}: REFUSED: the host key is not known{offered}; check its fingerprint on the "
        f"device and accept it by connecting once with: {ssh_cmd}",
        changed=False,
        fingerprint=fingerprint,
    )


_DETECT = (
    "if command -v edgescope >/dev/null 2>&1 && edgescope collector --help >/dev/null 2>&1; "
    "then echo edgescope; "
    "elif python3 -m edgescope_collector --help >/dev/null 2>&1; then echo module; "
    "else echo none; fi"
)
_RUNNERS = {"edgescope": "edgescope collector", "module": "python3 -m edgescope_collector"}
_LOG = "${XDG_STATE_HOME:-$HOME/.local/state}/edgescope/collector.log"


class SshDevice:
    """A logged-in SSH connection to a device, and its collector behind it."""

    def __init__(self, target: SshTarget, conn: asyncssh.SSHClientConnection) -> None:
        self.target = target
        self.conn = conn
        self.label = target.label

    async def __aenter__(self) -> SshDevice:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        self.conn.close()
        with contextlib.suppress(asyncssh.Error, OSError):
            await self.conn.wait_closed()

    async def open_collector(
        self, port: int | None = None
    ) -> tuple[asyncssh.SSHReader[bytes], asyncssh.SSHWriter[bytes]]:
        """A byte stream to the collector's loopback port on the device (direct-tcpip).

        Raises :class:`NoCollectorError` when nothing listens there, having checked whether
        edgescope is installed on the device so the message can say what to run.
        """
        port = port or self.target.collector_port
        try:
            reader, writer = await self.conn.open_connection("127.0.0.1", port, encoding=None)
        except asyncssh.ChannelOpenError as e:
            if e.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
                raise SshError(
                    f"{self.label}: the SSH server does not allow port forwarding "
                    "(AllowTcpForwarding in its sshd_config)"
                ) from None
            if e.code != asyncssh.OPEN_CONNECT_FAILED:
                raise SshError(f"{self.label}: cannot reach the collector: {e.reason}") from None
            raise await self._no_collector(port) from None
        except (asyncssh.Error, OSError) as e:
            raise SshError(f"{self.label}: the SSH connection failed: {_reason(e)}") from None
        return reader, writer

    async def collector_runner(self) -> str | None:
        """The command that runs the collector on the device, or ``None`` if not installed."""
        try:
            result = await asyncio.wait_for(self.conn.run(_DETECT, check=False), 30)
        except (asyncssh.Error, OSError, TimeoutError) as e:
            raise SshError(f"{self.label}: cannot run commands over SSH: {_reason(e)}") from None
        out = str(result.stdout or "").strip().splitlines()
        return _RUNNERS.get(out[-1] if out else "none")

    async def _no_collector(self, port: int) -> NoCollectorError:
        runner = await self.collector_runner()
        if runner is None:
            return NoCollectorError(
                f"{self.label}: no collector on port {port}, and edgescope is not installed "
                f"there; install it on the device with: {INSTALL_COMMAND}",
                runner=None,
                hint=INSTALL_COMMAND,
            )
        start = self.start_command(runner, port)
        return NoCollectorError(
            f"{self.label}: no collector is listening on port {port}; edgescope is installed, "
            f"so it can be started: {runner} --listen 127.0.0.1:{port}",
            runner=runner,
            hint=start,
        )

    def start_command(self, runner: str, port: int) -> str:
        return f"{runner} --listen 127.0.0.1:{port}"

    async def start_collector(
        self, port: int | None = None, *, extra_args: Sequence[str] = (), wait: float = 15.0
    ) -> tuple[str, int | None]:
        """Start the collector on the device in the background and wait until it listens.

        Returns the command that was run and its process id on the device. It is detached from
        the SSH session (``nohup``, its own session), logging to
        ``~/.local/state/edgescope/collector.log``; if it exits or does not listen within
        ``wait`` seconds, the error carries the end of that log.
        """
        port = port or self.target.collector_port
        runner = await self.collector_runner()
        if runner is None:
            raise NoCollectorError(
                f"{self.label}: edgescope is not installed there; install it on the device "
                f"with: {INSTALL_COMMAND}",
                runner=None,
                hint=INSTALL_COMMAND,
            )
        command = " ".join(
            [self.start_command(runner, port), *(shlex.quote(a) for a in extra_args)]
        )
        script = (
            f'log="{_LOG}"; mkdir -p "$(dirname "$log")" && '
            f"{{ command -v setsid >/dev/null && S=setsid || S=; }}; "
            f'nohup $S {command} >>"$log" 2>&1 </dev/null & echo $!'
        )
        try:
            result = await asyncio.wait_for(self.conn.run(script, check=False), 30)
        except (asyncssh.Error, OSError, TimeoutError) as e:
            raise SshError(f"{self.label}: cannot start the collector: {_reason(e)}") from None
        pid = str(result.stdout or "").strip()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while loop.time() < deadline:
            try:
                _, writer = await self.conn.open_connection("127.0.0.1", port, encoding=None)
            except asyncssh.ChannelOpenError:
                alive = await self.conn.run(f"kill -0 {pid} 2>/dev/null", check=False)
                if pid.isdigit() and alive.exit_status != 0:
                    break
                await asyncio.sleep(0.2)
                continue
            except (asyncssh.Error, OSError) as e:
                raise SshError(f"{self.label}: the SSH connection failed: {_reason(e)}") from None
            writer.close()
            return command, int(pid) if pid.isdigit() else None
        tail = await self.conn.run(f'tail -n 3 "{_LOG}" 2>/dev/null', check=False)
        last = " / ".join(str(tail.stdout or "").strip().splitlines()[-3:])
        raise SshError(
            f"{self.label}: started `{command}`, but nothing listens on port {port}"
            + (f": {last}" if last else "")
        )

    async def forward_local(self, port: int | None = None) -> tuple[int, asyncssh.SSHListener]:
        """A listener on this machine's loopback that forwards to the collector (``ssh -L``).

        For clients that want a plain ``host:port``. Returns the local port and the listener
        (close it when done).
        """
        port = port or self.target.collector_port
        listener = await self.conn.forward_local_port("127.0.0.1", 0, "127.0.0.1", port)
        return listener.get_port(), listener


class Tunnel:
    """``ssh -L`` for blocking code: ``host:port`` on this machine reaches the collector.

    The SSH connection runs on an event loop in a background thread; :meth:`close` ends it.
    Only this machine's loopback listens; nothing is opened on the device's network.
    """

    host = "127.0.0.1"

    def __init__(self, target: SshTarget, settings: SshSettings | None = None) -> None:
        self.target = target
        self.settings = settings
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready: concurrent.futures.Future[int] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._main, name="edgescope-ssh", daemon=True)

    def open(self, timeout: float = 60.0) -> Tunnel:
        """Log in, check that the collector answers, start forwarding; SshError if not."""
        self._thread.start()
        try:
            self.port = self._ready.result(timeout)
        except concurrent.futures.TimeoutError:
            self.close()
            raise SshUnreachable(f"{self.target.label}: no answer within {timeout:g} s") from None
        except BaseException:
            self.close()
            raise
        return self

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            device = await connect(self.target, self.settings)
        except BaseException as e:
            self._ready.set_exception(e)
            return
        try:
            # Open (and close) one channel first: "no collector there" is then said clearly,
            # not as a connection that closes for no visible reason.
            _, writer = await device.open_collector()
            writer.close()
            port, listener = await device.forward_local()
        except BaseException as e:
            await device.close()
            self._ready.set_exception(e)
            return
        self._ready.set_result(port)
        try:
            await self._stop.wait()
        finally:
            listener.close()
            await device.close()

    def close(self) -> None:
        stop = self._stop
        if stop is not None and self._thread.is_alive():
            # The thread may end by itself (a failed login) and close its loop between the
            # check and the call: then there is nothing left to stop.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(stop.set)
        if self._thread.ident is not None:
            self._thread.join(10)

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_tunnel(target: str | SshTarget, settings: SshSettings | None = None) -> Tunnel:
    """A :class:`Tunnel` to the collector behind ``ssh://[user@]host[:port]``, open.

    Raises :class:`SshError` (one sentence) for a target that can't be parsed or reached.
    """
    if isinstance(target, str):
        from .discovery import TargetError, parse_ssh_target

        try:
            target = parse_ssh_target(target)
        except TargetError as e:
            raise SshError(str(e)) from None
    return Tunnel(target, settings).open()
