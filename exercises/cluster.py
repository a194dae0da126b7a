"""The lab page's broker panel, for a lab on a cluster (`broker: cluster`,
docs/cluster.md): the nodes and their state, the lab's connections on each, which node
leads each quorum queue and which members are online; and the faults: stop a node gently,
kill it, start it again. On a lab's own cluster they are its learner's; on a class's
cluster, the instructor's, from the class dashboard's Brokers panel.

A fault runs on a thread of the web process, so that the page is answered at once (a
gentle stop takes seconds); the panel, asked for again every two seconds, shows the
node as it goes. One fault at a time per node and process.
"""

from __future__ import annotations

import logging
import threading
import time

from django import db
from django.conf import settings
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from labconsole.broker import amqp, control
from labconsole.broker.brokers import CLUSTER
from labconsole.broker.management import BrokerError, ManagementClient
from labconsole.cluster.provider import Cluster, cluster_slot

from .models import LabCluster, LabSession
from .services import LabError, send_quietly

log = logging.getLogger(__name__)

ACTIONS = ("stop", "kill", "start")
_busy: dict[str, str] = {}  # node -> the fault under way, in this process
_busy_lock = threading.Lock()


def on_cluster(session: LabSession) -> bool:
    return session.spec.broker == CLUSTER


def lab_local_cluster(session: LabSession) -> Cluster | None:
    """The nodes the lab runs on; None for a lab on the shared broker, or whose cluster is
    gone (it went with the lab, or with its class)."""
    if not on_cluster(session) or session.cluster is None:
        return None
    return cluster_slot(session.cluster.slot)


class NodesNotYours(LabError):
    """A class's learner asked for a fault on the class's nodes: those are the
    instructor's."""


def lab_cluster_view(session: LabSession) -> dict | None:
    """The panel's content, or None for a lab on the shared broker (or whose cluster is
    gone)."""
    local = lab_local_cluster(session)
    if local is None:
        return None
    in_class = session.cluster.classroom_id is not None
    view = {
        "url": reverse("lab-brokers", args=[session.id]),
        "active": session.is_active,
        # In a class the nodes are the instructor's to stop and start, for every lab.
        "in_class": in_class,
        "nodes": [],
        "queues": [],
        "classic": [],
        "error": "",
    }
    connections: dict[str, int] = {}
    api = session.broker.api()
    try:
        connections = api.connections_per_node(session.vhost)
        for q in api.queue_placement(session.vhost):
            if q["name"] == amqp.firehose_queue():
                continue
            if q.get("type") == "classic":
                view["classic"].append(
                    {
                        "name": q["name"],
                        "node": _short(q.get("node") or ""),
                        "durable": bool(q.get("durable")),
                        "down": q.get("state") == "down",
                    }
                )
            if q.get("type") == "quorum":
                members = sorted(q.get("members") or [])
                online = set(q.get("online") or [])
                view["queues"].append(
                    {
                        "name": q["name"],
                        "leader": _short(q.get("leader") or ""),
                        "members": [{"name": _short(m), "online": m in online} for m in members],
                        "online": len(online & set(members)),
                        "size": len(members),
                    }
                )
    except BrokerError as exc:
        view["error"] = _("No node's management API answered: %(reason)s") % {"reason": exc.reason}
    leaders = {q["leader"] for q in view["queues"]}
    view["nodes"] = _nodes_view(
        local,
        connections=connections,
        leaders=leaders,
        action_url=None if in_class else lambda n: reverse("lab-broker-node", args=[session.id, n]),
    )
    return view


