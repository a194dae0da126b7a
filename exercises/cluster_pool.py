"""The pool of clusters (docs/cluster.md): numbered slots, each a cluster of its own (its
node names, ports and directory with the local provider; `cluster_slot` in
labconsole/cluster/provider.py), tracked in the database (`LabCluster`) so that every web
and worker process sees one pool.

- A cluster lab takes a warm cluster (booted, no lab on it yet) at once, and the pool boots
  another, so that LAB_CLUSTER_WARM stay warm. With none warm, the learner asks for one
  from the exercise's page: it boots for them and is kept for them RESERVE_MINUTES.
- A class has one cluster for all its labs: taken from the pool, or booted for it.
- At most LAB_CLUSTER_MAX clusters exist at once (booting, warm, in use or going), and no
  more than the provider has (compose: one).
- A lab's own cluster goes when the lab ends; a class's when the class ends.

Boots and removals run on a thread of the process that asks for them (a web process, or
the worker running the sweep); the slot's lock file keeps two processes from working on
one slot at once. A boot or removal whose process died leaves its row booting or stopping
with the lock free: the sweep removes what is left.
"""

from __future__ import annotations

import logging
import math
import threading
from datetime import datetime, timedelta

from django import db
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, Q, Value, When
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from labconsole.cluster.provider import (
    Cluster,
    cluster_slot,
    provider_max_slots,
    provider_slots,
)

from .models import Classroom, LabCluster, LabSession

log = logging.getLogger(__name__)

State = LabCluster.State
RESERVE_MINUTES = 5  # a cluster booted for a learner waits this long for their lab
ORPHAN_SECONDS = 10  # a boot or removal with no process at it for this long is over


class NoCluster(Exception):
    """No cluster can be had now; the message says why and what to do."""


def pool_enabled() -> bool:
    return bool(settings.LAB_CLUSTER_SIZE and settings.LAB_CLUSTER_MAX)


def local_cluster(cluster: LabCluster) -> Cluster:
    """The nodes of the cluster's slot, from the provider of LAB_CLUSTER_PROVIDER."""
    return cluster_slot(cluster.slot)


# --- booting and removing -----------------------------------------------------------------


def cluster_boot(
    *, reserved_for=None, classroom: Classroom | None = None, wait: bool = False
) -> LabCluster | None:
    """Takes the first free slot and boots its cluster, on a thread (or here, with `wait`);
    None when LAB_CLUSTER_MAX clusters exist already. A cluster booted for a learner is
    kept for them; one booted for a class is in use by it from the start."""
    while True:
        taken = set(LabCluster.objects.values_list("slot", flat=True))
        free = [k for k in range(1, provider_max_slots() + 1) if k not in taken]
        if not free:
            return None
        try:
            with transaction.atomic():
                cluster = LabCluster.objects.create(
                    slot=free[0], classroom=classroom, reserved_for=reserved_for
                )
        except IntegrityError:
            continue  # another process took that slot a moment ago
        break
    if wait:
        _boot(cluster.pk)
        cluster.refresh_from_db()
    else:
        _in_background(_boot, cluster.pk, name=f"cluster {cluster.slot} up")
    return cluster


def _in_background(target, *args, name: str) -> None:
    def run() -> None:
        try:
            target(*args)
        finally:
            db.connection.close()  # this thread's

    thread = threading.Thread(target=run, daemon=True, name=name)
    # After the caller's transaction: the thread reads the row it made.
    transaction.on_commit(thread.start)


def _boot(pk: int) -> None:
    cluster = LabCluster.objects.get(pk=pk)
    local = local_cluster(cluster)
    try:
        if local.ours():
            local.down()  # what a process that died in this slot left
        seconds = local.up()
    except Exception as exc:  # noqa: BLE001 - kept on the row, said on the page
        log.exception("cluster %s not brought up", cluster.slot)
        LabCluster.objects.filter(pk=pk, state=State.BOOTING).update(
            state=State.FAILED, error=str(exc)[:2000], changed_at=timezone.now()
        )
        try:
            local.down()
        except Exception:  # noqa: BLE001 - the sweep tries again
            log.exception("cluster %s not removed after its failed boot", cluster.slot)
        return
    _booted(cluster)
    log.info("cluster %s up in %.1f s", cluster.slot, seconds)


