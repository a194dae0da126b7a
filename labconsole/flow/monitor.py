"""The lab monitor: one per running lab. It merges the three sources of the live view
(the workloads' reports, the firehose of the lab's vhost, queue depths) into frames for
the browser, at most `fps` a second, and keeps the flow record the checks read.

It is a unit (labconsole/runtime/unit.py), on its worker process's I/O loop: idle until a
firehose message, a report or control message (through the worker's console bus) or its
next timer. The checks, which read the database and the management API, run on the
loop's blocking pool, on a copy of the flow record. Frames are sent
only when something changed (and once a second otherwise, so rates fall to zero on the
page); queue depths are read often while messages move and rarely when nothing does.
Each frame carries the newest events and traces: what could not be shown in time is
dropped and counted ("1 in 40 shown"), never queued behind.

Frames go through the worker's console bus, which sends those its monitors made together
as one message of the console's frames exchange (`publish_frame`); each web process reads
them once and fans each out to its lab's sockets, so the monitor does the work once per
lab however many people watch.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pika
import pika.exceptions as px

from labconsole.broker.amqp import lab_key
from labconsole.runtime.bus import Incoming
from labconsole.runtime.loop import on_grid
from labconsole.runtime.unit import Stop, Unit
from labconsole.workloads.ledger import IdSet, Received, join, page_counters
from labconsole.workloads.load import running_load

from .alerts import AlertRule, Alerts
from .reporter import FIRST_WATCH_SECONDS, body_text, dumps, jsonable

log = logging.getLogger(__name__)

EVENTS_PER_FRAME = 30
SAMPLES_PER_FRAME = 40
RECENT_EVENTS = 200
SEEN_DEAD_LIMIT = 50_000
CHECK_INTERVAL = 0.5  # seconds between evaluations of the checkpoints, when anything moved
DEPTHS_BUSY = 1.0  # seconds between reads of queue depths while messages move and watched
DEPTHS_IDLE = 2.0  # ... while nothing moves or nobody watches (a purge or a TTL still shows)
IDLE_FRAME = 5.0  # a frame at least this often, even when nothing changed or nobody watches
# A web process with viewers of the lab says so at least this often (op "watch"); frames
# go at full rate only while someone watches.
WATCH_SECONDS = 15.0
CHECKPOINT_INTERVAL = 1.0  # how often the state a new worker would resume from is taken
# Deliveries pika dispatches in one go before the monitor's timers run again: small
# enough that a frame is never late by more than a few tens of milliseconds at full speed.
FIREHOSE_PREFETCH = 200
FIREHOSE_ACK_EVERY = 100
# After a reconnect the lab's tracing is turned on again; a node whose management API does
# not answer yet is asked again this often, this many times (a minute in all).
TRACING_RETRY_SECONDS = 2.0
TRACING_ATTEMPTS = 30
# The lab's producers said they published while the firehose brought nothing for this
# long: the broker is asked whether it still traces the vhost, and told to if not.
TRACING_WATCH_SECONDS = 5.0
# What `ensure_tracing` found: the vhost traces (or is gone), it did not and does now, or
# it still does not.
TRACES, TRACED_AGAIN, UNTRACED = "traces", "traced again", "untraced"
# Routes (exchange, queues) whose exchanges passed through are remembered.
DOWNSTREAM_ROUTES = 1000
YOU = "@you"  # the learner's publishes from the page (app_id), the graph's p:@you
# An unroutable publish from the page waits this long for the page to say it came back
# (mandatory), so that it is logged once, as returned, not as unroutable.
RETURN_WAIT = 1.0
AWAITING_RETURN_LIMIT = 100
# A lab on brokers of its own: how often its nodes and queues are looked at for what
# changed (a node down, a new leader), while watched and while not; and how many of those
# changes are kept, with the faults the learner caused, as the lab's timeline. A fault and
# what follows it on a quorum queue is about 8 events (the kill, the node down, the
# election's two leader changes, the members online, then the start, the node running,
# the members again), so 500 keep some 60 faults: more than a learner causes in an hour,
# and a class sharing one cluster for a while. Each is 150 to 170 bytes of JSON, so the
# state saved every RUNTIME_RENEW_SECONDS and every snapshot grow by up to 80 KB.
BROKERS_WATCHED = 1.0
BROKERS_IDLE = 5.0
TIMELINE = 500
# A sandbox's replay (docs/sandboxes.md "Replay"): the events kept of each second, and
# the seconds a page asks for at once.
REPLAY_EVENTS = 50
REPLAY_CHUNK = 120
# What a replayed second's events leave out: the message the inspector shows; the log's
# row needs none of it.
REPLAY_LEAVES_OUT = frozenset({"body", "properties", "headers"})


def streams_of(graph: dict) -> set[str]:
    """The queues of a lab's graph (exercises/topology.py) that are streams."""
    return {
        n["id"][2:]
        for n in graph.get("nodes", ())
        if n.get("kind") == "queue" and n.get("type") == "stream"
    }


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
    # (alert rule, "fired" or "cleared") -> how many times
    alerts: Counter = field(default_factory=Counter)
    firing: frozenset = frozenset()  # the alert rules firing now
    loads: Counter = field(default_factory=Counter)  # producer -> load presets it finished
    # producer -> its delivery ledger now (workloads/ledger.py): confirmed, received,
    # duplicates, missing, and whether the producer's run ended (`final`). A state, not a
    # count: `since` keeps it whole.
    ledger: dict[str, dict[str, int]] = field(default_factory=dict)
    # producer -> the messages a second it publishes now (Rate, smoothed). A state, not a
    # count: `since` keeps it whole.
    rates: dict[str, float] = field(default_factory=dict)
    # (exchange, key) -> [queues tuple, n]: where the latest messages with that key went,
    # and how many in a row went there. A state, not a count: `since` keeps it whole (a
    # check bounds it by the messages counted since its step was shown).
    streaks: dict[tuple[str, str], list] = field(default_factory=dict)

    def note_route(self, exchange: str, key: str, queues: tuple[str, ...]) -> None:
        self.routes[(exchange, key, queues)] += 1
        streak = self.streaks.get((exchange, key))
        if streak and streak[0] == queues:
            streak[1] += 1
        else:
            self.streaks[(exchange, key)] = [queues, 1]

    def export(self) -> dict:
        return {
            "routes": [[e, k, list(q), n] for (e, k, q), n in self.routes.items()],
            "delivered": dict(self.delivered),
            "workloads": {w: dict(c) for w, c in self.workloads.items()},
            "dead_lettered": [
                [q, [list(d) for d in h], n] for (q, h), n in self.dead_lettered.items()
            ],
            "alerts": [[name, what, n] for (name, what), n in self.alerts.items()],
            "firing": sorted(self.firing),
            "loads": dict(self.loads),
            "ledger": self.ledger,
            "rates": self.rates,
            "streaks": [[e, k, list(q), n] for (e, k), (q, n) in self.streaks.items()],
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
            for name, what, n in data.get("alerts", []):
                record.alerts[(name, what)] = n
            record.firing = frozenset(data.get("firing", ()))
            record.loads.update(data.get("loads", {}))
            record.ledger = dict(data.get("ledger", {}))
            record.rates = dict(data.get("rates", {}))
            for e, k, q, n in data.get("streaks", []):
                record.streaks[(e, k)] = [tuple(q), n]
        return record

    def since(self, mark: FlowRecord) -> FlowRecord:
        """What happened after `mark` (this record as it was at some earlier moment)."""
        record = FlowRecord(
            routes=self.routes - mark.routes,
            delivered=self.delivered - mark.delivered,
            dead_lettered=self.dead_lettered - mark.dead_lettered,
            alerts=self.alerts - mark.alerts,
            firing=self.firing,
            loads=self.loads - mark.loads,
            ledger=self.ledger,
            rates=self.rates,
            streaks=self.streaks,
        )
        for w, c in self.workloads.items():
            record.workloads[w] = c - mark.workloads.get(w, Counter())
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


# Seconds after a load preset's end before its summary: the queues' depths at the end read.
LOAD_SETTLE = 2.0
# A producer's counters a load's summary gives the change of.
LOAD_COUNTERS = ("published", "confirmed", "returned", "nacked_by_broker", "access_refused")


class LoadRun:
    """A producer's load preset while it runs (labconsole/workloads/load.py): the
    producer's counters when it began, and the most each queue held (ready and unacked)
    and the highest p99 of any queue since."""

    def __init__(self, workload: str, load: dict, counters: dict, data: dict | None = None):
        data = data or {}
        self.workload = workload
        self.load = dict(load)
        self.started = data.get("started", time.time())
        self.before = data.get("before") or {k: counters.get(k, 0) for k in LOAD_COUNTERS}
        self.peak: dict[str, int] = data.get("peak", {})
        self.p99: float | None = data.get("p99")

    @property
    def until(self) -> float:
        return float(self.load["until"])

    def observe(self, queues: dict[str, dict]) -> None:
        for q, stats in queues.items():
            held = int(stats.get("ready", 0)) + int(stats.get("unacked", 0))
            if held > self.peak.get(q, 0):
                self.peak[q] = held
            if latency := stats.get("latency"):
                self.p99 = max(self.p99 or 0.0, latency[1])

    def summary(self, counters: dict) -> dict:
        """The log's event for the load's end: what the producer did and the broker held."""
        return {
            "kind": "load",
            "t": time.time(),
            "workload": self.workload,
            "preset": self.load.get("preset"),
            "rate": self.load.get("rate"),
            "seconds": round(self.until - self.started, 1),
            **{k: counters.get(k, 0) - self.before.get(k, 0) for k in LOAD_COUNTERS},
            "peak": {q: n for q, n in sorted(self.peak.items()) if n},
            "p99_ms": self.p99,
        }

    def export(self) -> dict:
        return {
            "load": self.load,
            "started": self.started,
            "before": self.before,
            "peak": self.peak,
            "p99": self.p99,
        }


class Replay:
    """A sandbox's history: one compact snapshot of each second (counters, queues,
    exchanges, at most REPLAY_EVENTS of its events and how many were left out), the last
    `seconds` of them. A second is encoded as JSON once it is over, so what it costs is
    its length in bytes; it lives in the monitor's memory only (never in its saved
    state): a worker taking the monitor over starts a new history."""

    def __init__(self, seconds: int):
        self.seconds = seconds
        self.kept: deque[tuple[int, bytes]] = deque(maxlen=seconds)
        self.current: dict | None = None

    def note(self, t: float, frame: dict, left_out: int) -> None:
        second = int(t)
        if self.current is not None and self.current["t"] != second:
            self._close()
        if self.current is None:
            self.current = {"t": second, "events": [], "left_out": 0}
        current = self.current
        current["counters"] = frame["counters"]
        current["queues"] = {q: dict(stats) for q, stats in frame["queues"].items()}
        current["exchanges"] = frame["exchanges"]
        room = REPLAY_EVENTS - len(current["events"])
        events = frame["events"]
        current["events"].extend(
            {k: v for k, v in e.items() if k not in REPLAY_LEAVES_OUT} for e in events[:room]
        )
        current["left_out"] += left_out + max(0, len(events) - room)
        while self.kept and self.kept[0][0] <= second - self.seconds:
            self.kept.popleft()

    def _close(self) -> None:
        self.kept.append((self.current["t"], orjson.dumps(self.current)))
        self.current = None

    def chunk(self, after: int, limit: int = REPLAY_CHUNK) -> bytes:
        """The seconds after `after` (oldest first), at most `limit`, the one under way
        last, as the JSON of `exercises.sandbox_replay.ReplayChunk`."""
        seconds = [body for t, body in self.kept if t > after]
        if self.current is not None and self.current["t"] > after:
            seconds.append(orjson.dumps(self.current))
        more = len(seconds) > limit
        return b"".join(
            (
                b'{"keep":%d,"more":%s,"seconds":[' % (self.seconds, b"true" if more else b"false"),
                b",".join(seconds[:limit]),
                b"]}",
            )
        )

    def size(self) -> int:
        """Bytes of the seconds kept (their JSON)."""
        return sum(len(body) for _, body in self.kept)


class LabMonitor(Unit):
    kind = "monitor"

    def __init__(
        self,
        *,
        session: str,
        flow_exchange: str,
        reports_queue: str,
        declare_reports: Callable[[object], None],
        firehose_queue: str,
        firehose_arguments: dict,
        firehose_patterns: tuple[str, ...],
        router,
        queues: list[str],
        make_router: Callable[[dict], Any] | None = None,
        streams: Iterable[str] = (),
        topology_version: str = "",
        consumers: dict[str, str],
        evaluate: Callable[[FlowRecord, dict, dict[str, FlowRecord]], dict[str, bool]],
        mandatory: set[str] | frozenset[str] = frozenset(),
        expiring: set[str] | frozenset[str] = frozenset(),
        read_expiring: Callable[[], dict[str, dict]] = dict,
        ensure_tracing: Callable[[], str] = lambda: TRACES,
        pace: Callable[[float], None] = lambda seconds: None,
        read_broker_events: Callable[[], list[dict]] | None = None,
        alert_rules: Iterable[AlertRule] = (),
        replay_seconds: int = 0,
        fps: int = 20,
        state: dict | None = None,
        shown: dict[str, str] | None = None,
        **kwargs: Any,
    ):
        super().__init__(name=session, **kwargs)
        self.session = session
        self.flow_exchange = flow_exchange
        self.reports_queue = reports_queue
        self.declare_reports = declare_reports
        self.firehose_queue = firehose_queue
        self.firehose_arguments = firehose_arguments
        self.firehose_patterns = firehose_patterns
        self.router = router
        # The lab's graph -> its router: for a topology the learner changed (op "topology").
        self.make_router = make_router
        self.topology_version = topology_version  # the name of the topology it routes by
        self.queue_names = list(queues)
        self.consumer_queue = consumers  # consumer workload -> its queue
        self.streams = set(streams)  # the queues that are streams
        self.evaluate = evaluate
        # Producers publishing with `mandatory`: what they publish that no queue takes
        # comes back to them, and is logged as returned.
        self.mandatory = set(mandatory)
        # Queues with x-expires: a passive declare would renew their lease, and they would
        # never expire while the lab is watched. `read_expiring()` reads them instead (name
        # -> {ready, consumers}, absent when gone) from the management API, on the
        # blocking pool.
        self.expiring = set(expiring)
        self.read_expiring = read_expiring
        self.reading_expiring = False
        self.ensure_tracing = ensure_tracing
        # A lab on brokers of its own: what changed on them since the last read (nodes,
        # leaders, members online), as events of kind "broker", on the blocking pool.
        self.read_broker_events = read_broker_events
        self.reading_brokers = False
        self.next_brokers = 0.0
        # The firehose's messages and the producers' publishes at the last look at them.
        self.traced = self.traced_seen = self.published_seen = 0
        self.next_tracing_watch = 0.0
        self.ensuring_tracing = False
        self.pace = pace
        self.next_pace = 0.0
        self.frame_interval = 1.0 / max(fps, 1)
        state = state or {}
        self.record = FlowRecord.restore(state.get("record"))
        self.alerts = Alerts(alert_rules, state.get("alerts"))
        # producer -> its load preset running, and the summary of the last one that ended
        self.loads: dict[str, LoadRun] = {
            w: LoadRun(w, data["load"], {}, data) for w, data in state.get("loads", {}).items()
        }
        self.load_results: dict[str, dict] = state.get("load_results", {})
        # What happened to the lab's brokers, oldest first: the faults the learner caused
        # and what the nodes and queues did (its events stay here when the log moved on).
        self.timeline: deque[dict] = deque(state.get("timeline", []), maxlen=TIMELINE)
        # Its events since the last frame: every frame carries them all, while the log's
        # events of a frame are only the newest (a fault must not drown in messages).
        self.timeline_new: list[dict] = []
        self.checks: dict[str, bool] = state.get("checks", {})
        # step id -> (when the step was first shown, the flow record at that moment): a
        # step's checks count only what happened after it (checks.evaluate).
        self.marks: dict[str, tuple[str, FlowRecord]] = {
            step: (at, FlowRecord.restore(record))
            for step, (at, record) in state.get("marks", {}).items()
        }
        self.unroutable: Counter = Counter(state.get("unroutable", {}))
        # exchange -> messages the learner published to it from the page (its edge)
        self.from_you: Counter = Counter(state.get("from_you", {}))
        # message id -> (deadline, firehose item): the page's unroutable publishes that
        # may yet be said to have come back
        self.awaiting_return: dict[str, tuple[float, tuple]] = {}
        # message id -> (deadline, the page's word that it came back): waiting for the
        # firehose's record of the publish, which may come after it
        self.said_returned: dict[str, tuple[float, dict]] = {}
        # consumer -> (exchange, queues) of its last publish: where it parks messages
        self.park_routes: dict[str, tuple[str, tuple]] = {}
        self.held: dict[str, int] = {}  # consumer workload -> unacknowledged it holds
        self.consumer_states: dict[str, str] = {}  # consumer workload -> its run's state
        # The delivery ledger's sets as the workloads last reported them: producer -> the
        # numbers the broker confirmed; consumer -> what it received of each producer.
        self.confirmed_ids: dict[str, IdSet] = {}
        self.received_ids: dict[str, Received] = {}
        # consumer workload -> [p50 ms, p99 ms, deliveries] of its recent deliveries
        self.latency: dict[str, list] = {}
        self.queues: dict[str, dict] = {
            q: {"ready": 0, "unacked": 0, "consumers": 0, "rate_in": 0.0, "rate_out": 0.0}
            for q in queues
        }
        self.rates_in = defaultdict(Rate)
        self.rates_out = defaultdict(Rate)
        self.exchange_rates = defaultdict(Rate)
        self.downstream: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}
        self.published_rates = defaultdict(Rate)  # producer -> its messages published
        # The newest events and traces since the last frame; older ones fall out, counted.
        self.pending_events: deque = deque(maxlen=EVENTS_PER_FRAME)
        self.pending_samples: deque = deque(maxlen=SAMPLES_PER_FRAME)
        self.events_seen = 0
        self.samples_seen = 0
        self.recent: deque = deque(maxlen=RECENT_EVENTS)
        self.replay = Replay(replay_seconds) if replay_seconds > 0 else None
        self.seq = state.get("seq", 0)
        self.frame_seq = state.get("frame_seq", 0)
        self.watched_until = time.monotonic() + FIRST_WATCH_SECONDS
        self.changed = True  # something to show in the next frame
        self.moved = True  # messages moved since queue depths were last read
        self.checks_dirty = True
        self.lively = False  # frames at full rate: the monitor wakes every frame interval
        self.firehose_tag = 0
        self.next_frame = self.next_depths = self.next_checks = 0.0
        self.next_checkpoint = self.next_firehose_ack = 0.0
        self.last_frame = 0.0
        self.firehose = self.depths = None
        self.polling: int | None = None  # the index of the queue whose depth is being read
        self.checking = False
        self.show_steps(shown or {})
        self.checkpoint = self.export()

    def show_steps(self, shown: dict[str, str]) -> None:
        """Steps shown to the learner (step id -> when it was first shown, as the database
        has it): a step not yet marked, or shown again since (a reset), is marked now."""
        self.marks = {s: m for s, m in self.marks.items() if s in shown}
        for step, at in shown.items():
            if step not in self.marks or self.marks[step][0] != at:
                self.marks[step] = (at, FlowRecord.restore(self.record.export()))
                self.checks_dirty = True

    def change_topology(self, graph: dict, queues: list[str], version: str = "") -> None:
        """The learner changed the lab's topology: routes (predictions, dead-letter hops)
        come from the new graph, and the depths polled are the new queues'. A queue that
        stays keeps its numbers; the checks run again (a binding check reads the broker)."""
        if self.make_router is not None and graph.get("edges") is not None:
            self.router = self.make_router(graph)
            self.downstream.clear()
        if graph.get("edges") is not None:
            # A sandbox adds and removes consumers: their deliveries count for their queue.
            self.consumer_queue = {
                e["target"][2:]: e["source"][2:] for e in graph["edges"] if e["kind"] == "consume"
            }
        self.streams = streams_of(graph)
        names = [str(q) for q in queues]
        self.queues = {
            q: self.queues.get(q)
            or {"ready": 0, "unacked": 0, "consumers": 0, "rate_in": 0.0, "rate_out": 0.0}
            for q in names
        }
        self.queue_names = names  # a round of reads under way goes on in the new list
        self.topology_version = version
        self.next_depths = 0.0
        self.changed = self.checks_dirty = self.moved = True
        self.poke()

    # --- connection --------------------------------------------------------------------------
    def connected(self) -> None:
        if self.reconnects:
            # What a restart of the broker loses: tracing is off after a hard restart.
            self._ensure_tracing(attempt=1)
        self.bus.consume(self.reports_queue, self.report_arrived, self.declare_reports)
        self.firehose = self.depths = None
        self.firehose_tag = 0
        self.polling = None
        self.next_depths = 0.0
        self._open_firehose()
        self._open_depths()

    def _ensure_tracing(
        self, attempt: int, attempts: int = TRACING_ATTEMPTS, *, say: bool = False
    ) -> None:
        """Turns the lab's tracing on again, on the blocking pool, and tries again every
        TRACING_RETRY_SECONDS until the broker says it is on (`attempts` at most). With
        `say`, the log tells when it was off and is on again."""
        self.ensuring_tracing = True

        def done(state, error) -> None:
            if say and state == TRACED_AGAIN:
                # What the page could not draw meanwhile: say why (kind "broker").
                self._broker_event({"kind": "broker", "t": time.time(), "tracing": "restored"})
            if state in (TRACES, TRACED_AGAIN) or self.lab is None or self.outcome is not None:
                self.ensuring_tracing = False
                return
            if attempt >= attempts:
                log.warning("monitor %s: tracing still off after %d tries", self.session, attempt)
                self.ensuring_tracing = False
                return
            self.loop.call_later(
                TRACING_RETRY_SECONDS,
                self.guarded(functools.partial(self._ensure_tracing, say=say)),
                attempt + 1,
                attempts,
            )

        self.loop.run_blocking(self.ensure_tracing, done)

    def watch_tracing(self, now: float) -> None:
        """Producers that say they published while the firehose stayed silent: the vhost
        may have stopped tracing (RabbitMQ can lose a vhost's tracing when another vhost's
        is turned on or off at the same moment; an operator may turn it off). Asks the
        broker, which turns it on again if so; a lab that traces costs nothing."""
        self.next_tracing_watch = now + TRACING_WATCH_SECONDS
        published = sum(
            counts.get("published", 0)
            for workload, counts in self.record.workloads.items()
            if workload != YOU and workload not in self.consumer_queue
        )
        silent = self.traced == self.traced_seen and published > self.published_seen
        self.traced_seen, self.published_seen = self.traced, published
        if silent and not self.ensuring_tracing and self.lab is not None:
            log.info("monitor %s: publishes but no traces; asking the broker", self.name)
            self._ensure_tracing(attempt=1, attempts=3, say=True)

    def _open_firehose(self) -> None:
        def opened(channel):
            if self.lab is None or self.outcome is not None:
                return
            channel.add_on_close_callback(self.guarded(self._firehose_closed))
            channel.queue_declare(
                self.firehose_queue, durable=True, arguments=self.firehose_arguments
            )
            for pattern in self.firehose_patterns:
                channel.queue_bind(self.firehose_queue, "amq.rabbitmq.trace", pattern)
            channel.basic_qos(prefetch_count=FIREHOSE_PREFETCH)
            channel.basic_consume(self.firehose_queue, self.guarded(self._on_firehose))
            self.firehose = channel
            self.firehose_tag = 0

        self.lab.channel(on_open_callback=self.guarded(opened))

    def _firehose_closed(self, channel, exc) -> None:
        if channel is not self.firehose:
            return
        self.firehose = None
        if isinstance(exc, px.ChannelClosedByBroker) and self.lab is not None:
            log.warning("monitor %s: firehose closed (%s); opening it again", self.name, exc)
            self.loop.call_later(1.0, self._reopen_firehose)

    def _reopen_firehose(self) -> None:
        if self.lab is not None and self.lab.is_open and self.firehose is None:
            self.guard(self._open_firehose)

    def _open_depths(self) -> None:
        def opened(channel):
            if self.lab is None or self.outcome is not None:
                return
            channel.add_on_close_callback(self.guarded(self._depths_closed))
            self.depths = channel
            if self.polling is not None:
                self._poll_next()  # after a queue that was not there

        self.lab.channel(on_open_callback=self.guarded(opened))

    def _depths_closed(self, channel, exc) -> None:
        if channel is not self.depths:
            return
        self.depths = None
        if self.lab is None or not self.lab.is_open:
            return
        if self.polling is not None and isinstance(exc, px.ChannelClosedByBroker):
            # A passive declare of a queue that is not there (deleted, or expired by
            # x-expires) closes the channel: say so, and go on with the next queue.
            q = self.queue_names[self.polling] if self.polling < len(self.queue_names) else None
            if q in self.queues:
                if not self.queues[q].get("missing"):
                    self.changed = self.checks_dirty = True
                self.queues[q].update(ready=0, consumers=0, missing=True)
            self.polling += 1
        self._open_depths()

    def finish(self) -> None:
        self.bus.cancel(self.reports_queue, self.report_arrived)
        self.checkpoint = self.export()

    # --- inputs ------------------------------------------------------------------------------
    def handle(self, message: Incoming) -> None:
        try:
            data = json.loads(message.body)
        except ValueError:
            return
        if data.get("op") == "stop":
            raise Stop("stopped")
        if data.get("op") == "returned":
            self._you_returned(data)
        if data.get("op") == "topology":
            self.change_topology(
                data.get("graph") or {}, data.get("queues") or [], str(data.get("version", ""))
            )
        if data.get("op") == "broker" and isinstance(data.get("event"), dict):
            # A fault the learner caused from the page's Brokers panel.
            self._broker_event({**data["event"], "kind": "broker", "t": time.time()})
        if data.get("op") == "steps":
            self.show_steps(data.get("shown") or {})
            if message.reply_to:
                # Marked: the asker's next action counts for the new step.
                self.bus.publish(
                    "",
                    message.reply_to,
                    b'{"marked":true}',
                    pika.BasicProperties(correlation_id=message.correlation_id),
                )
            if self.checks_dirty:
                self.poke()
        if data.get("op") in ("watch", "snapshot"):
            now = time.monotonic()
            self.watched_until = now + WATCH_SECONDS
            if now >= self.next_pace:
                # The workloads report at full pace only while somebody watches.
                self.pace(WATCH_SECONDS)
                self.next_pace = now + WATCH_SECONDS / 3
        if data.get("op") == "replay" and message.reply_to:
            after = data.get("after")
            self.bus.publish(
                "",
                message.reply_to,
                self.replay.chunk(after if isinstance(after, int) else 0)
                if self.replay
                else b'{"keep":0,"more":false,"seconds":[]}',
                pika.BasicProperties(correlation_id=message.correlation_id),
            )
        if data.get("op") == "snapshot" and message.reply_to:
            self.bus.publish(
                "",
                message.reply_to,
                dumps(self.snapshot()),
                pika.BasicProperties(correlation_id=message.correlation_id),
            )

    def report_arrived(self, message: Incoming) -> None:
        """A workload's report (from the reports queue, or from a workload in the same
        process): while frames go at full rate the next frame is at most a frame interval
        away and shows it; otherwise the monitor looks at once."""
        self.guard(self._on_report, message.body)
        if not self.lively:
            self.poke()

    def _on_report(self, body: bytes) -> None:
        report = orjson.loads(body)
        workload = report["workload"]
        counts = report.get("counts")
        queue = self.consumer_queue.get(workload)
        if counts:
            if queue is None:
                before = self.record.workloads.get(workload, {}).get("published", 0)
                self.published_rates[workload].count += max(0, counts.get("published", 0) - before)
            if queue is not None:
                # Deliveries are counted by the consumers, not read from the firehose.
                before = self.record.workloads.get(workload, {}).get("delivered", 0)
                more = max(0, counts.get("delivered", 0) - before)
                self.record.delivered[queue] += more
                self.rates_out[queue].count += more
            # Cumulative: the latest report is the truth, a lost one costs nothing.
            self.record.workloads[workload] = Counter(counts)
            self.checks_dirty = True
        for message_id, x_death in report.get("deaths", []):
            self.record.note_dead_letter(queue, message_id, x_death)
        if "confirmed_ids" in report or "received_ids" in report:
            self._ledger_report(workload, report)
        if workload in self.record.ledger and "state" in report:
            # Its run ended (stopped, finished) or began again: with it ended, its count of
            # confirmed messages is final, and what is missing stays missing.
            self.record.ledger[workload]["final"] = report["state"] != "running"
            self.checks_dirty = True
        if "state" in report and queue is not None:
            self.consumer_states[workload] = report["state"]
        if "held" in report:
            self.held[workload] = int(report["held"])
        if "latency" in report:
            self.latency[workload] = report["latency"]
        if report.get("state") not in (None, "running"):
            self.held[workload] = 0  # the run ended or lost its connection: all requeued
            self.latency.pop(workload, None)
        for event in report.get("events", []):
            self._workload_event(event)
        self.changed = True

    def _ledger_report(self, workload: str, report: dict) -> None:
        if "confirmed_ids" in report:
            ranges = report["confirmed_ids"]
            if ranges is None:  # the producer gave up its set: too scattered
                self.confirmed_ids.pop(workload, None)
                self.record.ledger.pop(workload, None)
            else:
                self.confirmed_ids[workload] = IdSet(ranges)
        if "received_ids" in report:
            self.received_ids[workload] = Received(report["received_ids"])
        for producer, confirmed in self.confirmed_ids.items():
            got = [r.sets[producer] for r in self.received_ids.values() if producer in r.sets]
            self.record.ledger[producer] = {
                "final": self.record.ledger.get(producer, {}).get("final", False),
                "confirmed": len(confirmed),
                **join(confirmed, got),
                "duplicates": sum(r.twice.get(producer, 0) for r in self.received_ids.values()),
            }
        self.checks_dirty = True

    def _workload_event(self, event: dict) -> None:
        kind, workload = event["kind"], event["workload"]
        queue = event.get("queue") or self.consumer_queue.get(workload)
        trace = None
        then = None  # what the broker did next, logged after the event
        if kind in ("started", "updated") and (load := running_load(event.get("settings") or {})):
            run = self.loads.get(workload)
            if run is None or run.until != float(load["until"]):
                self.loads[workload] = LoadRun(workload, load, self.record.workloads[workload])
                self.changed = True
        if kind in ("started", "updated") and "mandatory" in (event.get("settings") or {}):
            if event["settings"]["mandatory"]:
                self.mandatory.add(workload)
            else:
                self.mandatory.discard(workload)
        if kind == "delivered" and queue:
            trace = [f"q:{queue}", f"c:{workload}"]
            deaths = event.get("x_death") or []
            if deaths and deaths[0].get("reason") == "expired":
                came_from = deaths[0].get("queue")
                path = self._dead_letter_path(came_from, queue)
                self._sample("expired", path, event)
                self._count_dead_letter(path)
                self._log(self._expired(event, came_from, queue))
        elif kind == "acked":
            trace = [f"c:{workload}"]
        elif kind in ("rejected", "nacked") and queue:
            if event.get("requeue"):
                trace = [f"c:{workload}", f"q:{queue}"]
            elif queue in self.router.dead_letter:
                self._sample(kind, [f"c:{workload}"], event)
                path = self._dead_letter_path(queue, None)
                self._sample("dead-lettered", path, event)
                self._count_dead_letter(path)
                then = {
                    "kind": "dead-lettered",
                    "t": event.get("t"),
                    "queue": queue,
                    "exchange": self.router.dead_letter[queue],
                    "routed_queues": [n[2:] for n in path[1:] if n.startswith("q:")],
                    "message_id": event.get("message_id"),
                    "reason": "rejected",  # as x-death says, for a nack too
                }
            else:
                trace = [f"c:{workload}"]
        elif kind == "parked":
            trace = [f"c:{workload}"]
            exchange, routed = self.park_routes.get(workload, (None, ()))
            if exchange == event.get("exchange") and routed:
                # The consumer knows where it published the copy; the firehose saw where
                # the broker put it.
                event = {**event, "queue": routed[0], "routed_queues": list(routed)}
        elif kind == "returned":
            exchange = event.get("exchange", "")
            trace = [f"x:{exchange}", f"p:{workload}"]
            if workload in self.mandatory:
                # The firehose's record of this publish is logged as returned, with its body.
                self._sample(kind, trace, event)
                return
            self.mandatory.add(workload)
        if trace:
            self._sample(kind, trace, event)
        self._log(event)
        if then:
            self._log(then)

    def _count_dead_letter(self, path: list[str]) -> None:
        """The broker's dead-lettering never reaches the firehose: the rates in of the
        exchanges and queues a dead-lettered message passed after its queue count it here
        (an expired one when it is delivered from where it went)."""
        for node in path[1:]:
            if node.startswith("x:"):
                self.exchange_rates[node[2:]].count += 1
            elif node.startswith("q:"):
                self.rates_in[node[2:]].count += 1

    def _expired(self, delivered: dict, came_from: str | None, queue: str) -> dict:
        """The delivery of a message that expired in `came_from` and was dead-lettered to
        `queue`: the expiry as an event of its own, before the delivery."""
        death = (delivered.get("x_death") or [{}])[0]
        return {
            "kind": "expired",
            "t": delivered.get("t"),
            "queue": came_from,
            "exchange": self.router.dead_letter.get(came_from or "", death.get("exchange")),
            "routing_key": delivered.get("routing_key"),
            "routed_queues": [queue],
            "message_id": delivered.get("message_id"),
            "x_death": delivered.get("x_death"),
        }

    def _you_returned(self, data: dict) -> None:
        """The page says a mandatory publish came back: logged as returned, with what the
        firehose saw of it. The two arrive by different queues, in either order: the one
        that comes first waits for the other, at most RETURN_WAIT."""
        message_id = data.get("message_id")
        self.record.workloads[YOU]["returned"] += 1
        held = self.awaiting_return.pop(message_id, None)
        if held is None and message_id:
            if len(self.said_returned) >= AWAITING_RETURN_LIMIT:
                self._release_awaiting(float("inf"))
            self.said_returned[message_id] = (time.monotonic() + RETURN_WAIT, data)
            return
        self._log_you_returned(data, held[1] if held else None)

    def _log_you_returned(self, data: dict, item: tuple | None) -> None:
        if item is not None:
            event = {**self._event(item), "kind": "returned"}
        else:  # the firehose's record of it never came
            event = {
                "kind": "returned",
                "t": time.time(),
                "workload": YOU,
                "exchange": data.get("exchange", ""),
                "routing_key": data.get("routing_key", ""),
                "message_id": data.get("message_id"),
            }
        event["reply"] = data.get("reply")
        self._sample("returned", [f"x:{event['exchange']}", f"p:{YOU}"], event)
        self._log(event)
        self.changed = True
        self.poke()

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
        """Called for every message the lab publishes: kept lean. The full event of a
        publish is built only if it is among the newest when a frame goes."""
        self.firehose_tag = method.delivery_tag
        self.traced += 1
        if method.delivery_tag % FIREHOSE_ACK_EVERY == 0:
            channel.basic_ack(method.delivery_tag, multiple=True)
            self.firehose_tag = 0
        headers = props.headers or {}
        kind, _, name = method.routing_key.partition(".")
        inner = headers.get("properties") or {}
        inner_headers = inner.get("headers") or {}
        x_death = inner_headers.get("x-death")
        if not self.lively:
            self.poke()  # frames at full rate from now on
        self.changed = self.moved = self.checks_dirty = True
        if kind == "publish":
            keys = headers.get("routing_keys") or []
            key = jsonable(keys[0]) if keys else ""
            if name == "":
                # routed_queues echoes the key for the default exchange: trust only real queues.
                routed = tuple(k for k in map(jsonable, keys) if k in self.queues)
            else:
                routed = tuple(sorted(jsonable(q) for q in headers.get("routed_queues") or []))
            self.record.note_route(name, key, routed)
            self.exchange_rates[name].count += 1
            for x in self._downstream(name, routed):
                self.exchange_rates[x].count += 1
            message_id = jsonable(inner.get("message_id"))
            for q in routed:
                self.rates_in[q].count += 1
                if x_death:
                    self.record.note_dead_letter(q, message_id, jsonable(x_death))
            if not routed:
                self.unroutable[name] += 1
            app = jsonable(inner.get("app_id")) or YOU
            if app == YOU:
                self.record.workloads[YOU]["published"] += 1
                self.from_you[name] += 1
            if app in self.consumer_queue:
                source = f"c:{app}"
                self.park_routes[app] = (name, routed)
            else:
                source = f"p:{app}"
            kind = "published" if routed else "returned" if app in self.mandatory else "unroutable"
            item = (time.time(), kind, name, key, routed, inner, body)
            if app == YOU and not routed and message_id in self.said_returned:
                self._log_you_returned(self.said_returned.pop(message_id)[1], item)
            elif app == YOU and not routed and message_id:
                # The page says so if it came back (mandatory); until then it waits.
                if len(self.awaiting_return) >= AWAITING_RETURN_LIMIT:
                    self._release_awaiting(float("inf"))
                self.awaiting_return[message_id] = (time.monotonic() + RETURN_WAIT, item)
            else:
                self.events_seen += 1
                self.pending_events.append(item)
            if routed:
                for q in routed:
                    self._sample("routed", (source, name, q), {"message_id": message_id})
            else:
                self._sample("unroutable", [source, f"x:{name}"], {"message_id": message_id})

    def _downstream(self, exchange: str, routed: tuple[str, ...]) -> tuple[str, ...]:
        """The exchanges a message published to `exchange` passed through on its way to the
        queues `routed` (exchange-to-exchange bindings, alternate exchanges), from the
        graph's routes: their rates count it too. Worked out once per route."""
        found = self.downstream.get((exchange, routed))
        if found is None:
            passed: dict[str, None] = {}
            for q in routed:
                for node in self.router.path(exchange, q)[1:]:
                    if node.startswith("x:") and node[2:] != exchange:
                        passed[node[2:]] = None
            if len(self.downstream) >= DOWNSTREAM_ROUTES:
                self.downstream.clear()
            found = self.downstream[(exchange, routed)] = tuple(passed)
        return found

    def _sample(self, kind: str, path, event: dict | None = None) -> None:
        """A trace to animate; `path` is a list of node ids, or (source, exchange, queue)
        for a routed publish, whose path is worked out only if it is drawn."""
        self.samples_seen += 1
        self.pending_samples.append(((event or {}).get("message_id"), kind, path))

    def _log(self, event: dict) -> None:
        self.events_seen += 1
        self.pending_events.append(event)

    def _release_awaiting(self, now: float) -> None:
        """The page's unroutable publishes nobody said came back by now: logged as such;
        and what the page said came back that the firehose never showed, without a body."""
        for message_id, (deadline, data) in list(self.said_returned.items()):
            if deadline <= now:
                del self.said_returned[message_id]
                self._log_you_returned(data, None)
        for message_id, (deadline, item) in list(self.awaiting_return.items()):
            if deadline <= now:
                del self.awaiting_return[message_id]
                self.events_seen += 1
                self.pending_events.append(item)
                self.changed = True

    # --- outputs -----------------------------------------------------------------------------
    def _event(self, item) -> dict:
        if isinstance(item, dict):
            return item
        t, kind, exchange, key, routed, inner, body = item
        return {
            "kind": kind,
            "t": t,
            "exchange": exchange,
            "routing_key": key,
            "routed_queues": list(routed),
            "message_id": jsonable(inner.get("message_id")),
            "workload": jsonable(inner.get("app_id")),
            "body": body_text(body),
            "properties": {k: jsonable(v) for k, v in inner.items() if k != "headers"},
            "headers": jsonable(inner.get("headers") or {}),
        }

    def _trace(self, item) -> dict:
        message_id, kind, path = item
        if isinstance(path, tuple):
            source, exchange, queue = path
            path = [source, *self.router.path(exchange, queue)]
        return {"id": message_id, "kind": kind, "path": path}

    def _flow_totals(self) -> dict[str, int]:
        """Messages the lab's workloads (the learner's page among them) published and
        received so far, with what the producers' ledgers count missing."""
        workloads = self.record.workloads.values()
        totals = {
            "published": sum(c.get("published", 0) for c in workloads),
            "delivered": sum(c.get("delivered", 0) for c in workloads),
        }
        if self.record.ledger:
            totals["missing"] = sum(x.get("missing", 0) for x in self.record.ledger.values())
        return totals

    def counters(self) -> dict:
        out = {w: dict(c) for w, c in self.record.workloads.items()}
        for producer, rate in self.record.rates.items():
            out.setdefault(producer, {})["rate"] = rate
        for producer, ledger in self.record.ledger.items():
            out.setdefault(producer, {}).update(page_counters(ledger))
        return out

    def exchanges(self, now: float) -> dict:
        out = {}
        for x in {*self.exchange_rates, *self.unroutable, *self.from_you}:
            out[x] = {
                "rate_in": self.exchange_rates[x].tick(now) if x in self.exchange_rates else 0.0,
                "unroutable": self.unroutable.get(x, 0),
            }
            if x in self.from_you:
                out[x]["from_you"] = self.from_you[x]
        return out

    def snapshot(self) -> dict:
        return {
            "t": time.time(),
            "counters": self.counters(),
            "queues": self._queues_out(),
            "exchanges": self.exchanges(time.monotonic()),
            "checks": self.checks,
            "alerts": self.alerts.frame(),
            "loads": self.loads_out(),
            "events": list(self.recent),
            "timeline": list(self.timeline),
        }

    def export(self) -> dict:
        return {
            "record": self.record.export(),
            "checks": dict(self.checks),
            "marks": {step: [at, record.export()] for step, (at, record) in self.marks.items()},
            "unroutable": dict(self.unroutable),
            "from_you": dict(self.from_you),
            "alerts": self.alerts.export(),
            "loads": {w: run.export() for w, run in self.loads.items()},
            "load_results": self.load_results,
            "timeline": list(self.timeline),
            "seq": self.seq,
            "frame_seq": self.frame_seq,
        }

    def publish(self, kind: str, message: dict) -> None:
        if kind == "frame":
            self.bus.publish_frame(self.session, dumps({"type": kind, **message}))
            return
        self.bus.publish(
            self.flow_exchange,
            lab_key(self.session, kind),
            dumps({"type": kind, **message}),
            pika.BasicProperties(content_type="application/json"),
        )

    def _queues_out(self) -> dict:
        return self.queues

    def _queue_latency(self) -> dict[str, list]:
        """Per queue, [p50 ms, p99 ms] of its consumers' recent deliveries: with several
        consumers, their p50s weighted by deliveries, and the highest p99."""
        found: dict[str, list] = {}
        for workload, figures in self.latency.items():
            queue = self.consumer_queue.get(workload)
            if queue is not None and figures:
                found.setdefault(queue, []).append(figures)
        out = {}
        for queue, all_figures in found.items():
            n = sum(f[2] for f in all_figures)
            p50 = sum(f[0] * f[2] for f in all_figures) / n
            out[queue] = [round(p50, 1), max(f[1] for f in all_figures)]
        return out

    def _consumers_numbers(self) -> None:
        """Each queue's unacknowledged messages and latency, from its consumers' reports."""
        held = Counter()
        for workload, n in self.held.items():
            held[self.consumer_queue.get(workload)] += max(n, 0)
        latency = self._queue_latency()
        reading = Counter(
            self.consumer_queue.get(w)
            for w, state in self.consumer_states.items()
            if state == "running"
        )
        for q, stats in self.queues.items():
            # What the lab's consumers hold, as they report it: exact, and without the
            # management API's statistics, which lag by up to five seconds.
            stats["unacked"] = held.get(q, 0)
            if q in self.streams:
                # A passive declare of a stream counts no consumer: its readers say.
                stats["consumers"] = reading.get(q, 0)
            if q in latency:
                stats["latency"] = latency[q]
            else:
                stats.pop("latency", None)

    def watch_alerts(self) -> None:
        """Moves the alert rules on with the queues' numbers: what fires or clears is
        logged, counted in the flow record (the checks read it) and shown in the next
        frame."""
        self._consumers_numbers()
        for rule, what, value in self.alerts.observe(self.queues, time.time()):
            self.record.alerts[(rule.name, "fired" if what == "firing" else "cleared")] += 1
            event = {
                "kind": "alert",
                "t": time.time(),
                "alert": rule.name,
                "state": what,
                "queue": rule.queue,
                "metric": rule.metric,
                "value": value,
            }
            event["above" if rule.above is not None else "below"] = (
                rule.above if rule.above is not None else rule.below
            )
            self._log(event)
            self.changed = self.checks_dirty = True
        self.record.firing = frozenset(self.alerts.firing())

    def watch_loads(self) -> None:
        """Follows the producers' load presets: the queues' peaks while one runs, and its
        summary, logged and shown, once it has ended and the queues were read again."""
        if not self.alerts:
            self._consumers_numbers()  # done by watch_alerts otherwise
        now = time.time()
        for workload, run in list(self.loads.items()):
            run.observe(self.queues)
            if now >= run.until + LOAD_SETTLE:
                summary = run.summary(self.record.workloads.get(workload, {}))
                del self.loads[workload]
                self.load_results[workload] = summary
                self.record.loads[workload] += 1
                self._log(summary)
                self.changed = self.checks_dirty = True

    def loads_out(self) -> dict[str, dict]:
        """Per producer: its load running (`state: running`, `preset`, `rate`, `until`),
        or the summary of its last (`state: done`)."""
        out = {w: {"state": "done", **summary} for w, summary in self.load_results.items()}
        for w, run in self.loads.items():
            out[w] = {"state": "running", **run.load}
        return out

    def frame(self, now: float) -> None:
        self._consumers_numbers()
        for q, stats in self.queues.items():
            stats["rate_in"] = self.rates_in[q].tick(now)
            stats["rate_out"] = self.rates_out[q].tick(now)
        events = []
        for item in self.pending_events:
            self.seq += 1
            event = {**self._event(item), "seq": self.seq}
            events.append(event)
            self.recent.append(event)
        samples = [self._trace(item) for item in self.pending_samples]
        shown = {
            "events": [len(events), self.events_seen],
            "samples": [len(samples), self.samples_seen],
        }
        timeline, self.timeline_new = self.timeline_new, []
        self.pending_events.clear()
        self.pending_samples.clear()
        self.events_seen = self.samples_seen = 0
        self.frame_seq += 1
        frame = {
            "seq": self.frame_seq,
            "t": time.time(),
            "counters": self.counters(),
            "queues": self._queues_out(),
            "exchanges": self.exchanges(now),
            "samples": samples,
            "events": events,
            "shown": shown,
            **({"timeline": timeline} if timeline else {}),
            "checks": self.checks,
            **({"alerts": self.alerts.frame()} if self.alerts else {}),
            **({"loads": self.loads_out()} if self.loads or self.load_results else {}),
        }
        if self.replay is not None:
            self.replay.note(frame["t"], frame, shown["events"][1] - shown["events"][0])
        self.publish("frame", frame)

    # --- timed work --------------------------------------------------------------------------
    def poll_depths(self) -> None:
        """Reads every queue's depth with a passive declare, one after the other; those
        with x-expires from the management API (see `expiring`)."""
        if self.expiring and not self.reading_expiring:
            self.reading_expiring = True
            self.loop.run_blocking(self.read_expiring, self._expiring_read)
        if self.polling is None:
            self.polling = 0
            self._poll_next()

    def _expiring_read(self, found: dict[str, dict] | None, error: BaseException | None) -> None:
        self.reading_expiring = False
        if error is not None:
            log.debug("monitor %s: expiring queues not read: %r", self.name, error)
            return
        for q in self.expiring:
            stats = self.queues[q]
            there = found.get(q)
            now = (
                {"ready": there["ready"], "consumers": there["consumers"], "missing": False}
                if there is not None
                else {"ready": 0, "consumers": 0, "missing": True}
            )
            if any(stats.get(k) != v for k, v in now.items()):
                stats.update(now)
                self.changed = self.checks_dirty = True

    def _brokers_read(self, events: list[dict] | None, error: BaseException | None) -> None:
        self.reading_brokers = False
        if error is not None:
            log.debug("monitor %s: brokers not read: %r", self.name, error)
            return
        for event in events or ():
            self._broker_event(event)

    def _broker_event(self, event: dict) -> None:
        # `n` numbers the timeline's events, so that a page that has some of them (from a
        # snapshot) takes the others from frames once; `flow` is where the messages stood.
        event["n"] = (self.timeline[-1].get("n", 0) if self.timeline else 0) + 1
        event["flow"] = self._flow_totals()
        self.timeline.append(event)
        self.timeline_new.append(event)
        self._log(event)
        self.changed = True
        self.poke()

    def _poll_next(self) -> None:
        if self.depths is None or self.polling is None:
            return  # the channel opens again and goes on
        if self.polling >= len(self.queue_names):
            self.polling = None
            return
        q = self.queue_names[self.polling]
        if q in self.expiring:
            self.polling += 1  # read from the management API: a declare renews x-expires
            self._poll_next()
            return

        def ok(frame, q=q):
            if self.polling is None:
                return
            before = self.queues.get(q)  # None: deleted meanwhile (change_topology)
            now = {
                "ready": frame.method.message_count,
                "consumers": frame.method.consumer_count,
                "missing": False,
            }
            if before is not None and any(before.get(k) != v for k, v in now.items()):
                before.update(now)
                self.changed = self.checks_dirty = True
            self.polling += 1
            self._poll_next()

        self.depths.queue_declare(q, passive=True, callback=self.guarded(ok))

    def run_checks(self) -> None:
        """Evaluates the checkpoints on the blocking pool (they may read the database and
        the management API), on copies of what the loop goes on changing."""
        if self.checking:
            return
        self.checks_dirty = False
        self.checking = True
        record = FlowRecord.restore(self.record.export())
        queues = {q: dict(stats) for q, stats in self.queues.items()}
        marks = {step: mark for step, (_, mark) in self.marks.items()}  # never changed
        self.loop.run_blocking(lambda: self.evaluate(record, queues, marks), self._checked)

    def _checked(self, results: dict[str, bool] | None, error: BaseException | None) -> None:
        self.checking = False
        if error is not None:
            log.warning("monitor %s: checks not evaluated: %r", self.name, error)
            self.checks_dirty = True
        elif results != self.checks:
            self.checks = results
            self.changed = True
        self.poke()

    def producer_rates(self, now: float) -> None:
        """The producers' rates now: shown on their cards, compared by `faster` checks."""
        rates = {w: rate.tick(now) for w, rate in self.published_rates.items()}
        if rates != self.record.rates:
            self.record.rates = rates
            self.changed = self.checks_dirty = True

    def tick(self, now: float) -> float | None:
        if self.firehose_tag and now >= self.next_firehose_ack and self.firehose is not None:
            # Acknowledged in batches: at most once a second, or every FIREHOSE_ACK_EVERY.
            self.firehose.basic_ack(self.firehose_tag, multiple=True)
            self.firehose_tag = 0
            self.next_firehose_ack = now + 1.0
        watched = now < self.watched_until
        if self.published_rates:
            self.producer_rates(now)
        if self.awaiting_return or self.said_returned:
            self._release_awaiting(now)
        if now >= self.next_depths:
            self.poll_depths()
            self.next_depths = now + (DEPTHS_BUSY if self.moved and watched else DEPTHS_IDLE)
            self.moved = False
        if self.alerts:
            self.watch_alerts()
        if self.loads:
            self.watch_loads()
        if self.read_broker_events and now >= self.next_brokers and not self.reading_brokers:
            self.reading_brokers = True
            self.loop.run_blocking(self.read_broker_events, self._brokers_read)
            self.next_brokers = now + (BROKERS_WATCHED if watched else BROKERS_IDLE)
        if self.checks_dirty and now >= self.next_checks:
            self.run_checks()
            self.next_checks = now + CHECK_INTERVAL
        if now >= self.next_tracing_watch:
            self.watch_tracing(now)
        moving = watched and (
            any(r.value for r in self.rates_in.values())
            or any(r.value for r in self.rates_out.values())
        )
        lively = self.lively = moving or (self.changed and watched)
        if now >= self.next_frame and (lively or now - self.last_frame >= IDLE_FRAME):
            self.changed = False
            self.frame(now)
            self.last_frame = now
            # On the process's grid of frame intervals: the frames of all its labs leave
            # in one pass of the loop, in one write to the broker.
            self.next_frame = on_grid(now + self.frame_interval / 2, self.frame_interval)
        if now >= self.next_checkpoint:
            self.checkpoint = self.export()
            self.next_checkpoint = now + CHECKPOINT_INTERVAL
        due = [self.next_depths, self.next_checkpoint, self.next_tracing_watch]
        if self.firehose_tag:
            due.append(self.next_firehose_ack)
        waiting = [*self.awaiting_return.values(), *self.said_returned.values()]
        if waiting:
            due.append(min(deadline for deadline, _ in waiting))
        if self.checks_dirty:
            due.append(self.next_checks)
        if (fires := self.alerts.next_due()) is not None:
            due.append(now + max(0.0, fires - time.time()))
        if self.loads:
            due.append(now + 1.0)  # the queues' peaks, and each load's end
        if self.read_broker_events:
            due.append(self.next_brokers)
        due.append(self.next_frame if lively else self.last_frame + IDLE_FRAME)
        return min(due)
