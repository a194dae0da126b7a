"""Checkpoints, evaluated by the server against the broker's state and the flow record.

Each check type of the spec (docs/exercise-format.md) has one function here. They read:
- `record`: the monitor's FlowRecord (routes seen by the firehose, deliveries, the
  workloads' counters, dead-letter arrivals);
- `broker`: `queues` (ready/unacked/consumers by queue name) and `bindings` (the
  management API's list, read when a check needs it);
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
    seen = {
        queues: n
        for (exchange, key, queues), n in record.routes.items()
        if exchange == c.exchange and key == c.routing_key
    }
    return sum(seen.values()) >= c.min_messages and set(seen) == {tuple(sorted(c.queues))}


def _delivered(c, record, broker, workloads) -> bool:
    return record.delivered.get(c.queue, 0) >= c.min


def _acked(c, record, broker, workloads) -> bool:
    return record.workloads.get(c.workload, {}).get("acked", 0) >= c.min


def _published(c, record, broker, workloads) -> bool:
    return record.workloads.get(c.workload, {}).get("published", 0) >= c.min


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


def _workload_setting(c, record, broker, workloads) -> bool:
    w = workloads.get(c.workload)
    if w is None:
        return False
    value = w.get(c.field)
    if isinstance(c.equals, int | float) and isinstance(value, int | float):
        return abs(float(value) - float(c.equals)) < 1e-9
    return value == c.equals


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
}


def evaluate(spec, *, record, broker: Broker, workloads: dict, passed: set[str]) -> dict[str, bool]:
    """The state of every checkpoint. A checkpoint that passed once stays passed, and the
    checkpoints of a step are looked at only when every earlier step is complete, so a
    lab is played in order."""
    results: dict[str, bool] = {}
    open_step = True
    for step in spec.steps:
        for cp in step.checkpoints:
            if cp.id in passed:
                results[cp.id] = True
            elif open_step:
                results[cp.id] = CHECKS[cp.check.type](cp.check, record, broker, workloads)
            else:
                results[cp.id] = False
        open_step = open_step and all(results[cp.id] for cp in step.checkpoints)
    return results
