"""Producers and consumers: the behaviours a lab's workloads play on the broker with pika.

Each is a unit (labconsole/runtime/unit.py): one connection to the lab's vhost as the
lab's user, on its worker process's I/O loop, idle until a message, a control message or
its next timer. It runs until it is told to stop, its count or duration is reached, or
the lab ends; a lost connection is connected again with backoff, and its counters and
sequence numbers go on. Channels are opened, and confirms arrive, asynchronously.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import time
import uuid
from collections import deque
from datetime import datetime
from typing import Any

import pika
import pika.exceptions as px

from labconsole.flow.reporter import (
    LATENCY_WINDOW,
    SENT_AT,
    FlowReporter,
    Latency,
    body_text,
    describe_properties,
    jsonable,
)
from labconsole.runtime.bus import Incoming
from labconsole.runtime.unit import Stop, Unit

from .ledger import MAX_RANGES, IdSet, Received, sequence_of
from .load import effective_rate, running_load
from .payload import compile_template

log = logging.getLogger(__name__)

MAX_BURST = 500  # messages a producer publishes before it lets the loop run again
CHANNEL_RETRY = 1.0  # seconds before a channel the broker closed is opened again
# A producer publishes no more while this much waits unwritten for the socket (the broker
# applies flow control by reading slower) or this many publishes await their confirm.
WRITE_BUFFER_LIMIT = 1 << 20
CONFIRM_WINDOW = 1_000
CONFIRM_WAIT = 5.0  # a finished producer waits this long for its last confirms
BACKPRESSURE_RETRY = 0.01


def x_death_count(headers: dict | None, queue: str | None = None) -> int:
    """How many times the message was dead-lettered (from `queue` only, when given)."""
    deaths = (headers or {}).get("x-death") or []
    return sum(int(d.get("count", 0)) for d in deaths if queue is None or d.get("queue") == queue)


@functools.lru_cache(maxsize=256)
def key_order(weights: tuple[int, ...]) -> tuple[int, ...]:
    """One cycle of a producer's routing keys, as indexes into them: each key as often as
    its weight, spread out by smooth weighted round robin (the weights 3 and 1 give
    0, 0, 1, 0). The order is fixed, so that the counts over whole cycles are exact."""
    total = sum(weights)
    current = [0] * len(weights)
    order = []
    for _ in range(total):
        for i, weight in enumerate(weights):
            current[i] += weight
        chosen = max(range(len(weights)), key=lambda i: current[i])  # the first of equals
        current[chosen] -= total
        order.append(chosen)
    return tuple(order)


def confirmed(frame, pending: dict[int, Any]) -> tuple[bool, list[int]]:
    """What a publisher confirm (basic.ack or basic.nack, `multiple` or not) settles among
    the `pending` delivery tags: whether it is an ack, and the tags."""
    method = frame.method
    if method.multiple:
        tags = [t for t in pending if t <= method.delivery_tag]
    else:
        tags = [method.delivery_tag] if method.delivery_tag in pending else []
    return isinstance(method, pika.spec.Basic.Ack), tags


def stream_arguments(offset: int | str | None) -> dict[str, Any] | None:
    """The x-stream-offset consumer argument: a name (first, last, next), an offset, an
    interval back from now ("10m") or, sent as an AMQP timestamp, an ISO 8601 time."""
    if offset is None:
        return None
    if isinstance(offset, str) and "T" in offset:
        offset = datetime.fromisoformat(offset)
    return {"x-stream-offset": offset}


class WorkloadUnit(Unit):
    def __init__(
        self,
        *,
        settings: dict[str, Any],
        reporter: FlowReporter,
        progress: dict[str, Any] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.settings = dict(settings)
        self.reporter = reporter
        self.progress = dict(progress or {})
        self.channel = None
        self.opening = False
        self.reopen_at: float | None = None
        self.checkpoint: dict[str, Any] = self._checkpoint()

    # --- control -------------------------------------------------------------------------
    def handle(self, message: Incoming) -> None:
        try:
            data = json.loads(message.body)
        except ValueError:
            log.warning(
                "workload %s: control message is not JSON: %r", self.name, message.body[:200]
            )
            return
        if data.get("op") == "stop":
            raise Stop("stopped")
        if data.get("op") == "pace":
            self.reporter.watch(float(data.get("seconds") or 0))
        if data.get("op") == "update":
            changes = {
                k: v for k, v in data.get("settings", {}).items() if self.settings.get(k) != v
            }
            if changes:
                old = self.settings
                self.settings = {**old, **changes}
                self.reporter.event("updated", settings=self.settings)
                if self.channel is not None:
                    self.apply_update(old)

    def apply_update(self, old: dict[str, Any]) -> None:
        """A change of settings while connected; the default needs nothing more."""

    # --- the run -------------------------------------------------------------------------
    def connected(self) -> None:
        if self.reconnects:
            self.reporter.event("reconnected", message=f"connected again after {self.reconnects}")
        else:
            self.reporter.event("started", settings=self.settings)
        self.reporter.gauge("state", "running")
        self.channel = None
        self.opening = False
        self.open_channel()

    def disconnected(self, exc: BaseException) -> None:
        self.channel = None
        self.opening = False
        self.reporter.gauge("state", "reconnecting")
        self.reporter.event("error", message=f"connection lost: {exc or exc.__class__.__name__}")
        self.report()

    def open_channel(self) -> None:
        """Opens the workload's channel; `channel_ready` runs when the broker has."""
        if self.lab is None or self.opening:
            return
        self.opening = True
        self.reopen_at = None
        self.lab.channel(on_open_callback=self.guarded(self._channel_opened))

    def _channel_opened(self, channel) -> None:
        self.opening = False
        if self.lab is None or self.outcome is not None:
            return
        self.channel = channel
        channel.add_on_close_callback(self.guarded(self._channel_closed))
        self.channel_ready(channel)
        self.poke()

    def channel_ready(self, channel) -> None:
        """The channel is open: set it up (qos, consume, confirms)."""

    def close_channel(self) -> None:
        """Closes the channel (a restart with new settings); its close is not an error."""
        channel, self.channel = self.channel, None
        if channel is not None and channel.is_open:
            channel.close()

    def _channel_closed(self, channel, exc: BaseException) -> None:
        if channel is not self.channel:
            return  # closed on purpose, or one of a connection gone before
        self.channel = None
        if isinstance(exc, px.ChannelClosedByBroker):
            self.channel_closed(exc)

    def channel_closed(self, exc: px.ChannelClosedByBroker) -> None:
        """The broker closed our channel (an unknown exchange, ACCESS_REFUSED, ...): say so,
        and open a new one a second later, as a real client would."""
        self.reporter.event("error", message=f"{exc.reply_code} {exc.reply_text}")
        self.reporter.count("errors")
        if exc.reply_code == 403:  # ACCESS_REFUSED: the user may not (write here, say)
            self.reporter.count("access_refused")
        self.reopen_at = time.monotonic() + CHANNEL_RETRY
        self.poke()

    def tick(self, now: float) -> float | None:
        if self.channel is None or not self.channel.is_open:
            self.channel = None
            if self.opening:
                return self.report(now)
            if self.reopen_at is None:
                self.reopen_at = now
            if now < self.reopen_at:
                return self._sooner(self.reopen_at, self.report(now))
            self.open_channel()
            return self.report(now)
        try:
            due = self.work(now)
        except (px.ChannelWrongStateError, px.ChannelClosed):
            # A channel (the workload's, or the parking one) was going: start again on a
            # new one, never beside an old one still consuming.
            self.close_channel()
            due = now + CHANNEL_RETRY
        return self._sooner(due, self.report(now))

    def work(self, now: float) -> float | None:
        raise NotImplementedError

    def report(self, now: float | None = None) -> float | None:
        if self.ledger_changed:
            # The delivery ledger's sets go with a report that goes now, not per message.
            due = self.reporter.due()
            if due is not None and (now or time.monotonic()) >= due:
                self.report_ledger()
        due = self.reporter.maybe_flush(now)
        self.checkpoint = self._checkpoint()
        return due

    @property
    def ledger_changed(self) -> bool:
        return False

    def report_ledger(self) -> None:
        """Puts the workload's part of the delivery ledger (ledger.py) in its report."""

    def _checkpoint(self) -> dict[str, Any]:
        """What a worker taking this workload over needs to carry on (read by another
        thread: a fresh dict each time, never mutated)."""
        return {**self.progress, "counts": dict(self.reporter.totals)}

    def finish(self) -> None:
        self.reporter.gauge("state", self.outcome)
        self.report_ledger()
        if self.message:
            self.reporter.event("stopped", message=self.message)
        try:
            self.reporter.flush()
        finally:
            self.checkpoint = self._checkpoint()

    def write_backlog(self) -> int:
        """Bytes waiting to be written to the lab's socket."""
        try:
            return self.lab._transport.get_write_buffer_size()
        except AttributeError:
            return 0

    @staticmethod
    def _sooner(*times: float | None) -> float | None:
        due = [t for t in times if t is not None]
        return min(due) if due else None


