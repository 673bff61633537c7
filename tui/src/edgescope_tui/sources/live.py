"""The live source: a collector's stream over TCP (or through SSH), reconnecting and resuming.

The stream is the collector's from the latest keyframe (or from ``since``), then live. With
``from_start`` (what the TUI opens a device with) the current runs are shown from their
start: the latest keyframe restates the active runs, each with the sequence number of its
run start, so the source reconnects at the earliest of them and reads the history from there.
Where the collector's ring no longer holds that start, the run starts it restated are passed
on (so the run and its time origin are known), then the oldest records the ring holds, with a
gap between that says ``history from step N: the collector's ring no longer holds the start``.

When the connection drops, the source says so at once (``Status("disconnected")``), reconnects with
exponential backoff, and resumes from the last sequence number it delivered plus one: records
the collector still holds arrive with no gap and none twice; records it no longer holds are
announced as ``Status("gap", gap=(first, last))``. A collector that goes silent (no record and
no heartbeat for ``idle_timeout``) counts as dropped, so a device that loses power is noticed
too.

Failures that retrying can't fix end the stream with ``Status("error")``: a refused token, a
protocol the collector does not speak, an SSH host key or login that is refused. Everything
else (refused, unreachable, timed out, no collector yet) is retried.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from edgescope_tracing import Keyframe, Metrics, Record, RunStart
from edgescope_tracing.protocol import (
    AsyncClient,
    AuthError,
    ConnectError,
    Gap,
    ProtocolError,
    RefusedError,
)

from ..discovery import SshTarget, Target, TcpTarget
from .base import RING_LOST, FatalSourceError, Status

if TYPE_CHECKING:
    from ..ssh import SshSettings

__all__ = [
    "RING_LOST",
    "Backoff",
    "FatalSourceError",
    "LiveSource",
    "Opener",
    "TcpOpener",
    "live_source",
]


class Opener(Protocol):
    """Opens a handshaken connection to a collector, resuming at ``since``."""

    label: str

    async def open(self, since: int | None) -> AsyncClient:
        """A client after the handshake; raise ProtocolError / FatalSourceError / OSError."""
        ...

    async def close(self) -> None: ...


class TcpOpener:
    """A collector at ``host:port`` over plain TCP, with a token when it wants one."""

    def __init__(
        self, host: str, port: int, *, token: bytes | None = None, timeout: float = 10.0
    ) -> None:
        self.host = host
        self.port = port
        self.token = token
        self.timeout = timeout
        self.label = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def open(self, since: int | None) -> AsyncClient:
        return await AsyncClient.connect(
            self.host, self.port, since=since, token=self.token, timeout=self.timeout
        )

    async def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Backoff:
    """Reconnect delays: ``first``, doubling up to ``limit`` seconds; reset once live."""

    first: float = 0.25
    limit: float = 10.0

    def delay(self, attempt: int) -> float:
        return float(min(self.limit, self.first * (2 ** min(attempt, 30))))


class LiveSource:
    """Records and status from a collector, across drops; see the module's docstring."""

    def __init__(
        self,
        opener: Opener,
        *,
        label: str | None = None,
        since: int | None = None,
        backoff: Backoff | None = None,
        idle_timeout: float = 15.0,
        from_start: bool = False,
    ) -> None:
        self.opener = opener
        self.label = label or opener.label
        self.next_seq = since
        """The resume cursor: the sequence number after the last record delivered."""
        self.backoff = backoff or Backoff()
        self.idle_timeout = idle_timeout
        self.from_start = from_start and since is None
        """Read the runs active on joining from their start (see the module's docstring)."""
        self.welcome_host: str | None = None
        """The hostname the collector gave in its last handshake."""
        self.head_on_connect: int | None = None
        """The collector's head (its next sequence number) when the last connection opened:
        the stream is ``history`` until the records before it are read, then ``live``."""
        self._cut: tuple[int, int] | None = None
        """Records (first, last) before the oldest the ring holds, of runs that started there:
        said as a gap before the first record read after them."""
        self._closed = asyncio.Event()
        self._client: AsyncClient | None = None

    async def close(self) -> None:
        """Stop: the stream ends after the status or record it is on."""
        self._closed.set()
        client, self._client = self._client, None
        if client is not None:
            await client.close()
        await self.opener.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closed.wait(), seconds)

    async def stream(self) -> AsyncIterator[Record | Status]:
        attempt = 0
        was_live = False
        looking = self.from_start  # still to learn where the runs start (the first keyframe)
        again = False  # connecting again where the runs start: no drop, nothing to say
        while not self.closed:
            if not again:
                yield Status("connecting", f"connecting to {self.label}")
            again = False
            try:
                client = await self.opener.open(self.next_seq)
            except (FatalSourceError, AuthError, RefusedError) as e:
                yield Status("error", str(e))
                return
            except (ProtocolError, OSError) as e:
                if self.closed:
                    return
                delay = self.backoff.delay(attempt)
                attempt += 1
                message = f"{_text(e)}; retrying in {delay:g} s"
                if was_live or isinstance(e, ConnectError):
                    yield Status("disconnected", message)
                else:
                    yield Status("error", message)
                await self._pause(delay)
                continue
            if self.closed:
                await client.close()
                return
            self._client = client
            welcome = client.welcome
            self.welcome_host = welcome.host
            if self.next_seq is not None and welcome.next_seq < self.next_seq:
                # A collector whose store was wiped: its numbers start again. Read its stream
                # from its oldest record rather than wait for numbers we already had.
                await client.close()
                yield Status(
                    "gap",
                    f"{self.label}: the collector's stream started over at {welcome.first_seq} "
                    f"(we had read up to {self.next_seq - 1})",
                )
                self.next_seq = welcome.first_seq
                continue
            attempt = 0
            was_live = True
            live = Status("live", f"live from {self.label} ({welcome.host})")
            start = welcome.first_seq if self.next_seq is None else self.next_seq
            head = self.head_on_connect = welcome.next_seq
            if start >= head:
                looking = False  # nothing stored yet: every run starts in what comes
                yield live
            else:
                yield Status(
                    "history",
                    f"reading what {self.label} holds, up to record {head - 1:,}",
                )
            restart: list[RunStart] | None = None
            async with contextlib.aclosing(self._relay(client)) as items:
                async for item in items:
                    if looking and not isinstance(item, Status):
                        looking = False
                        restart = self._history_start(item, welcome.first_seq)
                        if restart is not None:
                            break  # reconnect where the runs start: this one is closed
                    if self._cut is not None and not isinstance(item, Status):
                        yield self._cut_status(item)
                    yield item
                    if head and self.next_seq is not None and self.next_seq >= head:
                        head = 0  # read up to the head as it was on connecting: live from here
                        yield live
            if restart is not None:
                again = True
                for run_start in restart:  # the ring lost them: their start as restated
                    yield run_start

    def _history_start(self, item: Record, first_seq: int) -> list[RunStart] | None:
        """Where the runs active on joining start, from the keyframe the stream opened with:
        sets the resume cursor there and returns the run starts the ring no longer holds
        (to be passed on as restated); None where the stream already reads from there."""
        if not isinstance(item, Keyframe) or not item.runs:
            return None
        earliest = min(r.seq for r in item.runs)
        if earliest >= item.seq:
            return None
        lost = sorted((r for r in item.runs if r.seq < first_seq), key=lambda r: r.seq)
        if lost:
            self._cut = (lost[-1].seq + 1, first_seq - 1)
            self.next_seq = first_seq
        else:
            self.next_seq = earliest
        return lost

    def _cut_status(self, item: Record) -> Status:
        """The gap between the restated run starts and the oldest record the ring holds."""
        assert self._cut is not None
        first, last = self._cut
        self._cut = None
        if isinstance(item, Keyframe) and item.last_step >= 0:
            where = f"step {item.last_step + 1:,}"
        elif isinstance(item, Metrics) and item.steps:
            where = f"step {item.steps[0]:,}"
        else:
            where = f"record {item.seq:,}"
        return Status(
            "gap",
            f"history from {where}: {RING_LOST}",
            gap=(first, last) if last >= first else None,
        )

    async def _relay(self, client: AsyncClient) -> AsyncGenerator[Record | Status, None]:
        """Yield from one connection until it ends; then the disconnect status."""
        it = aiter(client)
        message = ""
        try:
            while True:
                try:
                    # asyncio.timeout, not wait_for: no task per record at 10,000 records/s.
                    async with asyncio.timeout(self.idle_timeout):
                        item = await anext(it)
                except StopAsyncIteration:
                    message = client.end_message or "the collector ended the stream"
                    break
                except TimeoutError:
                    message = f"nothing from {self.label} for {self.idle_timeout:g} s"
                    break
                except ProtocolError as e:
                    message = str(e)
                    break
                if isinstance(item, Gap):
                    first = item.first
                    if self.next_seq is not None:
                        first = max(first, self.next_seq)
                    if item.last >= first:
                        yield Status(
                            "gap",
                            f"records {first} to {item.last} are lost: {item.reason}",
                            gap=(first, item.last),
                        )
                        self.next_seq = item.last + 1
                    continue
                if self.next_seq is not None and item.seq < self.next_seq:
                    continue
                if self.next_seq is not None and item.seq > self.next_seq:
                    yield Status(
                        "gap",
                        f"records {self.next_seq} to {item.seq - 1} did not arrive",
                        gap=(self.next_seq, item.seq - 1),
                    )
                self.next_seq = item.seq + 1
                yield item
        finally:
            self._client = None
            # Ends the client's generator (already ended after an error or a timeout).
            await it.aclose()  # type: ignore[attr-defined]
            await client.close()
        if not self.closed:
            yield Status("disconnected", f"{message}; reconnecting")


def _text(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e) or type(e).__name__


def live_source(
    target: Target,
    *,
    since: int | None = None,
    token: bytes | None = None,
    ssh_settings: SshSettings | None = None,
    backoff: Backoff | None = None,
    idle_timeout: float = 15.0,
    from_start: bool = False,
) -> LiveSource:
    """The live source for a target: TCP for a :class:`TcpTarget`, SSH for an :class:`SshTarget`.

    ``token`` overrides the target's own. ``ssh_settings`` is an
    :class:`edgescope_tui.ssh.SshSettings` (``None``: as OpenSSH would). ``from_start``: the
    runs active on joining from their start (:class:`LiveSource`).
    """
    opener: Opener
    if isinstance(target, TcpTarget):
        tok = token if token is not None else (target.token.encode() if target.token else None)
        opener = TcpOpener(target.host, target.port, token=tok)
    else:
        assert isinstance(target, SshTarget)
        from .ssh import SshOpener

        opener = SshOpener(target, settings=ssh_settings, token=token)
    return LiveSource(
        opener,
        label=target.label,
        since=since,
        backoff=backoff,
        idle_timeout=idle_timeout,
        from_start=from_start,
    )