def _booted(cluster: LabCluster) -> None:
    """A class's cluster is in use once up; another is warm, and kept for the learner it
    is for now (one may have taken it over while it booted). One removed meanwhile (its
    class ended, the pool was emptied) is left to the removal."""
    now = timezone.now()
    kept = now + timedelta(minutes=RESERVE_MINUTES)
    LabCluster.objects.filter(pk=cluster.pk, state=State.BOOTING).update(
        state=State.IN_USE if cluster.classroom_id else State.WARM,
        reserved_until=Case(When(reserved_for__isnull=False, then=Value(kept)), default=None),
        changed_at=now,
        used_at=now,
    )


def cluster_remove(*, cluster: LabCluster, wait: bool = False) -> None:
    """Takes the cluster down and removes its files, then its row, on a thread (or here,
    with `wait`). Nothing if it is being removed already."""
    if not (
        LabCluster.objects.filter(pk=cluster.pk)
        .exclude(state=State.STOPPING)
        .update(state=State.STOPPING, changed_at=timezone.now())
    ):
        return
    if wait:
        _remove(cluster.pk)
    else:
        _in_background(_remove, cluster.pk, name=f"cluster {cluster.slot} down")


def _remove(pk: int) -> None:
    cluster = LabCluster.objects.filter(pk=pk).first()
    if cluster is None:
        return
    try:
        local_cluster(cluster).down()
    except Exception as exc:  # noqa: BLE001 - the sweep tries again
        log.exception("cluster %s not removed", cluster.slot)
        LabCluster.objects.filter(pk=pk).update(error=str(exc)[:2000])
        return
    LabCluster.objects.filter(pk=pk).delete()
    log.info("cluster %s removed", cluster.slot)


def pool_fill(*, wait: bool = False) -> list[LabCluster]:
    """Boots clusters until LAB_CLUSTER_WARM are warm or booting for no one in particular,
    as far as LAB_CLUSTER_MAX allows; returns those it started."""
    if not pool_enabled():
        return []
    for warm in LabCluster.objects.filter(state=State.WARM):
        if not any(s.vm for s in local_cluster(warm).status()):  # the machine restarted
            cluster_remove(cluster=warm, wait=True)
    pool = LabCluster.objects.filter(
        state__in=[State.BOOTING, State.WARM], classroom=None, reserved_for=None
    ).count()
    booted = []
    while pool + len(booted) < settings.LAB_CLUSTER_WARM:
        cluster = cluster_boot(wait=wait)
        if cluster is None:
            break
        booted.append(cluster)
    return booted


def pool_empty() -> None:
    """Takes every cluster down, here and now, and whatever of ours is left in a slot with
    no row (a console that stopped mid-way)."""
    for cluster in LabCluster.objects.all():
        cluster_remove(cluster=cluster, wait=True)
        _remove(cluster.pk)  # one another process was removing, or that failed
    for slot in provider_slots():
        cluster_slot(slot).down()


# --- taking one -----------------------------------------------------------------------------


def _free_warm(*, user=None):
    """Warm clusters no class has: kept for `user`, then kept for no one (or no longer)."""
    now = timezone.now()
    warm = LabCluster.objects.filter(state=State.WARM, classroom=None)
    mine = list(warm.filter(reserved_for=user, reserved_until__gt=now)) if user else []
    anyone = warm.filter(Q(reserved_for=None) | Q(reserved_until__lte=now))
    return [*mine, *anyone]


def _claim(cluster: LabCluster, **fields) -> bool:
    now = timezone.now()
    return bool(
        LabCluster.objects.filter(pk=cluster.pk, state=State.WARM).update(
            state=State.IN_USE, changed_at=now, used_at=now, reserved_until=None, **fields
        )
    )


def lab_cluster_take(*, owner, classroom: Classroom | None = None) -> LabCluster:
    """The cluster a new lab of `owner` runs on: its class's, or a warm one of its own (and
    the pool boots another). Raises NoCluster, saying why, when there is none now."""
    if classroom is not None:
        cluster = classroom_cluster_start(classroom=classroom)
        if cluster.state != State.IN_USE:
            running, size = cluster_nodes_running(cluster)
            raise NoCluster(
                _(
                    "The class's brokers are starting: %(running)s of %(size)s nodes running. "
                    "Start the lab again in a moment."
                )
                % {"running": running, "size": size}
            )
        return cluster
    for cluster in _free_warm(user=owner):
        if _claim(cluster, reserved_for=owner):
            cluster.refresh_from_db()
            pool_fill()
            return cluster
    raise NoCluster(
        pool_full_message()
        or _(
            "No cluster is free for this exercise right now: "
            "start the brokers from the exercise's page (about 20 s)."
        )
    )


