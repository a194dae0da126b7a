"""Checkpoint evaluation on a flow record and broker state: every check type, and the
rule that a step's checkpoints wait for the steps before it."""

from exercises.checks import evaluate
from exercises.spec import validate_data
from labconsole.flow.monitor import FlowRecord


def spec_with(*checks):
    return validate_data(
        {
            "version": 1,
            "slug": "checks",
            "title": "Checks",
            "summary": "s",
            "description": "d",
            "level": "beginner",
            "minutes": 5,
            "topology": {
                "exchanges": [{"name": "logs", "type": "topic"}],
                "queues": [{"name": "errors"}, {"name": "dlq"}],
                "bindings": [{"source": "logs", "destination": "errors", "routing_key": "*.error"}],
            },
            "workloads": {
                "producers": [{"name": "app", "exchange": "logs", "routing_key": "a.error"}],
                "consumers": [{"name": "reader", "queue": "errors"}],
            },
            "steps": [
                {
                    "id": f"s{i}",
                    "title": "t",
                    "instructions": "i",
                    "checkpoints": [{"id": f"c{i}", "description": "d", "check": check}],
                }
                for i, check in enumerate(checks)
            ],
        }
    )


def run(spec, record=None, queues=None, bindings=(), workloads=None, passed=()):
    return evaluate(
        spec,
        record=record or FlowRecord(),
        broker={"queues": queues or {}, "bindings": lambda: list(bindings)},
        workloads=workloads or {},
        passed=set(passed),
    )


BINDING = {
    "source": "logs",
    "destination": "errors",
    "destination_type": "queue",
    "routing_key": "*.error",
}


def test_binding_exists_and_absent():
    spec = spec_with(
        {
            "type": "binding_exists",
            "source": "logs",
            "destination": "errors",
            "routing_key": "*.error",
        },
        {
            "type": "binding_absent",
            "source": "logs",
            "destination": "errors",
            "routing_key": "*.error",
        },
    )
    assert run(spec, bindings=[BINDING]) == {"c0": True, "c1": False}
    assert run(spec, bindings=[])["c0"] is False


def test_routed_only_to_needs_every_publish_on_the_expected_queues():
    spec = spec_with(
        {
            "type": "routed_only_to",
            "exchange": "logs",
            "routing_key": "a.error",
            "queues": ["errors"],
            "min_messages": 2,
        }
    )
    record = FlowRecord()
    record.routes[("logs", "a.error", ("errors",))] = 2
    assert run(spec, record) == {"c0": True}
    record.routes[("logs", "a.error", ("dlq", "errors"))] = 1
    assert run(spec, record) == {"c0": False}


def test_queue_messages_bounds():
    spec = spec_with({"type": "queue_messages", "queue": "errors", "min": 2, "max": 4})
    assert run(spec, queues={"errors": {"ready": 3}}) == {"c0": True}
    assert run(spec, queues={"errors": {"ready": 5}}) == {"c0": False}
    assert run(spec, queues={"errors": {"ready": 3, "missing": True}}) == {"c0": False}


def test_published_acked_delivered():
    spec = spec_with(
        {"type": "published", "workload": "app", "min": 3},
        {"type": "acked", "workload": "reader", "min": 1},
        {"type": "delivered", "queue": "errors", "min": 1},
    )
    record = FlowRecord()
    record.workloads["app"]["published"] = 3
    record.workloads["reader"]["acked"] = 1
    record.delivered["errors"] = 1
    assert run(spec, record) == {"c0": True, "c1": True, "c2": True}


def test_dead_lettered_counts_retries_by_reason():
    spec = spec_with(
        {"type": "dead_lettered", "queue": "dlq", "reason": "rejected", "retries": 3, "min": 1}
    )
    record = FlowRecord()
    deaths = [
        {"queue": "errors", "reason": "rejected", "count": 3},
        {"queue": "retry", "reason": "expired", "count": 3},
    ]
    record.note_dead_letter("dlq", "m1", deaths)
    record.note_dead_letter("dlq", "m1", deaths)  # the same message seen twice counts once
    assert sum(record.dead_lettered.values()) == 1
    assert run(spec, record) == {"c0": True}
    other = FlowRecord()
    other.note_dead_letter("dlq", "m2", [{"queue": "errors", "reason": "rejected", "count": 2}])
    assert run(spec, other) == {"c0": False}


def test_dead_lettered_without_reason_reads_the_highest_count():
    spec = spec_with({"type": "dead_lettered", "queue": "dlq", "retries": 3, "min": 2})
    record = FlowRecord()
    record.note_dead_letter(
        "dlq",
        "m1",
        [
            {"queue": "a", "reason": "rejected", "count": 3},
            {"queue": "b", "reason": "expired", "count": 2},
        ],
    )
    assert run(spec, record) == {"c0": False}  # one message, however many entries it has
    record.note_dead_letter("dlq", "m2", [{"queue": "a", "reason": "expired", "count": 3}])
    assert run(spec, record) == {"c0": True}


def test_workload_setting():
    spec = spec_with(
        {"type": "workload_setting", "workload": "reader", "field": "prefetch", "equals": 1}
    )
    assert run(spec, workloads={"reader": {"prefetch": 1}}) == {"c0": True}
    assert run(spec, workloads={"reader": {"prefetch": 10}}) == {"c0": False}


def test_later_steps_wait_and_passed_stays_passed():
    spec = spec_with(
        {"type": "published", "workload": "app", "min": 1},
        {"type": "delivered", "queue": "errors", "min": 1},
    )
    record = FlowRecord()
    record.delivered["errors"] = 5
    assert run(spec, record) == {"c0": False, "c1": False}
    assert run(spec, record, passed={"c0"}) == {"c0": True, "c1": True}


def test_record_survives_a_slice_boundary():
    record = FlowRecord()
    record.routes[("logs", "a.error", ("errors",))] = 4
    record.workloads["app"]["published"] = 4
    record.note_dead_letter("dlq", "m1", [{"queue": "q", "reason": "expired", "count": 1}])
    again = FlowRecord.restore(record.export())
    assert again.routes == record.routes and again.workloads == record.workloads
    assert again.dead_lettered == record.dead_lettered
