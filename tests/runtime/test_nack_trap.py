"""A producer that reconnects into nacks (RabbitMQ 3.10's trap after a quorum queue's
election, docs/cluster.md) opens new channels until a publish is acked, on the shared
broker, with a full reject-publish queue as the source of nacks."""

import time
from urllib.parse import quote

import pytest

from exercises.services import exercise_save, lab_session_start, workload_start
from tests.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

NACKED = """
version: 1
slug: nacked
title: Nacked
summary: A full queue that refuses publishes
description: Five messages fit; the queue refuses the rest.
level: beginner
minutes: 5
topology:
  queues:
    - name: full
      arguments: {x-max-length: 5, x-overflow: reject-publish}
workloads:
  producers:
    - name: sender
      routing_key: full
      rate: 20
      confirms: true
  consumers:
    - name: drainer
      queue: full
      autostart: false
"""


def test_a_producer_that_reconnects_into_nacks_opens_new_channels(api, worker, learner, labs):
    """The nacks of a full queue (reject-publish) stand in for RabbitMQ 3.10's trap, where a
    channel that reconnected into a quorum queue's election has every publish nacked. On a
    channel that had publishes acked, nacks are refusals: counted, at the producer's rate,
    on the same channel. After a reconnect, nacks before any ack make the producer open a
    new channel a second later each time, so about one publish a second is nacked; once
    the queue takes messages again, publishes are confirmed at the producer's rate."""
    exercise, _ = exercise_save(source=NACKED)
    session = lab_session_start(exercise=exercise, owner=learner)

    def count(what: str) -> int:
        session.refresh_from_db()
        record = session.monitor_state.get("record", {}).get("workloads", {})
        return record.get("sender", {}).get(what, 0)

    def per_second(what: str, seconds: float = 3.0) -> float:
        before = count(what)
        time.sleep(seconds)
        return (count(what) - before) / seconds

    def producer_connection() -> str | None:
        for c in api.connections(session.vhost):
            if c.get("client_properties", {}).get("connection_name") == "producer sender":
                return c["name"]
        return None

    wait_for(lambda: count("nacked_by_broker") >= 20, message="the full queue refuses publishes")
    refusing = per_second("nacked_by_broker", seconds=5.0)
    assert refusing >= 10  # 20 a second, all refused, one channel

    before = wait_for(producer_connection, message="the producer's connection listed")
    api.request("DELETE", f"connections/{quote(before, safe='')}")
    wait_for(
        lambda: producer_connection() not in (None, before), message="the producer reconnected"
    )
    time.sleep(1.5)
    # A channel at a time, each closed on its first nack: a few publishes a second are
    # nacked (how many were in flight before the nack came back, more on a busy machine),
    # against every one of them before the reconnect.
    trapped = per_second("nacked_by_broker", seconds=5.0)
    assert 0 < trapped <= refusing / 2, f"{trapped} nacks a second after the reconnect"

    workload_start(workload=session.workloads.get(name="drainer"))
    confirmed = count("confirmed")
    wait_for(
        lambda: count("confirmed") >= confirmed + 40,
        timeout=20,
        message="publishes confirmed again once the queue takes them",
    )
