"""The built-in exercises played against the real broker: a reference run passes every
checkpoint; a plausible mistake leaves the checkpoint it concerns pending."""

import time

import pytest

from exercises.models import CheckpointResult
from exercises.services import (
    lab_publish,
    lab_session_start,
    lab_step_show,
    lab_topology_change,
    workload_start,
    workload_stop,
)
from exercises.services import workload_update as update
from tests.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def passed(session) -> set[str]:
    return set(
        CheckpointResult.objects.filter(session=session).values_list("checkpoint", flat=True)
    )


def wait_passed(session, *checkpoints, timeout=30):
    wait_for(
        lambda: set(checkpoints) <= passed(session),
        timeout=timeout,
        message=f"checkpoints {checkpoints} (passed: {sorted(passed(session))})",
    )


def stays_pending(*pending, seconds=4.0) -> bool:
    """Each (session, checkpoint) of `pending`, or one session and one checkpoint, stays
    pending for `seconds`."""
    if len(pending) == 2 and isinstance(pending[1], str):
        pending = (pending,)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if any(checkpoint in passed(session) for session, checkpoint in pending):
            return False
        time.sleep(0.25)
    return True


def queue_seen(tap, queue) -> dict:
    """The queue's numbers in the latest frame the lab's monitor sent."""
    frames = [m for m in tap.read() if m["type"] == "frame"]
    return frames[-1]["queues"].get(queue, {}) if frames else {}


def play_direct(session):
    yield session, ("temperature-routed", "temperature-delivered")
    lab_step_show(session=session, step="unknown-key")
    lab_publish(session=session, exchange="sensors", routing_key="humidity", body="{}")
    lab_publish(session=session, exchange="sensors", routing_key="Temperature", body="{}")
    yield session, ("humidity-dropped", "case-sensitive")
    lab_step_show(session=session, step="stop-display")
    workload_stop(workload=session.workloads.get(name="pressure-display"))
    yield session, ("display-stopped", "pressure-backlog")
    lab_step_show(session=session, step="restart-display")
    workload_start(workload=session.workloads.get(name="pressure-display"))
    yield session, ("display-running", "pressure-drained")
    lab_step_show(session=session, step="bind-humidity")
    humidity = {"name": "humidity", "type": "classic", "durable": True, "arguments": {}}
    lab_topology_change(session=session, kind="queue", action="declare", item=humidity)
    binding = {"source": "sensors", "destination": "humidity", "routing_key": "humidity"}
    binding.update(destination_type="queue", arguments={})
    lab_topology_change(session=session, kind="binding", action="declare", item=binding)
    lab_publish(session=session, exchange="sensors", routing_key="humidity", body="{}")
    yield session, ("humidity-bound", "humidity-routed")


def play_direct_wrong_display(session):
    """Stopping the temperature display instead of the pressure one does not pass."""
    yield session, ("temperature-routed", "temperature-delivered")
    lab_step_show(session=session, step="unknown-key")
    lab_publish(session=session, exchange="sensors", routing_key="humidity", body="{}")
    lab_publish(session=session, exchange="sensors", routing_key="Temperature", body="{}")
    yield session, ("humidity-dropped", "case-sensitive")
    lab_step_show(session=session, step="stop-display")
    workload_stop(workload=session.workloads.get(name="temperature-display"))


def play_direct_routed_key(session):
    """Publishing with a key that has a binding does not pass the 'dropped' checkpoint."""
    yield session, ("temperature-routed", "temperature-delivered")
    lab_step_show(session=session, step="unknown-key")
    lab_publish(session=session, exchange="sensors", routing_key="pressure", body="{}")


def play_dlq(session):
    yield session, ("retry-queue-holds", "orders-came-back")
    lab_step_show(session=session, step="count-and-park")
    yield session, ("parked-after-three", "parking-holds")
    lab_step_show(session=session, step="fix-the-bug")
    update(workload=session.workloads.get(name="processor"), changes={"fail": 0.0})
    yield session, ("bug-fixed", "retry-queue-empty", "orders-acked")


