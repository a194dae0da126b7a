"""The async side of the live view: one subscription per lab per web process, fanned out in
memory to that lab's WebSockets (docs/live-protocol.md).

    monitors ──frames message──▶ feed queue (one per process, bound once per lab here)
                                   │  each frame to its lab's hub, as bytes
    monitor ──lab.<id>.<kind>──▶ hub queue (one per lab with viewers here; kinds: KINDS)
                                   │  each message read once
                                   ▼
                                  Hub ──▶ Viewer ──▶ WebSocket   (one per socket: a small
                                      ──▶ Viewer ──▶ WebSocket    buffer, the in-flight limit)

A `Hub` holds one exclusive, auto-deleted, short queue bound to the lab's routing keys
on the flow exchange, and the binding of the process's feed to the lab's frames. Both
exist while the lab has viewers in this process (and a few seconds more, so that a page
reload does not delete and declare them again). The text of a
message is forwarded as it came: each socket's `d` (and a frame's `dropped`) is spliced in
front of the monitor's JSON object, which is never decoded per socket.

Every hub of this process shares one AMQP connection. When it is lost, sockets stay open:
each is told `broker-unavailable`, the hubs connect again with backoff (0.5 s doubling to
5 s), declare their queues anew (an exclusive queue dies with its connection) and each
socket is told `broker-back` and given a fresh snapshot.

Status messages (the lab ended, the broker is away, ...) are the only ones decoded here: each
socket is told them in its own language, chosen for the page that opened it.

No Django app is imported here; the consumer in exercises/consumers.py supplies the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import uuid
from collections import deque
from collections.abc import Awaitable, Callable

import aio_pika
from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext_noop

from labconsole.broker import amqp

log = logging.getLogger(__name__)

# What a lab's hub queue is bound to; its frames come through the process's feed.
KINDS = ("status", "workload", "topology", "steps", "presence")
CONNECTION_NAME = "labconsole stream {pid}"
CONNECT_TIMEOUT = 5.0
HEARTBEAT = 20
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 5.0
# A hub that stayed up this long starts its backoff over after the next loss.
STABLE_SECONDS = 5.0
# How often a hub with viewers tells the lab's monitor that someone watches.
WATCH_EVERY = 5.0
# A watched monitor sends a frame at least every five seconds (IDLE_FRAME): after this long
# without one, the viewers are told it is silent.
MONITOR_SILENT_AFTER = 8.0
# How long a new socket waits for its lab's hub to be subscribed before its snapshot.
JOIN_WAIT = 3.0

# What a socket is told of each state, in its own language. A state not named here keeps
# the message it came with.
STATUS_TEXTS = {
    "ended": gettext_noop("This lab has ended."),
    "reset": gettext_noop("The lab was reset."),
    "broker-unavailable": gettext_noop(
        "The console lost its connection to RabbitMQ and is reconnecting."
    ),
    "broker-back": gettext_noop("The console is connected to RabbitMQ again."),
    "monitor-silent": gettext_noop(
        "The lab's monitor is not answering; a worker is taking it over."
    ),
    "monitor-back": gettext_noop("The lab's monitor is back."),
}

# A frame is `{"type": "frame", "seq": N, ...}`: its number is read from the first bytes;
# anything else is decoded once per hub.
_SEQ = re.compile(rb'^\{\s*"type"\s*:\s*"frame"\s*,\s*"seq"\s*:\s*(\d+)\s*[,}]')


def hub_queue_length() -> int:
    return settings.FLOW_HUB_QUEUE_LENGTH


def ack_every() -> int:
    return max(1, hub_prefetch() // 2)


def hub_prefetch() -> int:
    return settings.FLOW_HUB_PREFETCH


def viewer_frames() -> int:
    return settings.FLOW_VIEWER_BUFFER


def viewer_others() -> int:
    return settings.FLOW_VIEWER_BUFFER_OTHERS


def hub_grace() -> float:
    return settings.FLOW_HUB_GRACE_SECONDS


def queue_prefix(lab_id: str) -> str:
    """Names of this lab's hub queues (any process) start with this."""
    return f"{settings.LABCONSOLE_PREFIX}.view.{lab_id}."


