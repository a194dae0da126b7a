"""The delivery ledger against the real broker: a producer's confirmed messages joined to
what the consumers received, shown among its counters, and the `none_lost` check."""

import pytest

from exercises.models import LabSession
from exercises.services import exercise_save, lab_session_start, workload_start
from tests.exercises.test_exercise_runs import passed, stays_pending
from tests.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

LEDGER = """
version: 1
slug: ledger-test
title: Ledger
summary: What was confirmed, and what arrived
description: A plain queue, and a queue that drops its oldest beyond ten messages.
level: beginner
minutes: 5
topology:
  queues:
    - name: kept
    - name: capped
      arguments: {x-max-length: 10}
workloads:
  producers:
    - name: keeper
      routing_key: kept
      rate: 300
      count: 60
      confirms: true
      ledger: true
      properties: {message_id: sequence}
    - name: capper
      routing_key: capped
      rate: 300
      count: 60
      confirms: true
      ledger: true
      properties: {message_id: sequence}
  consumers:
    - name: picky
      queue: kept
      prefetch: 5
      behaviour:
        fail: 0.3
        requeue: true
    - name: late
      queue: capped
      prefetch: 5
      autostart: false
steps:
  - id: all
    title: All of it
    instructions: Watch.
    checkpoints:
      - id: kept-none-lost
        description: every confirmed message of keeper arrived
        check: {type: none_lost, workload: keeper, min: 60}
      - id: capped-none-lost
        description: every confirmed message of capper arrived
        check: {type: none_lost, workload: capper, min: 60}
"""


def ledger(session) -> dict:
    state = LabSession.objects.get(pk=session.pk).monitor_state or {}
    return (state.get("record") or {}).get("ledger", {})


def counts(session, workload) -> dict:
    state = LabSession.objects.get(pk=session.pk).monitor_state or {}
    return (state.get("record") or {}).get("workloads", {}).get(workload, {})


def test_confirmed_messages_joined_to_what_arrived(worker, learner, labs):
    exercise, _ = exercise_save(source=LEDGER)
    session = lab_session_start(exercise=exercise, owner=learner, run=True)
    # keeper: every message arrives, the rejected ones again and again (requeued).
    wait_for(lambda: "kept-none-lost" in passed(session), timeout=30, message="kept-none-lost")
    kept = wait_for(
        lambda: (
            (ld := ledger(session).get("keeper"))
            and ld["duplicates"] == counts(session, "picky").get("redelivered")
            and ld
        ),
        message="keeper's ledger with picky's redeliveries",
    )
    assert kept["confirmed"] == kept["received"] == 60 and kept["missing"] == 0
    assert kept["duplicates"] > 0  # a requeued message came again: not lost, not new

    # capper: ten kept of sixty confirmed; the queue dropped the others from its head.
    wait_for(lambda: not session.workloads.get(name="capper").running, message="capper done")
    workload_start(workload=session.workloads.get(name="late"))
    capped = wait_for(
        lambda: (ld := ledger(session).get("capper")) and ld["received"] == 10 and ld,
        message="capper's ledger after late took the ten",
    )
    assert capped == {
        "final": True,
        "confirmed": 60,
        "received": 10,
        "missing": 50,
        "duplicates": 0,
    }
    assert stays_pending(session, "capped-none-lost", seconds=2.0)

    # An ended lab's page shows the ledger as it was last saved.
    from exercises.selectors import lab_last_numbers
    from exercises.services import lab_session_stop

    lab_session_stop(session=session)
    session.refresh_from_db()
    last = lab_last_numbers(session)["counters"]
    assert last["capper"]["missing"] == 50 and last["capper"]["received"] == 10
    assert last["keeper"]["missing"] == 0 and last["keeper"]["received"] == 60


def test_ledger_checks_name_what_their_producer_lacks():
    from exercises.spec import SpecError, parse_spec

    # A ledger without sequence ids; a check on a producer without a ledger; a check on a
    # consumer, and on a queue that is not there.
    source = (
        LEDGER.replace(
            "check: {type: none_lost, workload: capper, min: 60}",
            "check: {type: lost, workload: picky, queue: nowhere}",
        )
        .replace(
            "properties: {message_id: sequence}\n    - name: capper",
            "properties: {}\n    - name: capper",
        )
        .replace(
            "      ledger: true\n      properties: {message_id: sequence}\n  consumers",
            "      properties: {message_id: sequence}\n  consumers",
        )
    )
    with pytest.raises(SpecError) as found:
        parse_spec(source)
    assert [f"{e.path}: {e.message}" for e in found.value.problems] == [
        "workloads.producers[0].ledger: the ledger needs confirms: true and "
        "properties.message_id: sequence (it follows each message by its number, from the "
        "broker's confirm to a consumer)",
    ]
    source = source.replace(
        "properties: {}\n    - name: capper",
        "properties: {message_id: sequence}\n    - name: capper",
    )
    source = source.replace(
        "check: {type: none_lost, workload: keeper, min: 60}",
        "check: {type: none_lost, workload: capper, min: 60}",
    )
    with pytest.raises(SpecError) as found:
        parse_spec(source)
    assert [f"{e.path}: {e.message}" for e in found.value.problems] == [
        "steps[0].checkpoints[0].check.workload: 'capper' must keep a ledger: set ledger: true",
        "steps[0].checkpoints[1].check.workload: 'picky' is not a producer (declared producers: "
        "keeper, capper)",
        "steps[0].checkpoints[1].check.queue: 'nowhere' is not a declared queue (declared "
        "queues: kept, capped)",
    ]
