"""Workloads report at full pace only while somebody watches their lab: the monitor passes
the web's `watch` on to them (op `pace`). And a report whose lab's monitor runs in the
same worker process goes to it directly, not through the broker."""

import contextlib
import json
import time

import pytest

from exercises.services import lab_session_start
from labconsole.broker import amqp, control
from labconsole.flow.reporter import FIRST_WATCH_SECONDS
from tests.conftest import subprocess_env
from tests.support import Worker, wait_for

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


@pytest.fixture
def remote_reports(worker):
    """The suite's worker stands aside for one whose reports always cross the broker (as
    they do when a lab's monitor runs in another worker), so that a probe can count them."""
    worker.stop()
    other = Worker("pace-worker", env={**subprocess_env(), "RUNTIME_LOCAL_REPORTS": "false"})
    other.start()
    yield other
    other.stop()
    worker.start()


def all_claimed(session) -> list[bool]:
    session.refresh_from_db()
    owners = list(session.workloads.filter(running=True).values_list("owner", flat=True))
    return [bool(o) for o in [*owners, session.monitor_owner]]


@contextlib.contextmanager
def flow_probe(session, name: str, kinds: tuple[str, ...]):
    """A channel on the console's vhost and a queue of its own bound to the lab's `kinds`
    of flow messages (its frames on the frames exchange)."""
    connection = amqp.connect(amqp.console_parameters(name=name))
    try:
        channel = connection.channel()
        amqp.declare_console_exchanges(channel)
        queue = channel.queue_declare("", exclusive=True).method.queue
        for kind in kinds:
            if kind == "frame":
                amqp.bind_frames(channel, queue, session.id)
            else:
                channel.queue_bind(queue, amqp.flow_exchange(), amqp.lab_key(session.id, kind))
        yield channel, queue
    finally:
        amqp.close_quietly(connection)


def test_reports_slow_down_unwatched_and_speed_up_when_watched(
    remote_reports, catalogue, learner, labs
):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner)
    # Every unit running (a unit counts as watched for its first seconds), then nobody
    # has watched the lab for a while.
    wait_for(lambda: all(all_claimed(session)), message="every unit of the lab running")
    with flow_probe(session, "pace probe", ("report",)) as (channel, queue):
        time.sleep(FIRST_WATCH_SECONDS + 2)
        unwatched = count_reports(channel, queue, 4)
        # What a web process with a viewer of the lab says every few seconds.
        control.send(control.monitor_key(session.id), {"op": "watch"})
        time.sleep(1)
        watched = count_reports(channel, queue, 4)
    assert unwatched > 0, "the workloads report while nobody watches, only less often"
    assert watched >= 2 * unwatched, (unwatched, watched)


def test_a_monitor_in_the_same_worker_gets_reports_without_the_broker(
    worker, catalogue, learner, labs
):
    """One worker runs the lab's monitor and workloads: the frames' counters grow while no
    report passes the console's flow exchange."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner)
    with flow_probe(session, "local reports probe", ("report", "frame")) as (channel, queue):
        seen = {"report": 0, "frame": 0}
        published = []
        end = time.monotonic() + 6
        for method, props, body in channel.consume(queue, auto_ack=True, inactivity_timeout=0.2):
            if method is not None and not amqp.is_frames(props.headers):
                seen[method.routing_key.rpartition(".")[2]] += 1
            elif method is not None:
                for frame in amqp.lab_frames(session.id, props.headers, body):
                    seen["frame"] += 1
                    counters = json.loads(frame).get("counters", {})
                    published.append(counters.get("temperature-sensor", {}).get("published", 0))
            if time.monotonic() >= end:
                break
        channel.cancel()
    assert seen["frame"] > 0 and published[-1] > published[0], (seen, published)
    assert seen["report"] == 0, seen