def connection_name() -> str:
    return CONNECTION_NAME.format(pid=os.getpid())


def _tail(text: str) -> str | None:
    """What follows `{"d":N,"dropped":M` for a JSON object's text: its members after a
    comma, or the closing brace of an empty object. None for anything but an object."""
    text = text.strip()
    if not text.startswith("{") or not text.endswith("}"):
        return None
    rest = text[1:]
    return rest if rest.lstrip() == "}" else "," + rest


def _status_tail(state: str, message: str) -> str:
    text = json.dumps({"type": "status", "state": state, "message": message})
    return "," + text[1:]


def status_text(state: str, language: str | None, message: str = "") -> str:
    """What a socket in `language` is told of `state`."""
    msgid = STATUS_TEXTS.get(state)
    if msgid is None:
        return message
    with translation.override(language):
        return translation.gettext(msgid)


def frame_seq(body: bytes) -> int | None:
    """A frame's number, read from its first bytes as the monitor writes it, else decoded."""
    match = _SEQ.match(body)
    if match:
        return int(match.group(1))
    try:
        seq = json.loads(body).get("seq")
    except (ValueError, AttributeError):
        return None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


async def _declare_short_queue(channel, prefix: str) -> aio_pika.abc.AbstractQueue:
    """A queue of this process that keeps the newest hub_queue_length() messages. A new
    name each time (`prefix`, the pid, a random part): the old exclusive queue may linger on
    the broker a moment after its connection was lost. Exclusive: gone with the connection;
    auto-deleted: gone with the consumer; and, should a failure leave it declared but never
    consumed, expired after a minute."""
    return await channel.declare_queue(
        f"{prefix}{os.getpid()}.{uuid.uuid4().hex[:8]}",
        exclusive=True,
        auto_delete=True,
        arguments={
            "x-max-length": hub_queue_length(),
            "x-overflow": "drop-head",
            "x-expires": 60_000,
        },
    )


async def _acknowledge(reader: _Feed | Hub, message) -> None:
    """Acknowledges a reader's messages in groups (half the prefetch at a time, `multiple`):
    one acknowledgement per frame was a third of what the broker did for the viewers."""
    reader.unacked += 1
    if reader.unacked >= ack_every():
        reader.unacked = 0
        with contextlib.suppress(Exception):
            await message.ack(multiple=True)


class BrokerUnavailable(Exception):
    pass


class _Broker:
    """This event loop's connection to RabbitMQ, shared by its hubs. Not a robust
    connection: each hub notices the loss on its channel and comes back on its own, with
    its own backoff, through connection(), which makes at most one attempt at a time and
    answers "unavailable" at once for a moment after an attempt failed, so that many hubs
    do not make many attempts."""

    def __init__(self) -> None:
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self.lock = asyncio.Lock()
        self.failed_at: float | None = None
        self.failure = ""
        self.hubs: dict[str, Hub] = {}
        self.feed = _Feed(self)

    def is_open(self) -> bool:
        c = self.connection
        return c is not None and not c.is_closed and c.connected.is_set()

    async def get(self) -> aio_pika.abc.AbstractConnection:
        if self.is_open():
            return self.connection
        loop = asyncio.get_running_loop()
        async with self.lock:
            if self.is_open():
                return self.connection
            if self.failed_at is not None and loop.time() - self.failed_at < BACKOFF_FIRST:
                raise BrokerUnavailable(self.failure)
            old, self.connection = self.connection, None
            if old is not None:
                with contextlib.suppress(Exception):
                    await old.close()
            try:
                connection = await aio_pika.connect(
                    f"{amqp.aio_url()}?heartbeat={HEARTBEAT}",
                    timeout=CONNECT_TIMEOUT,
                    client_properties={"connection_name": connection_name()},
                )
            except Exception as exc:
                self.failed_at = loop.time()
                self.failure = f"{type(exc).__name__}: {exc}"
                raise BrokerUnavailable(self.failure) from exc
            self.failed_at = None
            self.connection = connection
            return connection

    async def close(self) -> None:
        for hub in list(self.hubs.values()):
            await hub.close()
        await self.feed.close()
        connection, self.connection = self.connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()


