"""The console bus of one worker process: a single connection to the console's vhost that
carries, for every unit (workload or monitor) this process hosts, its control messages in
and its reports and frames out.

It lives on the process's I/O loop (labconsole/runtime/loop.py) with the units: a control
message is handed to its units' handlers directly, and what a unit publishes goes to the
connection's output buffer at once (every message of one pass of the loop is written to
the socket together). Other threads may publish too; their messages go through a bounded
outbox. When the broker goes away the bus reconnects with backoff and declares again
everything it had: its control queue, the bindings of every hosted unit and the consumers
of the queues units read (a lab's reports); meanwhile the outbox keeps the newest messages.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import pika
import pika.exceptions as px

from labconsole.broker import amqp

from .loop import Loop, close_quietly

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 20_000  # messages waiting while the broker is away; the oldest go first
BACKOFF = (0.25, 0.5, 1.0, 2.0, 3.0)  # as the units': frames wait for the bus


@dataclass(frozen=True)
class Incoming:
    routing_key: str
    body: bytes
    reply_to: str | None = None
    correlation_id: str | None = None


Handler = Callable[[Incoming], None]
Declare = Callable[[object], None]


class ConsoleBus:
    def __init__(
        self,
        params: Callable[[], list[pika.ConnectionParameters]] | None = None,
        loop: Loop | None = None,
    ):
        self._params = params or (
            lambda: amqp.console_parameters(name=f"labconsole runtime {socket.gethostname()}")
        )
        self.loop = loop or Loop()
        self.control_queue = (
            f"{amqp.control_exchange()}.runtime.{socket.gethostname()}.{os.getpid()}"
        )
        self._bindings: dict[str, list[Handler]] = {}  # control routing key -> handlers
        self._consumers: dict[str, tuple[Handler, Declare]] = {}  # queue -> handler, declare
        self._tags: dict[str, str] = {}  # queue -> consumer tag on the current channel
        self._outbox: deque[tuple[str, str, bytes, pika.BasicProperties | None]] = deque(
            maxlen=OUTBOX_LIMIT
        )
        self._frames: list[tuple[str, bytes]] = []  # made in this pass of the loop, to go
        self._connection: pika.SelectConnection | None = None
        self._channel = None
        self._blocked = False  # a memory or disk alarm: messages wait in the bounded outbox
        self._attempts = 0
        self._stopped = False
        self.connected = threading.Event()

    # --- any thread -------------------------------------------------------------------------
    def start(self) -> None:
        self.loop.start()
        self.loop.call_soon(self._connect)

    def stop(self) -> None:
        """Closes the connection and ends the loop."""

        def close():
            self._stopped = True
            close_quietly(self._connection)
            self.loop.call_later(0.2, self.loop.stop)

        self.loop.call_soon(close)

    def join(self, timeout: float | None = None) -> None:
        self.loop.join(timeout)

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: pika.BasicProperties | None = None,
    ) -> None:
        """Sends a message. Never blocks; while the broker is away the oldest waiting
        messages are dropped (frames and reports carry cumulative numbers, so a lost one
        costs animation, not counts)."""
        direct = self._channel is not None and not self._outbox and not self._blocked
        if direct and self.loop.in_loop():
            try:
                self._channel.basic_publish(exchange, routing_key, body, properties)
                return
            except (px.ChannelWrongStateError, px.ConnectionWrongStateError):
                pass  # closing: kept for the next connection
        self._outbox.append((exchange, routing_key, body, properties))
        if not self.loop.in_loop():
            self.loop.call_soon(self._flush)

    # --- the loop thread (units call these from their callbacks) -------------------------------
    def publish_frame(self, lab_id: str, body: bytes) -> None:
        """Sends a lab's frame. The frames the process's monitors make in one pass of the
        loop (their timers share a grid) leave together as one message of the frames
        exchange, at the start of the next pass: one AMQP message for the broker to route
        and for each web process to read, instead of one per lab."""
        if not self.loop.in_loop():
            self.loop.call_soon(self.publish_frame, lab_id, body)
            return
        if not self._frames:
            self.loop.call_later(0, self._send_frames)
        self._frames.append((lab_id, body))

    def _send_frames(self) -> None:
        frames, self._frames = self._frames, []
        if frames:
            headers, body = amqp.pack_frames(frames)
            self.publish(amqp.frames_exchange(), "", body, pika.BasicProperties(headers=headers))

    def bind(self, routing_key: str, handler: Handler) -> None:
        """Control messages published with `routing_key` go to `handler`, and to every
        other handler bound to the key (a lab's units share its pace key; a new run of a
        workload may overlap the old one's end)."""
        if not self.loop.in_loop():
            self.loop.call_soon(self.bind, routing_key, handler)
            return
        handlers = self._bindings.setdefault(routing_key, [])
        if handler not in handlers:
            handlers.append(handler)
        if len(handlers) == 1 and self._channel is not None:
            self._channel.queue_bind(self.control_queue, amqp.control_exchange(), routing_key)

    def unbind(self, routing_key: str, handler: Handler) -> None:
        """Undoes `bind` for this handler; the key is unbound with its last handler."""
        if not self.loop.in_loop():
            self.loop.call_soon(self.unbind, routing_key, handler)
            return
        handlers = self._bindings.get(routing_key, [])
        if handler in handlers:
            handlers.remove(handler)
            if not handlers:
                del self._bindings[routing_key]
                if self._channel is not None:
                    self._channel.queue_unbind(
                        self.control_queue, amqp.control_exchange(), routing_key
                    )

    def consume(self, queue: str, handler: Handler, declare: Declare) -> None:
        """Messages of a queue of the console's vhost go to `handler`; `declare` declares
        the queue first (the same arguments every time), so that it is there again after
        a broker restart."""
        if not self.loop.in_loop():
            self.loop.call_soon(self.consume, queue, handler, declare)
            return
        self._consumers[queue] = (handler, declare)
        if self._channel is not None:
            if queue in self._tags:  # a new handler for the queue: consume again
                self._channel.basic_cancel(self._tags.pop(queue))
            self._start_consumer(queue)

    def cancel(self, queue: str, handler: Handler) -> None:
        if not self.loop.in_loop():
            self.loop.call_soon(self.cancel, queue, handler)
            return
        if self._consumers.get(queue, (None,))[0] == handler:
            del self._consumers[queue]
            tag = self._tags.pop(queue, None)
            if tag is not None and self._channel is not None:
                self._channel.basic_cancel(tag)

    # --- the connection ---------------------------------------------------------------------
    def _connect(self) -> None:
        if self._stopped:
            return
        self.loop.connect(
            self._params(), on_open=self._opened, on_failed=self._lost, on_close=self._closed
        )

    def _opened(self, connection) -> None:
        self._connection = connection
        self._blocked = False
        connection.add_on_connection_blocked_callback(lambda *_: self._set_blocked(True))
        connection.add_on_connection_unblocked_callback(lambda *_: self._set_blocked(False))
        connection.channel(on_open_callback=self._channel_opened)

    def _channel_opened(self, channel) -> None:
        channel.add_on_close_callback(self._channel_closed)
        amqp.declare_console_exchanges(channel)
        channel.queue_declare(self.control_queue, exclusive=True, auto_delete=True)
        channel.basic_consume(self.control_queue, self._on_control, auto_ack=True)
        for key in self._bindings:
            channel.queue_bind(self.control_queue, amqp.control_exchange(), key)
        self._channel = channel
        self._tags.clear()
        for queue in list(self._consumers):
            self._start_consumer(queue)
        self._attempts = 0
        self.connected.set()
        log.info(
            "console bus connected (%d keys, %d queues)", len(self._bindings), len(self._consumers)
        )
        self._flush()

    def _set_blocked(self, blocked: bool) -> None:
        self._blocked = blocked
        if not blocked:
            self._flush()

    def _channel_closed(self, channel, exc) -> None:
        """A declaration the broker refused closes the channel: start over on a new
        connection, which declares everything again."""
        if channel is self._channel:
            self._channel = None
            self.connected.clear()
            if self._connection is not None and self._connection.is_open:
                log.warning("console bus: channel closed (%s); connecting again", exc)
                close_quietly(self._connection)

    def _closed(self, connection, exc) -> None:
        if connection is self._connection:
            self._lost(exc)

    def _lost(self, exc) -> None:
        self._connection = self._channel = None
        was_connected = self.connected.is_set()
        self.connected.clear()
        if self._stopped:
            return
        if was_connected:
            self._attempts = 0  # it was connected: a new outage starts from the first step
        delay = BACKOFF[min(self._attempts, len(BACKOFF) - 1)]
        self._attempts += 1
        log.warning("console bus: %s; connecting again in %.1f s", str(exc) or repr(exc), delay)
        self.loop.call_later(delay, self._connect)

    def _start_consumer(self, queue: str) -> None:
        handler, declare = self._consumers[queue]
        declare(self._channel)

        def on_message(ch, method, props, body, handler=handler):
            handler(Incoming(method.routing_key, body, props.reply_to, props.correlation_id))

        self._tags[queue] = self._channel.basic_consume(queue, on_message, auto_ack=True)

    def _flush(self) -> None:
        channel = self._channel
        while self._outbox and channel is not None and not self._blocked:
            exchange, key, body, props = self._outbox.popleft()
            channel.basic_publish(exchange, key, body, props)

    def _on_control(self, channel, method, props, body: bytes) -> None:
        message = Incoming(method.routing_key, body, props.reply_to, props.correlation_id)
        for handler in tuple(self._bindings.get(method.routing_key, ())):
            self.loop.guarded(handler, message)
