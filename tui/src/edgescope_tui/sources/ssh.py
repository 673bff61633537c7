"""Opening a collector's stream through SSH: one SSH login, re-made when it drops.

The collector is reached by direct-tcpip forwarding to its loopback port on the device (see
:mod:`edgescope_tui.ssh`); the stream protocol then runs over that channel unchanged. The SSH
connection is kept between stream connections and made again when it was lost.
"""

from __future__ import annotations

from edgescope_tracing.protocol import AsyncClient, ConnectError

from ..discovery import SshTarget
from ..discovery._targets import TargetError, read_token_file
from ..ssh import HostKeyError, SshAuthError, SshDevice, SshError, SshSettings, connect
from .base import FatalSourceError

__all__ = ["SshOpener"]


class SshOpener:
    """Opens the stream of the collector behind ``target``; see :class:`LiveSource`."""

    def __init__(
        self,
        target: SshTarget,
        *,
        settings: SshSettings | None = None,
        token: bytes | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.target = target
        self.settings = settings
        self.token = token
        self.timeout = timeout
        self.label = target.label
        self.device: SshDevice | None = None

    async def open(self, since: int | None) -> AsyncClient:
        token = self.token
        if token is None and self.target.token_file:
            try:
                token = read_token_file(self.target.token_file, self.label).encode()
            except TargetError as e:
                raise FatalSourceError(str(e)) from None
        device = self.device
        if device is None or device.conn.is_closed():
            try:
                device = self.device = await connect(self.target, self.settings)
            except (HostKeyError, SshAuthError) as e:
                # Never retried: a refused key or login does not get better by asking again.
                raise FatalSourceError(str(e)) from None
            except SshError as e:
                raise ConnectError(str(e)) from None
        try:
            reader, writer = await device.open_collector()
        except SshError as e:
            if device.conn.is_closed():
                self.device = None
            raise ConnectError(str(e)) from None
        try:
            return await AsyncClient.over(
                reader, writer, since=since, token=token, label=self.label, timeout=self.timeout
            )
        except BaseException:
            writer.close()
            raise

    async def close(self) -> None:
        device, self.device = self.device, None
        if device is not None:
            await device.close()
