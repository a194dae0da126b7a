"""The lab page's broker panel, for a lab on the local cluster (`broker: cluster`,
docs/cluster.md): the nodes and their state, the lab's connections on each, which node
leads each quorum queue and which members are online; and the learner's faults: stop a
node gently, kill it, start it again.

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
from labconsole.cluster.local import LocalCluster

from .models import LabSession
from .services import LabError, send_quietly

log = logging.getLogger(__name__)

ACTIONS = ("stop", "kill", "start")
_busy: dict[str, str] = {}  # node -> the fault under way, in this process
_busy_lock = threading.Lock()


def on_cluster(session: LabSession) -> bool:
    return session.spec.broker == CLUSTER


_boot_lock = threading.Lock()
_boot: dict = {"thread": None, "error": ""}  # this process's `labcluster up`, if any


def cluster_boot() -> None:
    """Brings the lab cluster up on a thread of this process (about 20 s), unless it is
    being brought up here already; another process doing so is waited for (the cluster's
    lock). A cluster exercise's page asks for it when its learner needs the brokers."""
    with _boot_lock:
        thread = _boot["thread"]
        if thread is not None and thread.is_alive():
            return
        _boot["error"] = ""
        thread = threading.Thread(target=_boot_now, daemon=True, name="lab cluster up")
        _boot["thread"] = thread
        thread.start()


def _boot_now() -> None:
    try:
        seconds = LocalCluster.from_settings().up()
        log.info("lab cluster up in %.1f s", seconds)
    except Exception as exc:  # noqa: BLE001 - said on the page
        log.exception("lab cluster not brought up")
        _boot["error"] = str(exc)


def cluster_progress() -> dict:
    """How far the lab cluster is: nodes running of its size, whether a process is
    bringing it up (or down), and what went wrong if this process's try failed. It is
    ready for labs when no process is at it and a node runs: a node another learner
    killed does not keep everyone else from starting a lab."""
    cluster = LocalCluster.from_settings()
    states = cluster.status()
    running = sum(1 for s in states if s.running)
    thread = _boot["thread"]
    booting = (thread is not None and thread.is_alive()) or cluster.busy()
    return {
        "running": running,
        "size": len(states),
        "ready": running > 0 and not booting,
        "booting": booting,
        "error": "" if booting else _boot["error"],
    }


def cluster_sweep_idle(idle_minutes: float) -> bool:
    """Takes the lab cluster down once no lab has run on it for `idle_minutes` (0: never);
    True if it did. A cluster with labs on it is marked used."""
    if not settings.LAB_CLUSTER_SIZE or idle_minutes <= 0:
        return False
    cluster = LocalCluster.from_settings()
    if not cluster.ours():
        return False
    if _labs_on_cluster():
        cluster.touch()
        return False
    idle = cluster.idle_seconds()
    if idle is None or idle < idle_minutes * 60:
        return False
    cluster.down()
    log.info("lab cluster down: no lab ran on it for %.0f min", idle / 60)
    return True


def _labs_on_cluster() -> list[LabSession]:
    """The labs that run on the cluster now: a fault on a node reaches every one."""
    return [s for s in LabSession.objects.exclude(state=LabSession.State.ENDED) if on_cluster(s)]


