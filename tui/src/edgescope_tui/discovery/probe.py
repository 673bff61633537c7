"""Checking a device: connect to its collector, read the head of its stream, say what's there.

A probe joins the stream at the collector's latest keyframe (which restates the active runs),
reads up to the head, and waits a moment for a first system or thermal sample if none came.
Every failure becomes the device's state and one line: unreachable, refused host key, login
failed, no collector (with the command to start or install it), token needed, and so on.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace

from edgescope_tracing.protocol import (
    AsyncClient,
    AuthError,
    ConnectError,
    Gap,
    ProtocolError,
)

from ..ssh import NoCollectorError, SshDevice, SshError, SshSettings, SshUnreachable, connect
from ._device import Device
from ._facts import DeviceFacts
from ._targets import SshTarget, TargetError, TcpTarget, read_token_file

__all__ = ["ProbeSettings", "Prober"]


@dataclass(frozen=True, slots=True)
class ProbeSettings:
    ssh: SshSettings | None = None
    """How to log in over SSH; ``None``: as OpenSSH would."""
    token: bytes | None = None
    """The token for collectors that want one and whose target names none."""
    timeout: float = 5.0
    """Seconds to connect and complete the handshake."""
    listen: float = 1.5
    """After reading up to the head: seconds to wait for a first sample if none came yet."""
    collector_args: tuple[str, ...] = ()
    """Extra arguments for a collector started over SSH (e.g. ``--interval 0.5``)."""


class Prober:
    """Checks devices; SSH logins are kept between checks and closed by :meth:`close`."""

    def __init__(self, settings: ProbeSettings | None = None) -> None:
        self.settings = settings or ProbeSettings()
        self._ssh: dict[str, SshDevice] = {}
        self._ssh_locks: dict[str, asyncio.Lock] = {}

    async def close(self) -> None:
        devices = list(self._ssh.values())
        self._ssh.clear()
        for d in devices:
            await d.close()

    async def ssh_device(self, target: SshTarget) -> SshDevice:
        """The SSH login for ``target``, made once and re-made when it dropped."""
        lock = self._ssh_locks.setdefault(target.key, asyncio.Lock())
        async with lock:
            dev = self._ssh.get(target.key)
            if dev is not None and not dev.conn.is_closed():
                return dev
            dev = await connect(target, self.settings.ssh)
            self._ssh[target.key] = dev
            return dev

    def _token(self, device: Device) -> bytes | None:
        target = device.target
        if isinstance(target, TcpTarget) and target.token:
            return target.token.encode()
        if isinstance(target, SshTarget) and target.token_file:
            return read_token_file(target.token_file, device.label).encode()
        return self.settings.token

    async def _open(self, device: Device) -> AsyncClient:
        target = device.target
        token = self._token(device)
        timeout = self.settings.timeout
        if isinstance(target, TcpTarget):
            return await AsyncClient.connect(target.host, target.port, token=token, timeout=timeout)
        assert isinstance(target, SshTarget)
        dev = await self.ssh_device(target)
        reader, writer = await dev.open_collector()
        try:
            return await AsyncClient.over(
                reader, writer, token=token, label=target.label, timeout=timeout
            )
        except BaseException:
            writer.close()
            raise

    async def probe(self, device: Device) -> Device:
        """The device with its state and figures now; never raises for device trouble."""
        if device.target is None:
            return device
        # Each step has its own timeout; this bounds the whole, SSH login included.
        limit = self.settings.timeout * 2
        if isinstance(device.target, SshTarget):
            limit += (self.settings.ssh or SshSettings()).connect_timeout * 2
        try:
            client = await asyncio.wait_for(self._open(device), limit)
        except NoCollectorError as e:
            return replace(
                device.with_state("no-collector", str(e), e.hint),
                can_start_collector=e.runner is not None,
            )
        except SshUnreachable as e:
            return device.with_state("unreachable", str(e))
        except SshError as e:
            return device.with_state("error", str(e))
        except ConnectError as e:
            return device.with_state("unreachable", str(e))
        except AuthError as e:
            return device.with_state("error", str(e))
        except (ProtocolError, TargetError) as e:
            return device.with_state("error", str(e))
        except TimeoutError:
            return device.with_state("unreachable", f"{device.label}: no answer in time")
        except OSError as e:
            return device.with_state("unreachable", f"{device.label}: {e.strerror or e}")
        try:
            facts, head = await self._read_head(client)
        finally:
            await client.close()
        welcome = client.welcome
        return replace(
            device,
            state="online",
            error="",
            hint="",
            can_start_collector=False,
            hostname=welcome.host or device.hostname,
            auth_required=welcome.auth,
            protocol=welcome.version,
            runs=tuple(facts.runs.values()),
            head_seq=head,
            temp_c=facts.temp_c,
            mem_used=facts.mem_used,
            mem_total=facts.mem_total,
            throttled=facts.throttled,
        )

    async def _read_head(self, client: AsyncClient) -> tuple[DeviceFacts, int]:
        facts = DeviceFacts()
        head = client.welcome.next_seq
        last = -1
        loop = asyncio.get_running_loop()
        listen_until: float | None = None
        it = aiter(client)
        try:
            while True:
                caught_up = last >= head - 1
                if caught_up and facts.samples:
                    break
                if caught_up and listen_until is None:
                    listen_until = loop.time() + self.settings.listen
                budget = (
                    self.settings.timeout if listen_until is None else listen_until - loop.time()
                )
                if budget <= 0:
                    break
                try:
                    async with asyncio.timeout(budget):
                        item = await anext(it)
                except (StopAsyncIteration, TimeoutError, ProtocolError):
                    break
                if isinstance(item, Gap):
                    last = max(last, item.last)
                    continue
                last = max(last, item.seq)
                facts.add(item)
        finally:
            # Ends the client's generator (already ended after an error or a timeout).
            await it.aclose()  # type: ignore[attr-defined]
        return facts, max(head, last + 1)

    async def start_collector(self, device: Device) -> Device:
        """Start the collector on an SSH device where it is installed, then check it again."""
        target = device.target
        if not isinstance(target, SshTarget):
            return device.with_state(
                "error", f"{device.label}: the collector can only be started over SSH"
            )
        try:
            dev = await self.ssh_device(target)
            await dev.start_collector(extra_args=self.settings.collector_args)
        except NoCollectorError as e:
            return replace(
                device.with_state("no-collector", str(e), e.hint), can_start_collector=False
            )
        except SshError as e:
            return device.with_state("error", str(e))
        return await self.probe(device)
