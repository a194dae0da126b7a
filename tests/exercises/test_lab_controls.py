"""A sandbox's controls on the lab page, against the real broker and a real worker:
policies, producers and consumers added and removed, purging and peeking at queues."""

import pytest
from django.urls import reverse

from exercises import lab_controls
from exercises.lab_controls import (
    WorkloadRefused,
    lab_policies_applied,
    lab_policy_declare,
    lab_policy_delete,
    lab_queue_peek,
    lab_queue_purge,
    lab_workload_add,
    lab_workload_remove,
)
from exercises.models import LabSession
from exercises.services import LabError, TopologyRefused, exercise_save, lab_publish
from exercises.services import lab_session_start as start_lab
from labconsole.broker import amqp, control
from tests.support import text_of, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SANDBOX = """
version: 1
slug: sandbox-controls
title: Sandbox
summary: A place to try things.
description: Build and break.
level: beginner
minutes: 10
topology:
  exchanges:
    - {name: shop, type: direct}
  queues:
    - {name: orders}
    - {name: history, type: stream}
  bindings:
    - {source: shop, destination: orders, routing_key: order}
    - {source: shop, destination: history, routing_key: order}
"""


@pytest.fixture
def sandbox(db, learner, labs):
    exercise, _ = exercise_save(source=SANDBOX)
    session = start_lab(exercise=exercise, owner=learner, run=True)
    LabSession.objects.filter(pk=session.pk).update(sandbox=True)
    session.sandbox = True
    return session


def fresh(session) -> LabSession:
    return LabSession.objects.get(pk=session.pk)


def snapshot(session) -> dict:
    return control.ask(control.monitor_key(session.id), {"op": "snapshot"}, timeout=3) or {}


def publish(session, n: int, key: str = "order") -> None:
    for i in range(n):
        lab_publish(session=session, exchange="shop", routing_key=key, body=f'{{"n": {i}}}')


def read_all(session, queue: str) -> list:
    """Every message of the queue, read by a real consumer (basic.get, acked)."""
    connection = amqp.connect(
        session.broker.parameters(
            vhost=session.vhost, user=session.rabbit_user, password=session.rabbit_password
        )
    )
    try:
        channel = connection.channel()
        found = []
        while True:
            method, props, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                return found
            found.append((method, props, body))
    finally:
        connection.close()


def test_policy_declared_applies_on_the_broker_and_is_listed(sandbox, api):
    """A policy from the page reaches the broker, the lab's topology, and the panel lists
    the queue it applies to; deleting it takes it away."""
    lab_policy_declare(
        session=sandbox,
        item={
            "name": "cap-orders",
            "pattern": "^orders$",
            "apply_to": "queues",
            "priority": 1,
            "definition": {"max-length": 5},
        },
    )
    policies = api.request("GET", f"policies/{sandbox.vhost}")
    assert [(p["name"], p["definition"]) for p in policies] == [("cap-orders", {"max-length": 5})]
    assert [p.name for p in fresh(sandbox).spec.topology.policies] == ["cap-orders"]
    listed = wait_for(
        lambda: (found := lab_policies_applied(session=sandbox)) and found[0]["queues"] and found,
        message="the policy applied to orders",
    )
    assert [q["name"] for q in listed[0]["queues"]] == ["orders"]
    lab_policy_delete(session=sandbox, name="cap-orders")
    assert api.request("GET", f"policies/{sandbox.vhost}") == []
    assert fresh(sandbox).spec.topology.policies == []


def test_policy_breaking_the_format_is_refused_and_not_made(sandbox, api):
    """A policy the format refuses names the field, and nothing reaches the broker."""
    with pytest.raises(TopologyRefused) as refused:
        lab_policy_declare(
            session=sandbox,
            item={
                "name": "bad",
                "pattern": "(",
                "apply_to": "queues",
                "priority": 0,
                "definition": {"message-ttl": -1},
            },
        )
    fields = {f for f, _m in refused.value.errors}
    assert {"pattern", "definition.message-ttl"} <= fields
    assert api.request("GET", f"policies/{sandbox.vhost}") == []


def test_workload_added_runs_moves_messages_and_removed_stops(sandbox, api, worker):
    """A producer and a consumer added from the page run, and the consumer acknowledges
    what the producer routes to its queue; removed, the consumer leaves the broker, the
    lab and its graph."""
    lab_workload_add(
        session=sandbox,
        kind="producer",
        item={"name": "buyer", "exchange": "shop", "routing_key": "order", "rate": 20},
    )
    lab_workload_add(
        session=sandbox,
        kind="consumer",
        item={"name": "packer", "queue": "orders", "prefetch": 10},
    )
    assert {w.name for w in fresh(sandbox).workloads.filter(running=True)} == {"buyer", "packer"}
    wait_for(
        lambda: snapshot(sandbox).get("counters", {}).get("packer", {}).get("acked", 0) >= 5,
        message="the added consumer acknowledging",
    )
    spec = fresh(sandbox).spec
    assert spec.consumer("packer").queue == "orders"
    lab_workload_remove(session=sandbox, name="packer")
    assert not fresh(sandbox).workloads.filter(name="packer").exists()
    assert fresh(sandbox).spec.consumer("packer") is None
    wait_for(
        lambda: (
            next(q for q in api.queues(sandbox.vhost) if q["name"] == "orders").get("consumers")
            == 0
        ),
        message="the removed consumer gone from the queue",
    )


def test_a_queue_an_added_consumer_reads_cannot_be_deleted(sandbox):
    """An added consumer holds its queue as a declared one would."""
    from exercises.services import lab_topology_change

    lab_workload_add(
        session=sandbox, kind="consumer", item={"name": "reader", "queue": "orders"}, start=False
    )
    with pytest.raises(TopologyRefused, match="still used"):
        lab_topology_change(session=sandbox, kind="queue", action="delete", item={"name": "orders"})


