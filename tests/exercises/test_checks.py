"""Checkpoint evaluation on a flow record and broker state: every check type, the rule
that a step's checkpoints wait for the steps before it, and that they count only the flow
since their step was shown."""

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
                "producers": [
                    {"name": "app", "exchange": "logs", "routing_key": "a.error", "confirms": True},
                    {"name": "tx", "exchange": "logs", "transactions": True},
                ],
                "consumers": [
                    {"name": "reader", "queue": "errors"},
                    {"name": "second", "queue": "errors"},
                ],
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


def run(
    spec, record=None, queues=None, bindings=(), workloads=None, passed=(), shown=None, placed=None
):
    """Every step shown when the lab started, unless `shown` says otherwise."""
    return evaluate(
        spec,
        record=record or FlowRecord(),
        broker={
            "queues": queues or {},
            "bindings": lambda: list(bindings),
            "placement": lambda: dict(placed or {}),
        },
        workloads=workloads or {},
        passed=set(passed),
        shown={s.id: FlowRecord() for s in spec.steps} if shown is None else shown,
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


ROUTED_A_ERROR = {
    "type": "routed_only_to",
    "exchange": "logs",
    "routing_key": "a.error",
    "queues": ["errors"],
    "min_messages": 2,
}


def test_routed_only_to_needs_the_latest_publishes_on_the_expected_queues():
    spec = spec_with(ROUTED_A_ERROR)
    record = FlowRecord()
    for _ in range(2):
        record.note_route("logs", "a.error", ("errors",))
    assert run(spec, record) == {"c0": True}
    # One goes too far: pending; the next two go right again: passed, the mistake
    # behind them.
    record.note_route("logs", "a.error", ("dlq", "errors"))
    assert run(spec, record) == {"c0": False}
    record.note_route("logs", "a.error", ("errors",))
    assert run(spec, record) == {"c0": False}
    record.note_route("logs", "a.error", ("errors",))
    assert run(spec, record) == {"c0": True}
    # Another key's messages do not count.
    record.note_route("logs", "b.error", ("dlq",))
    assert run(spec, record) == {"c0": True}


def test_routed_only_to_counts_only_what_came_after_its_step():
    spec = spec_with(ROUTED_A_ERROR)
    record = FlowRecord()
    for _ in range(5):
        record.note_route("logs", "a.error", ("errors",))
    mark = FlowRecord.restore(record.export())  # the step is shown now
    assert run(spec, record.since(mark)) == {"c0": False}
    record.note_route("logs", "a.error", ("errors",))
    assert run(spec, record.since(mark)) == {"c0": False}
    record.note_route("logs", "a.error", ("errors",))
    assert run(spec, record.since(mark)) == {"c0": True}
    # The streak survives a worker's death with the rest of the record.
    assert run(spec, FlowRecord.restore(record.export()).since(mark)) == {"c0": True}


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


def test_published_by_you_counts_the_pages_publishes_only():
    """`@you` is the learner publishing from the page, not any producer."""
    spec = spec_with({"type": "published", "workload": "@you", "min": 1})
    record = FlowRecord()
    record.workloads["app"]["published"] = 5
    assert run(spec, record) == {"c0": False}
    record.workloads["@you"]["published"] = 1
    assert run(spec, record) == {"c0": True}


def test_redelivered_counts_the_consumers_redeliveries():
    spec = spec_with({"type": "redelivered", "workload": "reader", "min": 2})
    record = FlowRecord()
    record.workloads["reader"].update(delivered=9, redelivered=1)
    record.workloads["second"]["redelivered"] = 5
    assert run(spec, record) == {"c0": False}
    record.workloads["reader"]["redelivered"] = 2
    assert run(spec, record) == {"c0": True}


def test_delivered_share_needs_enough_deliveries_and_the_share():
    spec = spec_with(
        {
            "type": "delivered_share",
            "workload": "reader",
            "among": ["reader", "second"],
            "min_share": 0.4,
            "max_share": 0.6,
            "min_total": 10,
        }
    )
    record = FlowRecord()
    record.workloads["reader"]["delivered"] = 4
    record.workloads["second"]["delivered"] = 4
    assert run(spec, record) == {"c0": False}  # 8 deliveries: too few to tell
    record.workloads["second"]["delivered"] = 6
    assert run(spec, record) == {"c0": True}  # 4 of 10
    record.workloads["reader"]["delivered"] = 20
    assert run(spec, record) == {"c0": False}  # 20 of 26


def test_overtook_needs_the_priority_messages_before_too_many_others():
    spec = spec_with({"type": "overtook", "workload": "reader", "min": 3, "max_others": 5})
    record = FlowRecord()
    record.workloads["reader"].update(delivered=30, acked=4, acked_priority=2)
    assert run(spec, record) == {"c0": False}  # 2 with a priority: not yet 3
    record.workloads["reader"].update(acked=3, acked_priority=1)
    assert run(spec, record) == {"c0": True}  # 3 of 7, with 4 others
    record.workloads["reader"].update(acked=20)
    assert run(spec, record) == {"c0": False}  # they came after 24 others


def test_refused_counts_the_brokers_nacks_to_the_producer():
    spec = spec_with({"type": "refused", "workload": "app", "min": 2})
    record = FlowRecord()
    record.workloads["app"].update(published=10, confirmed=9, nacked_by_broker=1)
    assert run(spec, record) == {"c0": False}
    record.workloads["app"]["nacked_by_broker"] = 2
    assert run(spec, record) == {"c0": True}


def test_returned_and_committed_count_the_producers_counters():
    spec = spec_with(
        {"type": "returned", "workload": "@you", "min": 2},
        {"type": "committed", "workload": "tx", "min": 100},
    )
    record = FlowRecord()
    record.workloads["@you"].update(published=5, returned=1)
    record.workloads["tx"].update(published=150, committed=99)
    assert run(spec, record) == {"c0": False, "c1": False}
    record.workloads["@you"]["returned"] = 2
    record.workloads["tx"]["committed"] = 100
    assert run(spec, record) == {"c0": True, "c1": True}


def test_faster_compares_the_rates_of_two_running_producers():
    spec = spec_with({"type": "faster", "workload": "app", "than": "tx", "ratio": 2})
    both = {"app": {"running": True}, "tx": {"running": True}}
    record = FlowRecord()
    record.rates.update(app=900.0, tx=500.0)
    assert run(spec, record, workloads=both) == {"c0": False}  # faster, not twice as fast
    record.rates["tx"] = 0.0
    assert run(spec, record, workloads=both) == {"c0": False}  # tx publishes nothing
    record.rates["tx"] = 450.0
    assert run(spec, record, workloads={**both, "tx": {"running": False}}) == {"c0": False}
    # The rates are a state, not a count: the record as it was when the step was shown
    # takes nothing from them.
    mark = FlowRecord.restore(record.export())
    shown = {s.id: mark for s in spec.steps}
    assert run(spec, record, workloads=both, shown=shown) == {"c0": True}


def test_queue_deleted_reads_the_broker():
    spec = spec_with({"type": "queue_deleted", "queue": "errors"})
    assert run(spec, queues={}) == {"c0": False}  # not read yet
    assert run(spec, queues={"errors": {"ready": 0}}) == {"c0": False}
    assert run(spec, queues={"errors": {"ready": 0, "missing": True}}) == {"c0": True}


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


def test_a_step_not_shown_yet_waits_for_the_learner():
    spec = spec_with(
        {"type": "published", "workload": "app", "min": 1},
        {"type": "delivered", "queue": "errors", "min": 1},
    )
    record = FlowRecord()
    record.workloads["app"]["published"] = 3
    record.delivered["errors"] = 3
    only_first = {"s0": FlowRecord()}
    assert run(spec, record, shown=only_first) == {"c0": True, "c1": False}
    assert run(spec, record, passed={"c0"}, shown=only_first) == {"c0": True, "c1": False}
    assert run(spec, record, shown={}) == {"c0": False, "c1": False}


def test_only_the_flow_after_the_step_was_shown_counts():
    """What happened before the learner was shown a step does not pass it."""
    spec = spec_with(
        {"type": "routed_only_to", "exchange": "logs", "routing_key": "x.info", "queues": []},
        {"type": "delivered", "queue": "errors", "min": 2},
        {"type": "acked", "workload": "reader", "min": 2},
        {"type": "dead_lettered", "queue": "dlq", "reason": "expired", "min": 1},
    )
    record = FlowRecord()
    record.note_route("logs", "x.info", ())
    record.delivered["errors"] = 5
    record.workloads["reader"]["acked"] = 5
    record.note_dead_letter("dlq", "m1", [{"queue": "q", "reason": "expired", "count": 1}])
    mark = FlowRecord.restore(record.export())
    shown = {s.id: mark for s in spec.steps}
    assert set(run(spec, record, shown=shown).values()) == {False}

    record.note_route("logs", "x.info", ())
    record.delivered["errors"] += 2
    record.workloads["reader"]["acked"] += 2
    record.note_dead_letter("dlq", "m2", [{"queue": "q", "reason": "expired", "count": 1}])
    assert run(spec, record, shown=shown) == {"c0": True, "c1": True, "c2": True, "c3": True}


def test_record_survives_a_slice_boundary():
    record = FlowRecord()
    record.routes[("logs", "a.error", ("errors",))] = 4
    record.workloads["app"]["published"] = 4
    record.note_dead_letter("dlq", "m1", [{"queue": "q", "reason": "expired", "count": 1}])
    again = FlowRecord.restore(record.export())
    assert again.routes == record.routes and again.workloads == record.workloads
    assert again.dead_lettered == record.dead_lettered
    record.rates["app"] = 12.5
    assert FlowRecord.restore(record.export()).rates == {"app": 12.5}


def test_none_lost_and_lost_read_the_ledger_once_the_producer_stopped():
    spec = validate_data(
        {
            **spec_with().model_dump(mode="json", exclude_none=True),
            "workloads": {
                "producers": [
                    {
                        "name": "app",
                        "exchange": "logs",
                        "routing_key": "a.error",
                        "confirms": True,
                        "ledger": True,
                        "properties": {"message_id": "sequence"},
                    }
                ],
                "consumers": [{"name": "reader", "queue": "errors"}],
            },
            "steps": [
                {
                    "id": "s",
                    "title": "t",
                    "instructions": "i",
                    "checkpoints": [
                        {
                            "id": "kept",
                            "description": "d",
                            "check": {"type": "none_lost", "workload": "app", "min": 50},
                        },
                        {
                            "id": "gone",
                            "description": "d",
                            "check": {
                                "type": "lost",
                                "workload": "app",
                                "queue": "errors",
                                "min": 5,
                            },
                        },
                    ],
                }
            ],
        }
    )

    def ledger(confirmed, missing, final=True):
        return FlowRecord(
            ledger={
                "app": {
                    "confirmed": confirmed,
                    "received": confirmed - missing,
                    "duplicates": 0,
                    "final": final,
                    "missing": missing,
                }
            }
        )

    empty = {"errors": {"ready": 0, "unacked": 0}}
    stopped, running = {"app": {"running": False}}, {"app": {"running": True}}
    assert run(spec, ledger(60, 0), empty, workloads=stopped) == {"kept": True, "gone": False}
    assert run(spec, ledger(60, 0), empty, workloads=running)["kept"] is False  # may yet lose
    assert run(spec, ledger(40, 0), empty, workloads=stopped)["kept"] is False  # too few
    assert run(spec, ledger(60, 7), empty, workloads=stopped) == {"kept": False, "gone": True}
    # Still in the queue is not lost; nor is a queue that is away.
    assert not run(spec, ledger(60, 7), {"errors": {"ready": 3, "unacked": 0}}, workloads=stopped)[
        "gone"
    ]
    assert not run(spec, ledger(60, 7), {"errors": {"missing": True}}, workloads=stopped)["gone"]
    # Away: its node is down, and the management API still lists it; gone: it lists the
    # lab's other queues only (a transient queue deleted with its node's stop).
    away = {"errors": {"state": "down"}, "firehose": {"state": "running"}}
    gone = {"firehose": {"state": "running"}}
    missing = {"errors": {"missing": True}}
    assert not run(spec, ledger(60, 7), missing, workloads=stopped, placed=away)["gone"]
    assert run(spec, ledger(60, 7), missing, workloads=stopped, placed=gone)["gone"]
    assert not run(spec, FlowRecord(), empty, workloads=stopped)["kept"]  # no ledger yet
    # Stopped in the database, but its last confirms not reported yet: not final.
    assert run(spec, ledger(60, 0, final=False), empty, workloads=stopped)["kept"] is False
