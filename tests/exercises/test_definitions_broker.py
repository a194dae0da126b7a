"""Definitions files the real broker writes, imported; and our exported definitions loaded
into the real broker and read back."""

import json
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

from exercises.definitions import (
    definitions_read,
    definitions_vhosts,
    exercise_definitions,
    topology_from_definitions,
)
from exercises.spec import Topology, load_spec_file

CATALOGUE = Path(__file__).resolve().parents[2] / "exercises" / "catalogue"


def q(name: str) -> str:
    return quote(name, safe="")


@pytest.fixture
def made(api):
    """Names of the vhosts, users and global parameters a test makes, deleted at its end
    whether or not it passed."""
    names = {"vhosts": [], "users": [], "global": []}
    yield names
    for vhost in names["vhosts"]:
        api.delete_vhost(vhost)
    for user in names["users"]:
        api.delete_user(user)
    for name in names["global"]:
        api.request("DELETE", f"global-parameters/{q(name)}", ok_missing=True)


def make_vhost(api, made, suffix: str) -> str:
    vhost = f"{settings.LABCONSOLE_PREFIX}-defs-{suffix}"
    made["vhosts"].append(vhost)
    api.put_vhost(vhost)
    return vhost


@pytest.fixture
def source_vhost(api, made):
    """A vhost with exchanges, queues, both kinds of binding, a policy, and what an
    exercise cannot hold: a vhost limit, a user with permissions and a topic permission,
    and a global parameter."""
    # A name of its own per test: a shovel of the vhost a test before deleted may still be
    # on its way out, and would declare its queue in a new vhost of the same name.
    vhost = make_vhost(api, made, f"source-{uuid.uuid4().hex[:6]}")
    exchange = {"durable": True, "auto_delete": False, "internal": False}
    api.put_exchange(
        vhost, "events", {**exchange, "type": "topic", "arguments": {"alternate-exchange": "lost"}}
    )
    api.put_exchange(vhost, "lost", {**exchange, "type": "fanout", "arguments": {}})
    api.put_exchange(vhost, "audit", {**exchange, "type": "fanout", "arguments": {}})
    api.put_exchange(vhost, "match", {**exchange, "type": "headers", "arguments": {}})
    api.put_queue(
        vhost,
        "orders",
        {"durable": True, "arguments": {"x-queue-type": "quorum", "x-delivery-limit": 5}},
    )
    api.put_queue(
        vhost,
        "late",
        {"durable": True, "arguments": {"x-message-ttl": 5000, "x-dead-letter-exchange": "lost"}},
    )
    api.bind(vhost, "events", "orders", "queue", {"routing_key": "order.*", "arguments": {}})
    api.bind(vhost, "events", "audit", "exchange", {"routing_key": "#", "arguments": {}})
    api.bind(vhost, "audit", "late", "queue", {"routing_key": "", "arguments": {}})
    api.bind(
        vhost,
        "match",
        "late",
        "queue",
        {"routing_key": "", "arguments": {"x-match": "any", "kind": "late"}},
    )
    api.request(
        "PUT",
        f"policies/{q(vhost)}/cap",
        {"pattern": "^late$", "apply-to": "queues", "priority": 1, "definition": {"max-length": 9}},
    )
    api.request("PUT", f"vhost-limits/{q(vhost)}/max-queues", {"value": 50})
    user = f"{settings.LABCONSOLE_PREFIX}-defs-user"
    made["users"].append(user)
    api.request("PUT", f"users/{q(user)}", {"password": "defs-pass-1", "tags": ""})
    api.request(
        "PUT",
        f"permissions/{q(vhost)}/{q(user)}",
        {"configure": "^$", "write": ".*", "read": ".*"},
    )
    api.request(
        "PUT",
        f"topic-permissions/{q(vhost)}/{q(user)}",
        {"exchange": "amq.topic", "write": "^a", "read": "^a"},
    )
    parameter = f"{settings.LABCONSOLE_PREFIX}-defs-note"
    made["global"].append(parameter)
    api.request(
        "PUT", f"global-parameters/{q(parameter)}", {"name": parameter, "value": {"note": "x"}}
    )
    # The set-up enables the federation and shovel plugins (scripts/ensure-rabbitmq): a
    # federation upstream and a shovel.
    here = f"amqp:///{q(vhost)}"
    api.request(
        "PUT", f"parameters/federation-upstream/{q(vhost)}/origin", {"value": {"uri": here}}
    )
    api.request(
        "PUT",
        f"parameters/shovel/{q(vhost)}/move",
        {
            "value": {
                "src-uri": here,
                "src-queue": "late",
                "dest-uri": here,
                "dest-queue": "orders",
            }
        },
    )
    return {"vhost": vhost, "user": user, "parameter": parameter}


