"""The sweeper: reconciles the broker's lab vhosts and users with the database.

Three things can leave the two apart: a lab ended while the broker was away (its vhost and
user are still there: `teardown_pending`), a process that died between making a vhost and
recording the lab, and a vhost deleted behind the console's back (a lab that cannot run).

Only names this console made are touched. Lab vhost names do not say which console made
them, and several consoles may share a broker, so provisioning tags each lab vhost and
user with this console's mark and the time it was made (`amqp.lab_tags`); a name without
this console's mark is never deleted, whatever it is called.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.utils import timezone

from labconsole.broker import amqp
from labconsole.broker.brokers import CLUSTER, SHARED, LabBroker, lab_broker
from labconsole.broker.management import BrokerError

from .models import LabCluster, LabSession
from .services import lab_session_stop, lab_session_teardown

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    torn_down: list[str] = field(default_factory=list)  # pending teardowns now done
    vhosts: list[str] = field(default_factory=list)  # orphan vhosts deleted
    users: list[str] = field(default_factory=list)  # orphan users deleted
    ended: list[str] = field(default_factory=list)  # running labs whose vhost was gone


def _ours(items: list[dict], *, made_before: float) -> dict[str, str]:
    """{name: lab id} of the vhosts or users with this console's mark that were made
    before `made_before` (seconds since the epoch)."""
    mark = amqp.lab_mark()
    found = {}
    for item in items:
        lab_id = amqp.lab_session_id(item["name"])
        tags = item.get("tags") or []
        if isinstance(tags, str):
            tags = tags.split(",")
        made = amqp.lab_made(tags)
        if lab_id and mark in tags and made is not None and made < made_before:
            found[item["name"]] = lab_id
    return found


def _live(lab_ids) -> set[str]:
    return set(
        LabSession.objects.filter(pk__in=set(lab_ids))
        .exclude(state=LabSession.State.ENDED)
        .values_list("pk", flat=True)
    )


def labs_sweep(*, grace_seconds: float) -> SweepResult:
    """One round of the sweeper; raises BrokerError if the shared broker does not answer.

    1. Deletes the vhost and user of every ended lab whose teardown is pending.
    2. Deletes vhosts and users with this console's mark, made more than `grace_seconds`
       ago, of no lab that is starting or running. The grace covers a lab whose vhost is
       made but whose row is not yet visible (a transaction not yet committed); a lab
       being made or reset is in the `starting` state and is never touched.
    3. Ends the running labs whose vhost is gone (looked up once more before each).

    2 and 3 are done on the shared broker, then on each running cluster of the pool
    (docs/cluster.md) that answers.
    """
    result = SweepResult()

    for session in LabSession.objects.filter(
        state=LabSession.State.ENDED, teardown_pending=True
    ).order_by("ended_at"):
        if lab_session_teardown(session=session):
            result.torn_down.append(session.id)

    _sweep_broker(
        lab_broker(SHARED), grace_seconds, result, LabSession.objects.filter(cluster=None)
    )
    for cluster in LabCluster.objects.filter(
        state__in=[LabCluster.State.WARM, LabCluster.State.IN_USE]
    ):
        try:
            _sweep_broker(
                lab_broker(CLUSTER, slot=cluster.slot),
                grace_seconds,
                result,
                LabSession.objects.filter(cluster=cluster),
            )
        except BrokerError as exc:
            log.info("sweep: cluster %s did not answer (%s)", cluster.slot, exc.reason)

    if result.torn_down or result.vhosts or result.users or result.ended:
        log.info("sweep: %s", result)
    return result


def _sweep_broker(broker: LabBroker, grace_seconds: float, result: SweepResult, labs) -> None:
    """Sweeps one broker, whose labs are `labs` (a query of LabSession)."""
    api = broker.api()
    listed_at = timezone.now()
    vhosts = api.vhosts()
    users = api.users()
    made_before = time.time() - grace_seconds

    for listed, delete, removed in (
        (vhosts, api.delete_vhost, result.vhosts),
        (users, api.delete_user, result.users),
    ):
        ours = _ours(listed, made_before=made_before)
        live = _live(ours.values())
        for name, lab_id in sorted(ours.items()):
            if lab_id not in live:
                delete(name)
                removed.append(name)

    # Labs recorded as running before the list was read: their vhost was in it unless it
    # was deleted (a reset in between is `starting`, or has made it again: looked up).
    names = {v["name"] for v in vhosts}
    for session in labs.filter(
        state=LabSession.State.RUNNING, created_at__lt=listed_at - timedelta(seconds=1)
    ):
        if session.spec.broker != broker.name:
            continue
        if session.vhost in names or api.vhost_exists(session.vhost):
            continue
        ended = LabSession.objects.filter(
            pk=session.pk, state=LabSession.State.RUNNING, generation=session.generation
        ).update(state=LabSession.State.ENDED, ended_at=timezone.now())
        if ended:
            session.refresh_from_db()
            lab_session_stop(session=session)
            result.ended.append(session.id)


# --- trial labs (the admin's "Try it") ----------------------------------------------------


def _watched_labs(broker: LabBroker) -> set[str]:
    """The routing keys of the labs that some web process has a hub for: a page of the lab
    is open there (or closed less than FLOW_HUB_GRACE_SECONDS ago). Each hub binds a queue
    of its own to the lab's keys on the flow exchange (labconsole/flow/stream.py), and the
    queue goes with its connection, so the broker's list holds across every web process
    and forgets one that died."""
    flow = amqp.flow_exchange()
    return {
        b["routing_key"]
        for b in broker.api().bindings(amqp.console_vhost())
        if b["source"] == flow and b["destination_type"] == "queue"
    }


def trials_sweep(*, grace_seconds: float, idle_minutes: float) -> list[str]:
    """Ends the trial labs nobody uses any more; returns their ids. A trial ends once no
    page of it has been open for `grace_seconds` (the socket's close is its last sight,
    exercises/consumers.py), or nobody has looked at it for `idle_minutes` (its open page
    pings, so this one holds while the broker cannot say who watches)."""
    now = timezone.now()
    trials = LabSession.objects.filter(trial=True).exclude(state=LabSession.State.ENDED)
    unseen = now - timedelta(seconds=grace_seconds)
    if not trials.filter(last_seen_at__lt=unseen).exists():
        return []
    try:
        watched = _watched_labs(lab_broker(SHARED))
    except BrokerError as exc:
        log.info("trial sweep: the broker cannot say who watches (%s)", exc.reason)
        unseen = min(unseen, now - timedelta(minutes=idle_minutes))
        watched = set()
    idle = now - timedelta(minutes=idle_minutes)
    ended = []
    for session in trials.filter(last_seen_at__lt=unseen):
        if session.last_seen_at >= idle and amqp.lab_key(session.id, "status") in watched:
            continue
        # Looked up again: a page that opened since the list was read has touched it.
        if LabSession.objects.filter(pk=session.pk, last_seen_at__lt=unseen).exists():
            lab_session_stop(session=session)
            ended.append(session.id)
    if ended:
        log.info("trial sweep: ended %s", ended)
    return ended