class _Feed:
    """This process's one subscription to the frames exchange: one queue, bound once for
    each lab with a hub here. A message holds the frames one worker process's monitors
    made together; each frame goes to its lab's hub, as bytes. One message a tick per
    worker process, however many labs are watched here, instead of one per lab.

    Like a hub's queue it is short and drops its oldest messages when this process falls
    behind. It opens on the connection of the first hub to bind a lab, again after that
    connection is lost (each hub binds its lab again when it comes back), and on its own
    after a channel error, binding again the labs of every hub here."""

    def __init__(self, broker: _Broker) -> None:
        self.broker = broker
        self.lock = asyncio.Lock()
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self.channel: aio_pika.abc.AbstractChannel | None = None
        self.queue: aio_pika.abc.AbstractQueue | None = None
        self.exchange: aio_pika.abc.AbstractExchange | None = None
        self.bound: set[str] = set()
        self.unacked = 0
        self.opened = 0  # how many times the queue was declared (tests read it)
        self.closing = False

    def _is_open(self, connection) -> bool:
        channel = self.channel
        return self.connection is connection and channel is not None and not channel.is_closed

    async def bind(self, connection: aio_pika.abc.AbstractConnection, lab_id: str) -> None:
        """Frames of `lab_id` come to its hub from now on. Raises if the broker refuses."""
        async with self.lock:
            if not self._is_open(connection):
                await self._open(connection)
            if lab_id not in self.bound:
                await self.queue.bind(self.exchange, "", arguments=amqp.frames_binding(lab_id))
                self.bound.add(lab_id)

    async def unbind(self, lab_id: str) -> None:
        """The lab's hub here is gone; a new hub of the lab keeps the binding."""
        async with self.lock:
            if lab_id not in self.bound or lab_id in self.broker.hubs:
                return
            self.bound.discard(lab_id)
            if self.channel is not None and not self.channel.is_closed:
                with contextlib.suppress(Exception):
                    await self.queue.unbind(
                        self.exchange, "", arguments=amqp.frames_binding(lab_id)
                    )

    async def _open(self, connection: aio_pika.abc.AbstractConnection) -> None:
        await self._close_channel()
        self.bound.clear()
        channel = await connection.channel(publisher_confirms=False)
        try:
            await channel.set_qos(prefetch_count=hub_prefetch())
            exchange = await channel.declare_exchange(
                amqp.frames_exchange(), aio_pika.ExchangeType.HEADERS, durable=True
            )
            queue = await _declare_short_queue(
                channel, f"{settings.LABCONSOLE_PREFIX}.view.frames."
            )
            self.unacked = 0
            await queue.consume(self._on_message)
        except BaseException:
            with contextlib.suppress(Exception):
                await channel.close()
            raise
        channel.close_callbacks.add(self._channel_closed)
        self.connection, self.channel, self.exchange, self.queue = (
            connection,
            channel,
            exchange,
            queue,
        )
        self.opened += 1

    def _channel_closed(self, channel, *_exc) -> None:
        """A channel error (the connection's loss is the hubs' to notice): open again."""
        if channel is self.channel and not self.closing:
            asyncio.get_running_loop().create_task(self._restore())

    async def _restore(self) -> None:
        await asyncio.sleep(BACKOFF_FIRST)
        if self.closing or not self.broker.is_open() or not self.broker.hubs:
            return
        try:
            connection = await self.broker.get()
            for lab_id, hub in list(self.broker.hubs.items()):
                if hub.state == "up":
                    await self.bind(connection, lab_id)
        except Exception as exc:  # noqa: BLE001 - each hub binds again when it comes back
            log.warning("the frames feed could not open again (%s)", exc)

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            for lab_id, body in amqp.unpack_frames(message.headers, message.body):
                hub = self.broker.hubs.get(lab_id)
                if hub is not None:
                    await hub.on_frame(body)
        except Exception:
            log.exception("a frames message could not be handed on")
        finally:
            await _acknowledge(self, message)

    async def _close_channel(self) -> None:
        channel, self.channel, self.queue, self.connection = self.channel, None, None, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()

    async def close(self) -> None:
        self.closing = True
        async with self.lock:
            self.bound.clear()
            await self._close_channel()


