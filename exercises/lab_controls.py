"""A sandbox's own controls on the lab page (docs/sandboxes.md, "Controls"): policies in
the topology editor, producers and consumers added and removed, queues purged and peeked
at. Offered where `selectors.lab_allows_sandbox_controls`; the views check who may act.

Added and removed workloads are kept in the lab's own copy of the document
(`LabSession.source`), written back with the lab's topology as it is then: the page, the
monitor, the checks and the topology editor all read `session.spec`, so a consumer added
here is drawn, counted and keeps its queue from being deleted like one the exercise
declared. The document the lab started from is kept aside (`LabSession.origin`): a reset
starts from it, with the workloads and topology the sandbox began with."""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Any

import pika.exceptions as px
import yaml
from django.db import transaction
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from labconsole.broker import amqp, control
from labconsole.broker.management import BrokerError
from labconsole.flow.reporter import body_text

from . import quotas, services
from .models import LabSession, Workload
from .selectors import lab_allows_sandbox_controls
from .spec import ExerciseSpec, SpecError, validate_data
from .topology import lab_graph, topology_version

log = logging.getLogger(__name__)

#: The workload kinds and the list of the document each is kept in.
WORKLOAD_LISTS = {Workload.Kind.PRODUCER: "producers", Workload.Kind.CONSUMER: "consumers"}
#: Messages a peek shows at most (the newest).
PEEK_LIMIT = 20
#: Messages a peek at a stream reads at most, from its first offset, to show the newest.
STREAM_SCAN = 2000
#: Seconds a stream's reader waits for one more message before it has read them all.
STREAM_QUIET = 0.5
#: Seconds a peek waits for the lab's monitor to answer with its trace.
TRACE_TIMEOUT = 3.0
#: A message's events that take it out of the queue it was delivered from.
SETTLED = {"acked", "parked", "compensated"}


class WorkloadRefused(services.TopologyRefused):
    """A workload added or removed broke a rule of the exercise format: `errors` holds
    (field, message) pairs, the field as the add form names it ("rate",
    "behaviour.fail"), or "" for the change as a whole."""


def _require_controls(session: LabSession) -> None:
    if not lab_allows_sandbox_controls(session):
        raise services.LabError(_("This lab is not a sandbox: it has no such controls."))
    if not session.is_active:
        raise services.LabError(_("this lab has ended"))


# --- policies ---------------------------------------------------------------------------------


def lab_policy_declare(*, session: LabSession, item: dict[str, Any]) -> services.TopologyChanged:
    """Declares a policy (as in an exercise document: name, pattern, apply_to, priority,
    definition), checked by the format's `Policy` rules, made on the broker and kept in
    the lab's topology like any topology edit (services.lab_topology_change)."""
    _require_controls(session)
    return services.lab_topology_change(session=session, kind="policy", action="declare", item=item)


def lab_policy_delete(*, session: LabSession, name: str) -> services.TopologyChanged:
    _require_controls(session)
    return services.lab_topology_change(
        session=session, kind="policy", action="delete", item={"name": name}
    )


def lab_policies_applied(*, session: LabSession) -> list[dict]:
    """The lab's policies, each with the queues and exchanges it applies to now, as the
    broker says (a higher priority policy, or a pattern that matches nothing, leaves it
    none). The lists are empty when the broker does not answer."""
    try:
        targets = session.broker.api().policy_targets(session.vhost)
    except BrokerError:
        log.warning("lab %s: policies' targets not read", session.id, exc_info=True)
        targets = []
    return [
        {
            "name": p.name,
            "pattern": p.pattern,
            "apply_to": p.apply_to,
            "priority": p.priority,
            "definition": p.definition,
            "queues": [
                {"name": t["name"], "effective": t["effective"]}
                for t in targets
                if t["kind"] == "queue" and t["policy"] == p.name
            ],
            "exchanges": [
                t["name"] for t in targets if t["kind"] == "exchange" and t["policy"] == p.name
            ],
        }
        for p in session.spec.topology.policies
    ]


