"""The async side of the flow: one shared aio-pika connection per event loop, and a
bounded queue per viewer bound to one lab's frames."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import deque
from collections.abc import Awaitable, Callable

import aio_pika
import aiormq
from django.conf import settings

from labconsole.broker import amqp

_connections: dict[asyncio.AbstractEventLoop, aio_pika.abc.AbstractConnection] = {}


async def open_channel() -> aio_pika.abc.AbstractChannel:
    """A channel on the connection this event loop shares among its viewers. It is not a
    robust connection: when it is lost, every viewer's channel closes, each WebSocket is
    closed, and the browsers reconnect, to a new connection and a fresh snapshot. One way
    back, the same for every kind of failure."""
    loop = asyncio.get_running_loop()
    for attempt in (1, 2):
        connection = _connections.get(loop)
        if connection is None or connection.is_closed:
            connection = await aio_pika.connect(
                amqp.aio_url(), client_properties={"connection_name": "labconsole stream"}
            )
            _connections[loop] = connection
        try:
            return await connection.channel()
        except (RuntimeError, aio_pika.exceptions.AMQPConnectionError):
            # Lost a moment ago, and not yet marked closed: start a new one.
            _connections.pop(loop, None)
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


class LabStream:
    """Frames of one lab for one viewer.

    Memory stays bounded however slow the viewer is. The viewer acknowledges what it has
    received (`{"type": "ack", "d": n}`); at most FLOW_VIEWER_IN_FLIGHT messages are sent
    and not yet acknowledged, which is the prefetch of this consumer. Past that, frames
    wait in the viewer's queue, which holds at most FLOW_VIEWER_QUEUE_LENGTH and drops
    the oldest (https://www.rabbitmq.com/docs/maxlength): a paused browser loses old
    frames, never server memory. Frames carry cumulative counters, so a lost frame loses
    only animation; the gap in their numbers is reported as `dropped`.
    """

    def __init__(
        self,
        session_id: str,
        deliver: Callable[[dict], Awaitable[None]],
        lost: Callable[[], Awaitable[None]],
    ):
        self.session_id = session_id
        self.deliver = deliver
        self.lost = lost
        self.closing = False
        self.channel: aio_pika.abc.AbstractChannel | None = None
        self.queue = None
        self.last_frame = 0
        self.dropped = 0
        self.sent = 0
        self.in_flight: deque[tuple[int, aio_pika.abc.AbstractIncomingMessage]] = deque()
        self.snapshot_wait: asyncio.Future | None = None

    async def open(self) -> None:
        self.channel = await open_channel()
        self.channel.close_callbacks.add(self._on_channel_closed)
        await self.channel.set_qos(prefetch_count=settings.FLOW_VIEWER_IN_FLIGHT)
        exchange = await self.channel.declare_exchange(
            amqp.flow_exchange(), aio_pika.ExchangeType.TOPIC, durable=True
        )
        await self.channel.declare_exchange(
            amqp.control_exchange(), aio_pika.ExchangeType.TOPIC, durable=True
        )
        self.queue = await self.channel.declare_queue(
            exclusive=True,
            auto_delete=True,
            arguments={
                "x-max-length": settings.FLOW_VIEWER_QUEUE_LENGTH,
                "x-overflow": "drop-head",
            },
        )
        for kind in ("frame", "status", "workload"):
            await self.queue.bind(exchange, f"lab.{self.session_id}.{kind}")
        await self.queue.consume(self._on_message)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        data = json.loads(message.body)
        if message.correlation_id:
            await message.ack()
            if self.snapshot_wait and not self.snapshot_wait.done():
                self.snapshot_wait.set_result(data)
            return
        self.sent += 1
        data["d"] = self.sent
        self.in_flight.append((self.sent, message))
        if data.get("type") == "frame":
            seq = data.get("seq", 0)
            if self.last_frame and seq > self.last_frame + 1:
                self.dropped += seq - self.last_frame - 1
            self.last_frame = max(self.last_frame, seq)
            data["dropped"] = self.dropped
        await self.deliver(data)

    async def ack(self, delivered: int) -> None:
        """The viewer has everything up to `delivered`: let the broker send more."""
        last = None
        while self.in_flight and self.in_flight[0][0] <= delivered:
            last = self.in_flight.popleft()[1]
        if last is not None and not self.channel.is_closed:
            # If the channel is gone, _on_channel_closed is closing the socket already.
            with contextlib.suppress(aiormq.exceptions.AMQPError, RuntimeError):
                await last.ack(multiple=True)

    async def monitor_snapshot(self, timeout: float = 1.5) -> dict | None:
        """Asks the lab's monitor for its numbers and recent events (RPC over RabbitMQ)."""
        self.snapshot_wait = asyncio.get_running_loop().create_future()
        exchange = await self.channel.get_exchange(amqp.control_exchange())
        await exchange.publish(
            aio_pika.Message(
                json.dumps({"op": "snapshot"}).encode(),
                reply_to=self.queue.name,
                correlation_id=uuid.uuid4().hex,
            ),
            routing_key=f"lab.{self.session_id}.monitor",
        )
        try:
            return await asyncio.wait_for(self.snapshot_wait, timeout)
        except TimeoutError:
            return None
        finally:
            self.snapshot_wait = None

    def _on_channel_closed(self, channel, exc: BaseException | None) -> None:
        if not self.closing:
            asyncio.ensure_future(self.lost())

    async def close(self) -> None:
        self.closing = True
        if self.channel is not None and not self.channel.is_closed:
            await self.channel.close()


async def close_shared_connections() -> None:
    """Closes this event loop's connection (the test suite runs one loop per test)."""
    connection = _connections.pop(asyncio.get_running_loop(), None)
    if connection is not None:
        await connection.close()