def imported_from(exported: dict, *, vhost: str | None):
    return topology_from_definitions(definitions_read(json.dumps(exported).encode()), vhost=vhost)


def assert_source_topology(topology: Topology) -> None:
    exchanges = {x.name: x for x in topology.exchanges}
    assert set(exchanges) == {"events", "lost", "audit", "match"}
    assert exchanges["events"].type == "topic"
    assert exchanges["events"].arguments == {"alternate-exchange": "lost"}
    queues = {q.name: q for q in topology.queues}
    assert (queues["orders"].type, queues["orders"].arguments) == (
        "quorum",
        {"x-delivery-limit": 5},
    )
    assert queues["late"].type == "classic"
    assert queues["late"].arguments == {"x-message-ttl": 5000, "x-dead-letter-exchange": "lost"}
    bindings = [
        (b.source, b.destination, b.destination_type, b.routing_key, sorted(b.arguments.items()))
        for b in topology.bindings
    ]
    assert sorted(bindings) == [
        ("audit", "late", "queue", "", []),
        ("events", "audit", "exchange", "#", []),
        ("events", "orders", "queue", "order.*", []),
        ("match", "late", "queue", "", [("kind", "late"), ("x-match", "any")]),
    ]
    assert [(p.name, p.pattern, p.priority, p.definition) for p in topology.policies] == [
        ("cap", "^late$", 1, {"max-length": 9})
    ]


def test_a_vhost_export_of_the_broker_imports(api, source_vhost):
    """The broker's own export of one vhost gives its topology, and its vhost limit is
    reported by name."""
    exported = api.definitions(source_vhost["vhost"])
    imported = imported_from(exported, vhost=None)
    assert_source_topology(Topology.model_validate(imported.topology))
    report = "\n".join(str(s) for s in imported.skipped)
    assert "vhost-limits 'limits'" in report, report
    assert "federation-upstream 'origin'" in report, report
    assert "shovel 'move'" in report, report


def test_a_whole_broker_export_imports_the_chosen_vhost(api, source_vhost):
    """From the whole broker's export the chosen vhost's topology is taken; its user, the
    permission, the topic permission, the global parameter and the other vhosts are
    reported by name."""
    vhost, user = source_vhost["vhost"], source_vhost["user"]
    exported = api.definitions()
    definitions = definitions_read(json.dumps(exported).encode())
    assert vhost in definitions_vhosts(definitions) and "/" in definitions_vhosts(definitions)
    imported = topology_from_definitions(definitions, vhost=vhost)
    assert_source_topology(Topology.model_validate(imported.topology))
    by_what = {s.what: s for s in imported.skipped}
    assert user in by_what["Users"].names
    assert f"{user} on {vhost}" in by_what["Permissions"].names
    assert f"{user} on {vhost}, exchange amq.topic" in by_what["Topic permissions"].names
    assert source_vhost["parameter"] in by_what["Global parameters"].names
    assert "vhost-limits 'limits'" in by_what["Parameters"].names
    assert any(name.startswith("/ with ") for name in by_what["Other virtual hosts"].names)


@pytest.mark.parametrize("path", sorted(CATALOGUE.glob("*.yaml")), ids=lambda p: p.stem)
def test_exported_definitions_load_into_the_broker(api, made, path):
    """An exercise's exported definitions load into a fresh vhost with
    POST /api/definitions/<vhost>, and the broker's export of it imports as the same
    topology."""
    spec = load_spec_file(path)
    vhost = make_vhost(api, made, path.stem)
    api.import_definitions(exercise_definitions(spec.topology, vhost="placeholder"), vhost=vhost)
    assert not api.vhost_exists("placeholder")
    imported = imported_from(api.definitions(vhost), vhost=None)
    assert imported.skipped == []
    back = Topology.model_validate(imported.topology)
    # The broker lists objects in its own order; each kind is compared as a set.
    for kind in ("exchanges", "queues", "bindings", "policies"):
        ours = sorted(
            json.dumps(o.model_dump(), sort_keys=True) for o in getattr(spec.topology, kind)
        )
        theirs = sorted(json.dumps(o.model_dump(), sort_keys=True) for o in getattr(back, kind))
        assert theirs == ours, kind
