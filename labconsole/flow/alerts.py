"""Alert rules: conditions on a queue's numbers that a lab's monitor watches, as a
monitoring system watches a production broker (Prometheus alert rules, or the checks an
operator scripts against the management API).

A rule reads one number of one queue, `metric`, and is breached while it is above
`above` (or below `below`). Breached for `for_seconds` in a row, it fires; it clears as
soon as the number is back. A rule on a queue that is gone is not breached.

The numbers are the ones the page shows: ready messages and consumers read from the broker
(a passive declare, every one or two seconds), unacknowledged messages as the lab's
consumers report them, and the p99 of their recent deliveries' latency.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# metric -> how it is read from the monitor's queue numbers
METRICS = ("messages", "unacked", "consumers", "p99_ms")

OK, PENDING, FIRING, NO_QUEUE = "ok", "pending", "firing", "no_queue"


@dataclass(frozen=True)
class AlertRule:
    name: str
    queue: str
    metric: str
    above: float | None = None
    below: float | None = None
    for_seconds: float = 0.0

    def value(self, stats: dict | None) -> float | None:
        """The rule's number from a queue's numbers; None when the queue is gone or the
        number is not known (no recent deliveries, for a latency)."""
        if stats is None or stats.get("missing"):
            return None
        if self.metric == "messages":
            return stats.get("ready", 0)
        if self.metric == "p99_ms":
            latency = stats.get("latency")
            return latency[1] if latency else None
        return stats.get(self.metric, 0)

    def breached(self, value: float | None) -> bool:
        if value is None:
            return False
        if self.above is not None:
            return value > self.above
        return self.below is not None and value < self.below


class Alerts:
    """The state of a lab's rules. `observe` is given the queues' numbers as they change
    and returns what fired and cleared; `frame` is what the page shows."""

    def __init__(self, rules: Iterable[AlertRule], state: dict | None = None):
        self.rules = list(rules)
        state = state or {}
        # name -> its state, and since when (epoch seconds) it is in it
        self.state: dict[str, str] = {r.name: OK for r in self.rules}
        self.since: dict[str, float | None] = {r.name: None for r in self.rules}
        self.values: dict[str, float | None] = {r.name: None for r in self.rules}
        for rule in self.rules:
            saved = state.get(rule.name)
            if saved:
                self.state[rule.name], self.since[rule.name] = saved[0], saved[1]

    def __bool__(self) -> bool:
        return bool(self.rules)

    def observe(self, queues: dict[str, dict], now: float) -> list[tuple[AlertRule, str, float]]:
        """Moves each rule on with the queues' numbers at `now` (epoch seconds): returns
        (rule, "firing" or "cleared", the number) for each rule that fired or cleared."""
        changes = []
        for rule in self.rules:
            value = rule.value(queues.get(rule.queue))
            was = self.state[rule.name]
            self.values[rule.name] = value
            if rule.breached(value):
                if was in (OK, NO_QUEUE):
                    self.state[rule.name], self.since[rule.name] = PENDING, now
                    was = PENDING
                if was == PENDING and now - self.since[rule.name] >= rule.for_seconds:
                    self.state[rule.name], self.since[rule.name] = FIRING, now
                    changes.append((rule, FIRING, value))
            else:
                now_state = NO_QUEUE if value is None and rule.metric != "p99_ms" else OK
                if was == FIRING:
                    changes.append((rule, "cleared", value))
                if was != now_state:
                    self.state[rule.name], self.since[rule.name] = now_state, now
        return changes

    def next_due(self) -> float | None:
        """When a pending rule fires if it stays breached (epoch seconds), the soonest."""
        due = [
            self.since[r.name] + r.for_seconds for r in self.rules if self.state[r.name] == PENDING
        ]
        return min(due) if due else None

    def firing(self) -> set[str]:
        return {name for name, state in self.state.items() if state == FIRING}

    def frame(self) -> dict[str, dict]:
        return {
            r.name: {
                "state": self.state[r.name],
                "since": self.since[r.name],
                "value": self.values[r.name],
            }
            for r in self.rules
        }

    def export(self) -> dict:
        return {name: [self.state[name], self.since[name]] for name in self.state}