def test_bad_workloads_are_refused_naming_the_field(sandbox):
    """An unknown queue, a prefetch out of bounds and a rate out of bounds are refused
    by the format's own rules, each at its field, and nothing is added."""
    with pytest.raises(WorkloadRefused) as refused:
        lab_workload_add(session=sandbox, kind="consumer", item={"name": "c1", "queue": "nope"})
    assert [f for f, _m in refused.value.errors] == ["queue"]
    with pytest.raises(WorkloadRefused) as refused:
        lab_workload_add(
            session=sandbox,
            kind="consumer",
            item={"name": "c1", "queue": "orders", "prefetch": 70000},
        )
    assert [f for f, _m in refused.value.errors] == ["prefetch"]
    with pytest.raises(WorkloadRefused) as refused:
        lab_workload_add(
            session=sandbox, kind="producer", item={"name": "p1", "exchange": "shop", "rate": 0}
        )
    assert [f for f, _m in refused.value.errors] == ["rate"]
    assert not fresh(sandbox).workloads.exists()


def test_bad_form_input_says_which_field(sandbox, client_in):
    """The page's add form answers 400 with the field and what is wrong."""
    url = reverse("lab-sandbox-workload", args=[sandbox.id])
    response = client_in.post(url, {"action": "producer", "name": "p1", "rate": "fast"})
    assert response.status_code == 400
    assert "rate (msg/s)" in text_of(response)
    response = client_in.post(url, {"action": "consumer", "name": "c1", "queue": "nope"})
    assert response.status_code == 400
    assert "queue" in text_of(response) and "nope" in text_of(response)


def test_purge_says_how_many(sandbox, client_in):
    """A purge removes the queue's ready messages and says how many."""
    publish(sandbox, 3)
    assert lab_queue_purge(session=sandbox, queue="orders") == 3
    assert read_all(sandbox, "orders") == []
    publish(sandbox, 2)
    response = client_in.post(
        reverse("lab-sandbox-queue", args=[sandbox.id]), {"queue": "orders", "action": "purge"}
    )
    assert response.status_code == 200
    assert 'data-purged="2"' in response.content.decode()
    with pytest.raises(WorkloadRefused):
        lab_queue_purge(session=sandbox, queue="history")


def test_peek_leaves_messages_and_redelivered_flags_as_they_were(sandbox, worker):
    """The default peek reads nothing from a classic queue: afterwards a real consumer
    finds every message, none marked redelivered. A stream is read from its start."""
    publish(sandbox, 3)
    wait_for(
        lambda: sum(e.get("kind") == "published" for e in snapshot(sandbox).get("events", [])) >= 3,
        message="the monitor's trace of the three messages",
    )
    peek = lab_queue_peek(session=sandbox, queue="orders")
    assert peek.source == "trace"
    assert peek.depth == 3
    assert [m["body"] for m in peek.messages] == ['{"n": 0}', '{"n": 1}', '{"n": 2}']
    assert peek.messages[0]["properties"]["content_type"] == "application/json"
    read = read_all(sandbox, "orders")
    assert [body for _m, _p, body in read] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    assert [method.redelivered for method, _p, _b in read] == [False, False, False]

    stream = lab_queue_peek(session=sandbox, queue="history")
    assert stream.source == "stream"
    assert [m["body"] for m in stream.messages] == ['{"n": 0}', '{"n": 1}', '{"n": 2}']
    assert [m["offset"] for m in stream.messages] == [0, 1, 2]


def test_others_and_watchers_are_refused(sandbox, client, django_user_model):
    """Someone who may not act on the lab is refused every control; staff watching it
    are refused too (403)."""
    other = django_user_model.objects.create_user("other", password="other-pass-1")
    client.force_login(other)
    url = reverse("lab-sandbox-queue", args=[sandbox.id])
    assert client.post(url, {"queue": "orders", "action": "purge"}).status_code == 403
    staff = django_user_model.objects.create_user("staff", password="staff-pass-1", is_staff=True)
    client.force_login(staff)
    assert client.post(url, {"queue": "orders", "action": "purge"}).status_code == 403
    url = reverse("lab-sandbox-workload", args=[sandbox.id])
    response = client.post(url, {"action": "consumer", "name": "c", "queue": "orders"})
    assert response.status_code == 403
    assert not fresh(sandbox).workloads.exists()


def test_controls_absent_on_an_exercise_lab(catalogue, learner, labs, client_in):
    """A lab of an exercise has none of these controls, on its page or behind it."""
    session = start_lab(exercise=catalogue["direct-routing"], owner=learner, run=False)
    page = client_in.get(session.get_absolute_url()).content.decode()
    assert "sandbox-controls" not in page and "sandbox-policies" not in page
    response = client_in.post(
        reverse("lab-sandbox-queue", args=[session.id]), {"queue": "temperature", "action": "purge"}
    )
    assert response.status_code == 404
    with pytest.raises(LabError, match="not a sandbox"):
        lab_controls.lab_queue_purge(session=session, queue="temperature")


def test_sandbox_page_has_the_controls(sandbox, client_in):
    """A sandbox's page offers the controls and its sections answer."""
    page = client_in.get(sandbox.get_absolute_url()).content.decode()
    assert 'id="sandbox-controls"' in page
    policies = client_in.get(reverse("lab-sandbox-policies", args=[sandbox.id]))
    assert policies.status_code == 200 and "sandbox-policy-declare" in policies.content.decode()
    lists = client_in.get(reverse("lab-sandbox-controls", args=[sandbox.id])).content.decode()
    assert '<option value="orders">' in lists
