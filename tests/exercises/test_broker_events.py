"""A lab's timeline on brokers of its own: what changed between two reads of its nodes
and queues, as events of its log (exercises/cluster.py)."""

from pathlib import Path

import pytest

from exercises.cluster import broker_events

CATALOGUE = Path(__file__).resolve().parents[2] / "exercises" / "catalogue"


def reading(nodes=None, quorum=None, classic=None) -> dict:
    return {
        "nodes": {"lab1": "running", "lab2": "running", "lab3": "running", **(nodes or {})},
        "quorum": {"orders": {"leader": "lab1", "online": 3, "size": 3, **(quorum or {})}},
        "classic": {"invoices": {"node": "lab2", "down": False, **(classic or {})}},
    }


def without_time(events: list[dict]) -> list[dict]:
    assert all(e.pop("t") > 0 for e in events)
    return events


def test_nothing_changed_says_nothing():
    assert broker_events(reading(), reading()) == []


def test_a_killed_leader_a_new_one_and_a_member_offline():
    after = reading(nodes={"lab1": "down"}, quorum={"leader": "lab3", "online": 2})
    assert without_time(broker_events(reading(), after)) == [
        {"kind": "broker", "node": "lab1", "state": "down"},
        {"kind": "broker", "queue": "orders", "leader": "lab3", "was": "lab1"},
        {"kind": "broker", "queue": "orders", "online": 2, "size": 3},
    ]


def test_a_classic_queue_down_with_its_node_and_back():
    down = reading(nodes={"lab2": "stopped"}, classic={"down": True})
    assert without_time(broker_events(reading(), down)) == [
        {"kind": "broker", "node": "lab2", "state": "stopped"},
        {"kind": "broker", "queue": "invoices", "node": "lab2", "down": True},
    ]
    assert without_time(broker_events(down, reading())) == [
        {"kind": "broker", "node": "lab2", "state": "running"},
        {"kind": "broker", "queue": "invoices", "node": "lab2", "down": False},
    ]


def test_queues_that_come_or_go_are_no_change_of_theirs():
    """A queue the learner declared, or one that went with its node (a transient queue),
    is the topology's business, not a fault's."""
    before = reading()
    after = {**reading(), "quorum": {}, "classic": {"new": {"node": "lab1", "down": False}}}
    assert broker_events(before, after) == []


def test_queue_down_is_refused_for_a_queue_that_has_no_one_node():
    from exercises.spec import SpecError, parse_spec

    source = (CATALOGUE / "classic-queue-node-down.yaml").read_text()
    with pytest.raises(SpecError) as found:
        parse_spec(
            source.replace(
                "type: queue_down\n          queue: invoices",
                "type: queue_down\n          queue: payments",
            )
        )
    assert [f"{e.path}: {e.message}" for e in found.value.problems] == [
        "steps[1].checkpoints[0].check.queue: 'payments' is a quorum queue: only a classic "
        "queue lives on one node, and is down with it"
    ]
    with pytest.raises(SpecError) as found:
        parse_spec(source.replace("broker: cluster\n", ""))
    assert (
        "steps[1].checkpoints[0].check.type: queue_down needs the lab on the cluster: "
        "set broker: cluster" in [f"{e.path}: {e.message}" for e in found.value.problems]
    )