def lab_cluster_release(*, session: LabSession) -> None:
    """A lab that ended takes its own cluster with it; a class's stays for the class."""
    cluster = session.cluster
    if cluster is not None and cluster.classroom_id is None:
        cluster_remove(cluster=cluster)


def cluster_request(*, user) -> LabCluster | None:
    """A cluster for `user`, who found none warm (the exercise page's Start the brokers):
    one booting for the pool becomes theirs, else a new one boots for them. None at
    LAB_CLUSTER_MAX."""
    mine = LabCluster.objects.filter(
        reserved_for=user, classroom=None, state__in=[State.BOOTING, State.WARM]
    ).first()
    if mine is not None:
        return mine
    for failed in LabCluster.objects.filter(reserved_for=user, state=State.FAILED):
        cluster_remove(cluster=failed)
    for cluster in LabCluster.objects.filter(
        state=State.BOOTING, classroom=None, reserved_for=None
    ):
        if LabCluster.objects.filter(pk=cluster.pk, reserved_for=None).update(reserved_for=user):
            pool_fill()
            return cluster
    return cluster_boot(reserved_for=user)


# --- a class's cluster ----------------------------------------------------------------------


def classroom_cluster(*, classroom: Classroom) -> LabCluster | None:
    return LabCluster.objects.filter(classroom=classroom).exclude(state=State.STOPPING).first()


def classroom_cluster_start(*, classroom: Classroom) -> LabCluster:
    """The class's one cluster: the one it has, else a warm one from the pool, else one
    booted for it. Raises NoCluster at LAB_CLUSTER_MAX."""
    cluster = classroom_cluster(classroom=classroom)
    if cluster is not None and cluster.state != State.FAILED:
        return cluster
    if cluster is not None:
        cluster_remove(cluster=cluster)
    for warm in _free_warm():
        if _claim(warm, classroom=classroom, reserved_for=None):
            warm.refresh_from_db()
            pool_fill()
            return warm
    cluster = cluster_boot(classroom=classroom)
    if cluster is None:
        raise NoCluster(pool_full_message())
    return cluster


def classroom_cluster_stop(*, classroom: Classroom) -> None:
    for cluster in LabCluster.objects.filter(classroom=classroom):
        cluster_remove(cluster=cluster)


# --- what the pages say ---------------------------------------------------------------------


def cluster_nodes_running(cluster: LabCluster) -> tuple[int, int]:
    states = local_cluster(cluster).status()
    return sum(1 for s in states if s.running), len(states)


def cluster_offer(*, user) -> dict:
    """What a cluster exercise's page offers `user` now: `ready` (a warm cluster is free, or
    kept for them), `starting` (one boots for them: nodes running of its size), `failed`
    (their boot failed: why), `full` (LAB_CLUSTER_MAX in use: the message says when to
    try again) or `none` (they may start one)."""
    now = timezone.now()
    size = settings.LAB_CLUSTER_SIZE
    mine = (
        LabCluster.objects.filter(reserved_for=user, classroom=None)
        .exclude(state__in=[State.IN_USE, State.STOPPING])
        .exclude(state=State.WARM, reserved_until__lte=now)
        .first()
    )
    offer = {"state": "none", "running": 0, "size": size, "error": "", "until": None}
    if mine is not None and mine.state == State.BOOTING:
        offer["state"] = "starting"
        offer["running"], offer["size"] = cluster_nodes_running(mine)
    elif mine is not None and mine.state == State.FAILED:
        offer.update(state="failed", error=mine.error.strip().splitlines()[0] if mine.error else "")
    elif mine is not None:
        offer.update(state="ready", running=size, until=mine.reserved_until)
    elif _free_warm(user=user):
        offer.update(state="ready", running=size)
    elif message := pool_full_message():
        offer.update(state="full", error=message)
    return offer


