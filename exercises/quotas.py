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

from django.conf import settings
from django.contrib.auth import get_user_model
from django.utils import timezone

from .models import LabSession, RateEvent

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


def lab_quotas(*, user=None) -> LabQuotas:
    """The limits that hold for `user` (today the settings' defaults, for everyone)."""
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


def rate_take(*, user, action: RateEvent.Action, per_minute: int) -> bool:
    """Records one `action` of `user` if fewer than `per_minute` happened in the last
    minute, and says whether it did."""
    now = timezone.now()
    RateEvent.objects.filter(user=user, action=action, at__lt=now - WINDOW).delete()
    event = RateEvent.objects.create(user=user, action=action, at=now)
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
