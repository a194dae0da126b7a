"""A lab's vhost, user and topology on the real broker: made, torn down, rolled back."""

import pytest

from exercises.models import LabSession, RateEvent, Workload
from exercises.services import (
    LabError,
    exercise_save,
    lab_session_reset,
    lab_session_start,
    lab_session_stop,
)
from labconsole.broker import amqp
from tests.support import lab_vhosts_of_this_run

pytestmark = pytest.mark.django_db(transaction=True)


def test_start_provisions_vhost_user_limits_and_topology(api, catalogue, learner, labs):
    """The vhost has the firehose on and limits; the user may use that vhost only."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    vhost = api.request("GET", f"vhosts/{session.vhost}")
    assert vhost["tracing"] is True
    limits = api.request("GET", f"vhost-limits/{session.vhost}")[0]["value"]
    assert limits["max-queues"] > 0 and limits["max-connections"] > 0
    permissions = api.request("GET", f"users/{session.rabbit_user}/permissions")
    assert [(p["vhost"], p["configure"]) for p in permissions] == [(session.vhost, ".*")]
    queues = {q["name"] for q in api.queues(session.vhost)}
    assert {"temperature", "pressure"} <= queues
    bindings = {
        (b["source"], b["destination"], b["routing_key"])
        for b in api.bindings(session.vhost)
        if b["source"]
    }
    firehose = amqp.firehose_queue()
    assert bindings == {
        ("sensors", "temperature", "temperature"),
        ("sensors", "pressure", "pressure"),
        ("amq.rabbitmq.trace", firehose, "publish.#"),
    }
    assert session.state == LabSession.State.RUNNING
    assert set(Workload.objects.filter(session=session).values_list("name", flat=True)) == {
        "temperature-sensor",
        "pressure-sensor",
        "temperature-display",
        "pressure-display",
    }


def test_stop_deletes_vhost_and_user(api, catalogue, learner, labs):
    session = lab_session_start(exercise=catalogue["dlq-retries"], owner=learner, run=False)
    assert api.vhost_exists(session.vhost) and api.user_exists(session.rabbit_user)
    lab_session_stop(session=session)
    assert not api.vhost_exists(session.vhost)
    assert not api.user_exists(session.rabbit_user)
    session.refresh_from_db()
    assert session.state == LabSession.State.ENDED and session.ended_at is not None


def test_quorum_and_dead_letter_arguments_reach_the_broker(api, catalogue, learner, labs):
    session = lab_session_start(exercise=catalogue["dlq-retries"], owner=learner, run=False)
    queues = {q["name"]: q for q in api.queues(session.vhost)}
    assert queues["orders"]["arguments"]["x-dead-letter-exchange"] == "orders.retry"
    assert queues["orders.retry"]["arguments"]["x-message-ttl"] == 2000


BROKER_REFUSES = """
version: 1
slug: refused
title: Refused
summary: The broker refuses a policy
description: A policy setting RabbitMQ does not know.
level: beginner
minutes: 5
topology:
  queues:
    - name: work
  policies:
    - name: odd
      pattern: "^work$"
      definition: {no-such-setting: 1}
