"""The built-in exercises played against the real broker: a reference run passes every
checkpoint; a plausible mistake leaves the checkpoint it concerns pending."""

import time

import pytest

from exercises.models import CheckpointResult
from exercises.services import lab_publish, lab_session_start, workload_start, workload_stop
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


def stays_pending(session, checkpoint, seconds=4.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if checkpoint in passed(session):
            return False
        time.sleep(0.25)
    return True


def test_direct_routing_reference_run(worker, catalogue, learner, labs):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner)
    wait_passed(session, "temperature-routed", "temperature-delivered")
    lab_publish(session=session, exchange="sensors", routing_key="humidity", body="{}")
    lab_publish(session=session, exchange="sensors", routing_key="Temperature", body="{}")
    wait_passed(session, "humidity-dropped", "case-sensitive")
    workload_stop(workload=session.workloads.get(name="pressure-display"))
    wait_passed(session, "display-stopped", "pressure-backlog")
    workload_start(workload=session.workloads.get(name="pressure-display"))
    wait_passed(session, "display-running", "pressure-drained")
    assert passed(session) == {cp.id for _, cp in session.spec.all_checkpoints()}


def test_direct_routing_wrong_display_stays_pending(worker, catalogue, learner, labs):
    """Stopping the temperature display instead of the pressure one does not pass."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner)
    lab_publish(session=session, exchange="sensors", routing_key="humidity", body="{}")
    lab_publish(session=session, exchange="sensors", routing_key="Temperature", body="{}")
    wait_passed(session, "humidity-dropped", "case-sensitive")
    workload_stop(workload=session.workloads.get(name="temperature-display"))
    assert stays_pending(session, "display-stopped")
    assert "pressure-backlog" not in passed(session)


def test_direct_routing_routed_key_is_not_an_unknown_key(worker, catalogue, learner, labs):
    """Publishing with a key that has a binding does not pass the 'dropped' checkpoint."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner)
    wait_passed(session, "temperature-routed", "temperature-delivered")
    lab_publish(session=session, exchange="sensors", routing_key="pressure", body="{}")
    assert stays_pending(session, "humidity-dropped")


def test_dlq_retries_reference_run(worker, catalogue, learner, labs):
    session = lab_session_start(exercise=catalogue["dlq-retries"], owner=learner)
    wait_passed(session, "retry-queue-holds", "orders-came-back", timeout=40)
    wait_passed(session, "parked-after-three", "parking-holds", timeout=60)
    update(workload=session.workloads.get(name="processor"), changes={"fail": 0.0})
    wait_passed(session, "bug-fixed", "retry-queue-empty", "orders-acked", timeout=40)
    assert passed(session) == {cp.id for _, cp in session.spec.all_checkpoints()}


def test_dlq_requeue_instead_of_dead_letter_stays_pending(worker, catalogue, learner, labs):
    """Rejecting with requeue loops in the work queue: nothing reaches the retry queue."""
    session = lab_session_start(exercise=catalogue["dlq-retries"], owner=learner, run=False)
    processor = session.workloads.get(name="processor")
    update(workload=processor, changes={"requeue": True, "processing_ms": 200})
    for name in ("shop", "processor"):
        workload_start(workload=session.workloads.get(name=name))
    assert stays_pending(session, "retry-queue-holds", seconds=6)
