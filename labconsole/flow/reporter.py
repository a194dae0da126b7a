"""What workloads see, reported in batches on the console's flow exchange.

A workload calls `count()` for every message (cheap: a dict increment) and `event()` for
the few it describes in full; `maybe_flush()` publishes one report per batch interval with
the counter deltas and up to `max_events` events. The lab monitor merges the reports.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pika

BODY_LIMIT = 2048


def describe_properties(props: pika.BasicProperties | None) -> dict[str, Any]:
    if props is None:
        return {}
    out = {}
    for field in (
        "content_type",
        "delivery_mode",
        "priority",
        "correlation_id",
        "reply_to",
        "expiration",
        "message_id",
        "timestamp",
        "type",
        "app_id",
    ):
        value = getattr(props, field, None)
        if value is not None:
            out[field] = value
    return out


def jsonable(value: Any) -> Any:
    """Header values from pika (bytes, datetimes, Decimals) made JSON-safe."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def body_text(body: bytes) -> str:
    text = body[:BODY_LIMIT].decode("utf-8", "replace")
    return text + "…" if len(body) > BODY_LIMIT else text


class FlowReporter:
    def __init__(
        self,
        channel,
        *,
        exchange: str,
        session: str,
        workload: str,
        batch_ms: int = 100,
        max_events: int = 20,
    ):
        self.channel = channel
        self.exchange = exchange
        self.routing_key = f"lab.{session}.report"
        self.workload = workload
        self.interval = batch_ms / 1000
        self.max_events = max_events
        self.counts: Counter[str] = Counter()
        self.events: list[dict] = []
        self.last_flush = time.monotonic()

    def count(self, kind: str, n: int = 1) -> None:
        self.counts[kind] += n

    def wants_event(self) -> bool:
        return len(self.events) < self.max_events

    def event(self, kind: str, **fields: Any) -> None:
        if len(self.events) < self.max_events:
            fields = {k: v for k, v in fields.items() if v is not None}
            self.events.append(
                {"kind": kind, "t": time.time(), "workload": self.workload, **fields}
            )

    def maybe_flush(self) -> None:
        if time.monotonic() - self.last_flush >= self.interval:
            self.flush()

    def flush(self, **extra: Any) -> None:
        self.last_flush = time.monotonic()
        if not self.counts and not self.events and not extra:
            return
        report = {"workload": self.workload, "counts": dict(self.counts), "events": self.events}
        report.update(extra)
        self.counts = Counter()
        self.events = []
        self.channel.basic_publish(
            self.exchange,
            self.routing_key,
            json.dumps(report, default=str).encode(),
            pika.BasicProperties(content_type="application/json"),
        )
