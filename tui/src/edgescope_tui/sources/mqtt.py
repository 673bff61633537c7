"""The fleet from an MQTT broker: presence and summaries for the fleet screen and ``ls``, and
one device's records as a :class:`~.base.Source` for its dashboard.

The topics and payloads are :mod:`edgescope_tracing.fleet`'s. The device source subscribes to
the device's retained ``runs`` (the runs open now, so that a dashboard opened mid-run knows
them) and to its ``data``; a batch whose range does not start where the last ended is a
``Status("gap")`` (the device's ring no longer held them, or the broker did not deliver them);
a batch sent again after broker trouble is skipped. A payload that is not what it claims is
counted (``malformed``) and skipped: it never ends the stream. aiomqtt is imported when a
connection opens (``pip install '.[mqtt]'``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

from edgescope_tracing import Record, RunStart
from edgescope_tracing.fleet import (
    TOPIC_ROOT,
    FleetPayloadError,
    client_options,
    decode_batch,
    decode_runs,
    device_topic,
    parse_broker_url,
    parse_topic,
)

from ..fleet import FleetModel
from .base import Status

__all__ = ["MqttDeviceSource", "MqttSettings", "snapshot", "watch_fleet"]

log = logging.getLogger("edgescope.tui.mqtt")


class MqttSettings:
    """The broker and how to log in: parsed and checked once (ValueError, one sentence)."""

    def __init__(
        self, url: str, *, password_file: str | None = None, ca_file: str | None = None
    ) -> None:
        self.url = parse_broker_url(url)
        self.options = client_options(self.url, password_file=password_file, ca_file=ca_file)

    def client(self, **extra: Any) -> Any:
        import aiomqtt

        # paho's own lines (a reset connection) would be printed over the screen: the UI says
        # the connection's state itself (model.last_error, Status).
        paho = logging.getLogger("edgescope.tui.mqtt.paho")
        paho.propagate = False
        if not paho.handlers:
            paho.addHandler(logging.NullHandler())
        return aiomqtt.Client(
            **self.options,
            identifier=f"edgescope-view-{secrets.token_hex(4)}",
            clean_session=True,
            keepalive=10,
            logger=logging.getLogger("edgescope.tui.mqtt.paho"),
            **extra,
        )


def _refused(e: Exception) -> bool:
    text = str(e).lower()
    return "not authori" in text or "bad user name or password" in text


async def watch_fleet(
    settings: MqttSettings,
    model: FleetModel,
    stop: asyncio.Event,
    *,
    on_change: Callable[[str | None], None] | None = None,
    retry: float = 0.5,
) -> None:
    """Keep ``model`` up to date from the broker until ``stop``; reconnects after trouble.
    ``on_change`` hears each device changed (None: the connection changed)."""
    import aiomqtt

    pause = retry
    while not stop.is_set():
        try:
            async with settings.client() as client:
                for leaf in ("birth", "death", "summary"):
                    await client.subscribe(f"{TOPIC_ROOT}/+/{leaf}", qos=1)
                pause = retry
                model.last_error = None
                if on_change is not None:
                    on_change(None)
                getter = asyncio.ensure_future(_pump(client, model, on_change))
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait([getter, stopper], return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopper.cancel()
                    getter.cancel()
                    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                        await getter
        except aiomqtt.MqttError as e:
            if _refused(e):  # retrying will not help: said, and the watch ends
                model.last_error = f"the broker refused the login: {e}"
                if on_change is not None:
                    on_change(None)
                return
            model.last_error = f"{settings.url}: {e}"
            if on_change is not None:
                on_change(None)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)
        pause = min(10.0, pause * 2)


async def _pump(
    client: Any, model: FleetModel, on_change: Callable[[str | None], None] | None
) -> None:
    async for msg in client.messages:
        payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else b""
        name = model.update(str(msg.topic), bytes(payload))
        if name is not None and on_change is not None:
            on_change(name)


async def snapshot(
    settings: MqttSettings, *, timeout: float = 3.0, settle: float = 0.5
) -> FleetModel:
    """The fleet as the broker's retained messages tell it now: what arrives until ``settle``
    seconds pass with nothing new (or ``timeout``). ConnectionError with one sentence when the
    broker cannot be reached or refuses the login."""
    import aiomqtt

    model = FleetModel()
    loop = asyncio.get_running_loop()
    try:
        async with settings.client(timeout=timeout) as client:
            for leaf in ("birth", "death", "summary"):
                await client.subscribe(f"{TOPIC_ROOT}/+/{leaf}", qos=1)
            deadline = loop.time() + timeout
            messages = aiter(client.messages)
            while True:
                left = min(settle, deadline - loop.time())
                if left <= 0:
                    break
                try:
                    msg = await asyncio.wait_for(anext(messages), left)
                except TimeoutError:
                    break
                payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else b""
                model.update(str(msg.topic), bytes(payload))
    except aiomqtt.MqttError as e:
        raise ConnectionError(f"{settings.url}: {e}") from None
    return model


class MqttDeviceSource:
    """One device's records from the broker, live (see the module docstring)."""

    def __init__(self, settings: MqttSettings, device: str) -> None:
        self.settings = settings
        self.device = device
        self.label = f"{device} (mqtt {settings.url.host}:{settings.url.port})"
        self.next_seq: int | None = None
        self.malformed = 0
        self._runs_said: set[str] = set()
        self._closed = asyncio.Event()

    async def close(self) -> None:
        self._closed.set()

    async def stream(self) -> AsyncIterator[Record | Status]:
        import aiomqtt

        pause = 0.25
        yield Status("connecting", f"connecting to {self.settings.url}")
        while not self._closed.is_set():
            try:
                async with self.settings.client() as client:
                    await client.subscribe(device_topic(self.device, "runs"), qos=1)
                    await client.subscribe(device_topic(self.device, "data"), qos=1)
                    pause = 0.25
                    yield Status("live", f"live from {self.device} through {self.settings.url}")
                    async for item in self._messages(client):
                        yield item
                        if self._closed.is_set():
                            return
            except aiomqtt.MqttError as e:
                if _refused(e):
                    yield Status("error", f"the broker refused the login: {e}")
                    return
                yield Status("disconnected", f"{self.settings.url}: {e}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), pause)
            pause = min(10.0, pause * 2)
        yield Status("ended", "closed")

    async def _messages(self, client: Any) -> AsyncIterator[Record | Status]:
        messages = aiter(client.messages)
        closer = asyncio.ensure_future(self._closed.wait())
        getter: asyncio.Future[Any] | None = None
        try:
            while True:
                getter = asyncio.ensure_future(anext(messages))
                await asyncio.wait([getter, closer], return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    return
                msg = getter.result()
                getter = None
                payload = msg.payload if isinstance(msg.payload, bytes | bytearray) else b""
                for item in self._decode(str(msg.topic), bytes(payload)):
                    yield item
        finally:
            closer.cancel()
            if getter is not None:  # closed, or the consumer went: the read is not left behind
                getter.cancel()
                with contextlib.suppress(BaseException):
                    await getter

    def _decode(self, topic: str, payload: bytes) -> list[Record | Status]:
        where = parse_topic(topic)
        if where is None or where[0] != self.device or not payload:
            return []
        try:
            if where[1] == "runs":
                _, runs = decode_runs(payload)
                out: list[Record | Status] = []
                for r in runs:
                    if r.run_id not in self._runs_said:
                        self._runs_said.add(r.run_id)
                        out.append(r)
                return out
            if where[1] != "data":
                return []
            batch = decode_batch(payload)
        except FleetPayloadError as e:
            self.malformed += 1
            log.debug("ignored a message on %s: %s", topic, e)
            return []
        out = []
        expected = self.next_seq
        if expected is not None and batch.next <= expected:
            return []  # sent again after broker trouble
        if expected is not None and batch.first > expected:
            out.append(
                Status("gap", "records missing from the broker", gap=(expected, batch.first - 1))
            )
        for rec in batch.records:
            if expected is not None and rec.seq < expected:
                continue
            if isinstance(rec, RunStart):
                if rec.run_id in self._runs_said:
                    continue
                self._runs_said.add(rec.run_id)
            out.append(rec)
        self.next_seq = batch.next
        return out
