"""What workloads see, reported in batches on the console's flow exchange.

A workload calls `count()` for every message (cheap: a dict increment) and `event()` for
the few it describes in full; `maybe_flush()` publishes one report per batch interval with
the cumulative counters, the workload's gauges (what a consumer holds unacknowledged) and
up to `max_events` events. The lab monitor merges the reports.
"""

from __future__ import annotations

import math
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import orjson
import pika

from labconsole.broker.amqp import lab_key

BODY_LIMIT = 2048
MAX_DEATHS = 200  # dead-lettered deliveries described in one report
COUNTS_ONLY_BATCHES = 3
# While nobody watches the lab its monitor frames every few seconds, so reports more often
# than this would be read by no one (the checks still see every count within two seconds).
UNWATCHED_INTERVAL = 2.0
# A new lab is watched this long without being told (its page asks for a snapshot within
# a second or two); after that the monitor says who watches (op "pace").
FIRST_WATCH_SECONDS = 5.0


#: The header every producer workload puts on its messages: when it published the message,
#: in whole microseconds since the epoch (pika encodes no float in an AMQP table). A
#: consumer measures each delivery's publish-to-delivery time from it.
SENT_AT = "x-sent-at"
# A consumer's latency figures cover its deliveries of the last LATENCY_WINDOW seconds, at
# most LATENCY_SAMPLES of them (the most recent).
LATENCY_WINDOW = 10.0
LATENCY_SAMPLES = 256


class Latency:
    """Publish-to-delivery times of a consumer's recent deliveries, as p50 and p99."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=LATENCY_SAMPLES)
        self.changed = False

    def add(self, sent_at: Any, now: float | None = None) -> None:
        """A delivery of a message stamped `sent_at` (SENT_AT's value); anything that is
        not a stamp is ignored."""
        if not isinstance(sent_at, int) or isinstance(sent_at, bool):
            return
        now = time.time() if now is None else now
        self.samples.append((now, max(0.0, (now * 1_000_000 - sent_at) / 1000)))
        self.changed = True

    def figures(self, now: float | None = None) -> list[float] | None:
        """[p50 ms, p99 ms, deliveries] over the window, or None without any."""
        now = time.time() if now is None else now
        recent = sorted(ms for t, ms in self.samples if t >= now - LATENCY_WINDOW)
        if not recent:
            return None

        def rank(q: float) -> float:  # nearest rank
            return round(recent[min(len(recent) - 1, max(0, math.ceil(q * len(recent)) - 1))], 1)

        return [rank(0.5), rank(0.99), len(recent)]


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


def dumps(value: Any) -> bytes:
    """Compact JSON of a report or frame. orjson: the live view encodes some thousand frames
    and reports a second in a worker, and the standard encoder was its largest cost."""
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS)


def body_text(body: bytes) -> str:
    text = body[:BODY_LIMIT].decode("utf-8", "replace")
    return text + "…" if len(body) > BODY_LIMIT else text


class FlowReporter:
    """Counts what a workload sees and reports it every `batch_ms`.

    Counters are cumulative for the workload's whole life (restored from its progress when
    a worker takes it over), so a lost report costs nothing and the monitor simply keeps
    the latest. Events are the few messages described in full since the last report.
    """

    def __init__(
        self,
        send: Callable[[str, bytes], None],
        *,
        session: str,
        workload: str,
        batch_ms: int = 100,
        max_events: int = 20,
        totals: dict[str, int] | None = None,
    ):
        self.send = send
        self.routing_key = lab_key(session, "report")
        self.workload = workload
        self.interval = batch_ms / 1000
        self.max_events = max_events
        self.totals: Counter[str] = Counter(totals or {})
        self.gauges: dict[str, Any] = {}
        self.events: list[dict] = []
        self.deaths: list[tuple] = []
        self.dirty = False
        self.last_flush = time.monotonic()
        self.watched_until = self.last_flush + FIRST_WATCH_SECONDS

    def watch(self, seconds: float) -> None:
        """Somebody watches the lab for the next `seconds`: report at full pace."""
        self.watched_until = time.monotonic() + seconds

    def count(self, kind: str, n: int = 1) -> None:
        self.totals[kind] += n
        self.dirty = True

    def gauge(self, name: str, value: Any) -> None:
        if self.gauges.get(name) != value:
            self.gauges[name] = value
            self.dirty = True

    def wants_event(self) -> bool:
        return len(self.events) < self.max_events

    def event(self, kind: str, **fields: Any) -> None:
        if len(self.events) < self.max_events:
            fields = {k: v for k, v in fields.items() if v is not None}
            self.events.append(
                {"kind": kind, "t": time.time(), "workload": self.workload, **fields}
            )
            self.dirty = True

    def death(self, message_id: str | None, x_death: list) -> None:
        """A delivery of a dead-lettered message, for the monitor's record (bounded: the
        lessons need dozens, not thousands a second)."""
        if len(self.deaths) < MAX_DEATHS:
            self.deaths.append((message_id, x_death))
            self.dirty = True

    def due(self) -> float | None:
        """When the next report is due (monotonic), or None with nothing to report. Events
        go after one batch interval; counters alone wait COUNTS_ONLY_BATCHES of them (a
        slow workload then costs a few reports a second, not one per message). While
        nobody watches, everything waits UNWATCHED_INTERVAL."""
        if not self.dirty:
            return None
        if self.last_flush >= self.watched_until:
            return self.last_flush + UNWATCHED_INTERVAL
        batches = 1 if (self.events or self.deaths) else COUNTS_ONLY_BATCHES
        return self.last_flush + self.interval * batches

    def maybe_flush(self, now: float | None = None) -> float | None:
        """Reports if its time has come; returns when the next report is due."""
        due = self.due()
        if due is not None and (now or time.monotonic()) >= due:
            self.flush()
        return self.due()

    def flush(self, **extra: Any) -> None:
        self.last_flush = time.monotonic()
        if not self.dirty and not extra:
            return
        report = {
            "workload": self.workload,
            "counts": dict(self.totals),
            "events": self.events,
            **({"deaths": self.deaths} if self.deaths else {}),
            **self.gauges,
            **extra,
        }
        self.events = []
        self.deaths = []
        self.dirty = False
        self.send(self.routing_key, dumps(report))