def classroom_cluster_view(classroom) -> dict:
    """The class dashboard's Brokers panel: the class's cluster (none yet, starting,
    running, failed) and each node with its state and the instructor's buttons."""
    from .cluster_pool import classroom_cluster, cluster_nodes_running

    view = {
        "url": reverse("class-brokers", args=[classroom.pk]),
        "start_url": reverse("class-brokers-start", args=[classroom.pk]),
        "state": "none",
        "running": 0,
        "size": settings.LAB_CLUSTER_SIZE,
        "error": "",
        "nodes": [],
        "labs": 0,
    }
    cluster = classroom_cluster(classroom=classroom)
    if cluster is None:
        return view
    view["state"] = {"in-use": "running"}.get(cluster.state, cluster.state)
    view["error"] = cluster.error.strip().splitlines()[0] if cluster.error else ""
    view["running"], view["size"] = cluster_nodes_running(cluster)
    if cluster.state == LabCluster.State.IN_USE:
        local = cluster_slot(cluster.slot)
        view["labs"] = cluster.labs.exclude(state=LabSession.State.ENDED).count()
        connections: dict[str, int] = {}
        try:  # every connection to it is a lab's of the class
            for c in local.management().listing("connections?columns=node"):
                connections[c["node"]] = connections.get(c["node"], 0) + 1
        except BrokerError as exc:
            view["error"] = _("No node's management API answered: %(reason)s") % {
                "reason": exc.reason
            }
        view["nodes"] = _nodes_view(
            local,
            connections=connections,
            leaders=set(),
            action_url=lambda n: reverse("class-broker-node", args=[classroom.pk, n]),
        )
    return view


def _nodes_view(local: Cluster, *, connections: dict, leaders: set, action_url) -> list:
    nodes = []
    for s in local.status():
        name = _short(s.name)
        nodes.append(
            {
                "name": name,
                "node": s.name,
                "state": _node_state(s),
                "busy": _busy.get(s.name, ""),
                "connections": connections.get(s.name, 0),
                "leads": name in leaders,
                "action_url": action_url(name) if action_url else "",
            }
        )
    return nodes


def _node_state(s) -> str:
    return "running" if s.running else ("stopped" if s.vm else "down")


def brokers_now(vhost: str, api: ManagementClient, local: Cluster) -> dict:
    """What a lab's timeline compares from one read to the next: each node's state, each
    quorum queue's leader and members online, each classic queue's node and whether it is
    down. Raises BrokerError when no node's management API answers."""
    nodes = {_short(s.name): _node_state(s) for s in local.status()}
    quorum, classic = {}, {}
    for q in api.queue_placement(vhost):
        if q["name"] == amqp.firehose_queue():
            continue
        if q.get("type") == "quorum":
            members = set(q.get("members") or [])
            quorum[q["name"]] = {
                "leader": _short(q.get("leader") or ""),
                "online": len(members & set(q.get("online") or [])),
                "size": len(members),
            }
        elif q.get("type") == "classic":
            classic[q["name"]] = {
                "node": _short(q.get("node") or ""),
                "down": q.get("state") == "down",
            }
    return {"nodes": nodes, "quorum": quorum, "classic": classic}


def broker_events(before: dict, after: dict) -> list[dict]:
    """What changed between two reads of `brokers_now`, as events of the lab's log (kind
    "broker"): a node's state, a quorum queue's leader or members online, a classic queue
    down or back. The page words them (static/labconsole/lab/main.js, brokerNote)."""
    t = time.time()
    out: list[dict] = []
    for node, state in after["nodes"].items():
        if before["nodes"].get(node, state) != state:
            out.append({"kind": "broker", "t": t, "node": node, "state": state})
    for name, q in after["quorum"].items():
        was = before["quorum"].get(name)
        if was is None:
            continue
        if q["leader"] != was["leader"]:
            out.append(
                {
                    "kind": "broker",
                    "t": t,
                    "queue": name,
                    "leader": q["leader"],
                    "was": was["leader"],
                }
            )
        if q["online"] != was["online"]:
            out.append(
                {"kind": "broker", "t": t, "queue": name, "online": q["online"], "size": q["size"]}
            )
    for name, q in after["classic"].items():
        was = before["classic"].get(name)
        if was is not None and q["down"] != was["down"]:
            out.append(
                {"kind": "broker", "t": t, "queue": name, "node": q["node"], "down": q["down"]}
            )
    return out


def broker_events_reader(vhost: str, api: ManagementClient, local: Cluster):
    """For a lab's monitor: a function that returns what changed since its last call (the
    first call only looks). While no node's API answers, it says nothing and keeps what it
    saw last."""
    seen: list[dict] = []

    def read() -> list[dict]:
        try:
            now = brokers_now(vhost, api, local)
        except BrokerError:
            return []
        events = broker_events(seen[0], now) if seen else []
        seen[:] = [now]
        return events

    return read


