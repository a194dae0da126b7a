"""Workload behaviours of the course's patterns, against the real broker: RPC requests and
replies, poison messages in a quorum queue with a delivery limit, streams read from an
offset."""

import json
import time

import pytest

from exercises.services import exercise_save, lab_publish, lab_session_start, workload_start
from tests.exercises.test_catalogue_runs import counter
from tests.exercises.test_workloads import peek, running_workloads
from tests.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

HEAD = """
version: 1
slug: {slug}
title: Pattern
summary: A pattern
description: A pattern.
level: beginner
minutes: 5
"""


def lab(learner, slug, body):
    exercise, _ = exercise_save(source=HEAD.format(slug=slug) + body)
    return lab_session_start(exercise=exercise, owner=learner)


RPC = """
topology:
  queues:
    - name: requests
    - name: replies
workloads:
  producers:
    - name: asker
      routing_key: requests
      reply_to: replies
      rate: 50
      count: 5
      payload: '{"q": {n}}'
  consumers:
    - name: answerer
      queue: requests
      prefetch: 1
      behaviour:
        reply: true
"""


def test_rpc_server_answers_each_request_to_its_reply_to(api, worker, learner, labs):
    """Each request carries reply_to and a correlation id; the server answers it there with
    the same id. A request without reply_to is acknowledged and counted unanswered."""
    session = lab(learner, "rpc-pattern", RPC)
    replies = wait_for(
        lambda: (m := peek(api, session, "replies")) and len(m) == 5 and m,
        message="five replies",
    )
    ids = {m["properties"]["correlation_id"] for m in replies}
    assert ids == {f"asker-{n}" for n in range(1, 6)}
    for m in replies:
        n = int(m["properties"]["correlation_id"].rsplit("-", 1)[1])
        assert json.loads(m["payload"]) == {"answer": {"q": n}, "server": "answerer"}
        assert m["routing_key"] == "replies" and m["exchange"] == ""
    lab_publish(session=session, exchange="", routing_key="requests", body='{"q": 0}')
    wait_for(lambda: counter(session, "answerer", "unanswered") == 1, message="unanswered")
    assert counter(session, "answerer", "replied") == 5
    assert len(peek(api, session, "replies")) == 5


QUORUM = """
topology:
  queues:
    - name: jobs
      type: quorum
      arguments:
        x-delivery-limit: 2
        x-dead-letter-exchange: ""
        x-dead-letter-routing-key: jobs.dead
    - name: jobs.dead
workloads:
  consumers:
    - name: worker
      queue: jobs
      prefetch: 1
      behaviour:
        poison: poison
        requeue: true
"""


def test_a_poison_message_ends_its_redeliveries_at_the_delivery_limit(api, worker, learner, labs):
    """The consumer fails a message whose body holds the poison text, with requeue; the
    quorum queue delivers it again until its delivery limit, then dead-letters it."""
    session = lab(learner, "quorum-pattern", QUORUM)
    wait_for(lambda: "worker" in running_workloads(session), message="consumer running")
    lab_publish(session=session, exchange="", routing_key="jobs", body='{"ok": 1}')
    lab_publish(session=session, exchange="", routing_key="jobs", body='{"poison": 1}')
    dead = wait_for(lambda: peek(api, session, "jobs.dead"), message="dead-lettered")
    assert len(dead) == 1 and json.loads(dead[0]["payload"]) == {"poison": 1}
    reasons = {d["reason"] for d in dead[0]["properties"]["headers"]["x-death"]}
    assert reasons == {"delivery_limit"}
    wait_for(lambda: counter(session, "worker", "rejected") == 3, message="three rejections")
    assert counter(session, "worker", "redelivered") == 2
    assert counter(session, "worker", "acked") == 1
    assert peek(api, session, "jobs") == []


