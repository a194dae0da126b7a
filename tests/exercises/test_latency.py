"""Publish-to-delivery latency per queue: the producers stamp each message, the consumers
measure their deliveries, the monitor's frames carry p50 and p99 for each queue."""

import pytest

from exercises.services import lab_session_start, workload_stop, workload_update
from labconsole.flow.reporter import LATENCY_SAMPLES, LATENCY_WINDOW, Latency
from tests.exercises.test_topology_edits import FlowTap
from tests.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_figures_are_nearest_rank_over_the_recent_window():
    latency = Latency()
    assert latency.figures() is None
    now = 1_000_000.0
    for ms in range(1, 101):  # 1..100 ms
        latency.add(int((now - ms / 1000) * 1_000_000), now=now)
    p50, p99, n = latency.figures(now=now)
    assert (round(p50), round(p99), n) == (50, 99, 100)
    latency.add("yesterday", now=now)  # not a stamp
    latency.add(True, now=now)
    assert latency.figures(now=now)[2] == 100
    assert latency.figures(now=now + LATENCY_WINDOW + 1) is None  # all of them too old
    for _ in range(LATENCY_SAMPLES + 10):
        latency.add(int(now * 1_000_000), now=now)
    assert latency.figures(now=now)[2] == LATENCY_SAMPLES


def queue_latency(tap, queue):
    frames = [m for m in tap.read() if m["type"] == "frame"]
    return frames[-1]["queues"].get(queue, {}).get("latency") if frames else None


def test_a_queue_that_backs_up_shows_its_wait_and_a_stopped_consumer_none(
    worker, catalogue, learner, labs
):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner)
    tap = FlowTap(session.id)
    try:
        wait_for(lambda: queue_latency(tap, "temperature"), message="latency in the frames")
        p50, p99 = queue_latency(tap, "temperature")
        assert 0 <= p50 <= p99
        # One message at a time, half a second each, while the sensor sends more than two
        # a second: the queue backs up, and every message waits longer than the last.
        sensor = session.workloads.get(name="temperature-sensor")
        display = session.workloads.get(name="temperature-display")
        workload_update(workload=sensor, changes={"rate": 5})
        workload_update(workload=display, changes={"prefetch": 1, "processing_ms": 500})
        wait_for(
            lambda: (queue_latency(tap, "temperature") or [0])[0] > 500,
            timeout=40,
            message="the wait in the queue, in p50",
        )
        assert queue_latency(tap, "pressure")  # the other queue, measured apart
        workload_stop(workload=display)
        wait_for(
            lambda: queue_latency(tap, "temperature") is None,
            message="no figures once its consumer stopped",
        )
    finally:
        tap.close()
