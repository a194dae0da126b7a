"""Workloads as Celery tasks moving real messages, counted through the management API."""

import json
import time

import pytest

from exercises.models import Exercise, Workload
from exercises.services import (
    exercise_save,
    lab_session_start,
    lab_session_stop,
    workload_start,
    workload_stop,
    workload_update,
)
from tests.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def queue_stats(api, session, name) -> dict:
    return next(q for q in api.queues(session.vhost) if q["name"] == name)


def peek(api, session, queue: str, count: int = 50) -> list[dict]:
    """Messages in a queue, read through the API and put back."""
    return api.request(
        "POST",
        f"queues/{session.vhost}/{queue}/get",
        {"count": count, "ackmode": "ack_requeue_true", "encoding": "auto"},
    )


def depth(api, session, queue: str) -> int:
    """Ready messages, counted exactly (a get with requeue), not from 5-second statistics."""
    return len(peek(api, session, queue, count=10000))


def running_workloads(session) -> set[str]:
    return set(session.workloads.filter(running=True).values_list("name", flat=True))


def test_direct_routing_puts_each_reading_only_in_its_queue(api, worker, catalogue, learner, labs):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=True)
    for name in ("temperature-display", "pressure-display"):
        workload_stop(workload=session.workloads.get(name=name))
    wait_for(
        lambda: depth(api, session, "temperature") >= 6 and depth(api, session, "pressure") >= 3,
        message="readings in both queues",
    )
    temperature = peek(api, session, "temperature")
    pressure = peek(api, session, "pressure")
    assert {m["routing_key"] for m in temperature} == {"temperature"}
    assert all("celsius" in json.loads(m["payload"]) for m in temperature)
    assert {m["routing_key"] for m in pressure} == {"pressure"}
    assert all("hpa" in json.loads(m["payload"]) for m in pressure)


def test_dead_letter_retries_end_in_the_parking_queue(api, worker, catalogue, learner, labs):
    """Every order fails; after the configured retries it is parked with its x-death."""
    session = lab_session_start(exercise=catalogue["dlq-retries"], owner=learner, run=True)
    park_after = session.spec.consumer("processor").behaviour.park_after
    parked = wait_for(lambda: peek(api, session, "orders.parking"), timeout=40, message="parked")
    deaths = parked[0]["properties"]["headers"]["x-death"]
    rejected = next(d for d in deaths if d["queue"] == "orders" and d["reason"] == "rejected")
    expired = next(d for d in deaths if d["queue"] == "orders.retry" and d["reason"] == "expired")
    assert rejected["count"] == park_after
    assert expired["count"] == park_after


SMALL = """
version: 1
slug: small
title: Small
summary: One queue
description: One queue, one producer, one consumer.
level: beginner
minutes: 5
topology:
  queues:
    - name: work
workloads:
  producers:
    - name: maker
      routing_key: work
      rate: {rate}
      count: {count}
      autostart: {producer_autostart}
  consumers:
    - name: taker
      queue: work
      prefetch: 3
      autostart: {consumer_autostart}
      behaviour:
        processing_ms: 60000
"""


def small(rate=200, count=20, producer_autostart=True, consumer_autostart=False) -> Exercise:
    exercise, _ = exercise_save(
        source=SMALL.format(
            rate=rate,
            count=count,
            producer_autostart=str(producer_autostart).lower(),
            consumer_autostart=str(consumer_autostart).lower(),
        )
    )
    return exercise


def test_producer_count_is_exact_and_it_stops_by_itself(api, worker, learner, labs):
    session = lab_session_start(exercise=small(rate=200, count=37), owner=learner)
    wait_for(lambda: "maker" not in running_workloads(session), message="producer finished")
    assert depth(api, session, "work") == 37


def test_consumer_honours_prefetch_and_live_changes(api, worker, learner, labs):
    """A slow manual-ack consumer holds exactly `prefetch` unacked; a new prefetch applies
    to the running consumer."""
    session = lab_session_start(exercise=small(count=20, consumer_autostart=True), owner=learner)
    taker = session.workloads.get(name="taker")

    def unacked():
        q = queue_stats(api, session, "work")
        return q.get("messages_unacknowledged")

    wait_for(lambda: depth(api, session, "work") == 17, message="17 ready, 3 held")
    workload_update(workload=taker, changes={"prefetch": 5})
    wait_for(lambda: depth(api, session, "work") == 15, timeout=5, message="prefetch 5 applied")
    # The broker's own count of unacknowledged messages (its statistics lag by up to 5 s).
    wait_for(lambda: unacked() == 5, timeout=15, message="5 unacked")


