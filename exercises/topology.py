"""The lab's diagram as a graph: nodes and edges with stable ids (docs/live-protocol.md)."""

from __future__ import annotations

import hashlib
import json
from collections import deque

from .spec import ExerciseSpec

YOU = "p:@you"  # the learner's own publishes from the page


def _binding_label(b) -> str:
    """A headers binding by its arguments, x-match first and the rest by name: the same
    label however the arguments were stored (a lab's edited topology comes back from the
    database with its keys in the database's order)."""
    if b.arguments:
        keys = sorted(b.arguments, key=lambda k: (k != "x-match", k))
        return ", ".join(f"{k}={b.arguments[k]}" for k in keys)
    return b.routing_key or "(no key)"


def lab_graph(spec: ExerciseSpec) -> dict:
    t = spec.topology
    nodes: list[dict] = []
    edges: list[dict] = []

    def edge(source: str, target: str, kind: str, label: str = "") -> None:
        edges.append(
            {
                "id": f"{kind}:{source}>{target}:{label}",
                "source": source,
                "target": target,
                "kind": kind,
                "label": label,
            }
        )

    nodes.append({"id": YOU, "kind": "producer", "label": "you", "detail": "publish form"})
    for p in spec.workloads.producers:
        keys = p.keys()
        nodes.append(
            {
                "id": f"p:{p.name}",
                "kind": "producer",
                "label": p.name,
                "detail": f"{p.rate:g} msg/s",
                "rate": p.rate,
            }
        )
        edge(f"p:{p.name}", f"x:{p.exchange}", "publish", ", ".join(keys))
    exchange_names = {x.name for x in t.exchanges}
    # What consumers publish of their own (a pipeline's or a saga's next event).
    emits = [
        emit
        for c in spec.workloads.consumers
        for emit in (c.behaviour.forward, c.behaviour.compensate)
        if emit is not None
    ]
    uses_default = (
        any(p.exchange == "" for p in spec.workloads.producers)
        or any(q.arguments.get("x-dead-letter-exchange") == "" for q in t.queues)
        or any(emit.exchange == "" for emit in emits)
    )
    if uses_default:
        nodes.append({"id": "x:", "kind": "exchange", "label": "(default)", "detail": "direct"})
    for x in t.exchanges:
        nodes.append({"id": f"x:{x.name}", "kind": "exchange", "label": x.name, "detail": x.type})
        if ae := x.arguments.get("alternate-exchange"):
            edge(f"x:{x.name}", f"x:{ae}", "alternate", "unroutable")
    for q in t.queues:
        queue = {"id": f"q:{q.name}", "kind": "queue", "label": q.name, "detail": q.type}
        nodes.append({**queue, "type": q.type})
        if uses_default:
            edge("x:", f"q:{q.name}", "binding", q.name)
        dlx = q.arguments.get("x-dead-letter-exchange")
        if dlx is not None and (dlx in exchange_names or dlx == ""):
            edge(
                f"q:{q.name}",
                f"x:{dlx}",
                "dead-letter",
                q.arguments.get("x-dead-letter-routing-key", ""),
            )
    # The broker's own exchanges (amq.direct, amq.topic, ...) used without being declared.
    builtin = (
        {p.exchange for p in spec.workloads.producers}
        | {b.source for b in t.bindings}
        | {emit.exchange for emit in emits}
    )
    for name in sorted(builtin - exchange_names - {""}):
        nodes.append(
            {"id": f"x:{name}", "kind": "exchange", "label": name, "detail": name.split(".")[-1]}
        )
    for b in t.bindings:
        prefix = "q:" if b.destination_type == "queue" else "x:"
        edge(f"x:{b.source}", f"{prefix}{b.destination}", "binding", _binding_label(b))
    for c in spec.workloads.consumers:
        nodes.append(
            {
                "id": f"c:{c.name}",
                "kind": "consumer",
                "label": c.name,
                "detail": f"prefetch {c.prefetch}, {c.ack} ack",
                "prefetch": c.prefetch,
                "ack": c.ack,
            }
        )
        edge(f"q:{c.queue}", f"c:{c.name}", "consume", "")
        if c.behaviour.park_after:
            edge(
                f"c:{c.name}",
                f"x:{c.behaviour.park_exchange}",
                "publish",
                c.behaviour.park_routing_key,
            )
        for emit in (c.behaviour.forward, c.behaviour.compensate):
            if emit is not None:
                edge(f"c:{c.name}", f"x:{emit.exchange}", "publish", emit.routing_key)
    return {"nodes": nodes, "edges": edges}


def topology_version(spec: ExerciseSpec) -> str:
    """A short name for the lab's topology as it is: a page compares it with the one a
    change announces to know whether its Topology panel is out of date, and a worker's
    keeper with the one its lab's monitor routes by."""
    return stored_topology_version(spec.topology.model_dump())


def stored_topology_version(topology: dict) -> str:
    """`topology_version` of a topology as a lab's row keeps it."""
    text = json.dumps(topology, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


class Router:
    """Paths through the graph for animation: exchange to queue along bindings."""

    def __init__(self, graph: dict):
        self.bindings: dict[str, list[str]] = {}
        self.dead_letter: dict[str, str] = {}
        self.consumers: dict[str, str] = {}
        for e in graph["edges"]:
            if e["kind"] == "binding":
                self.bindings.setdefault(e["source"], []).append(e["target"])
            elif e["kind"] == "dead-letter":
                self.dead_letter[e["source"][2:]] = e["target"][2:]
            elif e["kind"] == "consume":
                self.consumers[e["target"][2:]] = e["source"][2:]
        self._cache: dict[tuple[str, str], list[str]] = {}

    def path(self, exchange: str, queue: str) -> list[str]:
        key = (exchange, queue)
        if key not in self._cache:
            self._cache[key] = self._search(f"x:{exchange}", f"q:{queue}")
        return self._cache[key]

    def _search(self, start: str, goal: str) -> list[str]:
        came = {start: None}
        todo = deque([start])
        while todo:
            node = todo.popleft()
            if node == goal:
                path = []
                while node is not None:
                    path.append(node)
                    node = came[node]
                return path[::-1]
            for nxt in self.bindings.get(node, []):
                if nxt not in came:
                    came[nxt] = node
                    todo.append(nxt)
        return [start, goal]
