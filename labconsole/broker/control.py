"""Control messages to running tasks, and the lab queues the web process declares, over
one cached connection per thread to the console's vhost."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import pika
import pika.exceptions as px

from . import amqp

_local = threading.local()
REPLY_TO = "amq.rabbitmq.reply-to"
T = TypeVar("T")


def _channel():
    channel = getattr(_local, "channel", None)
    if channel is None or not channel.is_open or not channel.connection.is_open:
        connection = amqp.connect(amqp.console_parameters(name="labconsole control"))
        channel = connection.channel()
        amqp.declare_console_exchanges(channel)
        _local.channel = channel
    return channel


def _on_channel(action: Callable[[object], T]) -> T:
    """Runs `action` on the thread's channel. A web thread may sit idle long enough for the
    broker to drop its connection (missed heartbeats), which shows only at the next use:
    then it connects again and retries once."""
    for attempt in (1, 2):
        try:
            return action(_channel())
        except (px.AMQPConnectionError, px.ChannelWrongStateError, px.StreamLostError, OSError):
            _local.channel = None
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def send(routing_key: str, message: dict, *, exchange: str | None = None) -> None:
    """Publishes one JSON message on the control exchange (or `exchange`)."""
    body = json.dumps(message).encode()
    props = pika.BasicProperties(content_type="application/json")
    _on_channel(
        lambda ch: ch.basic_publish(exchange or amqp.control_exchange(), routing_key, body, props)
    )


def ask(routing_key: str, message: dict, *, timeout: float) -> dict | None:
    """Sends one JSON message on the control exchange and waits at most `timeout` seconds
    for its answer, through direct reply-to
    (https://www.rabbitmq.com/docs/direct-reply-to). None when nobody answered in time."""
    answer: list[bytes] = []
    props = pika.BasicProperties(content_type="application/json", reply_to=REPLY_TO)

    def request(channel) -> None:
        tag = channel.basic_consume(
            REPLY_TO, lambda _ch, _m, _p, body: answer.append(body), auto_ack=True
        )
        try:
            channel.basic_publish(
                amqp.control_exchange(), routing_key, json.dumps(message).encode(), props
            )
            deadline = time.monotonic() + timeout
            while not answer and (left := deadline - time.monotonic()) > 0:
                channel.connection.process_data_events(time_limit=min(left, 0.2))
        finally:
            channel.basic_cancel(tag)

    _on_channel(request)
    return json.loads(answer[0]) if answer else None


def declare_reports_queue(session_id: str) -> None:
    _on_channel(lambda ch: amqp.declare_reports_queue(ch, session_id))


def delete_reports_queue(session_id: str) -> None:
    _on_channel(lambda ch: ch.queue_delete(amqp.reports_queue(session_id)))


def workload_key(workload_id: int) -> str:
    return f"workload.{workload_id}"


def monitor_key(session_id: str) -> str:
    return amqp.lab_key(session_id, "monitor")


def pace_key(session_id: str) -> str:
    """Every workload of the lab listens here for whether anybody watches it."""
    return amqp.lab_key(session_id, "pace")
