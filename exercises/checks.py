"""Checkpoints, evaluated by the server against the broker's state and the flow record.

Each check type of the spec (docs/exercise-format.md) has one function here. They read:
- `record`: the monitor's FlowRecord (routes seen by the firehose, deliveries, the
  workloads' counters, dead-letter arrivals, alerts fired and cleared) since the
  checkpoint's step was shown, and the producers' rates now;
- `broker`: `queues` (ready/unacked/consumers by queue name), `bindings` (the
  management API's list, read when a check needs it), `quorum` (quorum queues' leader,
  members and online members by name, read when a check needs it), `placement` (every
  queue's type, state and node by name, read when a check needs it) and `first_leader`
  (the leader a queue had when a check first read it);
- `workloads`: name -> {"running": bool, **settings}, as the learner set them.
No learner code runs here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Broker = dict[str, Any]


def _queue_messages(c, record, broker, workloads) -> bool:
    q = broker["queues"].get(c.queue)
    if q is None or q.get("missing"):
        return False
    ready = q.get("ready", 0)
    return (c.min is None or ready >= c.min) and (c.max is None or ready <= c.max)


def _matching_bindings(c, broker) -> list[dict]:
    return [
        b
        for b in broker["bindings"]()
        if b["source"] == c.source
        and b["destination"] == c.destination
        and b["destination_type"] == c.destination_type
        and (c.routing_key is None or b["routing_key"] == c.routing_key)
    ]


def _binding_exists(c, record, broker, workloads) -> bool:
    return bool(_matching_bindings(c, broker))


def _binding_absent(c, record, broker, workloads) -> bool:
    return not _matching_bindings(c, broker)


def _routed_only_to(c, record, broker, workloads) -> bool:
    """The latest `min_messages` messages with the key, in a row, went to exactly these
    queues: a learner who sent one the wrong way passes once the next ones go right."""
    since_shown = sum(
        n
        for (exchange, key, _queues), n in record.routes.items()
        if exchange == c.exchange and key == c.routing_key
    )
    queues, in_a_row = record.streaks.get((c.exchange, c.routing_key), ((), 0))
    wanted = tuple(sorted(c.queues))
    return queues == wanted and min(in_a_row, since_shown) >= c.min_messages


def _delivered(c, record, broker, workloads) -> bool:
    return record.delivered.get(c.queue, 0) >= c.min


def _acked(c, record, broker, workloads) -> bool:
    return record.workloads.get(c.workload, {}).get("acked", 0) >= c.min


def _redelivered(c, record, broker, workloads) -> bool:
    return record.workloads.get(c.workload, {}).get("redelivered", 0) >= c.min


def _delivered_share(c, record, broker, workloads) -> bool:
    counts = {w: record.workloads.get(w, {}).get("delivered", 0) for w in c.among}
    total = sum(counts.values())
    if total < c.min_total:
        return False
    share = counts[c.workload] / total
    return c.min_share - 1e-9 <= share <= c.max_share + 1e-9


def _overtook(c, record, broker, workloads) -> bool:
    counts = record.workloads.get(c.workload, {})
    prioritized = counts.get("acked_priority", 0)
    return prioritized >= c.min and counts.get("acked", 0) - prioritized <= c.max_others


def _refused(c, record, broker, workloads) -> bool:
    return record.workloads.get(c.workload, {}).get("nacked_by_broker", 0) >= c.min


def _returned(c, record, broker, workloads) -> bool:
    return record.workloads.get(c.workload, {}).get("returned", 0) >= c.min


def _committed(c, record, broker, workloads) -> bool:
    return record.workloads.get(c.workload, {}).get("committed", 0) >= c.min


def _queue_deleted(c, record, broker, workloads) -> bool:
    q = broker["queues"].get(c.queue)
    return q is not None and bool(q.get("missing"))


def _published(c, record, broker, workloads) -> bool:
    return record.workloads.get(c.workload, {}).get("published", 0) >= c.min


def _faster(c, record, broker, workloads) -> bool:
    rate = record.rates.get(c.workload, 0.0)
    other = record.rates.get(c.than, 0.0)
    running = all(workloads.get(w, {}).get("running", False) for w in (c.workload, c.than))
    return running and other > 0 and rate >= c.ratio * other


def _counter_at_least(counter: str) -> Callable[..., bool]:
    """A check that a workload's `counter` reached the check's `min`."""

    def check(c, record, broker, workloads) -> bool:
        return record.workloads.get(c.workload, {}).get(counter, 0) >= c.min

    return check


def _dead_lettered(c, record, broker, workloads) -> bool:
    def matches(history: tuple) -> bool:
        counts = dict(history)
        if c.reason is not None:
            if c.reason not in counts:
                return False
            return c.retries is None or counts[c.reason] == c.retries
        return c.retries is None or max(counts.values()) == c.retries

    n = sum(
        count
        for (queue, history), count in record.dead_lettered.items()
        if queue == c.queue and matches(history)
    )
    return n >= c.min


def _alert_fired(c, record, broker, workloads) -> bool:
    return record.alerts.get((c.alert, "fired"), 0) >= c.min


def _alert_cleared(c, record, broker, workloads) -> bool:
    return record.alerts.get((c.alert, "cleared"), 0) >= c.min and c.alert not in record.firing


def _load_finished(c, record, broker, workloads) -> bool:
    return record.loads.get(c.workload, 0) >= c.min


def _workload_setting(c, record, broker, workloads) -> bool:
    w = workloads.get(c.workload)
    if w is None:
        return False
    value = w.get(c.field)
    if isinstance(c.equals, int | float) and isinstance(value, int | float):
        return abs(float(value) - float(c.equals)) < 1e-9
    return value == c.equals


def _quorum_online(c, record, broker, workloads) -> bool:
    q = broker["quorum"]().get(c.queue)
    if q is None:
        return False
    n = len(set(q["online"]) & set(q["members"]))
    return (c.min is None or n >= c.min) and (c.max is None or n <= c.max)


def _queue_down(c, record, broker, workloads) -> bool:
    q = broker["placement"]().get(c.queue)
    return q is not None and q.get("state") == "down"


def _leader_moved(c, record, broker, workloads) -> bool:
    q = broker["quorum"]().get(c.queue)
    leader = q and q.get("leader")
    if not leader:  # none known, or an election under way
        return False
    first = broker["first_leader"](c.queue)
    return first is not None and first != leader


def _none_lost(c, record, broker, workloads) -> bool:
    ledger = record.ledger.get(c.workload)
    return (
        ledger is not None
        and ledger.get("final", False)
        and not workloads.get(c.workload, {}).get("running", True)
        and ledger["confirmed"] >= c.min
        and ledger["missing"] == 0
    )


def _lost(c, record, broker, workloads) -> bool:
    ledger = record.ledger.get(c.workload)
    q = broker["queues"].get(c.queue)
    if q is None:
        return False
    if q.get("missing"):
        # Deleted (a transient queue gone with its node's stop, an x-expires), it took what
        # it held with it. A classic queue whose node is down is still listed, and may come
        # back with its messages; an empty list is the management API not answering (the
        # lab's firehose queue is always there).
        placed = broker["placement"]()
        emptied = bool(placed) and c.queue not in placed
    else:
        emptied = q.get("ready", 0) == 0 and q.get("unacked", 0) == 0
    return (
        ledger is not None
        and ledger.get("final", False)
        and not workloads.get(c.workload, {}).get("running", True)
        and emptied
        and ledger["missing"] >= c.min
    )


CHECKS: dict[str, Callable[..., bool]] = {
    "queue_messages": _queue_messages,
    "binding_exists": _binding_exists,
    "binding_absent": _binding_absent,
    "routed_only_to": _routed_only_to,
    "delivered": _delivered,
    "acked": _acked,
    "published": _published,
    "dead_lettered": _dead_lettered,
    "workload_setting": _workload_setting,
    "redelivered": _redelivered,
    "delivered_share": _delivered_share,
    "overtook": _overtook,
    "refused": _refused,
    "queue_deleted": _queue_deleted,
    "returned": _returned,
    "committed": _committed,
    "faster": _faster,
    "replied": _counter_at_least("replied"),
    "unanswered": _counter_at_least("unanswered"),
    "replayed": _counter_at_least("replayed"),
    "access_refused": _counter_at_least("access_refused"),
    "forwarded": _counter_at_least("forwarded"),
    "compensated": _counter_at_least("compensated"),
    "load_finished": _load_finished,
    "alert_fired": _alert_fired,
    "alert_cleared": _alert_cleared,
    "quorum_online": _quorum_online,
    "leader_moved": _leader_moved,
    "none_lost": _none_lost,
    "lost": _lost,
    "queue_down": _queue_down,
}


def evaluate(
    spec,
    *,
    record,
    broker: Broker,
    workloads: dict,
    passed: set[str],
    shown: dict,
) -> dict[str, bool]:
    """The state of every checkpoint. A checkpoint that passed once stays passed. The
    checkpoints of a step are looked at only once the learner was shown the step (`shown`:
    step id -> the flow record as it was at that moment) and every earlier step is
    complete, so a lab is played in order; they count only the flow since the step was
    shown, so what a step asks the learner to do is not passed by what came before."""
    results: dict[str, bool] = {}
    open_step = True
    for step in spec.steps:
        mark = shown.get(step.id)
        since = record.since(mark) if open_step and mark is not None else None
        for cp in step.checkpoints:
            if cp.id in passed:
                results[cp.id] = True
            elif since is not None:
                results[cp.id] = CHECKS[cp.check.type](cp.check, since, broker, workloads)
            else:
                results[cp.id] = False
        open_step = open_step and all(results[cp.id] for cp in step.checkpoints)
    return results