def test_the_built_in_exercises_played_right_and_wrong(worker, catalogue, learner, labs):
    """Direct routing and Dead letters, each played to the end and with plausible
    mistakes, all at once: the reference runs pass every checkpoint, each mistake leaves
    the checkpoint it concerns pending."""
    from exercises.models import LabSession
    from tests.exercises.test_catalogue_runs import counter, drive, routed
    from tests.exercises.test_topology_edits import FlowTap

    def start(slug, **kwargs):
        return lab_session_start(exercise=catalogue[slug], owner=learner, **kwargs)

    direct, wrong_display, routed_key = (start("direct-routing") for _ in range(3))
    dlq = start("dlq-retries")
    # Rejecting with requeue loops in the work queue: nothing reaches the retry queue.
    requeue = start("dlq-retries", run=False)
    processor = requeue.workloads.get(name="processor")
    update(workload=processor, changes={"requeue": True, "processing_ms": 200})
    for name in ("shop", "processor"):
        workload_start(workload=requeue.workloads.get(name=name))
    drive(
        play_direct(direct),
        play_direct_wrong_display(wrong_display),
        play_direct_routed_key(routed_key),
        play_dlq(dlq),
        timeout=150,
    )
    for session in (direct, dlq):
        assert passed(session) == {cp.id for _, cp in session.spec.all_checkpoints()}
    # The requeue lab's monitor saw the loop: orders handed back to `orders` and delivered
    # to the processor again, none of them dead-lettered to the retry queue.
    wait_for(
        lambda: (
            counter(requeue, "processor", "redelivered") >= 3
            and counter(requeue, "processor", "rejected") >= 3
        ),
        message="the requeueing processor given its orders back",
    )
    assert counter(requeue, "processor", "parked") == 0

    # The monitors saw each mistake: the learner's message to `sensors`, routed (with the
    # key `pressure`, which has a binding)...
    def routed_from_page() -> bool:
        state = LabSession.objects.get(pk=routed_key.pk).monitor_state or {}
        return (
            state.get("from_you", {}).get("sensors") == 1
            and state.get("unroutable", {}).get("sensors", 0) == 0
            and routed(routed_key, "sensors", "pressure").get(("pressure",), 0) >= 1
        )

    wait_for(routed_from_page, message="the learner's message to sensors seen, routed")
    # ... and the temperature display stopped: no consumer on its queue, which fills,
    # while the pressure display reads on.
    tap = FlowTap(wrong_display.id)
    try:
        wait_for(
            lambda: (
                queue_seen(tap, "temperature").get("consumers") == 0
                and queue_seen(tap, "temperature").get("ready", 0) >= 5
                and queue_seen(tap, "pressure").get("consumers") == 1
            ),
            message="temperature unread and filling, pressure read",
        )
    finally:
        tap.close()
    # ... and the checkpoints they concern stay pending.
    assert stays_pending(
        (wrong_display, "display-stopped"),
        (routed_key, "humidity-dropped"),
        (requeue, "retry-queue-holds"),
        seconds=6,
    )
    assert "pressure-backlog" not in passed(wrong_display)


def test_a_reset_lab_counts_from_nothing(worker, catalogue, learner, labs):
    """After a reset the monitor's counters start again: nothing the lab did before counts
    towards its checkpoints."""
    from exercises.models import LabSession
    from exercises.services import lab_session_reset

    def published() -> int:
        state = LabSession.objects.get(pk=session.pk).monitor_state or {}
        counters = state.get("record", {}).get("workloads", {})
        return sum(c.get("published", 0) for c in counters.values())

    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner)
    before = wait_for(lambda: published() >= 20 and published(), timeout=40, message="20 sent")
    generation = session.generation
    lab_session_reset(session=session)
    assert session.generation == generation + 1
    # The new monitor's first saved state: it counts only what the new lab's producers sent.
    after = wait_for(
        lambda: LabSession.objects.get(pk=session.pk).monitor_owner and published(),
        timeout=30,
        message="the new monitor's first saved counters",
    )
    assert after < before


def test_the_monitor_marks_a_new_step_before_the_next_action(worker, catalogue, learner, labs):
    """ "Next step" returns once the lab's monitor has marked where the step's checkpoints
    count from, so a publish made the moment it returns counts for the new step. (Sent
    without waiting, the mark raced the publish's trace and could take it in, leaving a
    one-message checkpoint pending for good.)"""
    from labconsole.broker import control

    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner)
    wait_passed(session, "temperature-routed", "temperature-delivered")
    # The monitor answers a steps message that asks for it...
    asked = {"op": "steps", "shown": session.steps_shown}
    answer = control.ask(control.monitor_key(session.id), asked, timeout=5)
    assert answer == {"marked": True}
    # ... and a publish right after the step is shown counts for it, every time.
    lab_step_show(session=session, step="unknown-key")
    lab_publish(session=session, exchange="sensors", routing_key="humidity", body="{}")
    lab_publish(session=session, exchange="sensors", routing_key="Temperature", body="{}")
    wait_passed(session, "humidity-dropped", "case-sensitive")
