"""What one user may use: labs at once, lab starts and page publishes a minute, and what
each lab's vhost may hold (queues, connections, channels, a queue's length and bytes).

The numbers come from settings (docs/operations.md); `lab_quotas` is the one place that
reads them, so a per-user or per-class override has one place to go.

A lab start counts and records under a lock on its owner's row (`owner_lock`, inside the
start's transaction), so two starts at once by one person take turns and cannot both take
the last place; on SQLite the IMMEDIATE transaction already makes every writer take turns.
Publishes from the page count without a lock, writing first and counting second: a request
saves its use, then counts the uses saved before its own and deletes its own when those
already reach the limit, so of two racing requests the later one sees the earlier. The gap
left there is a use numbered before another but committed after the other counted: at most
one extra a minute, in a window of a few milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.formats import number_format
from django.utils.translation import gettext

from labconsole.workloads.load import effective_rate

from .models import LabSession, RateEvent, Workload

WINDOW = timedelta(minutes=1)


@dataclass(frozen=True)
class LabQuotas:
    labs: int
    starts_per_minute: int
    publishes_per_minute: int
    queues: int
    connections: int
    channels: int
    queue_length: int
    queue_bytes: int


def lab_quotas(*, user=None, sandbox: bool = False) -> LabQuotas:
    """The limits that hold for `user` (today the settings' defaults, for everyone); a
    sandbox's vhost has the SANDBOX_* ones (docs/sandboxes.md)."""
    if sandbox:
        return LabQuotas(
            labs=settings.LAB_MAX_PER_USER,
            starts_per_minute=settings.LAB_STARTS_PER_MINUTE,
            publishes_per_minute=settings.LAB_PUBLISHES_PER_MINUTE,
            # The console's own firehose queue is in the vhost too: not the team's to use.
            queues=settings.SANDBOX_MAX_QUEUES + 1,
            connections=settings.SANDBOX_MAX_CONNECTIONS,
            channels=settings.SANDBOX_MAX_CHANNELS,
            queue_length=settings.SANDBOX_QUEUE_MAX_LENGTH,
            queue_bytes=settings.SANDBOX_QUEUE_MAX_BYTES,
        )
    return LabQuotas(
        labs=settings.LAB_MAX_PER_USER,
        starts_per_minute=settings.LAB_STARTS_PER_MINUTE,
        publishes_per_minute=settings.LAB_PUBLISHES_PER_MINUTE,
        queues=settings.LAB_MAX_QUEUES,
        connections=settings.LAB_MAX_CONNECTIONS,
        channels=settings.LAB_MAX_CHANNELS,
        queue_length=settings.LAB_QUEUE_MAX_LENGTH,
        queue_bytes=settings.LAB_QUEUE_MAX_BYTES,
    )


def rate_take(*, user, action: RateEvent.Action, per_minute: int, session=None) -> bool:
    """Records one `action` of `user` (on the lab `session`, for a publish) if fewer than
    `per_minute` happened in the last minute, and says whether it did."""
    now = timezone.now()
    RateEvent.objects.filter(user=user, action=action, at__lt=now - WINDOW).delete()
    event = RateEvent.objects.create(user=user, action=action, at=now, session=session)
    earlier = RateEvent.objects.filter(
        user=user, action=action, at__gte=now - WINDOW, pk__lt=event.pk
    ).count()
    if earlier >= per_minute:
        event.delete()
        return False
    return True


def rate_retry_after(*, user, action: RateEvent.Action) -> int:
    """Seconds until the oldest use of the last minute leaves the window (at least 1)."""
    oldest = (
        RateEvent.objects.filter(user=user, action=action, at__gte=timezone.now() - WINDOW)
        .order_by("at")
        .values_list("at", flat=True)
        .first()
    )
    if oldest is None:
        return 1
    return max(1, int((oldest + WINDOW - timezone.now()).total_seconds()) + 1)


def owner_lock(*, user) -> None:
    """Locks `user`'s row until the end of the caller's transaction (SQLite ignores it)."""
    get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk").get()


def labs_running(*, user) -> int:
    """The labs of `user` not ended (starting or running)."""
    return LabSession.objects.filter(owner_id=user.pk).exclude(state=LabSession.State.ENDED).count()


# --- a team's sandbox (docs/sandboxes.md) ----------------------------------------------------
# Each returns what the page says when the sandbox would go past one of its SANDBOX_*
# limits, or None: its caller (exercises/services.py) refuses the change with it.


def sandbox_queues_refusal(*, queues: int) -> str | None:
    """A topology edit that would give the sandbox `queues` queues."""
    if queues <= settings.SANDBOX_MAX_QUEUES:
        return None
    return gettext("this sandbox may have at most {limit} queues; delete one first").format(
        limit=settings.SANDBOX_MAX_QUEUES
    )


def _page_rate(session: LabSession) -> float:
    """The sandbox page's publishes a second, over the last minute, whoever of the team
    pressed Publish (services.lab_publish records each with its lab, before it asks)."""
    since = timezone.now() - WINDOW
    done = RateEvent.objects.filter(
        session=session, action=RateEvent.Action.PUBLISH, at__gte=since
    ).count()
    return done / WINDOW.total_seconds()


def sandbox_rate_refusal(
    *, session: LabSession, workload=None, settings_after: dict | None = None
) -> str | None:
    """Whether the sandbox's producers and its page together would publish more than
    SANDBOX_MAX_RATE messages a second, with `workload` (a producer) running with
    `settings_after` (the page's publishes counted include one being asked for)."""
    rates = {
        w.pk: effective_rate(w.settings)
        for w in session.workloads.filter(kind=Workload.Kind.PRODUCER, running=True)
    }
    if workload is not None and workload.kind == Workload.Kind.PRODUCER:
        rates[workload.pk] = effective_rate(settings_after or workload.settings)
    producers = sum(rates.values())
    page = _page_rate(session)
    limit = settings.SANDBOX_MAX_RATE
    if producers + page <= limit:
        return None
    return gettext(
        "this sandbox may publish at most {limit} messages a second in all; its producers "
        "would publish {producers} and its page {page}: lower a rate or stop a producer"
    ).format(limit=_rate(limit), producers=_rate(producers), page=_rate(page))


def _rate(value: float) -> str:
    """A rate as the page's language writes numbers: 0.05 and 2,500 (0,05 and 2 500)."""
    return number_format(Decimal(f"{value:.2f}").normalize(), force_grouping=True)


def sandbox_start_refusal(*, session: LabSession, workload) -> str | None:
    """Whether starting `workload` would take the sandbox past its connections, channels
    or total rate: what the page says, or None."""
    return sandbox_workload_refusal(session=session, workload=workload) or sandbox_rate_refusal(
        session=session, workload=workload
    )


def sandbox_workload_refusal(*, session: LabSession, workload) -> str | None:
    """Starting `workload` would take the sandbox past its connections or channels: each
    workload one connection and a producer one channel, a consumer two; the monitor one
    connection and two channels, a publish from the page one of each."""
    running = list(session.workloads.filter(running=True).exclude(pk=workload.pk))
    running.append(workload)
    connections = len(running) + 2
    channels = sum(1 if w.kind == Workload.Kind.PRODUCER else 2 for w in running) + 3
    if connections > settings.SANDBOX_MAX_CONNECTIONS:
        return gettext(
            "this sandbox may have at most {limit} connections (each running workload has "
            "one, the console two): stop a workload first"
        ).format(limit=settings.SANDBOX_MAX_CONNECTIONS)
    if channels > settings.SANDBOX_MAX_CHANNELS:
        return gettext(
            "this sandbox may have at most {limit} channels (a producer has one, a consumer "
            "two, the console three): stop a workload first"
        ).format(limit=settings.SANDBOX_MAX_CHANNELS)
    return None