class ProducerUnit(WorkloadUnit):
    kind = "producer"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.started_at = time.monotonic() - float(self.progress.get("elapsed", 0.0))
        self.next_at = time.monotonic()
        self.render = compile_template(self.settings.get("payload") or "")
        # Publishes awaiting the broker's confirm: delivery tag -> message id.
        self.unconfirmed: dict[int, str | None] = {}
        self.returned: set[str | None] = set()  # message ids returned, not yet confirmed
        self.tag = 0
        # Published on this channel to the exchange it publishes to now. Were one refused
        # (ACCESS_REFUSED - access to exchange ...), the broker refused them all: it checks
        # an exchange once a channel, and closes the channel at the first refusal, dropping
        # what follows.
        self.on_channel = 0
        self.done_at: float | None = None
        # A transactional producer (tx.select) publishes `tx_batch` messages, then commits
        # and waits for the broker's Commit-Ok before it publishes again: the broker routes
        # the messages of a transaction only when it commits.
        self.tx_state: str | None = None  # None, "selecting", "open" or "committing"
        self.tx_pending = 0  # published since the last commit
        # After a lost connection, until a publish is acked: a nack means a new channel
        # (_escape_nack_trap), not a refusal to live with.
        self.watch_nacks = False
        # The numbers of its sequence ids the broker confirmed (the delivery ledger, for a
        # producer that keeps one), kept while they stay a few ranges.
        self.confirmed_ids: IdSet | None = (
            IdSet(self.progress.get("confirmed_ids") or ()) if self.settings.get("ledger") else None
        )
        self.confirmed_changed = False

    @property
    def transactional(self) -> bool:
        return bool(self.settings.get("transactions"))

    def channel_ready(self, channel) -> None:
        self.render = compile_template(self.settings.get("payload") or "")
        self.unconfirmed.clear()
        self.returned.clear()
        self.tag = 0
        self.on_channel = 0
        self.tx_state, self.tx_pending = None, 0  # what was not committed is gone
        channel.add_on_return_callback(self.guarded(self._on_return))
        if self.settings.get("confirms"):
            channel.confirm_delivery(ack_nack_callback=self.guarded(self._on_confirm))
        elif self.transactional:
            self.tx_state = "selecting"
            channel.tx_select(callback=self.guarded(lambda _: self._tx_ok(channel, 0)))
        self.next_at = time.monotonic()

    def channel_closed(self, exc: px.ChannelClosedByBroker) -> None:
        exchange = self.settings.get("exchange", "")
        refused = exc.reply_code == 403 and f"access to exchange '{exchange}'" in str(
            exc.reply_text
        )
        if refused and self.on_channel:
            # Not published: counted as sent, refused instead (the card and the checks).
            self.reporter.count("published", -self.on_channel)
            self.on_channel = 0
        super().channel_closed(exc)

    def apply_update(self, old: dict[str, Any]) -> None:
        if old.get("exchange") != self.settings.get("exchange"):
            self.on_channel = 0
        self.render = compile_template(self.settings.get("payload") or "")
        if old.get("confirms") != self.settings.get("confirms") or old.get(
            "transactions"
        ) != self.settings.get("transactions"):
            self.close_channel()
            self.open_channel()
        elif old.get("rate") != self.settings.get("rate") or old.get("load") != self.settings.get(
            "load"
        ):
            self.next_at = time.monotonic()

    def _on_return(self, channel, method, props, body: bytes) -> None:
        if channel is not self.channel:
            return
        if self.settings.get("confirms"):
            self.returned.add(props.message_id)  # its confirm follows: not counted confirmed
        self.reporter.count("returned")
        self.reporter.event(
            "returned",
            exchange=method.exchange,
            routing_key=method.routing_key,
            message_id=props.message_id,
            reply=f"{method.reply_code} {method.reply_text}",
        )
        self.poke()

    def disconnected(self, exc: BaseException) -> None:
        self.watch_nacks = True
        super().disconnected(exc)

    def _on_confirm(self, frame) -> None:
        acked, tags = confirmed(frame, self.unconfirmed)
        if acked and tags:
            self.watch_nacks = False
        elif tags and self.watch_nacks and self.channel is not None:
            self._escape_nack_trap()
        for tag in tags:
            message_id = self.unconfirmed.pop(tag)
            if message_id in self.returned:
                self.returned.discard(message_id)
            elif acked:
                self.reporter.count("confirmed")
                self._ledger_confirmed(message_id)
            else:
                self.reporter.count("nacked_by_broker")
                self.reporter.event(
                    "nacked_by_broker",
                    exchange=self.settings.get("exchange", ""),
                    message_id=message_id,
                )
        self.poke()

    def _ledger_confirmed(self, message_id: str | None) -> None:
        ids = self.confirmed_ids
        found = sequence_of(message_id)
        if ids is None or found is None or found[0] != self.name:
            return
        ids.add(found[1])
        self.confirmed_changed = True
        if ids.ranges > MAX_RANGES:
            self.confirmed_ids = None  # too scattered to be worth its reports

    @property
    def ledger_changed(self) -> bool:
        return self.confirmed_changed

    def report_ledger(self) -> None:
        if self.confirmed_changed:
            ids = self.confirmed_ids
            self.reporter.gauge("confirmed_ids", None if ids is None else ids.export())
            self.confirmed_changed = False

    def _checkpoint(self) -> dict[str, Any]:
        checkpoint = super()._checkpoint()
        ids = getattr(self, "confirmed_ids", None)
        if ids:
            checkpoint["confirmed_ids"] = ids.export()
        return checkpoint

    def _escape_nack_trap(self) -> None:
        """RabbitMQ 3.10: a channel whose first publish to a quorum queue lands between the
        death of the queue's leader and the election of the next can have every publish
        nacked for ever. After a reconnect, a nack before any ack is taken for that: the
        channel is closed and a new one opened a second later, which finds the new
        leader."""
        self.reporter.event(
            "error", message="publishes nacked after reconnecting: opening a new channel"
        )
        self.close_channel()
        self.reopen_at = time.monotonic() + CHANNEL_RETRY
        self.poke()

    def _tx_ok(self, channel, committed: int) -> None:
        """Select-Ok or Commit-Ok: the next transaction may begin."""
        if channel is not self.channel:
            return
        self.tx_state = "open"
        if committed:
            self.tx_pending -= committed
            self.reporter.count("committed", committed)
        self.poke()

    def _commit(self) -> None:
        channel, n = self.channel, self.tx_pending
        self.tx_state = "committing"
        channel.tx_commit(callback=self.guarded(lambda _: self._tx_ok(channel, n)))

    def routing_key(self, n: int) -> str:
        """The key of message `n`: the producer's `routing_keys` in their weighted order
        (a lab started before keys had weights has none: each key once a cycle)."""
        keys = self.settings.get("routing_keys") or []
        if not keys:
            return self.settings.get("routing_key", "")
        weights = self.settings.get("routing_key_weights") or [1] * len(keys)
        order = key_order(tuple(weights))
        return keys[order[(n - 1) % len(order)]]

    def headers(self, n: int) -> dict[str, Any]:
        """The headers of message `n`: its turn's of `header_sets`, else `headers`."""
        sets = self.settings.get("header_sets") or []
        return sets[(n - 1) % len(sets)] if sets else self.settings.get("headers") or {}

    def properties(self, n: int) -> pika.BasicProperties:
        props = self.settings.get("properties") or {}
        expiration = props.get("expiration")
        reply_to = self.settings.get("reply_to")
        return pika.BasicProperties(
            # An RPC request: where to answer, and the id that joins it and its reply.
            reply_to=reply_to or None,
            correlation_id=f"{self.name}-{n}" if reply_to else None,
            content_type=props.get("content_type", "application/json"),
            delivery_mode=2 if props.get("persistent") else 1,
            priority=props.get("priority"),
            expiration=str(expiration) if expiration is not None else None,
            message_id=(
                f"{self.name}-{n}" if props.get("message_id") == "sequence" else uuid.uuid4().hex
            ),
            headers={**self.headers(n), SENT_AT: int(time.time() * 1e6)},
            timestamp=int(time.time()),
            app_id=self.name,
        )

    def finished(self, now: float) -> bool:
        count, duration = self.settings.get("count"), self.settings.get("duration")
        elapsed = now - self.started_at
        self.progress["elapsed"] = elapsed
        return bool(
            (count and self.progress.get("sent", 0) >= count) or (duration and elapsed >= duration)
        )

    def work(self, now: float) -> float | None:
        if self.finished(now):
            # Done; with confirms, the last ones are waited for (a little) before the end,
            # and a transaction's last messages are committed.
            self.done_at = self.done_at or now
            if self.tx_pending and self.tx_state == "open":
                self._commit()
            waiting = self.unconfirmed or (self.tx_pending and self.tx_state is not None)
            if waiting and now - self.done_at < CONFIRM_WAIT:
                return now + BACKPRESSURE_RETRY * 5
            raise Stop("finished")
        if self.blocked:
            return now + 1.0  # the unblocked callback pokes the unit sooner
        if self.transactional and self.tx_state != "open":
            return now + 1.0  # Select-Ok or Commit-Ok pokes the unit
        rate = max(effective_rate(self.settings), 0.01)  # a load preset's while it runs
        if self.next_at < now - 1.0:
            self.next_at = now  # do not try to catch up more than a second of backlog
        burst = 0
        while self.next_at <= now and burst < MAX_BURST:
            if self.finished(now):
                return now
            if len(self.unconfirmed) >= CONFIRM_WINDOW or self.write_backlog() > WRITE_BUFFER_LIMIT:
                return now + BACKPRESSURE_RETRY
            self.publish_one()
            self.next_at += 1.0 / rate
            burst += 1
            if self.transactional:
                self.tx_pending += 1
                if self.tx_pending >= int(self.settings.get("tx_batch") or 1):
                    self._commit()
                    return now + 1.0
        if self.finished(time.monotonic()):
            return now
        if load := running_load(self.settings):
            # The load's end: the producer slows down to its own rate then, not at the
            # next message of the load's pace.
            return min(self.next_at, now + max(float(load["until"]) - time.time(), 0.0))
        return self.next_at

    def publish_one(self) -> None:
        n = self.progress.get("sent", 0) + 1
        key = self.routing_key(n)
        body = self.render(n, key, self.name).encode()
        props = self.properties(n)
        exchange = self.settings.get("exchange", "")
        mandatory = bool(self.settings.get("mandatory"))
        self.channel.basic_publish(exchange, key, body, props, mandatory=mandatory)
        self.progress["sent"] = n
        self.on_channel += 1
        # Counted only: the firehose describes each publish, with where it was routed.
        self.reporter.count("published")
        if self.settings.get("confirms"):
            self.tag += 1
            self.unconfirmed[self.tag] = props.message_id


