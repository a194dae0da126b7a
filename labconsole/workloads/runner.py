"""Producers and consumers: the behaviours a lab's workloads play on the broker with pika.

A run owns two connections: one to the lab's vhost as the lab's user (the messages), and
one to the console's vhost (its control queue and its flow reports). It runs until it is
told to stop, its count or duration is reached, the lab's vhost goes away, or its slice
of time is over; the Celery task then starts the next slice (see exercises/tasks.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions as px

from labconsole.broker.amqp import close_quietly
from labconsole.flow.reporter import FlowReporter, body_text, describe_properties, jsonable

from .payload import compile_template

log = logging.getLogger(__name__)

POLL = 0.05  # seconds between looks at the control queue: changes apply well within 1 s
MAX_BURST = 500  # messages a producer publishes before it looks at its control queue again


class Crash(Exception):
    """A consumer configured with crash_after drops its connection."""


@dataclass
class Outcome:
    state: str  # finished | stopped | crashed | slice | lost
    progress: dict[str, Any] = field(default_factory=dict)
    message: str = ""


def x_death_count(headers: dict | None, queue: str | None = None) -> int:
    """How many times the message was dead-lettered (from `queue` only, when given)."""
    deaths = (headers or {}).get("x-death") or []
    return sum(int(d.get("count", 0)) for d in deaths if queue is None or d.get("queue") == queue)


class WorkloadRun:
    kind = ""

    def __init__(
        self,
        *,
        name: str,
        settings: dict[str, Any],
        lab_params: list[pika.ConnectionParameters],
        console: pika.BlockingConnection,
        control_queue: str,
        reporter: FlowReporter,
        progress: dict[str, Any] | None = None,
        slice_seconds: float = 300.0,
    ):
        self.name = name
        self.settings = dict(settings)
        self.lab_params = lab_params
        self.console = console
        self.reporter = reporter
        self.progress = dict(progress or {})
        self.slice_seconds = slice_seconds
        self.outcome: Outcome | None = None
        self.lab: pika.BlockingConnection | None = None
        self.channel = None
        control = console.channel()
        control.basic_consume(control_queue, self._on_control, auto_ack=True)

    # --- control ---------------------------------------------------------------------------
    def _on_control(self, channel, method, props, body: bytes) -> None:
        try:
            message = json.loads(body)
        except ValueError:
            log.warning("workload %s: control message is not JSON: %r", self.name, body[:200])
            return
        if message.get("op") == "stop":
            self.outcome = Outcome("stopped")
        elif message.get("op") == "update":
            old = self.settings
            self.settings = {**old, **message.get("settings", {})}
            self.reporter.event("updated", settings=self.settings)
            self.apply_update(old)

    def apply_update(self, old: dict[str, Any]) -> None:
        """A change of settings while running; the default needs nothing more."""

    def poll_control(self) -> None:
        self.console.process_data_events(0)
        self.reporter.maybe_flush()

    # --- the run ---------------------------------------------------------------------------
    def run(self) -> Outcome:
        deadline = time.monotonic() + self.slice_seconds
        try:
            self.lab = pika.BlockingConnection(self.lab_params)
            self.open_channel()
            self.reporter.event("started", settings=self.settings)
            while self.outcome is None:
                self.step()
                self.poll_control()
                if time.monotonic() >= deadline and self.outcome is None:
                    self.outcome = Outcome("slice")
        except Crash:
            self.reporter.event("crashed", message=f"crashed after {self.progress['delivered']}")
            self.outcome = Outcome("crashed")
            self._drop_connection()
        except (px.AMQPConnectionError, px.StreamLostError, px.ConnectionClosedByBroker) as exc:
            self.outcome = Outcome("lost", message=str(exc) or exc.__class__.__name__)
        except Exception as exc:
            # A bug must not leave the workload shown as running: say what broke, and stop.
            log.exception("workload %s failed", self.name)
            self.reporter.event("error", message=f"the workload stopped: {exc!r}")
            self.reporter.count("errors")
            self.outcome = Outcome("failed", message=repr(exc))
        finally:
            self.outcome = self.outcome or Outcome("lost")
            self.outcome.progress = self.progress
            self._close()
        return self.outcome

    def open_channel(self) -> None:
        self.channel = self.lab.channel()

    def channel_closed(self, exc: px.ChannelClosedByBroker) -> None:
        """The broker closed our channel (an unknown exchange, ACCESS_REFUSED, ...): say so,
        wait a little, and carry on with a new channel, as a real client would."""
        self.reporter.event("error", message=f"{exc.reply_code} {exc.reply_text}")
        self.reporter.count("errors")
        end = time.monotonic() + 1.0
        while time.monotonic() < end and self.outcome is None:
            self.lab.process_data_events(POLL)
            self.poll_control()
        if self.outcome is None:
            self.open_channel()

    def step(self) -> None:
        raise NotImplementedError

    def _drop_connection(self) -> None:
        # Close the socket without a clean AMQP close: what a process that dies does.
        with contextlib.suppress(AttributeError, OSError):
            self.lab._impl._transport._sock.close()
        self.lab = None  # nothing left to close cleanly

    def _close(self) -> None:
        try:
            self.reporter.flush(state=self.outcome.state if self.outcome else None)
        except Exception:  # noqa: BLE001 - the console connection may be gone too
            log.debug("workload %s: final report not sent", self.name, exc_info=True)
        close_quietly(self.lab)


class ProducerRun(WorkloadRun):
    kind = "producer"

    def open_channel(self) -> None:
        super().open_channel()
        self.render = compile_template(self.settings.get("payload") or "")
        if self.settings.get("confirms"):
            self.channel.confirm_delivery()
        else:
            self.channel.add_on_return_callback(self._on_return)
        self.next_at = time.monotonic()
        self.started_at = time.monotonic() - float(self.progress.get("elapsed", 0.0))

    def apply_update(self, old: dict[str, Any]) -> None:
        self.render = compile_template(self.settings.get("payload") or "")
        if old.get("confirms") != self.settings.get("confirms"):
            self.channel.close()
            self.open_channel()
        elif old.get("rate") != self.settings.get("rate"):
            self.next_at = time.monotonic()

    def _on_return(self, channel, method, props, body: bytes) -> None:
        self.reporter.count("returned")
        self.reporter.event(
            "returned",
            exchange=method.exchange,
            routing_key=method.routing_key,
            message_id=props.message_id,
            reply=f"{method.reply_code} {method.reply_text}",
        )

    def routing_key(self, n: int) -> str:
        keys = self.settings.get("routing_keys") or []
        return keys[(n - 1) % len(keys)] if keys else self.settings.get("routing_key", "")

    def properties(self, n: int) -> pika.BasicProperties:
        props = self.settings.get("properties") or {}
        expiration = props.get("expiration")
        return pika.BasicProperties(
            content_type=props.get("content_type", "application/json"),
            delivery_mode=2 if props.get("persistent") else 1,
            priority=props.get("priority"),
            expiration=str(expiration) if expiration is not None else None,
            message_id=(
                f"{self.name}-{n}" if props.get("message_id") == "sequence" else uuid.uuid4().hex
            ),
            headers=self.settings.get("headers") or None,
            timestamp=int(time.time()),
            app_id=self.name,
        )

    def finished(self) -> bool:
        count, duration = self.settings.get("count"), self.settings.get("duration")
        sent = self.progress.get("sent", 0)
        elapsed = time.monotonic() - self.started_at
        self.progress["elapsed"] = elapsed
        return bool((count and sent >= count) or (duration and elapsed >= duration))

    def step(self) -> None:
        rate = max(float(self.settings.get("rate") or 1.0), 0.01)
        now = time.monotonic()
        if self.next_at < now - 1.0:
            self.next_at = now  # do not try to catch up more than a second of backlog
        burst = 0
        while self.next_at <= now and burst < MAX_BURST and self.outcome is None:
            if self.finished():
                self.outcome = Outcome("finished")
                return
            self.publish_one()
            self.next_at += 1.0 / rate
            burst += 1
        wait = max(0.0, min(self.next_at - time.monotonic(), POLL))
        self.lab.process_data_events(wait)
        if self.finished():
            self.outcome = Outcome("finished")

    def publish_one(self) -> None:
        n = self.progress.get("sent", 0) + 1
        key = self.routing_key(n)
        body = self.render(n, key, self.name).encode()
        props = self.properties(n)
        exchange = self.settings.get("exchange", "")
        mandatory = bool(self.settings.get("mandatory"))
        self.progress["sent"] = n
        try:
            self.channel.basic_publish(exchange, key, body, props, mandatory=mandatory)
        except px.UnroutableError:
            self.reporter.count("published")
            self.reporter.count("returned")
            self.reporter.event(
                "returned", exchange=exchange, routing_key=key, message_id=props.message_id
            )
            return
        except px.NackError:
            self.reporter.count("published")
            self.reporter.count("nacked_by_broker")
            self.reporter.event("nacked_by_broker", exchange=exchange, routing_key=key)
            return
        except px.ChannelClosedByBroker as exc:
            self.channel_closed(exc)
            return
        # Counted only: the firehose describes each publish, with where it was routed.
        self.reporter.count("published")
        if self.settings.get("confirms"):
            self.reporter.count("confirmed")


class ConsumerRun(WorkloadRun):
    kind = "consumer"

    def open_channel(self) -> None:
        super().open_channel()
        self.restart = False
        s = self.settings
        self.channel.basic_qos(prefetch_count=int(s.get("prefetch") or 0))
        self.channel.basic_consume(s["queue"], self.on_message, auto_ack=s.get("ack") == "auto")

    def apply_update(self, old: dict[str, Any]) -> None:
        # Prefetch applies to consumers made after basic.qos, and the ack mode is fixed at
        # basic.consume: the consumer starts again on a new channel, as an application
        # restarted with new settings would, and what it held goes back to the queue.
        if any(old.get(k) != self.settings.get(k) for k in ("prefetch", "ack", "queue")):
            self.restart = True

    def step(self) -> None:
        if self.restart:
            self.channel.close()
            self.open_channel()
        try:
            self.lab.process_data_events(POLL)
        except px.ChannelClosedByBroker as exc:
            self.channel_closed(exc)

    @property
    def interrupted(self) -> bool:
        return self.restart or self.outcome is not None

    def on_message(self, channel, method, props, body: bytes) -> None:
        s = self.settings
        queue = s["queue"]
        headers = props.headers or {}
        delivered = self.progress.get("delivered", 0) + 1
        self.progress["delivered"] = delivered
        self.reporter.count("delivered")
        if self.reporter.wants_event():
            self.reporter.event(
                "delivered",
                queue=queue,
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
            self._maybe_crash(delivered)
            return
        tag = method.delivery_tag
        park_after = s.get("park_after")
        if park_after and x_death_count(headers, queue) >= park_after:
            # The message as it came, x-death and all, marked as published by this consumer.
            props.app_id = self.name
            channel.basic_publish(
                s.get("park_exchange", ""), s.get("park_routing_key", ""), body, props
            )
            channel.basic_ack(tag)
            self.reporter.count("parked")
            self.reporter.event(
                "parked", queue=queue, message_id=props.message_id, retries=x_death_count(headers)
            )
            return
        self._process(float(s.get("processing_ms") or 0) / 1000)
        if self.interrupted:
            return  # not acknowledged: the channel closes and the broker requeues it
        self._maybe_crash(delivered)
        if random.random() < float(s.get("fail") or 0):
            requeue = bool(s.get("requeue"))
            if s.get("on_fail") == "nack":
                channel.basic_nack(tag, requeue=requeue)
                kind = "nacked"
            else:
                channel.basic_reject(tag, requeue=requeue)
                kind = "rejected"
            self.reporter.count(kind)
            self.reporter.event(kind, queue=queue, message_id=props.message_id, requeue=requeue)
        else:
            channel.basic_ack(tag)
            self.reporter.count("acked")
            if self.reporter.wants_event():
                self.reporter.event("acked", queue=queue, message_id=props.message_id)

    def _process(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0 and not self.interrupted:
            time.sleep(min(left, POLL))
            self.poll_control()

    def _maybe_crash(self, delivered: int) -> None:
        crash_after = self.settings.get("crash_after")
        if crash_after and delivered >= crash_after:
            raise Crash


RUNS = {"producer": ProducerRun, "consumer": ConsumerRun}