_brokers: dict[asyncio.AbstractEventLoop, _Broker] = {}


def _broker() -> _Broker:
    loop = asyncio.get_running_loop()
    broker = _brokers.get(loop)
    if broker is None:
        broker = _brokers[loop] = _Broker()
    return broker


class Viewer:
    """One socket of a lab: its numbering (`d`), its in-flight limit and its small buffer.

    At most FLOW_VIEWER_IN_FLIGHT messages are sent and not yet acknowledged by the browser
    (`{"type": "ack", "d": n}`). Past that, messages wait here: at most viewer_frames()
    frames (the oldest is dropped and counted in `dropped`) and viewer_others() status and
    workload messages, which are kept while there are frames to drop. A socket that stops
    reading holds a few messages, never more, and nobody waits for it.

    A new viewer is held (nothing sent) until release(), so that its snapshot comes first.
    """

    def __init__(
        self,
        hub: Hub,
        send_text: Callable[[str], Awaitable[None]],
        broker_back: Callable[[], Awaitable[None]],
        language: str | None = None,
    ):
        self.hub = hub
        self.send_text = send_text
        self.broker_back = broker_back
        self.language = language
        self.sent = 0
        self.acked = 0
        self.buffer: deque[tuple[bool, str]] = deque()  # (is a frame, tail)
        self.frames_waiting = 0
        self.dropped_here = 0
        self.hub_dropped_at_join = hub.dropped
        self.held = True
        self.pumping = False
        self.closed = False
        self.told_unavailable = False

    @property
    def dropped(self) -> int:
        """Frames this socket did not get: dropped from its buffer, and gaps in the
        frames' numbers the hub saw since the socket joined."""
        return self.dropped_here + self.hub.dropped - self.hub_dropped_at_join

    @property
    def in_flight(self) -> int:
        return self.sent - self.acked

    def offer(self, is_frame: bool, tail: str) -> None:
        if is_frame:
            if self.frames_waiting >= viewer_frames():
                for i, (frame, _) in enumerate(self.buffer):
                    if frame:
                        del self.buffer[i]
                        break
                self.frames_waiting -= 1
                if not self.held:  # while held, the snapshot to come covers them
                    self.dropped_here += 1
            self.frames_waiting += 1
        elif len(self.buffer) - self.frames_waiting >= viewer_others():
            for i, (frame, _) in enumerate(self.buffer):
                if not frame:
                    del self.buffer[i]
                    break
        self.buffer.append((is_frame, tail))

    def offer_status(self, state: str, message: str = "") -> None:
        """A status message, in this socket's language."""
        self.offer(False, _status_tail(state, status_text(state, self.language, message)))

    async def pump(self) -> None:
        """Sends what waits, up to the in-flight limit. One pump at a time per socket, so
        `d` follows the order of sending."""
        if self.pumping or self.held or self.closed:
            return
        self.pumping = True
        limit = settings.FLOW_VIEWER_IN_FLIGHT
        try:
            while self.buffer and self.sent - self.acked < limit and not self.closed:
                is_frame, tail = self.buffer.popleft()
                self.sent += 1
                if is_frame:
                    self.frames_waiting -= 1
                    text = f'{{"d":{self.sent},"dropped":{self.dropped}{tail}'
                else:
                    text = f'{{"d":{self.sent}{tail}'
                await self.send_text(text)
        except Exception as exc:  # noqa: BLE001 - closed under us: its disconnect follows
            log.info("lab %s: a socket is closed (%s): nothing more to it", self.hub.lab_id, exc)
            self.closed = True
            self.buffer.clear()
            self.frames_waiting = 0
        finally:
            self.pumping = False

    async def ack(self, delivered: int) -> None:
        """The browser has everything up to `delivered`: send it more."""
        self.acked = max(self.acked, min(delivered, self.sent))
        await self.pump()

    async def release(self) -> None:
        """The snapshot is sent: what came meanwhile may follow."""
        self.held = False
        await self.pump()

    async def monitor_snapshot(self, timeout: float = 1.5) -> dict | None:
        """The lab monitor's numbers and recent events (RPC over RabbitMQ), or None if the
        monitor does not answer in time or the broker is unavailable."""
        return await self.hub.monitor_snapshot(timeout)

    def leave(self) -> None:
        """The socket is gone: drop what it held; the hub may go after its grace."""
        self.closed = True
        self.buffer.clear()
        self.frames_waiting = 0
        self.hub.remove(self)