class ConsumerUnit(WorkloadUnit):
    """Takes deliveries one at a time, as a single-threaded application does: what it has
    received and not yet settled waits in `held` (the prefetch window), and the message
    at the head is "processed" for `processing_ms` on a timer, never by sleeping."""

    kind = "consumer"

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.held: deque = deque()
        self.head_due: float | None = None
        self.consuming_since = 0
        self.latency = Latency()
        self.restart = False
        self.park_channel = None
        self.park_opening = False
        self.park_tag = 0
        # Copies sent to the parking place awaiting their confirm: tag -> the original.
        self.parking: dict[int, tuple] = {}
        # The numbers of the producers' sequence ids it received (the delivery ledger).
        self.received = Received(self.progress.get("received_ids"))

    def channel_ready(self, channel) -> None:
        self.held.clear()
        self.head_due = None
        self.restart = False
        s = self.settings
        # Deliveries published before this (whole seconds, as AMQP timestamps are) are
        # history: a stream read from an offset in the past, or a backlog.
        self.consuming_since = int(time.time()) - 1
        channel.basic_qos(prefetch_count=int(s.get("prefetch") or 0))
        channel.add_on_cancel_callback(self.guarded(lambda frame: self._cancelled(channel)))
        channel.basic_consume(
            s["queue"],
            self.guarded(self.on_message),
            auto_ack=s.get("ack") == "auto",
            arguments=stream_arguments(s.get("stream_offset")),
        )

    def _cancelled(self, channel) -> None:
        """The broker cancelled the consumer (basic.cancel): its queue was deleted, or the
        node a classic queue lives on went down. It consumes again on a new channel a
        second later, and again while the queue is away (the broker then closes the channel
        with 404), as a client that asks for cancel notifications should; otherwise it
        would sit on its channel for good."""
        if channel is not self.channel or self.outcome is not None:
            return
        queue = self.settings["queue"]
        self.reporter.event(
            "error",
            queue=queue,
            message=f"the broker cancelled the consumer of {queue}: consuming again",
        )
        self.close_channel()
        self.held.clear()  # the broker requeues what the channel held
        self.head_due = None
        self.reporter.gauge("held", 0)
        self.reopen_at = time.monotonic() + CHANNEL_RETRY
        self.poke()

    def connected(self) -> None:
        self.park_channel = None
        self.park_opening = False
        self.parking.clear()
        super().connected()

    def disconnected(self, exc: BaseException) -> None:
        # The broker requeues what the connection held.
        self.held.clear()
        self.parking.clear()
        self.head_due = None
        self.park_channel = None
        self.reporter.gauge("held", 0)
        super().disconnected(exc)

    def apply_update(self, old: dict[str, Any]) -> None:
        # Prefetch applies to consumers made after basic.qos, and the ack mode is fixed at
        # basic.consume: the consumer starts again on a new channel, as an application
        # restarted with new settings would, and what it held goes back to the queue.
        if any(old.get(k) != self.settings.get(k) for k in ("prefetch", "ack", "queue")):
            self.restart = True

    def on_message(self, channel, method, props, body: bytes) -> None:
        if channel is not self.channel or self.outcome is not None:
            return  # a delivery of a channel closed meanwhile: the broker requeues it
        s = self.settings
        headers = props.headers or {}
        delivered = self.progress.get("delivered", 0) + 1
        self.progress["delivered"] = delivered
        self.reporter.count("delivered")
        if method.redelivered:
            # Given back by the broker: another consumer died, or rejected it with requeue.
            self.reporter.count("redelivered")
        if self.received.note(props.message_id):
            self.reporter.count("duplicated")  # a message it had received before
        if props.timestamp is not None and props.timestamp < self.consuming_since:
            self.reporter.count("replayed")
        elif SENT_AT in headers:  # a replayed one's time is its age, not the queue's pace
            self.latency.add(headers[SENT_AT])
        if "x-death" in headers:
            self.reporter.death(props.message_id, jsonable(headers["x-death"]))
        if self.reporter.wants_event():
            self.reporter.event(
                "delivered",
                queue=s["queue"],
                exchange=method.exchange,
                routing_key=method.routing_key,
                message_id=props.message_id,
                redelivered=method.redelivered,
                x_death=jsonable(headers.get("x-death")),
                body=body_text(body),
                properties=describe_properties(props),
                headers=jsonable(headers),
            )
        if s.get("ack") == "auto":
            self.reporter.count("acked")
            if props.priority:
                self.reporter.count("acked_priority")  # of them, with a priority above 0
            self._maybe_crash(delivered)
            if s.get("reply"):
                self.reply(props, body)
            if s.get("forward"):
                self.emit("forwarded", s["forward"], props, body)
            return
        self.held.append((method, props, body, delivered))
        self.reporter.gauge("held", len(self.held))
        if len(self.held) == 1:
            self.poke()

    @property
    def ledger_changed(self) -> bool:
        return self.received.changed

    def report_ledger(self) -> None:
        if self.received.changed:
            self.reporter.gauge("received_ids", self.received.export())
            self.received.changed = False

    def _checkpoint(self) -> dict[str, Any]:
        checkpoint = super()._checkpoint()
        received = getattr(self, "received", None)
        if received:
            checkpoint["received_ids"] = received.export()
        return checkpoint

    def report(self, now: float | None = None) -> float | None:
        # The figures are worked out only for a report that goes now, not per delivery.
        latency = self.latency
        if latency.changed:
            due = self.reporter.due()
            if due is not None and (now or time.monotonic()) >= due:
                self.reporter.gauge("latency", latency.figures())
                latency.changed = False
        elif (
            self.reporter.gauges.get("latency") is not None
            and latency.samples[-1][0] < time.time() - LATENCY_WINDOW
        ):
            self.reporter.gauge("latency", None)  # nothing delivered of late
        return super().report(now)

    def work(self, now: float) -> float | None:
        if self.restart:
            self.close_channel()
            self.held.clear()
            self.head_due = None
            self.restart = False
            self.reporter.gauge("held", 0)
            self.open_channel()
            return None
        while self.held:
            if self.head_due is None:
                self.head_due = now + float(self.settings.get("processing_ms") or 0) / 1000
            if now < self.head_due:
                return self.head_due
            method, props, body, delivered = self.held[0]
            if not self.settle(method, props, body, delivered):
                return None  # waits for the parking channel; it pokes the unit when open
            self.held.popleft()
            self.head_due = None
            self.reporter.gauge("held", len(self.held))
            now = time.monotonic()
        return None

    def settle(self, method, props, body: bytes, delivered: int) -> bool:
        """Acknowledges, rejects or parks the message; False if it must wait."""
        s = self.settings
        queue = s["queue"]
        tag = method.delivery_tag
        headers = props.headers or {}
        park_after = s.get("park_after")
        if park_after and x_death_count(headers, queue) >= park_after:
            return self.park(method, props, body)
        self._maybe_crash(delivered)
        poison = s.get("poison")
        if (poison and poison.encode() in body) or random.random() < float(s.get("fail") or 0):
            requeue = bool(s.get("requeue"))
            if s.get("compensate"):
                # A saga's step that failed: it says so for the others to undo theirs, and
                # the message is done with.
                self.emit("compensated", s["compensate"], props, body)
                self.channel.basic_ack(tag)
                return True
            if s.get("on_fail") == "nack":
                self.channel.basic_nack(tag, requeue=requeue)
                kind = "nacked"
            else:
                self.channel.basic_reject(tag, requeue=requeue)
                kind = "rejected"
            self.reporter.count(kind)
            self.reporter.event(kind, queue=queue, message_id=props.message_id, requeue=requeue)
        else:
            if s.get("reply"):
                self.reply(props, body)  # answered before acked, as an RPC server does
            if s.get("forward"):
                self.emit("forwarded", s["forward"], props, body)  # published, then acked
            self.channel.basic_ack(tag)
            self.reporter.count("acked")
            if props.priority:
                self.reporter.count("acked_priority")  # of them, with a priority above 0
            if self.reporter.wants_event():
                self.reporter.event("acked", queue=queue, message_id=props.message_id)
        return True

    def reply(self, props, body: bytes) -> None:
        """RPC: answers the request through the default exchange to its `reply_to`, with
        its `correlation_id`; a request without `reply_to` cannot be answered."""
        queue = self.settings["queue"]
        if not props.reply_to:
            self.reporter.count("unanswered")
            self.reporter.event(
                "unanswered",
                queue=queue,
                message_id=props.message_id,
                message="no reply_to: nowhere to send the reply",
            )
            return
        try:
            request = json.loads(body)
        except ValueError:
            request = body_text(body)
        answer = json.dumps({"answer": request, "server": self.name}).encode()
        reply = pika.BasicProperties(
            content_type="application/json",
            correlation_id=props.correlation_id,
            message_id=uuid.uuid4().hex,
            timestamp=int(time.time()),
            app_id=self.name,  # the monitor draws it from this consumer
        )
        self.channel.basic_publish("", props.reply_to, answer, reply)
        self.reporter.count("replied")

    def emit(self, counter: str, to: dict, props, body: bytes) -> None:
        """Publishes the delivery's body on, as a service publishes its own event: to
        `to["exchange"]` with `to["routing_key"]`, joined to what caused it by the
        correlation id, stamped with its own send time."""
        event = pika.BasicProperties(
            content_type=props.content_type or "application/json",
            correlation_id=props.correlation_id or props.message_id,
            message_id=uuid.uuid4().hex,
            timestamp=int(time.time()),
            app_id=self.name,  # the monitor draws it from this consumer
            headers={SENT_AT: int(time.time() * 1e6)},
        )
        self.channel.basic_publish(to.get("exchange", ""), to["routing_key"], body, event)
        self.reporter.count(counter)

    # --- parking ---------------------------------------------------------------------------
    def park(self, method, props, body: bytes) -> bool:
        """Moves the message, x-death and all, to the parking place. The original is
        acknowledged only once the broker has confirmed the copy, so a broker that dies in
        between leaves the original in its queue rather than losing both."""
        if self.park_channel is None:
            self._open_park_channel()
            return False
        s = self.settings
        props.app_id = self.name  # marked as published by this consumer
        self.park_channel.basic_publish(
            s.get("park_exchange", ""), s.get("park_routing_key", ""), body, props
        )
        self.park_tag += 1
        self.parking[self.park_tag] = (self.channel, method.delivery_tag, props, body)
        return True

    def _open_park_channel(self) -> None:
        if self.park_opening or self.lab is None:
            return
        self.park_opening = True

        def opened(channel):
            self.park_opening = False
            if self.lab is None or self.outcome is not None:
                return
            channel.add_on_close_callback(self.guarded(self._park_closed))
            channel.confirm_delivery(ack_nack_callback=self.guarded(self._on_park_confirm))
            self.park_channel = channel
            self.park_tag = 0
            self.poke()

        self.lab.channel(on_open_callback=self.guarded(opened))

    def _on_park_confirm(self, frame) -> None:
        acked, tags = confirmed(frame, self.parking)
        for tag in tags:
            self._parked(*self.parking.pop(tag), ok=acked)

    def _parked(
        self, channel, delivery_tag: int, props, body: bytes, *, ok: bool, why: str = ""
    ) -> None:
        if channel is not self.channel or not channel.is_open:
            return  # the original's channel is gone: the broker requeued it
        if ok:
            channel.basic_ack(delivery_tag)
            self.reporter.count("parked")
            headers = jsonable(props.headers or {})
            # Where the copy went (the monitor names the queue the broker put it in), and
            # the copy itself, x-death and all: what a learner opens to see its history.
            self.reporter.event(
                "parked",
                exchange=self.settings.get("park_exchange", ""),
                routing_key=self.settings.get("park_routing_key", ""),
                message_id=props.message_id,
                retries=x_death_count(props.headers),
                x_death=headers.get("x-death"),
                body=body_text(body),
                properties=describe_properties(props),
                headers=headers,
            )
        else:
            channel.basic_nack(delivery_tag, requeue=True)
            self.reporter.event("error", message=f"not parked, requeued: {why or 'nacked'}")

    def _park_closed(self, channel, exc: BaseException) -> None:
        if channel is not self.park_channel:
            return
        self.park_channel = None
        pending, self.parking = self.parking, {}
        for original in pending.values():
            self._parked(*original, ok=False, why=repr(exc))
        self.poke()

    def _maybe_crash(self, delivered: int) -> None:
        crash_after = self.settings.get("crash_after")
        if crash_after and delivered >= crash_after:
            self.reporter.event("crashed", message=f"crashed after {delivered}")
            # Drop the socket without a clean AMQP close: what a process that dies does.
            self.abort()
            raise Stop("crashed", f"crashed after {delivered}")


UNITS = {"producer": ProducerUnit, "consumer": ConsumerUnit}