def lab_cluster_view(session: LabSession) -> dict | None:
    """The panel's content, or None for a lab on the shared broker."""
    if not on_cluster(session):
        return None
    cluster = LocalCluster.from_settings()
    states = cluster.status()
    view = {
        "url": reverse("lab-brokers", args=[session.id]),
        "active": session.is_active,
        "nodes": [],
        "queues": [],
        "classic": [],
        "error": "",
        # Other labs on these nodes: what this learner does to them happens to those too.
        "others": sum(1 for s in _labs_on_cluster() if s.id != session.id),
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
    for s in states:
        name = _short(s.name)
        busy = _busy.get(s.name, "")
        view["nodes"].append(
            {
                "name": name,
                "node": s.name,
                "state": _node_state(s),
                "busy": busy,
                "connections": connections.get(s.name, 0),
                "leads": name in leaders,
                "action_url": reverse("lab-broker-node", args=[session.id, name]),
            }
        )
    return view


def _node_state(s) -> str:
    return "running" if s.running else ("stopped" if s.vm else "down")


def brokers_now(vhost: str, api: ManagementClient) -> dict:
    """What a lab's timeline compares from one read to the next: each node's state, each
    quorum queue's leader and members online, each classic queue's node and whether it is
    down. Raises BrokerError when no node's management API answers."""
    nodes = {_short(s.name): _node_state(s) for s in LocalCluster.from_settings().status()}
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


def broker_events_reader(vhost: str, api: ManagementClient):
    """For a lab's monitor: a function that returns what changed since its last call (the
    first call only looks). While no node's API answers, it says nothing and keeps what it
    saw last."""
    seen: list[dict] = []

    def read() -> list[dict]:
        try:
            now = brokers_now(vhost, api)
        except BrokerError:
            return []
        events = broker_events(seen[0], now) if seen else []
        seen[:] = [now]
        return events

    return read


def lab_node_fault(*, session: LabSession, node: str, action: str) -> str:
    """Starts `action` on the cluster's node `node` on a thread of its own; returns what
    the page says meanwhile. Raises LabError for a lab not on the cluster, an ended lab,
    an unknown node or action, or a node with a fault under way."""
    if not on_cluster(session):
        raise LabError(_("This lab runs on the shared broker: its nodes are not yours to stop."))
    if not session.is_active:
        raise LabError(_("this lab has ended"))
    if action not in ACTIONS:
        raise LabError(
            _("unknown action '%(action)s' (expected one of: %(actions)s)")
            % {"action": action, "actions": ", ".join(ACTIONS)}
        )
    cluster = LocalCluster.from_settings()
    try:
        target = cluster.node(node)
    except KeyError:
        raise LabError(
            _("no node '%(node)s' in the cluster (its nodes: %(nodes)s)")
            % {"node": node, "nodes": cluster.names()}
        ) from None
    with _busy_lock:
        if target.node in _busy:
            raise LabError(
                _("%(node)s is busy: %(what)s") % {"node": node, "what": _busy[target.node]}
            )
        _busy[target.node] = action
    threading.Thread(
        target=_run_fault, args=(target, action, session.id), daemon=True, name=f"fault {node}"
    ).start()
    # On the timeline of every lab on the cluster, before what the node does next: for
    # this one the learner did it, for the others another lab's learner did.
    for lab in _labs_on_cluster():
        who = "@you" if lab.id == session.id else "@other"
        send_quietly(
            control.monitor_key(lab.id),
            {"op": "broker", "event": {"node": node, "action": action, "workload": who}},
        )
    return {
        "stop": _("Stopping RabbitMQ on %(node)s: its connections close, then it stops."),
        "kill": _("Killing %(node)s's Erlang VM."),
        "start": _("Starting %(node)s: it rejoins the cluster and catches up."),
    }[action] % {"node": node}


def _run_fault(target, action: str, session_id: str) -> None:
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
            _trace_again(target)
        log.info(
            "lab %s: %s %s in %.1f s", session_id, action, target.node, time.monotonic() - started
        )
    except Exception:
        log.exception("lab %s: %s %s failed", session_id, action, target.node)
    finally:
        with _busy_lock:
            _busy.pop(target.node, None)


def _trace_again(target) -> None:
    """A node started again traces nothing: the firehose of every running lab on the
    cluster is turned on there again."""
    api = ManagementClient(target.api_url, "guest", "guest")
    try:
        for session in LabSession.objects.exclude(state=LabSession.State.ENDED):
            if on_cluster(session):
                api.tracing_on(session.vhost)
    except BrokerError:
        log.warning("firehose not turned on again at %s", target.node, exc_info=True)
    finally:
        db.connection.close()  # this thread's


def _short(node: str) -> str:
    return node.split("@", 1)[0]