def test_auto_ack_consumer_takes_everything(api, worker, learner, labs):
    session = lab_session_start(exercise=small(count=20), owner=learner)
    taker = session.workloads.get(name="taker")
    wait_for(lambda: depth(api, session, "work") == 20, message="20 ready")
    workload_update(workload=taker, changes={"ack": "auto"})
    workload_start(workload=taker)
    wait_for(lambda: depth(api, session, "work") == 0, message="auto-ack drains the queue")


def test_rate_change_applies_to_a_running_producer(api, worker, learner, labs):
    session = lab_session_start(exercise=small(rate=0.2, count=100000), owner=learner)
    maker = session.workloads.get(name="maker")
    wait_for(lambda: depth(api, session, "work") >= 1, message="first message")
    assert depth(api, session, "work") <= 2
    workload_update(workload=maker, changes={"rate": 100})
    wait_for(lambda: depth(api, session, "work") >= 50, timeout=5, message="faster rate")


def test_stop_ends_every_task_and_connection(api, worker, catalogue, learner, labs):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=True)
    wait_for(lambda: len(api.connections(session.vhost)) >= 5, message="workloads connected")
    assert Workload.objects.filter(session=session).exclude(owner="").exists()
    lab_session_stop(session=session)
    assert not api.vhost_exists(session.vhost)
    assert not Workload.objects.filter(session=session, running=True).exists()

    def units_released():
        session.refresh_from_db()
        held = Workload.objects.filter(session=session).exclude(owner="")
        return not held.exists() and session.monitor_owner == ""

    wait_for(units_released, message="every unit of the lab ended and gave up its lease")


def test_killed_worker_hands_its_workloads_to_the_next(api, worker, learner, labs):
    """SIGKILL mid-run: the task was not acknowledged, so a new worker runs it again."""
    session = lab_session_start(exercise=small(rate=20, count=100000), owner=learner)
    wait_for(lambda: depth(api, session, "work") >= 5, message="producing")
    worker.kill()
    worker.start()
    before = depth(api, session, "work")
    wait_for(
        lambda: depth(api, session, "work") >= before + 20,
        timeout=30,
        message="producer running again on the new worker",
    )
    assert "maker" in running_workloads(session)


def test_consumer_that_crashes_gives_its_messages_back(api, worker, learner, labs):
    """crash_after: the consumer drops its connection holding unacked messages; the broker
    requeues them (they will be redelivered) and the workload is shown stopped."""
    exercise, _ = exercise_save(
        source=SMALL.format(
            rate=200, count=20, producer_autostart="true", consumer_autostart="false"
        ).replace("processing_ms: 60000", "processing_ms: 0\n        crash_after: 3")
    )
    session = lab_session_start(exercise=exercise, owner=learner)
    wait_for(lambda: depth(api, session, "work") == 20, message="20 ready")
    workload_start(workload=session.workloads.get(name="taker"))
    wait_for(lambda: "taker" not in running_workloads(session), message="consumer crashed")
    # It acked the first two and crashed on the third: that one and the rest it held are
    # back in the queue, marked redelivered.
    messages = wait_for(
        lambda: (m := peek(api, session, "work")) and len(m) == 18 and m,
        message="18 back in the queue",
    )
    assert sum(m["redelivered"] for m in messages) >= 1


def test_a_consumer_the_broker_cancels_consumes_again_when_its_queue_is_back(
    api, worker, learner, labs
):
    """basic.cancel from the broker (its queue deleted, or a classic queue's node down):
    the consumer consumes again once the queue is there, instead of idling for good."""
    exercise, _ = exercise_save(
        source=SMALL.format(
            rate=20, count=100000, producer_autostart="true", consumer_autostart="true"
        ).replace("processing_ms: 60000", "processing_ms: 0")
    )
    session = lab_session_start(exercise=exercise, owner=learner)

    def acked() -> int:
        session.refresh_from_db()
        workloads = (session.monitor_state or {}).get("record", {}).get("workloads", {})
        return workloads.get("taker", {}).get("acked", 0)

    wait_for(lambda: acked() >= 5, message="taker acknowledging")
    api.delete_queue(session.vhost, "work")  # the broker cancels taker's consumer
    time.sleep(1.5)  # taker finds no queue (404) and tries again
    api.put_queue(session.vhost, "work", {"durable": True, "auto_delete": False})
    back_at = acked()
    wait_for(lambda: acked() >= back_at + 10, message="taker consuming from the new queue")


