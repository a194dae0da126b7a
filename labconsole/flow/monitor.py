"""The lab monitor: one per running lab. It merges the three sources of the live view
(the workloads' reports, the firehose of the lab's vhost, queue depths) into frames for
the browser, at most `fps` a second, and keeps the flow record the checks read.

Frames are published on the console's flow exchange (`lab.<id>.frame`); every viewer
reads them from its own bounded queue, so the monitor does the work once per lab however
many people watch.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pika
import pika.exceptions as px

from labconsole.broker.amqp import close_quietly

from .reporter import body_text, jsonable

log = logging.getLogger(__name__)

EVENTS_PER_FRAME = 30
SAMPLES_PER_FRAME = 40
RECENT_EVENTS = 200
SEEN_DEAD_LIMIT = 50_000
CHECK_INTERVAL = 0.5  # seconds between evaluations of the checkpoints, when anything moved


@dataclass
class FlowRecord:
    """What happened in the lab so far, as the checks need it."""

    routes: Counter = field(default_factory=Counter)  # (exchange, key, queues tuple) -> n
    delivered: Counter = field(default_factory=Counter)  # queue -> deliveries
    workloads: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    # (queue, ((reason, highest count), ...)) -> messages that arrived in the queue with
    # that x-death history
    dead_lettered: Counter = field(default_factory=Counter)
    # (queue, message id) already counted, oldest first; bounded, as a lab may run for hours
    seen_dead: dict = field(default_factory=dict)

    def export(self) -> dict:
        return {
            "routes": [[e, k, list(q), n] for (e, k, q), n in self.routes.items()],
            "delivered": dict(self.delivered),
            "workloads": {w: dict(c) for w, c in self.workloads.items()},
            "dead_lettered": [
                [q, [list(d) for d in h], n] for (q, h), n in self.dead_lettered.items()
            ],
        }

    @classmethod
    def restore(cls, data: dict | None) -> FlowRecord:
        record = cls()
        if data:
            for e, k, q, n in data.get("routes", []):
                record.routes[(e, k, tuple(q))] = n
            record.delivered.update(data.get("delivered", {}))
            for w, c in data.get("workloads", {}).items():
                record.workloads[w].update(c)
            for q, history, n in data.get("dead_lettered", []):
                record.dead_lettered[(q, tuple(tuple(d) for d in history))] = n
        return record

    def note_dead_letter(self, queue: str, message_id: str | None, x_death: list) -> None:
        if not x_death:
            return
        if message_id:
            if (queue, message_id) in self.seen_dead:
                return
            self.seen_dead[(queue, message_id)] = None
            if len(self.seen_dead) > SEEN_DEAD_LIMIT:
                del self.seen_dead[next(iter(self.seen_dead))]
        highest: dict[str, int] = {}
        for d in x_death:
            reason = str(d.get("reason"))
            highest[reason] = max(highest.get(reason, 0), int(d.get("count", 0)))
        self.dead_lettered[(queue, tuple(sorted(highest.items())))] += 1


class Rate:
    """Messages a second, smoothed over about two seconds."""

    def __init__(self):
        self.count = 0
        self.value = 0.0
        self.last = time.monotonic()

    def tick(self, now: float) -> float:
        dt = now - self.last
        if dt >= 0.25:
            alpha = min(1.0, dt / 2.0)
            self.value += alpha * (self.count / dt - self.value)
            self.count = 0
            self.last = now
        return round(self.value, 2)


class LabMonitor:
    def __init__(
        self,
        *,
        session: str,
        lab_params: list[pika.ConnectionParameters],
        console: pika.BlockingConnection,
        flow_exchange: str,
        control_queue: str,
        reports_queue: str,
        firehose_queue: str,
        router,
        queues: list[str],
        consumers: dict[str, str],
        evaluate: Callable[[FlowRecord, dict], dict[str, bool]],
        still_current: Callable[[], bool],
        fps: int = 20,
        slice_seconds: float = 300.0,
        state: dict | None = None,
        management_queues: Callable[[], list[dict]] | None = None,
    ):
        self.session = session
        self.lab_params = lab_params
        self.console = console
        self.flow_exchange = flow_exchange
        self.firehose_queue = firehose_queue
        self.router = router
        self.queue_names = queues
        self.consumer_queue = consumers  # consumer workload -> its queue
        self.evaluate = evaluate
        self.still_current = still_current
        self.frame_interval = 1.0 / max(fps, 1)
        self.slice_seconds = slice_seconds
        self.management_queues = management_queues
        state = state or {}
        self.record = FlowRecord.restore(state.get("record"))
        self.checks: dict[str, bool] = state.get("checks", {})
        self.outstanding: Counter = Counter(state.get("outstanding", {}))
        self.unroutable: Counter = Counter(state.get("unroutable", {}))
        self.queues: dict[str, dict] = {
            q: {"ready": 0, "unacked": 0, "consumers": 0, "rate_in": 0.0, "rate_out": 0.0}
            for q in queues
        }
        self.rates_in = defaultdict(Rate)
        self.rates_out = defaultdict(Rate)
        self.exchange_rates = defaultdict(Rate)
        self.pending_events: deque = deque(maxlen=EVENTS_PER_FRAME * 20)
        self.pending_samples: deque = deque(maxlen=SAMPLES_PER_FRAME * 5)
        self.recent: deque = deque(maxlen=RECENT_EVENTS)
        self.seq = state.get("seq", 0)
        self.stop: str | None = None
        self.frame_seq = 0
        self.checks_dirty = True
        self.out = console.channel()
        control = console.channel()
        control.basic_consume(control_queue, self._on_control, auto_ack=True)
        console.channel().basic_consume(reports_queue, self._on_report, auto_ack=True)

    # --- inputs ------------------------------------------------------------------------------
    def _on_control(self, channel, method, props, body: bytes) -> None:
        try:
            message = json.loads(body)
        except ValueError:
            return
        if message.get("op") == "stop":
            self.stop = "stopped"
        elif message.get("op") == "snapshot" and props.reply_to:
            self.out.basic_publish(
                "",
                props.reply_to,
                json.dumps(self.snapshot(), default=str).encode(),
                pika.BasicProperties(correlation_id=props.correlation_id),
            )

    def _on_report(self, channel, method, props, body: bytes) -> None:
        report = json.loads(body)
        workload = report["workload"]
        counts = report.get("counts", {})
        self.record.workloads[workload].update(counts)
        if workload in self.consumer_queue:
            done = sum(counts.get(k, 0) for k in ("acked", "nacked", "rejected", "parked"))
            self.outstanding[workload] += counts.get("delivered", 0) - done
            if report.get("state"):  # the run ended: the broker requeued what it held
                self.outstanding[workload] = 0
        for event in report.get("events", []):
            self._workload_event(event)
        if counts:
            self.checks_dirty = True

    def _workload_event(self, event: dict) -> None:
        kind, workload = event["kind"], event["workload"]
        queue = event.get("queue") or self.consumer_queue.get(workload)
        trace = None
        if kind == "delivered" and queue:
            trace = [f"q:{queue}", f"c:{workload}"]
            deaths = event.get("x_death") or []
            if deaths and deaths[0].get("reason") == "expired":
                came_from = deaths[0].get("queue")
                self._sample("expired", self._dead_letter_path(came_from, queue))
        elif kind == "acked":
            trace = [f"c:{workload}"]
        elif kind in ("rejected", "nacked") and queue:
            if event.get("requeue"):
                trace = [f"c:{workload}", f"q:{queue}"]
            elif queue in self.router.dead_letter:
                self._sample(kind, [f"c:{workload}"], event)
                kind, trace = "dead-lettered", self._dead_letter_path(queue, None)
            else:
                trace = [f"c:{workload}"]
        elif kind == "parked":
            trace = [f"c:{workload}"]
        elif kind == "returned":
            exchange = event.get("exchange", "")
            trace = [f"x:{exchange}", f"p:{workload}"]
        if trace:
            self._sample(kind, trace, event)
        self._log(event)

    def _dead_letter_path(self, queue: str | None, target: str | None) -> list[str]:
        dlx = self.router.dead_letter.get(queue or "")
        if dlx is None:
            return [f"q:{queue}"] + ([f"q:{target}"] if target else [])
        if target is None:
            targets = self.router.bindings.get(f"x:{dlx}", [])
            target_node = next((t for t in targets if t.startswith("q:")), None)
            path = self.router.path(dlx, target_node[2:]) if target_node else [f"x:{dlx}"]
        else:
            path = self.router.path(dlx, target)
        return [f"q:{queue}", *path]

    def _on_firehose(self, channel, method, props, body: bytes) -> None:
        headers = props.headers or {}
        kind, _, name = method.routing_key.partition(".")
        inner = headers.get("properties") or {}
        message_id = jsonable(inner.get("message_id"))
        inner_headers = inner.get("headers") or {}
        x_death = jsonable(inner_headers.get("x-death")) or []
        now = time.time()
        if kind == "publish":
            keys = [jsonable(k) for k in headers.get("routing_keys") or []]
            key = keys[0] if keys else ""
            if name == "":
                # routed_queues echoes the key for the default exchange: trust only real queues.
                routed = tuple(k for k in keys if k in self.queues)
            else:
                routed = tuple(sorted(jsonable(q) for q in headers.get("routed_queues") or []))
            self.record.routes[(name, key, routed)] += 1
            self.exchange_rates[name].count += 1
            for q in routed:
                self.rates_in[q].count += 1
                self.record.note_dead_letter(q, message_id, x_death)
            if not routed:
                self.unroutable[name] += 1
            self.checks_dirty = True
            if len(self.pending_samples) < SAMPLES_PER_FRAME * 2:
                app = jsonable(inner.get("app_id")) or "@you"
                source = f"c:{app}" if app in self.consumer_queue else f"p:{app}"
                if routed:
                    for q in routed:
                        self._sample(
                            "routed",
                            [source, *self.router.path(name, q)],
                            {"message_id": message_id},
                        )
                else:
                    self._sample("unroutable", [source, f"x:{name}"], {"message_id": message_id})
                self._log(
                    {
                        "kind": "published" if routed else "unroutable",
                        "t": now,
                        "exchange": name,
                        "routing_key": key,
                        "routed_queues": list(routed),
                        "message_id": message_id,
                        "workload": jsonable(inner.get("app_id")),
                        "body": body_text(body),
                        "properties": {k: jsonable(v) for k, v in inner.items() if k != "headers"},
                        "headers": jsonable(inner_headers),
                    }
                )
        elif kind == "deliver":
            self.record.delivered[name] += 1
            self.rates_out[name].count += 1
            self.record.note_dead_letter(name, message_id, x_death)
            self.checks_dirty = True

    def _sample(self, kind: str, path: list[str], event: dict | None = None) -> None:
        self.pending_samples.append(
            {"id": (event or {}).get("message_id"), "kind": kind, "path": path}
        )

    def _log(self, event: dict) -> None:
        self.seq += 1
        event = {**event, "seq": self.seq}
        self.pending_events.append(event)
        self.recent.append(event)

    # --- outputs -----------------------------------------------------------------------------
    def counters(self) -> dict:
        return {w: dict(c) for w, c in self.record.workloads.items()}

    def exchanges(self, now: float) -> dict:
        return {
            x: {"rate_in": r.tick(now), "unroutable": self.unroutable.get(x, 0)}
            for x, r in self.exchange_rates.items()
        }

    def snapshot(self) -> dict:
        return {
            "counters": self.counters(),
            "queues": self.queues,
            "exchanges": self.exchanges(time.monotonic()),
            "checks": self.checks,
            "events": list(self.recent),
        }

    def export(self) -> dict:
        return {
            "record": self.record.export(),
            "checks": self.checks,
            "outstanding": dict(self.outstanding),
            "unroutable": dict(self.unroutable),
            "seq": self.seq,
        }

    def publish(self, kind: str, message: dict) -> None:
        self.out.basic_publish(
            self.flow_exchange,
            f"lab.{self.session}.{kind}",
            json.dumps({"type": kind, **message}, default=str).encode(),
            pika.BasicProperties(content_type="application/json"),
        )

    def frame(self) -> None:
        now = time.monotonic()
        unacked = Counter()
        for workload, n in self.outstanding.items():
            unacked[self.consumer_queue.get(workload)] += max(n, 0)
        for q, stats in self.queues.items():
            stats["rate_in"] = self.rates_in[q].tick(now)
            stats["rate_out"] = self.rates_out[q].tick(now)
            stats["unacked"] = max(unacked.get(q, 0), stats.get("unacked_broker", 0))
        events = [
            self.pending_events.popleft()
            for _ in range(min(len(self.pending_events), EVENTS_PER_FRAME))
        ]
        samples = [
            self.pending_samples.popleft()
            for _ in range(min(len(self.pending_samples), SAMPLES_PER_FRAME))
        ]
        self.frame_seq += 1
        self.publish(
            "frame",
            {
                "seq": self.frame_seq,
                "t": time.time(),
                "counters": self.counters(),
                "queues": {
                    q: {k: v for k, v in s.items() if k != "unacked_broker"}
                    for q, s in self.queues.items()
                },
                "exchanges": self.exchanges(now),
                "samples": samples,
                "events": events,
                "checks": self.checks,
            },
        )

    # --- polling -----------------------------------------------------------------------------
    def poll_depths(self, channel) -> Any:
        for q in self.queue_names:
            try:
                ok = channel.queue_declare(q, passive=True)
            except px.ChannelClosedByBroker:
                # The queue is gone (deleted, or expired by x-expires): say so, carry on.
                self.queues[q].update(ready=0, consumers=0, missing=True)
                channel = self.lab.channel()
                continue
            self.queues[q].update(
                ready=ok.method.message_count, consumers=ok.method.consumer_count, missing=False
            )
        return channel

    def poll_management(self) -> None:
        if self.management_queues is None:
            return
        try:
            for q in self.management_queues():
                if q["name"] in self.queues:
                    self.queues[q["name"]]["unacked_broker"] = q.get("messages_unacknowledged") or 0
        except Exception:  # noqa: BLE001 - statistics are a nicety; the frame goes on
            log.debug("management statistics not read", exc_info=True)

    def run_checks(self) -> None:
        if not self.checks_dirty:
            return
        self.checks_dirty = False
        results = self.evaluate(self.record, self.queues)
        if results != self.checks:
            self.checks = results

    # --- the loop ----------------------------------------------------------------------------
    def run(self) -> str:
        deadline = time.monotonic() + self.slice_seconds
        self.lab = pika.BlockingConnection(self.lab_params)
        try:
            self.lab.channel().basic_consume(self.firehose_queue, self._on_firehose, auto_ack=True)
            depths = self.lab.channel()
            next_frame = next_depths = next_slow = next_checks = time.monotonic()
            while self.stop is None:
                self.lab.process_data_events(0.005)
                self.console.process_data_events(0.005)
                now = time.monotonic()
                if now >= next_depths:
                    depths = self.poll_depths(depths)
                    next_depths = now + 0.25
                if now >= next_slow:
                    self.poll_management()
                    self.checks_dirty = True
                    if not self.still_current():
                        self.stop = "ended"
                    next_slow = now + 1.0
                if now >= next_checks:
                    self.run_checks()
                    next_checks = now + CHECK_INTERVAL
                if now >= next_frame:
                    self.frame()
                    next_frame = now + self.frame_interval
                if now >= deadline and self.stop is None:
                    self.stop = "slice"
        except (px.AMQPConnectionError, px.StreamLostError, px.ConnectionClosedByBroker):
            self.stop = "lost"
        finally:
            close_quietly(self.lab)
        return self.stop