STREAM = """
topology:
  queues:
    - name: log
      type: stream
      arguments:
        x-max-age: 1h
workloads:
  producers:
    - name: writer
      exchange: ""
      routing_key: log
      rate: 100
      count: 10
      autostart: false
  consumers:
    - name: live
      queue: log
      prefetch: 10
      stream_offset: next
    - name: replay
      queue: log
      prefetch: 10
      stream_offset: first
      autostart: false
    - name: from-offset
      queue: log
      prefetch: 10
      stream_offset: 6
      autostart: false
"""


def test_stream_consumers_replay_from_an_offset_while_another_reads_live(
    api, worker, learner, labs
):
    """Reading a stream leaves its messages there: a consumer from `first` replays them all,
    one from offset 6 the last four, while the live one read each once as it came."""
    session = lab(learner, "stream-pattern", STREAM)
    # "next" reads what comes after it subscribed: the writer starts once the broker has
    # the live consumer, not when its workload is marked running.
    wait_for(
        lambda: any(
            c["queue"]["name"] == "log"
            for c in api.request("GET", f"consumers/{session.vhost}") or []
        ),
        message="the live consumer subscribed",
    )
    workload_start(workload=session.workloads.get(name="writer"))
    wait_for(lambda: counter(session, "live", "acked") == 10, message="live read ten")
    time.sleep(2.1)  # AMQP timestamps are whole seconds: make the ten clearly history
    for name in ("replay", "from-offset"):
        workload_start(workload=session.workloads.get(name=name))
    wait_for(lambda: counter(session, "replay", "acked") == 10, message="replayed ten")
    wait_for(lambda: counter(session, "from-offset", "acked") == 4, message="from offset 6")
    assert counter(session, "replay", "replayed") == 10
    assert counter(session, "from-offset", "replayed") == 4
    assert counter(session, "live", "replayed") == 0
    stream = next(q for q in api.queues(session.vhost) if q["name"] == "log")
    assert stream.get("type") == "stream"


SECURITY = r"""
topology:
  exchanges:
    - {name: app.events, type: fanout}
    - {name: audit, type: fanout}
  queues:
    - name: app.orders
    - name: audit.log
  bindings:
    - {source: app.events, destination: app.orders}
    - {source: audit, destination: audit.log}
users:
  - name: app
    write: "^app\\."
workloads:
  producers:
    - name: allowed
      user: app
      exchange: app.events
      rate: 50
      count: 3
    - name: denied
      user: app
      exchange: audit
      rate: 5
"""


def test_a_producer_publishing_as_a_limited_user_is_refused_elsewhere(api, worker, learner, labs):
    """The exercise's user is made with the lab, with its permissions on the lab's vhost
    only; publishing where it may not write closes the channel with ACCESS_REFUSED, counted
    live. The sweeper leaves it to its live lab; the lab's end removes it."""
    from exercises.services import lab_session_stop
    from exercises.sweep import labs_sweep
    from labconsole.broker import amqp

    session = lab(learner, "security-pattern", SECURITY)
    app = amqp.lab_extra_user(session.rabbit_user, "app")
    assert api.request("GET", f"users/{app}/permissions") == [
        {"user": app, "vhost": session.vhost, "configure": "^$", "write": "^app\\.", "read": "^$"}
    ]
    wait_for(lambda: len(peek(api, session, "app.orders")) == 3, message="three allowed")
    wait_for(lambda: counter(session, "denied", "access_refused") >= 2, message="refused twice")
    assert peek(api, session, "audit.log") == []
    assert counter(session, "allowed", "access_refused") == 0
    # What the broker refused is not counted as published; what it took is.
    assert counter(session, "allowed", "published") == 3
    wait_for(
        lambda: counter(session, "denied", "published") == 0,
        timeout=5,
        message="the refused publishes not counted as published",
    )

    assert app not in labs_sweep(grace_seconds=0).users
    assert api.user_exists(app)
    lab_session_stop(session=session)
    assert not api.user_exists(app) and not api.user_exists(session.rabbit_user)