TRANSACTIONS = """
version: 1
slug: transactions
title: Transactions
summary: Two transactional producers
description: One commits every message, the other only after a thousand.
level: beginner
minutes: 5
topology:
  queues:
    - name: each
    - name: batch
workloads:
  producers:
    - name: each-one
      routing_key: each
      rate: 200
      count: 37
      transactions: true
    - name: in-batches
      routing_key: batch
      rate: 20
      count: 60
      transactions: true
      tx_batch: 1000
"""


def test_a_transactional_producer_is_routed_only_when_it_commits(api, worker, learner, labs):
    """tx.select: the broker routes a transaction's messages at tx.commit. Committing after
    each message puts each in the queue; a batch of 1,000 holds them back until the
    producer, at its count, commits the rest."""
    exercise, _ = exercise_save(source=TRANSACTIONS)
    session = lab_session_start(exercise=exercise, owner=learner)
    batches = session.workloads.get(name="in-batches")

    def sent() -> int:
        batches.refresh_from_db()
        return batches.progress.get("sent", 0)

    wait_for(lambda: sent() >= 10, message="10 published in the open transaction")
    assert depth(api, session, "batch") == 0
    wait_for(lambda: depth(api, session, "each") == 37, message="37 committed one by one")
    wait_for(lambda: "in-batches" not in running_workloads(session), message="batch done")
    wait_for(lambda: depth(api, session, "batch") == 60, message="60 in the last commit")

    def committed():
        session.refresh_from_db()
        counters = session.monitor_state.get("record", {}).get("workloads", {})
        return {
            name: counters.get(name, {}).get("committed") for name in ("each-one", "in-batches")
        }

    wait_for(lambda: committed() == {"each-one": 37, "in-batches": 60}, message="committed")


def test_confirms_and_transactions_are_refused_together(learner, labs):
    from exercises.services import LabError
    from exercises.spec import SpecError, parse_spec

    both = TRANSACTIONS.replace(
        "      tx_batch: 1000", "      tx_batch: 1000\n      confirms: true"
    )
    with pytest.raises(SpecError, match=r"workloads\.producers\[1\]\.transactions.*not both"):
        parse_spec(both)
    exercise, _ = exercise_save(source=TRANSACTIONS)
    session = lab_session_start(exercise=exercise, owner=learner, run=False)
    each = session.workloads.get(name="each-one")
    with pytest.raises(LabError, match="each-one: .*not both"):
        workload_update(workload=each, changes={"confirms": True})
    each.refresh_from_db()
    assert not each.settings["confirms"] and each.settings["transactions"]
    workload_update(workload=each, changes={"transactions": False, "confirms": True})
    each.refresh_from_db()
    assert each.settings["confirms"] and not each.settings["transactions"]


WEIGHTED = """
version: 1
slug: weighted-keys
title: Weighted keys
summary: Weighted routing keys and header sets
description: One producer, keys by weight, headers in turn.
level: beginner
minutes: 5
topology:
  exchanges:
    - {name: billing, type: topic}
  queues:
    - name: everything
  bindings:
    - {source: billing, destination: everything, routing_key: "#"}
workloads:
  producers:
    - name: biller
      exchange: billing
      routing_keys: [{key: invoice, weight: 3}, refund]
      header_sets:
        - {kind: a}
        - {kind: b, urgent: true}
        - {kind: c}
      rate: 200
      count: 12
"""


def test_routing_key_weights_and_header_sets_follow_their_order(api, worker, learner, labs):
    """The weights 3 and 1 give invoice, invoice, refund, invoice each cycle of four; the
    three header sets go in turn. Both are exact over three cycles of keys."""
    from labconsole.flow.reporter import SENT_AT

    exercise, _ = exercise_save(source=WEIGHTED)
    session = lab_session_start(exercise=exercise, owner=learner)
    wait_for(lambda: "biller" not in running_workloads(session), message="producer finished")
    messages = peek(api, session, "everything")
    messages.sort(key=lambda m: json.loads(m["payload"])["n"])
    assert [json.loads(m["payload"])["n"] for m in messages] == list(range(1, 13))
    assert [m["routing_key"] for m in messages] == ["invoice", "invoice", "refund", "invoice"] * 3
    headers = [
        {k: v for k, v in m["properties"]["headers"].items() if k != SENT_AT} for m in messages
    ]
    assert headers == [{"kind": "a"}, {"kind": "b", "urgent": True}, {"kind": "c"}] * 4