class Hub:
    """One lab's subscription in this process and the sockets it feeds."""

    def __init__(self, broker: _Broker, lab_id: str):
        self.broker = broker
        self.lab_id = lab_id
        self.viewers: dict[Viewer, None] = {}  # insertion-ordered set
        self.state = "starting"  # starting | up | down | closed
        self.settled = asyncio.Event()  # set once the first attempt has an outcome
        self.channel: aio_pika.abc.AbstractChannel | None = None
        self.queue: aio_pika.abc.AbstractQueue | None = None
        self.control: aio_pika.abc.AbstractExchange | None = None
        self.last_seq = 0
        self.last_frame_at = 0.0
        self.monitor_silent = False
        self.lab_ended = False
        self.dropped = 0
        self.replies: dict[str, asyncio.Future] = {}
        self.grace: asyncio.TimerHandle | None = None
        self.declared: aio_pika.abc.AbstractQueue | None = None
        self.opened = 0  # how many times the queue was declared (tests read it)
        self.unacked = 0  # messages taken since the last acknowledgement
        self.task = asyncio.get_running_loop().create_task(self._run())

    # --- viewers ---------------------------------------------------------------------------
    def add(self, viewer: Viewer) -> None:
        if self.grace is not None:
            self.grace.cancel()
            self.grace = None
        self.viewers[viewer] = None
        if self.state == "down":
            viewer.told_unavailable = True
            viewer.offer_status("broker-unavailable")

    def remove(self, viewer: Viewer) -> None:
        self.viewers.pop(viewer, None)
        if not self.viewers and self.state != "closed" and self.grace is None:
            loop = asyncio.get_running_loop()
            self.grace = loop.call_later(hub_grace(), self._grace_over)

    def _grace_over(self) -> None:
        self.grace = None
        if not self.viewers and self.state != "closed":
            self._retire()  # at once, so that no socket joins a hub on its way out
            asyncio.get_running_loop().create_task(self._unsubscribe())

    async def _fan_out(self, is_frame: bool, tail: str) -> None:
        viewers = list(self.viewers)
        for viewer in viewers:  # every buffer first, with no await in between: same order
            viewer.offer(is_frame, tail)
        for viewer in viewers:
            await viewer.pump()

    async def _fan_out_status(self, state: str, message: str = "") -> None:
        viewers = list(self.viewers)
        for viewer in viewers:
            viewer.offer_status(state, message)
        for viewer in viewers:
            await viewer.pump()

    # --- the subscription ------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = BACKOFF_FIRST
        while self.state != "closed":
            try:
                connection = await self.broker.get()
                await self._open(connection)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure: say so, try again
                log.warning("lab %s: cannot subscribe to the flow (%s)", self.lab_id, exc)
                await self._delete_declared()
                await self._close_channel()
                await self._set_down()
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
                continue
            up_since = loop.time()
            await self._set_up()
            watching = loop.create_task(self._watch())
            try:
                await self.channel.closed()
            finally:
                watching.cancel()
            if self.state == "closed":
                return
            log.warning("lab %s: lost the flow subscription; reconnecting", self.lab_id)
            await self._set_down()
            if loop.time() - up_since >= STABLE_SECONDS:
                delay = BACKOFF_FIRST
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)

    async def _open(self, connection: aio_pika.abc.AbstractConnection) -> None:
        self.channel = channel = await connection.channel(publisher_confirms=False)
        # A modest prefetch with acknowledgements, rather than no_ack: if this process falls
        # behind, the backlog stays in the broker's short queue, which drops the oldest,
        # instead of piling up here.
        await channel.set_qos(prefetch_count=hub_prefetch())
        flow = await channel.declare_exchange(
            amqp.flow_exchange(), aio_pika.ExchangeType.TOPIC, durable=True
        )
        self.control = await channel.declare_exchange(
            amqp.control_exchange(), aio_pika.ExchangeType.TOPIC, durable=True
        )
        self.declared = queue = await _declare_short_queue(channel, queue_prefix(self.lab_id))
        for kind in KINDS:
            await queue.bind(flow, amqp.lab_key(self.lab_id, kind))
        self.unacked = 0
        await queue.consume(self._on_message)
        await self.broker.feed.bind(connection, self.lab_id)
        self.queue = queue
        self.opened += 1

    async def _on_message(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        try:
            if message.correlation_id:
                future = self.replies.pop(message.correlation_id, None)
                if future is not None and not future.done():
                    try:
                        future.set_result(json.loads(message.body))
                    except ValueError:
                        future.set_result(None)
                return
            kind = (message.routing_key or "").rpartition(".")[2]
            if kind == "status":
                await self._on_status(message.body)
                return
            tail = _tail(message.body.decode("utf-8", "replace"))
            if tail is None:
                log.warning("lab %s: a %s message is not a JSON object", self.lab_id, kind)
                return
            await self._fan_out(False, tail)
        finally:
            await _acknowledge(self, message)

    async def on_frame(self, body: bytes) -> None:
        """One of the lab's frames, from the process's feed."""
        if self.state == "closed":
            return
        tail = _tail(body.decode("utf-8", "replace"))
        if tail is None:
            log.warning("lab %s: a frame is not a JSON object", self.lab_id)
            return
        self._count_gap(body)
        self.last_frame_at = asyncio.get_running_loop().time()
        if self.monitor_silent:
            self.monitor_silent = False
            await self._fan_out_status("monitor-back")
        await self._fan_out(True, tail)

    async def _on_status(self, body: bytes) -> None:
        """A change of the lab's state, said to each socket in its language."""
        try:
            status = json.loads(body)
            state, message = str(status["state"]), str(status.get("message") or "")
        except (ValueError, TypeError, KeyError):
            log.warning("lab %s: a status message is not one: %r", self.lab_id, body[:200])
            return
        if state == "ended":
            self.lab_ended = True
        await self._fan_out_status(state, message)

    def _count_gap(self, body: bytes) -> None:
        seq = frame_seq(body)
        if seq is None:
            return
        if self.last_seq and seq > self.last_seq + 1:
            self.dropped += seq - self.last_seq - 1
        # A lower number is a new run of the monitor, which numbers its frames from 1.
        self.last_seq = seq

    async def _set_up(self) -> None:
        was = self.state
        self.state = "up"
        self.settled.set()
        if was != "down":
            return
        back = [v for v in self.viewers if v.told_unavailable]
        for viewer in back:
            viewer.told_unavailable = False
            viewer.offer_status("broker-back")
        for viewer in back:
            await viewer.pump()
            if not viewer.closed:
                asyncio.get_running_loop().create_task(self._broker_back(viewer))

    async def _broker_back(self, viewer: Viewer) -> None:
        try:
            await viewer.broker_back()
        except Exception:
            log.exception("lab %s: the snapshot after the broker came back failed", self.lab_id)

    async def _set_down(self) -> None:
        if self.state == "closed":
            return
        was = self.state
        self.state = "down"
        self.settled.set()
        self.queue = self.control = None
        for future in self.replies.values():
            if not future.done():
                future.set_result(None)
        self.replies.clear()
        if was == "down":
            return
        viewers = [v for v in self.viewers if not v.told_unavailable]
        for viewer in viewers:
            viewer.told_unavailable = True
            viewer.offer_status("broker-unavailable")
        for viewer in viewers:
            await viewer.pump()

    async def _delete_declared(self) -> None:
        queue, self.declared = self.declared, None
        if queue is not None and self.channel is not None and not self.channel.is_closed:
            with contextlib.suppress(Exception):
                await queue.delete(if_unused=False, if_empty=False)

    async def _close_channel(self) -> None:
        channel, self.channel = self.channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()

    async def _watch(self) -> None:
        """Tells the lab's monitor that someone watches: it sends frames at full rate only
        then (labconsole/flow/monitor.py, WATCH_SECONDS). And tells the viewers when the
        monitor has fallen silent (its worker died: another takes it over within seconds),
        rather than leaving the page still."""
        loop = asyncio.get_running_loop()
        self.last_frame_at = loop.time()
        next_watch = 0.0
        while True:
            now = loop.time()
            if now >= next_watch:
                next_watch = now + WATCH_EVERY
                try:
                    await self.control.publish(
                        aio_pika.Message(b'{"op":"watch"}'),
                        routing_key=amqp.lab_key(self.lab_id, "monitor"),
                        mandatory=False,  # no monitor bound (it is being taken over): fine
                    )
                except Exception as exc:  # noqa: BLE001 - the channel's loss is handled in _run
                    log.debug("lab %s: watch not sent (%s)", self.lab_id, exc)
            silent = now - self.last_frame_at > MONITOR_SILENT_AFTER
            if silent and self.viewers and not self.monitor_silent and not self.lab_ended:
                self.monitor_silent = True
                await self._fan_out_status("monitor-silent")
            await asyncio.sleep(1.0)

    async def monitor_snapshot(self, timeout: float) -> dict | None:
        if self.state != "up" or self.queue is None or self.control is None:
            return None
        correlation_id = uuid.uuid4().hex
        future = asyncio.get_running_loop().create_future()
        self.replies[correlation_id] = future
        try:
            await self.control.publish(
                aio_pika.Message(
                    b'{"op":"snapshot"}',
                    reply_to=self.queue.name,
                    correlation_id=correlation_id,
                ),
                routing_key=amqp.lab_key(self.lab_id, "monitor"),
                mandatory=False,  # no monitor (yet): the wait below times out
            )
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return None
        except Exception as exc:  # noqa: BLE001 - the snapshot is then the database's alone
            log.info("lab %s: snapshot request failed (%s)", self.lab_id, exc)
            return None
        finally:
            self.replies.pop(correlation_id, None)

    async def close(self) -> None:
        """Unsubscribes: the queue is deleted and the viewers (if any) get nothing more."""
        if self.state != "closed":
            self._retire()
            await self._unsubscribe()

    def _retire(self) -> None:
        self.state = "closed"
        if self.broker.hubs.get(self.lab_id) is self:
            del self.broker.hubs[self.lab_id]
        if self.grace is not None:
            self.grace.cancel()
            self.grace = None
        self.task.cancel()
        for future in self.replies.values():
            if not future.done():
                future.set_result(None)

    async def _unsubscribe(self) -> None:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task
        await self.broker.feed.unbind(self.lab_id)
        self.queue = None
        await self._delete_declared()
        await self._close_channel()


async def join(
    lab_id: str,
    send_text: Callable[[str], Awaitable[None]],
    broker_back: Callable[[], Awaitable[None]],
    language: str | None = None,
) -> Viewer:
    """A new socket of a lab. `send_text` sends one WebSocket text message; `broker_back`
    is called after an outage, once the socket was told `broker-back` (it should send a
    fresh snapshot); status messages are in `language`. The viewer is held until
    release(). Waits (up to JOIN_WAIT) for the lab's subscription on a new hub, so that a
    snapshot RPC can be answered."""
    broker = _broker()
    hub = broker.hubs.get(lab_id)
    if hub is None:
        hub = broker.hubs[lab_id] = Hub(broker, lab_id)
    viewer = Viewer(hub, send_text, broker_back, language)
    hub.add(viewer)
    if not hub.settled.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(hub.settled.wait(), JOIN_WAIT)
    return viewer


def hubs() -> dict[str, Hub]:
    """This event loop's hubs by lab id."""
    return _broker().hubs


async def close_shared_connections() -> None:
    """Closes this event loop's hubs and connection (the test suite runs a loop per test)."""
    broker = _brokers.pop(asyncio.get_running_loop(), None)
    if broker is not None:
        await broker.close()