# --- workloads --------------------------------------------------------------------------------


def _document(spec: ExerciseSpec) -> str:
    """The exercise as YAML, which reads back as the same exercise."""
    return yaml.safe_dump(spec.model_dump(mode="json"), allow_unicode=True, sort_keys=False)


def _with_workloads(row: LabSession, workloads: dict, focus: str, *, deleting: bool):
    """The lab's exercise with other workloads, if it follows every rule of the format;
    else WorkloadRefused. A stopped workload costs the vhost nothing: the sandbox's
    connections and channels are checked for the running ones, when one starts
    (quotas.sandbox_start_refusal, when it is added to start or starts)."""
    spec = row.spec
    try:
        return validate_data({**spec.model_dump(), "workloads": workloads})
    except SpecError as exc:
        raise WorkloadRefused(services._spec_problems(exc, focus, deleting=deleting)) from None


def _announce_workloads(session: LabSession, spec: ExerciseSpec, change: dict) -> None:
    """Every viewer draws the new graph, and the monitor counts by it (as a topology edit
    does); `change` says which workload came or went, for the pages' cards."""
    graph = lab_graph(spec)
    version = topology_version(spec)
    queues = [q.name for q in spec.topology.queues]
    services.send_quietly(
        control.monitor_key(session.id),
        {"op": "topology", "graph": graph, "queues": queues, "version": version},
    )
    services._announce(
        session,
        "topology",
        {
            "graph": graph,
            "exchanges": [*(x.name for x in spec.topology.exchanges), ""],
            "version": version,
            "change": change,
        },
    )


def _save_document(row: LabSession, spec: ExerciseSpec) -> None:
    """Keeps `spec` as the lab's document; the first time, the one it started from is kept
    aside (`origin`), for a reset to start from."""
    if not row.origin:
        row.origin = row.source
    row.source = _document(spec)
    row.save(update_fields=["source", "origin"])
    row.__dict__["spec"] = spec


def lab_workload_add(
    *, session: LabSession, kind: str, item: dict[str, Any], start: bool = True
) -> Workload:
    """Adds a producer or consumer (`item` as in an exercise document) to a sandbox: checked
    by the format's rules as a workload of the exercise would be (its bounds, and a queue or
    exchange the topology has), kept in the lab's document, drawn on every viewer's
    diagram, and started unless `start` is false."""
    _require_controls(session)
    if kind not in WORKLOAD_LISTS:
        raise services.LabError(_("a workload is a producer or a consumer"))
    plural = WORKLOAD_LISTS[kind]
    with transaction.atomic():
        row = LabSession.objects.select_for_update().get(pk=session.pk)
        if not row.is_active:
            raise services.LabError(_("this lab has ended"))
        workloads = row.spec.workloads.model_dump()
        workloads[plural].append(item)
        focus = f"workloads.{plural}[{len(workloads[plural]) - 1}]"
        spec = _with_workloads(row, workloads, focus, deleting=False)
        name = getattr(spec.workloads, plural)[-1].name
        settings = next(data for n, _k, data, _a in services._workload_settings(spec) if n == name)
        if start and (
            refusal := quotas.sandbox_start_refusal(
                session=row, workload=Workload(session=row, kind=kind, settings=settings)
            )
        ):
            # One that may not start is not added either: nothing half-done.
            raise services.LimitReached(refusal)
        workload = Workload.objects.create(session=row, name=name, kind=kind, settings=settings)
        _save_document(row, spec)
    session.source, session.__dict__["spec"] = row.source, spec
    workload.session = session
    _announce_workloads(session, spec, {"kind": "workload", "action": "declare", "item": name})
    if start:
        return services.workload_start(workload=workload)
    services._announce_workload(workload)
    return workload