FAULT_MESSAGES = {
    "stop": _("Stopping RabbitMQ on %(node)s: its connections close, then it stops."),
    "kill": _("Killing %(node)s's Erlang VM."),
    "start": _("Starting %(node)s: it rejoins the cluster and catches up."),
}


def lab_node_fault(*, session: LabSession, node: str, action: str) -> str:
    """Starts `action` on node `node` of the lab's own cluster, on a thread of its own;
    returns what the page says meanwhile. Raises LabError for a lab not on a cluster, an
    ended lab, an unknown node or action, or a node with a fault under way, and
    NodesNotYours for a lab on its class's cluster."""
    if not on_cluster(session):
        raise LabError(_("This lab runs on the shared broker: its nodes are not yours to stop."))
    if not session.is_active or session.cluster is None:
        raise LabError(_("this lab has ended"))
    if session.cluster.classroom_id is not None:
        raise NodesNotYours(_("In this class, your instructor stops and starts the nodes."))
    _start_fault(session.cluster, node, action)
    # On the lab's timeline, before what the node does next.
    _tell_labs([session], {"node": node, "action": action, "workload": "@you"})
    return FAULT_MESSAGES[action] % {"node": node}


def classroom_node_fault(*, classroom, node: str, action: str) -> str:
    """The instructor's fault on a node of the class's cluster: on the timeline of every
    running lab of the class, as the instructor's."""
    from .cluster_pool import classroom_cluster

    cluster = classroom_cluster(classroom=classroom)
    if cluster is None or cluster.state != LabCluster.State.IN_USE:
        raise LabError(_("The class's brokers are not running: start them first."))
    _start_fault(cluster, node, action)
    labs = list(cluster.labs.exclude(state=LabSession.State.ENDED))
    _tell_labs(labs, {"node": node, "action": action, "workload": "@instructor"})
    return FAULT_MESSAGES[action] % {"node": node}


def _start_fault(cluster: LabCluster, node: str, action: str) -> None:
    if action not in ACTIONS:
        raise LabError(
            _("unknown action '%(action)s' (expected one of: %(actions)s)")
            % {"action": action, "actions": ", ".join(ACTIONS)}
        )
    local = cluster_slot(cluster.slot)
    try:
        target = local.node(node)
    except KeyError:
        raise LabError(
            _("no node '%(node)s' in the cluster (its nodes: %(nodes)s)")
            % {"node": node, "nodes": local.names()}
        ) from None
    with _busy_lock:
        if target.node in _busy:
            raise LabError(
                _("%(node)s is busy: %(what)s") % {"node": node, "what": _busy[target.node]}
            )
        _busy[target.node] = action
    threading.Thread(
        target=_run_fault, args=(target, action, cluster.pk), daemon=True, name=f"fault {node}"
    ).start()


def _tell_labs(labs: list[LabSession], event: dict) -> None:
    for lab in labs:
        send_quietly(control.monitor_key(lab.id), {"op": "broker", "event": event})


def _run_fault(target, action: str, cluster_id: int) -> None:
    started = time.monotonic()
    try:
        if action == "stop":
            target.stop_app()
        elif action == "kill":
            target.kill()
        elif target.vm_running():
            target.start_app()
        else:
            target.start()
        if action == "start":
            _trace_again(target, cluster_id)
        log.info(
            "cluster %s: %s %s in %.1f s",
            cluster_id,
            action,
            target.node,
            time.monotonic() - started,
        )
    except Exception:
        log.exception("cluster %s: %s %s failed", cluster_id, action, target.node)
    finally:
        with _busy_lock:
            _busy.pop(target.node, None)


def _trace_again(target, cluster_id: int) -> None:
    """A node started again traces nothing: the firehose of every running lab on the
    cluster is turned on there again."""
    api = ManagementClient(target.api_url, "guest", "guest")
    try:
        for session in LabSession.objects.filter(cluster_id=cluster_id).exclude(
            state=LabSession.State.ENDED
        ):
            api.tracing_on(session.vhost)
    except BrokerError:
        log.warning("firehose not turned on again at %s", target.node, exc_info=True)
    finally:
        db.connection.close()  # this thread's


def _short(node: str) -> str:
    return node.split("@", 1)[0]