"""


def test_broker_refusal_rolls_back_everything(api, catalogue, learner, labs):
    """A spec that passes validation but that the broker refuses leaves nothing behind."""
    before_users = {u["name"] for u in api.listing("users")}
    with pytest.raises(LabError) as excinfo:
        lab_session_start(
            exercise=catalogue["direct-routing"], owner=learner, source=BROKER_REFUSES
        )
    assert "broker refused" in str(excinfo.value)
    assert "no-such-setting" in str(excinfo.value)
    # Nothing of this lab's (other consoles on the broker may start and end labs meanwhile).
    vhosts = api.listing("vhosts?columns=name,description")
    assert not [v for v in vhosts if v["description"] == "lab: refused"]
    names = {v["name"] for v in vhosts}
    new_users = {u["name"] for u in api.listing("users")} - before_users
    assert new_users <= names, "every new user belongs to a vhost that exists"
    assert not LabSession.objects.exists() and not Workload.objects.exists()


def test_invalid_source_is_refused_before_anything_is_made(api, catalogue, learner, labs):
    """Nothing made: no lab vhost of this test run (tagged with its mark; other runs share
    the broker and make vhosts of their own meanwhile), no lab row."""
    before = lab_vhosts_of_this_run(api)
    with pytest.raises(LabError, match=r"topology\.queues\[0\]"):
        lab_session_start(
            exercise=catalogue["direct-routing"],
            owner=learner,
            source=BROKER_REFUSES.replace("- name: work", "- name: ''"),
        )
    assert not lab_vhosts_of_this_run(api) - before and not LabSession.objects.exists()


def test_an_exercise_whose_plugins_the_broker_has_starts(api, catalogue, learner, labs):
    """consistent-hash names the plugin of its exchange type, which the broker has."""
    exercise = catalogue["consistent-hash"]
    assert exercise.spec.plugins == ["rabbitmq_consistent_hash_exchange"]
    assert "rabbitmq_consistent_hash_exchange" in api.enabled_plugins()
    session = lab_session_start(exercise=exercise, owner=learner, run=False)
    assert session.state == LabSession.State.RUNNING
    exchange = api.request("GET", f"exchanges/{session.vhost}/orders")
    assert exchange["type"] == "x-consistent-hash"


NEEDS_A_PLUGIN = """
version: 1
slug: needs-a-plugin
title: Needs a plugin
summary: An exercise needing a plugin no broker has
description: Two plugins, one of them enabled.
level: beginner
minutes: 5
plugins: [rabbitmq_consistent_hash_exchange, rabbitmq_nonexistent_plugin]
topology:
  queues:
    - name: work
workloads:
  producers:
    - {name: maker, routing_key: work}
"""


def test_a_plugin_the_broker_lacks_refuses_the_start_leaving_nothing(api, learner, labs):
    """Refused before anything is made: no vhost, user, lab, workload or start counted."""
    exercise, _ = exercise_save(source=NEEDS_A_PLUGIN)
    before_users = {u["name"] for u in api.listing("users")}
    with pytest.raises(LabError) as excinfo:
        lab_session_start(exercise=exercise, owner=learner)
    assert str(excinfo.value) == (
        "This exercise needs the RabbitMQ plugin rabbitmq_nonexistent_plugin, which the broker "
        "has not enabled. Whoever runs the broker enables it with: "
        "rabbitmq-plugins enable rabbitmq_nonexistent_plugin"
    )
    vhosts = api.listing("vhosts?columns=name,description")
    assert not [v for v in vhosts if v["description"] == "lab: needs-a-plugin"]
    new_users = {u["name"] for u in api.listing("users")} - before_users
    assert new_users <= {v["name"] for v in vhosts}, "every new user belongs to a vhost"
    assert not LabSession.objects.exists() and not Workload.objects.exists()
    assert not RateEvent.objects.exists()


def test_reset_recreates_the_lab_in_the_same_session(api, catalogue, learner, labs):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    old_password = session.rabbit_password
    api.request("DELETE", f"queues/{session.vhost}/pressure")
    lab_session_reset(session=session)
    assert session.generation == 2 and session.rabbit_password != old_password
    assert "pressure" in {q["name"] for q in api.queues(session.vhost)}


def test_idle_labs_are_ended(api, catalogue, learner, labs):
    from django.utils import timezone

    from exercises.services import lab_sessions_sweep_idle

    idle = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    fresh = lab_session_start(exercise=catalogue["dlq-retries"], owner=learner, run=False)
    LabSession.objects.filter(pk=idle.pk).update(
        last_seen_at=timezone.now() - timezone.timedelta(minutes=31)
    )
    assert lab_sessions_sweep_idle(idle_minutes=30) == [idle.id]
    assert not api.vhost_exists(idle.vhost) and api.vhost_exists(fresh.vhost)


def test_reset_that_the_broker_refuses_ends_the_lab_cleanly(api, catalogue, learner, labs):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    session.source = BROKER_REFUSES  # as if the broker had changed under the pinned spec
    session.__dict__.pop("spec", None)
    with pytest.raises(LabError, match="no-such-setting"):
        lab_session_reset(session=session)
    session.refresh_from_db()
    assert session.state == LabSession.State.ENDED
    assert not api.vhost_exists(session.vhost) and not api.user_exists(session.rabbit_user)