def lab_workload_remove(*, session: LabSession, name: str) -> None:
    """Stops a sandbox's producer or consumer and removes it from the lab, its page and
    every viewer's diagram. One that the lab's checks or alerts name is refused."""
    _require_controls(session)
    with transaction.atomic():
        row = LabSession.objects.select_for_update().get(pk=session.pk)
        workload = row.workloads.filter(name=name).first()
        if workload is None:
            raise WorkloadRefused(
                [("name", format_lazy(_("'{name}' is not a workload of this lab"), name=name))]
            )
        workloads = row.spec.workloads.model_dump()
        plural = WORKLOAD_LISTS[workload.kind]
        workloads[plural] = [w for w in workloads[plural] if w["name"] != name]
        spec = _with_workloads(row, workloads, "(none)", deleting=True)
        if workload.running:
            services.send_quietly(control.workload_key(workload.id), {"op": "stop"})
        workload.delete()
        _save_document(row, spec)
    session.source, session.__dict__["spec"] = row.source, spec
    _announce_workloads(session, spec, {"kind": "workload", "action": "delete", "item": name})


# --- queues -------------------------------------------------------------------------------------


def _queue_of(session: LabSession, name: str):
    queue = session.spec.queue(name)
    if queue is None:
        raise WorkloadRefused(
            [("queue", format_lazy(_("'{name}' is not a queue of this lab"), name=name))]
        )
    return queue


def _lab_channel(session: LabSession, purpose: str):
    """A connection of the lab's own user and a channel on it (closed by the caller)."""
    params = session.broker.parameters(
        vhost=session.vhost,
        user=session.rabbit_user,
        password=session.rabbit_password,
        name=f"labconsole-{purpose}",
        blocked_timeout=services.PUBLISH_BLOCKED_TIMEOUT,
    )
    try:
        connection = amqp.connect(params)
    except px.AMQPError as exc:
        raise services.LabError(
            format_lazy(_("could not connect to the lab's vhost: {error}"), error=repr(exc))
        ) from exc
    return connection, connection.channel()


def _broker_refused(exc: px.ChannelClosedByBroker) -> services.LabError:
    return services.LabError(
        format_lazy(
            _("the broker refused it: {code} {text}"), code=exc.reply_code, text=exc.reply_text
        )
    )


def lab_queue_purge(*, session: LabSession, queue: str) -> int:
    """Purges a queue of the sandbox (queue.purge, as the lab's user); returns how many
    ready messages the broker removed. A stream cannot be purged: its retention removes
    messages."""
    _require_controls(session)
    if _queue_of(session, queue).type == "stream":
        retention = _(
            "a stream cannot be purged: its retention (x-max-age, x-max-length-bytes) "
            "removes messages"
        )
        raise WorkloadRefused([("queue", retention)])
    connection, channel = _lab_channel(session, "purge")
    try:
        return channel.queue_purge(queue).method.message_count
    except px.ChannelClosedByBroker as exc:
        raise _broker_refused(exc) from exc
    finally:
        amqp.close_quietly(connection)


@dataclass(frozen=True)
class Peek:
    """What a peek found: the newest `messages` (oldest first), where they were read from
    (`source`: "stream" or "trace"), how many the queue holds now (`depth`, None for a
    stream) and, from the trace, how many of them it could show (`traced`)."""

    queue: str
    source: str
    messages: list[dict] = field(default_factory=list)
    depth: int | None = None
    traced: int = 0


def lab_queue_peek(*, session: LabSession, queue: str) -> Peek:
    """The newest messages of a queue, without taking or marking any. A stream is read by a
    consumer from its first offset, which removes nothing. For a classic or quorum queue,
    nothing is read from the queue at all: the messages are those the lab's firehose saw
    routed to it that no consumer has acknowledged, rejected or parked, as the lab's
    monitor keeps them for the event log, at most as many as the queue holds now."""
    _require_controls(session)
    if _queue_of(session, queue).type == "stream":
        return _peek_stream(session, queue)
    return _peek_trace(session, queue)


