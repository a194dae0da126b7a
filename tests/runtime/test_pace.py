"""Workloads report at full pace only while somebody watches their lab: the monitor passes
the web's `watch` on to them (op `pace`)."""

import time

import pytest

from exercises.services import lab_session_start
from labconsole.broker import amqp, control
from labconsole.flow.reporter import FIRST_WATCH_SECONDS

pytestmark = pytest.mark.django_db(transaction=True)


def count_reports(channel, queue: str, seconds: float) -> int:
    channel.queue_purge(queue)
    end = time.monotonic() + seconds
    n = 0
    for method, _props, _body in channel.consume(queue, auto_ack=True, inactivity_timeout=0.2):
        if method is not None:
            n += 1
        if time.monotonic() >= end:
            break
    channel.cancel()
    return n


def test_reports_slow_down_unwatched_and_speed_up_when_watched(worker, catalogue, learner, labs):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner)
    connection = amqp.connect(amqp.console_parameters(name="pace probe"))
    try:
        channel = connection.channel()
        amqp.declare_console_exchanges(channel)
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, amqp.flow_exchange(), amqp.lab_key(session.id, "report"))
        time.sleep(FIRST_WATCH_SECONDS + 2)  # nobody has watched the lab
        unwatched = count_reports(channel, queue, 4)
        # What a web process with a viewer of the lab says every few seconds.
        control.send(control.monitor_key(session.id), {"op": "watch"})
        time.sleep(1)
        watched = count_reports(channel, queue, 4)
    finally:
        amqp.close_quietly(connection)
    assert unwatched > 0, "the workloads report while nobody watches, only less often"
    assert watched >= 2 * unwatched, (unwatched, watched)
