"""Tracing sampled above a rate (labconsole/flow/sampling.py), against the real broker and
worker: a lab publishing faster than LAB_TRACE_SAMPLE_ABOVE is traced a tenth of the time,
its frames say so and its producer's count stays exact; back at its own rate it is traced
whole again."""

from urllib.parse import quote

import pytest
from django.conf import settings

from exercises.services import lab_session_start, workload_update
from tests.flow.test_monitor_events import frames  # noqa: F401 (a fixture)
from tests.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def published(frame: dict) -> int:
    return frame.get("counters", {}).get("temperature-sensor", {}).get("published", 0)


def test_a_lab_publishing_fast_is_traced_a_tenth_of_the_time(
    worker,
    catalogue,
    learner,
    labs,
    api,
    frames,  # noqa: F811
):
    above = settings.LAB_TRACE_SAMPLE_ABOVE
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=True)

    def tracing() -> bool:
        return api.request("GET", f"vhosts/{quote(session.vhost, safe='')}")["tracing"]

    watch = frames(session.id)
    # At its own rate (a few a second) the lab is traced whole.
    watch.wait(lambda f: published(f.frames[-1]) >= 3, timeout=30, message="the sensor publishing")
    assert not any("tracing" in f for f in watch.frames) and tracing()

    sensor = session.workloads.get(name="temperature-sensor")
    workload_update(workload=sensor, changes={"rate": 2.5 * above})
    sampled = watch.wait(
        lambda f: f.frames[-1] if "tracing" in f.frames[-1] else None,
        timeout=30,
        message="frames that say the lab is sampled",
    )
    assert sampled["tracing"]["share"] == 10 and sampled["tracing"]["above"] == above
    assert sampled["tracing"]["rate"] > above
    wait_for(lambda: not tracing(), timeout=10, message="tracing off on the broker")
    # The exchange's rate in holds what the windows measure (or what was measured whole
    # before the first), not the trickle the firehose shows between them.
    watch.wait(
        lambda f: len([x for x in f.frames if "tracing" in x]) >= 30,
        timeout=30,
        message="frames while sampled",
    )
    while_sampled = [x for x in watch.frames if "tracing" in x][-20:]
    held = [x["exchanges"]["sensors"]["rate_in"] for x in while_sampled]
    assert all(rate > above / 2 for rate in held), held
    # The producer's own count goes on at its rate: exact, whatever the firehose shows.
    counts = [published(x) for x in while_sampled]
    seconds = while_sampled[-1]["t"] - while_sampled[0]["t"]
    assert (counts[-1] - counts[0]) / seconds > above / 2, (counts[0], counts[-1], seconds)

    workload_update(workload=sensor, changes={"rate": 2})
    watch.wait(
        lambda f: len(f.frames) > 5 and not any("tracing" in x for x in f.frames[-5:]),
        timeout=30,
        message="traced whole again",
    )
    wait_for(tracing, timeout=10, message="tracing on again on the broker")