def _message_view(event: dict) -> dict:
    return {
        "message_id": event.get("message_id"),
        "exchange": event.get("exchange", ""),
        "routing_key": event.get("routing_key", ""),
        "t": event.get("t"),
        "properties": event.get("properties") or {},
        "headers": event.get("headers") or {},
        "body": event.get("body", ""),
        "offset": event.get("offset"),
    }


def _peek_stream(session: LabSession, queue: str) -> Peek:
    newest: collections.deque = collections.deque(maxlen=PEEK_LIMIT)
    connection, channel = _lab_channel(session, "peek")
    try:
        # A stream's consumer must ack manually, with a prefetch; acks on a stream only
        # let the broker send more, and remove nothing.
        channel.basic_qos(prefetch_count=100)
        reads = channel.consume(
            queue, arguments={"x-stream-offset": "first"}, inactivity_timeout=STREAM_QUIET
        )
        for n, (method, props, body) in enumerate(reads):
            if method is None:
                break
            channel.basic_ack(method.delivery_tag)
            headers = dict(props.headers or {})
            offset = headers.pop("x-stream-offset", None)
            newest.append(
                _message_view(
                    {
                        "message_id": props.message_id,
                        "exchange": method.exchange,
                        "routing_key": method.routing_key,
                        "t": props.timestamp,
                        "properties": _properties(props),
                        "headers": headers,
                        "body": body_text(body),
                        "offset": offset,
                    }
                )
            )
            if n + 1 >= STREAM_SCAN:
                break
    except px.ChannelClosedByBroker as exc:
        raise _broker_refused(exc) from exc
    finally:
        amqp.close_quietly(connection)
    return Peek(queue=queue, source="stream", messages=list(newest))


def _properties(props) -> dict:
    names = ("content_type", "delivery_mode", "priority", "correlation_id", "reply_to")
    found = {n: getattr(props, n) for n in names if getattr(props, n) is not None}
    if props.expiration is not None:
        found["expiration"] = props.expiration
    if props.app_id is not None:
        found["app_id"] = props.app_id
    return found


def _ready_now(session: LabSession, queue: str) -> int:
    connection, channel = _lab_channel(session, "peek")
    try:
        return channel.queue_declare(queue, passive=True).method.message_count
    except px.ChannelClosedByBroker as exc:
        raise _broker_refused(exc) from exc
    finally:
        amqp.close_quietly(connection)


def _peek_trace(session: LabSession, queue: str) -> Peek:
    snapshot = control.ask(
        control.monitor_key(session.id), {"op": "snapshot"}, timeout=TRACE_TIMEOUT
    )
    if snapshot is None:
        raise services.LabError(
            _(
                "the lab's monitor did not answer, so there is no trace to read; try again "
                "in a moment"
            )
        )
    # Ready messages exactly (a passive declare), and those the lab's consumers hold
    # unacknowledged as they report them.
    depth = _ready_now(session, queue) + int(
        (snapshot.get("queues") or {}).get(queue, {}).get("unacked") or 0
    )
    events = snapshot.get("events") or []
    settled = {
        e.get("message_id")
        for e in events
        if e.get("queue") == queue
        and (e["kind"] in SETTLED or (e["kind"] in ("rejected", "nacked") and not e.get("requeue")))
    }
    routed = [
        e
        for e in events
        if e.get("kind") == "published"
        and queue in (e.get("routed_queues") or ())
        and e.get("message_id") not in settled
    ]
    # A queue gives out its oldest first: what it still holds are the newest routed to it.
    shown = routed[-min(depth, PEEK_LIMIT) :] if depth else []
    return Peek(
        queue=queue,
        source="trace",
        messages=[_message_view(e) for e in shown],
        depth=depth,
        traced=min(len(routed), depth),
    )
