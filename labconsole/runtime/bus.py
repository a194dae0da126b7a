"""The console bus of one worker process: a single connection to the console's vhost that
carries, for every unit (workload or monitor) this process hosts, its control messages in
and its reports and frames out.

Units block on their own lab connection only; what the bus receives for a unit is put in
the unit's inbox, which wakes it (`Unit.post`). What a unit publishes goes into the bus's
bounded outbox and is sent from the bus's thread, so that no pika object is shared between
threads. When the broker goes away the bus reconnects with backoff and declares again
everything it had: its control queue, the bindings of every hosted unit and the consumers
of the queues units read (a lab's reports).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import pika
import pika.exceptions as px

from labconsole.broker import amqp

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 20_000  # messages waiting while the broker is away; the oldest go first
BACKOFF = (0.25, 0.5, 1.0, 2.0, 3.0)  # as the units': frames wait for the bus
# While messages flow, the bus sends what waits this often rather than being woken for each
# one: under load a wake per frame and per report cost more than the sending itself.
BATCH_SECONDS = 0.01
BUSY_SECONDS = 1.0  # batching ends this long after the last message sent
CONNECTION_ERRORS = (px.AMQPConnectionError, px.AMQPChannelError, px.StreamLostError, OSError)


@dataclass(frozen=True)
class Incoming:
    routing_key: str
    body: bytes
    reply_to: str | None = None
    correlation_id: str | None = None


Handler = Callable[[Incoming], None]
Declare = Callable[[object], None]


class ConsoleBus:
    def __init__(self, params: Callable[[], list[pika.ConnectionParameters]] | None = None):
        self._params = params or (
            lambda: amqp.console_parameters(name=f"labconsole runtime {socket.gethostname()}")
        )
        self.control_queue = (
            f"{amqp.control_exchange()}.runtime.{socket.gethostname()}.{os.getpid()}"
        )
        self._lock = threading.Lock()
        self._bindings: dict[str, list[Handler]] = {}  # control routing key -> handlers
        self._consumers: dict[str, tuple[Handler, Declare]] = {}  # queue -> handler, declare
        self._outbox: deque[tuple[str, str, bytes, pika.BasicProperties | None]] = deque(
            maxlen=OUTBOX_LIMIT
        )
        self._changes: deque[tuple[str, str]] = deque()  # ("bind"|"unbind"|"consume"|..., name)
        self._connection: pika.BlockingConnection | None = None
        self._wake_pending = False
        self._batching = False
        self._stopped = threading.Event()
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._run, name="console-bus", daemon=True)

    # --- what units call (any thread) ---------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._wake()

    def bind(self, routing_key: str, handler: Handler) -> None:
        """Control messages published with `routing_key` go to `handler`, and to every
        other handler bound to the key (a lab's units share its pace key; a new run of a
        workload may overlap the old one's end). Handlers run in the bus thread: they only
        hand the message on."""
        with self._lock:
            handlers = self._bindings.setdefault(routing_key, [])
            if handler not in handlers:
                handlers.append(handler)
            if len(handlers) == 1:
                self._changes.append(("bind", routing_key))
        self._wake()

    def unbind(self, routing_key: str, handler: Handler) -> None:
        """Undoes `bind` for this handler; the key is unbound with its last handler."""
        with self._lock:
            handlers = self._bindings.get(routing_key, [])
            if handler in handlers:
                handlers.remove(handler)
                if not handlers:
                    del self._bindings[routing_key]
                    self._changes.append(("unbind", routing_key))
        self._wake()

    def consume(self, queue: str, handler: Handler, declare: Declare) -> None:
        """Messages of a queue of the console's vhost go to `handler`; `declare` declares
        the queue first (the same arguments every time), so that it is there again after
        a broker restart."""
        with self._lock:
            self._consumers[queue] = (handler, declare)
            self._changes.append(("consume", queue))
        self._wake()

    def cancel(self, queue: str, handler: Handler) -> None:
        with self._lock:
            if self._consumers.get(queue, (None,))[0] == handler:
                del self._consumers[queue]
                self._changes.append(("cancel", queue))
        self._wake()

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: pika.BasicProperties | None = None,
    ) -> None:
        """Queues a message for the bus thread to send. Never blocks; while the broker is
        away the oldest waiting messages are dropped (frames and reports carry cumulative
        numbers, so a lost one costs animation, not counts)."""
        self._outbox.append((exchange, routing_key, body, properties))
        if not self._batching:
            self._wake()

    # --- the bus thread -------------------------------------------------------------------
    def _wake(self) -> None:
        connection = self._connection
        if connection is None or self._wake_pending:
            return
        self._wake_pending = True
        try:
            connection.add_callback_threadsafe(self._woken)
        except Exception:  # noqa: BLE001 - closing or closed: the run loop reconnects
            self._wake_pending = False

    def _woken(self) -> None:
        self._wake_pending = False

    def _run(self) -> None:
        attempt = 0
        while not self._stopped.is_set():
            try:
                self._serve()
            except CONNECTION_ERRORS as exc:
                if self.connected.is_set():
                    attempt = 0  # it was connected: a new outage starts from the first step
                self.connected.clear()
                delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
                attempt += 1
                log.warning("console bus: %s; connecting again in %.1f s", exc or repr(exc), delay)
                self._stopped.wait(delay)
            finally:
                connection, self._connection = self._connection, None
                amqp.close_quietly(connection)

    def _serve(self) -> None:
        connection = amqp.connect(self._params())
        channel = connection.channel()
        amqp.declare_console_exchanges(channel)
        channel.queue_declare(self.control_queue, exclusive=True, auto_delete=True)
        channel.basic_consume(self.control_queue, self._on_control, auto_ack=True)
        with self._lock:
            self._changes.clear()
            keys, queues = list(self._bindings), list(self._consumers)
        for key in keys:
            channel.queue_bind(self.control_queue, amqp.control_exchange(), key)
        tags: dict[str, str] = {}
        for queue in queues:
            tags[queue] = self._start_consumer(channel, queue)
        self._connection = connection
        self.connected.set()
        log.info("console bus connected (%d units, %d queues)", len(keys), len(queues))
        busy_until = 0.0
        while not self._stopped.is_set():
            self._apply_changes(channel, tags)
            if self._flush(connection, channel):
                busy_until = time.monotonic() + BUSY_SECONDS
            if time.monotonic() < busy_until:
                self._batching = True
                connection.process_data_events(time_limit=BATCH_SECONDS)
                continue
            self._batching = False
            if not self._outbox:  # else a publisher saw `_batching` still set and did not wake
                connection.process_data_events(time_limit=1.0)

    def _start_consumer(self, channel, queue: str) -> str:
        handler, declare = self._consumers[queue]
        declare(channel)

        def on_message(ch, method, props, body, handler=handler):
            handler(Incoming(method.routing_key, body, props.reply_to, props.correlation_id))

        return channel.basic_consume(queue, on_message, auto_ack=True)

    def _apply_changes(self, channel, tags: dict[str, str]) -> None:
        while True:
            with self._lock:
                if not self._changes:
                    return
                op, name = self._changes.popleft()
                present = name in (self._bindings if op in ("bind", "unbind") else self._consumers)
            if op == "bind" and present:
                channel.queue_bind(self.control_queue, amqp.control_exchange(), name)
            elif op == "unbind" and not present:
                channel.queue_unbind(self.control_queue, amqp.control_exchange(), name)
            elif op == "consume" and present:
                if name in tags:  # a new handler for the queue: consume again
                    channel.basic_cancel(tags.pop(name))
                tags[name] = self._start_consumer(channel, name)
            elif op == "cancel" and not present and name in tags:
                channel.basic_cancel(tags.pop(name))

    def _flush(self, connection, channel) -> bool:
        """Sends what waits in the outbox. Each message goes to the channel's output
        buffer and the socket is written once for them all: BlockingChannel.basic_publish
        runs the I/O loop once per message, which made the bus the worker's busiest part."""
        outbox = self._outbox
        if not outbox:
            return False
        while outbox:
            exchange, key, body, props = outbox.popleft()
            channel._impl.basic_publish(exchange, key, body, props)
        connection.process_data_events(time_limit=0)
        return True

    def _on_control(self, channel, method, props, body: bytes) -> None:
        for handler in tuple(self._bindings.get(method.routing_key, ())):
            handler(Incoming(method.routing_key, body, props.reply_to, props.correlation_id))
