"""The lab's timeline as its monitor keeps it (labconsole/flow/monitor.py), against the real
broker and worker: every broker event reaches the page in a frame's `timeline`, however
many events the log's share of the frame leaves out, numbered and with where the messages
stood; the newest TIMELINE of them are saved with the monitor's state."""

import json

import pika
import pytest

from exercises.services import lab_session_start
from labconsole.broker import amqp, control
from labconsole.flow.monitor import TIMELINE
from tests.flow.test_monitor_events import frames  # noqa: F401 (a fixture)
from tests.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def test_every_broker_event_is_framed_and_the_newest_are_kept(
    worker,
    catalogue,
    learner,
    labs,
    frames,  # noqa: F811
):
    """More faults than the timeline keeps, at once, while messages flow: each is in some
    frame's timeline once, numbered in order; the saved state keeps the newest TIMELINE."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=True)
    watch = frames(session.id)
    # The flow a broker event carries is the workloads' counters, which arrive with their
    # reports, after the first published events: wait for a frame that counts some.
    watch.wait(
        lambda f: any(
            c.get("published", 0) > 0 for fr in f.frames for c in fr.get("counters", {}).values()
        ),
        timeout=30,
        message="published messages counted",
    )
    total = TIMELINE + 20
    props = pika.BasicProperties(content_type="application/json")
    for i in range(total):
        fault = {"op": "broker", "event": {"node": f"lab{i}", "action": "kill", "workload": "@you"}}
        watch.channel.basic_publish(
            amqp.control_exchange(), control.monitor_key(session.id), json.dumps(fault), props
        )

    def framed(f) -> list[dict] | None:
        events = [e for frame in f.frames for e in frame.get("timeline", [])]
        return events if len(events) >= total else None

    events = watch.wait(framed, timeout=60, message=f"{total} broker events in frames")
    assert [e["n"] for e in events] == list(range(1, total + 1))
    assert [e["node"] for e in events] == [f"lab{i}" for i in range(total)]
    assert all(e["kind"] == "broker" and e["t"] > 0 for e in events)
    assert events[-1]["flow"]["published"] > 0, events[-1]
    assert {"published", "delivered"} <= set(events[0]["flow"])
    # The log's share of those frames is the newest events only: most faults are not in it.
    logged = [e for e in watch.events() if e["kind"] == "broker"]
    assert len(logged) < total

    def saved() -> list[dict] | None:
        session.refresh_from_db()  # the monitor saves its state every second or two
        timeline = session.monitor_state.get("timeline", [])
        return timeline if timeline and timeline[-1].get("n") == total else None

    kept = wait_for(saved, timeout=15, message="the newest broker events saved")
    assert len(kept) == TIMELINE
    assert [e["n"] for e in kept] == list(range(total - TIMELINE + 1, total + 1))
