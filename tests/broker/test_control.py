"""The web process's cached connection to the console's vhost."""

import socket

from labconsole.broker import amqp, control
from labconsole.broker.management import ManagementClient


def drop_connection_under_pika() -> None:
    """What the broker does to a connection idle past its heartbeats: pika learns of it only
    at the next write."""
    control._channel().connection._impl._transport._sock.shutdown(socket.SHUT_RDWR)


def test_lab_queues_survive_a_dropped_idle_connection():
    api = ManagementClient()
    name = amqp.reports_queue("dropped-test")
    drop_connection_under_pika()
    control.declare_reports_queue("dropped-test")
    try:
        queue = api.request("GET", f"queues/%2F/{name}")
        assert queue["arguments"]["x-expires"] == 3_600_000
    finally:
        drop_connection_under_pika()
        control.delete_reports_queue("dropped-test")
    assert api.request("GET", f"queues/%2F/{name}", ok_missing=True) is None
