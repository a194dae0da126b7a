"""Control messages to running tasks, over the console's control exchange."""

from __future__ import annotations

import json
import threading

import pika
import pika.exceptions as px

from . import amqp

_local = threading.local()


def _channel():
    channel = getattr(_local, "channel", None)
    if channel is None or not channel.is_open or not channel.connection.is_open:
        connection = amqp.connect(amqp.console_parameters(name="labconsole-control"))
        channel = connection.channel()
        amqp.declare_console_exchanges(channel)
        _local.channel = channel
    return channel


def send(routing_key: str, message: dict, *, exchange: str | None = None) -> None:
    """Publishes one JSON message; retries once on a connection that went stale."""
    body = json.dumps(message).encode()
    props = pika.BasicProperties(content_type="application/json")
    for attempt in (1, 2):
        try:
            _channel().basic_publish(exchange or amqp.control_exchange(), routing_key, body, props)
            return
        except (px.AMQPError, OSError):
            _local.channel = None
            if attempt == 2:
                raise


def declare_reports_queue(session_id: str) -> None:
    """Collects the lab's workload reports from the moment it starts, so that none is lost
    while its monitor starts or moves to another worker. It expires an hour after its
    last consumer left, should a lab end without deleting it."""
    channel = _channel()
    name = amqp.reports_queue(session_id)
    channel.queue_declare(name, durable=True, arguments={"x-expires": 3_600_000})
    channel.queue_bind(name, amqp.flow_exchange(), f"lab.{session_id}.report")


def delete_reports_queue(session_id: str) -> None:
    _channel().queue_delete(amqp.reports_queue(session_id))


def workload_key(workload_id: int) -> str:
    return f"workload.{workload_id}"


def monitor_key(session_id: str) -> str:
    return f"lab.{session_id}.monitor"