def pool_full_message() -> str:
    """What a learner is told when LAB_CLUSTER_MAX clusters exist and none is free: how
    many there are, what they serve, and when one may be free. Empty below the maximum."""
    clusters = list(LabCluster.objects.all())
    if len(clusters) < provider_max_slots():
        return ""
    labs = sum(1 for c in clusters if c.state == State.IN_USE and c.classroom_id is None)
    classes = sum(1 for c in clusters if c.classroom_id is not None)
    minutes = _minutes_to_a_free_cluster(clusters, timezone.now())
    return _(
        "All %(count)s of the console's clusters are in use (%(labs)s, %(classes)s). "
        "One may be free in about %(minutes)s: try again then."
    ) % {
        "count": len(clusters),
        "labs": ngettext("%(n)s lab", "%(n)s labs", labs) % {"n": labs},
        "classes": ngettext("%(n)s class", "%(n)s classes", classes) % {"n": classes},
        "minutes": ngettext("%(n)s minute", "%(n)s minutes", minutes) % {"n": minutes},
    }


def _minutes_to_a_free_cluster(clusters: list[LabCluster], now: datetime) -> int:
    """The soonest a cluster may go: a reservation that lapses, a lab that idles out (no
    page of it open for LAB_IDLE_MINUTES), a class that ends, a boot or removal under way."""
    ends = []
    idle = timedelta(minutes=settings.LAB_IDLE_MINUTES)
    seen = dict(
        LabSession.objects.filter(cluster__in=clusters)
        .exclude(state=LabSession.State.ENDED)
        .values_list("cluster_id", "last_seen_at")
    )
    for c in clusters:
        if c.classroom_id is not None:
            ends.append(c.classroom.ends_at)
        elif c.state == State.WARM and c.reserved_until:
            ends.append(c.reserved_until)
        elif c.state == State.IN_USE and c.pk in seen:
            ends.append(seen[c.pk] + idle)
        else:
            ends.append(now + timedelta(minutes=1))
    soonest = min(ends, default=now)
    return max(1, math.ceil((soonest - now).total_seconds() / 60))


# --- the sweep ------------------------------------------------------------------------------


def pool_sweep(*, idle_minutes: float) -> list[int]:
    """Keeps the pool true to the database, every minute (the beat's sweep-clusters):
    removes the clusters of labs that ended and of classes that ended, a class's cluster no
    lab ran on for `idle_minutes` (0: never), failed boots, boots and removals whose
    process died; lets lapsed reservations go back to the pool, removing what the pool does
    not need; then boots what the pool lacks. Returns the slots it removed."""
    now = timezone.now()
    removed = []
    running = {
        s.cluster_id
        for s in LabSession.objects.exclude(state=LabSession.State.ENDED).exclude(cluster=None)
    }
    LabCluster.objects.filter(pk__in=running).update(used_at=now)
    settled = now - timedelta(seconds=ORPHAN_SECONDS)
    for c in LabCluster.objects.select_related("classroom"):
        local = local_cluster(c)
        gone = False
        if c.state in (State.BOOTING, State.STOPPING):
            gone = c.changed_at < settled and not local.busy()
        elif c.state == State.FAILED:
            gone = c.changed_at < settled
        elif c.state == State.IN_USE and c.classroom_id is None:
            gone = c.pk not in running and c.changed_at < settled
        elif c.state == State.IN_USE:
            idle = (
                idle_minutes > 0 and c.used_at and c.used_at < now - timedelta(minutes=idle_minutes)
            )
            gone = c.classroom.ended_at is not None or bool(idle and c.pk not in running)
        if gone:
            LabCluster.objects.filter(pk=c.pk).update(state=State.STOPPING, changed_at=now)
            _remove(c.pk)
            removed.append(c.slot)
    LabCluster.objects.filter(state=State.WARM, reserved_until__lte=now).update(
        reserved_for=None, reserved_until=None
    )
    spare = list(LabCluster.objects.filter(state=State.WARM, classroom=None, reserved_for=None))[
        max(0, settings.LAB_CLUSTER_WARM) :
    ]
    for c in spare:
        cluster_remove(cluster=c, wait=True)
        removed.append(c.slot)
    pool_fill()
    return removed
