"""Alert rules: firing after `for_seconds` breached, clearing when the number is back, and
what the checks read of them."""

from types import SimpleNamespace

from exercises.checks import CHECKS
from labconsole.flow.alerts import FIRING, NO_QUEUE, OK, PENDING, AlertRule, Alerts
from labconsole.flow.monitor import FlowRecord

DLQ = AlertRule(name="dlq", queue="orders.dlq", metric="messages", above=10)
IDLE = AlertRule(name="idle", queue="orders", metric="consumers", below=1, for_seconds=3)
SLOW = AlertRule(name="slow", queue="orders", metric="p99_ms", above=500)


def queues(dlq_ready=0, consumers=1, latency=None, **more):
    orders = {"ready": 0, "unacked": 0, "consumers": consumers}
    if latency is not None:
        orders["latency"] = latency
    return {"orders": orders, "orders.dlq": {"ready": dlq_ready, "consumers": 0}, **more}


def test_a_rule_without_for_fires_at_once_and_clears_when_the_number_is_back():
    alerts = Alerts([DLQ])
    assert alerts.observe(queues(dlq_ready=10), 100.0) == []  # at the threshold: not above
    assert alerts.state["dlq"] == OK
    assert alerts.observe(queues(dlq_ready=11), 101.0) == [(DLQ, FIRING, 11)]
    assert alerts.frame()["dlq"] == {"state": FIRING, "since": 101.0, "value": 11}
    assert alerts.observe(queues(dlq_ready=40), 102.0) == []  # fires once
    assert alerts.firing() == {"dlq"}
    assert alerts.observe(queues(dlq_ready=3), 103.0) == [(DLQ, "cleared", 3)]
    assert alerts.firing() == set()
    assert alerts.frame()["dlq"]["state"] == OK


def test_a_rule_with_for_is_pending_first_and_a_blip_never_fires():
    alerts = Alerts([IDLE])
    assert alerts.observe(queues(consumers=0), 100.0) == []
    assert alerts.state["idle"] == PENDING
    assert alerts.next_due() == 103.0
    assert alerts.observe(queues(consumers=1), 101.0) == []  # back in time: no alert
    assert alerts.state["idle"] == OK and alerts.next_due() is None
    alerts.observe(queues(consumers=0), 110.0)
    assert alerts.observe(queues(consumers=0), 112.9) == []
    assert alerts.observe(queues(consumers=0), 113.0) == [(IDLE, FIRING, 0)]
    assert alerts.next_due() is None


def test_a_queue_that_is_gone_breaches_nothing():
    alerts = Alerts([DLQ])
    alerts.observe(queues(dlq_ready=20), 100.0)
    gone = {"orders.dlq": {"ready": 0, "consumers": 0, "missing": True}}
    assert alerts.observe(gone, 101.0) == [(DLQ, "cleared", None)]
    assert alerts.state["dlq"] == NO_QUEUE
    assert alerts.observe({}, 102.0) == []


def test_a_latency_rule_reads_the_p99_and_no_deliveries_is_not_a_breach():
    alerts = Alerts([SLOW])
    assert alerts.observe(queues(), 100.0) == []
    assert alerts.state["slow"] == OK
    assert alerts.observe(queues(latency=[120.0, 800.0]), 101.0) == [(SLOW, FIRING, 800.0)]
    assert alerts.observe(queues(latency=[120.0, 400.0]), 102.0) == [(SLOW, "cleared", 400.0)]


def test_the_state_is_carried_to_a_new_monitor():
    alerts = Alerts([DLQ, IDLE])
    alerts.observe(queues(dlq_ready=20, consumers=0), 100.0)
    again = Alerts([DLQ, IDLE], alerts.export())
    assert again.firing() == {"dlq"} and again.state["idle"] == PENDING
    # Still firing: not fired a second time.
    assert again.observe(queues(dlq_ready=20, consumers=0), 101.0) == []


def check(kind, alert, n=1):
    return SimpleNamespace(type=kind, alert=alert, min=n)


def test_the_checks_count_since_the_step_and_cleared_means_not_firing_now():
    record = FlowRecord()
    record.alerts[("dlq", "fired")] += 1
    mark = FlowRecord.restore(record.export())
    since = record.since(mark)
    assert not CHECKS["alert_fired"](check("alert_fired", "dlq"), since, {}, {})
    record.alerts[("dlq", "fired")] += 1
    record.alerts[("dlq", "cleared")] += 1
    record.firing = frozenset({"dlq"})  # fired again since
    since = FlowRecord.restore(record.export()).since(mark)
    assert CHECKS["alert_fired"](check("alert_fired", "dlq"), since, {}, {})
    assert not CHECKS["alert_cleared"](check("alert_cleared", "dlq"), since, {}, {})
    record.firing = frozenset()
    since = FlowRecord.restore(record.export()).since(mark)
    assert CHECKS["alert_cleared"](check("alert_cleared", "dlq"), since, {}, {})
