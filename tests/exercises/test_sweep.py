"""The sweeper on the shared broker: it deletes only lab vhosts and users with this
console's mark and no live lab, and ends running labs whose vhost is gone. Other consoles
(other test runs, benchmarks, a developer's console) keep their `lab-` vhosts."""

from __future__ import annotations

import secrets
import time

import pytest

from exercises.models import LabSession
from exercises.services import lab_session_start
from exercises.sweep import labs_sweep
from labconsole.broker import amqp

pytestmark = pytest.mark.django_db(transaction=True)


def lab_start(catalogue, learner) -> LabSession:
    return lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)


HOUR_AGO = time.time() - 3600


@pytest.fixture
def stray(api):
    """Makes lab vhosts and users that no lab of this database owns; all are deleted after."""
    made = []

    def make(tags: list[str], *, user: bool = False) -> str:
        name = amqp.lab_vhost("sweep" + secrets.token_hex(4))
        made.append(name)
        api.put_vhost(name, description="lab: stray", tags=tags)
        if user:
            api.request("PUT", f"users/{name}", {"password": "x" * 12, "tags": ",".join(tags)})
        return name

    yield make
    for name in made:
        api.delete_vhost(name)
        api.delete_user(name)


def test_provisioning_marks_the_vhost_and_user(api, catalogue, learner, labs):
    session = lab_start(catalogue, learner)
    vhost = api.request("GET", f"vhosts/{session.vhost}")
    user = api.request("GET", f"users/{session.rabbit_user}")
    for tags in (vhost["tags"], user["tags"]):
        assert amqp.lab_mark() in tags
        assert abs(amqp.lab_made(tags) - time.time()) < 60


def test_only_this_consoles_orphans_are_swept(api, catalogue, learner, labs, stray):
    """A marked vhost and user with no lab go; one of another console, one without a mark,
    one made within the grace, and a running lab's stay."""
    live = lab_start(catalogue, learner)
    old_mark = amqp.lab_tags(HOUR_AGO)
    orphan = stray(old_mark, user=True)
    others = stray(["labconsole:another-console", f"made:{int(HOUR_AGO)}"], user=True)
    unmarked = stray([], user=True)
    fresh = stray(amqp.lab_tags(time.time()), user=True)

    result = labs_sweep(grace_seconds=300)

    # Alive: it does delete what it should (else the rest proves nothing).
    assert orphan in result.vhosts and orphan in result.users
    assert not api.vhost_exists(orphan) and not api.user_exists(orphan)
    for name in (others, unmarked, fresh, live.vhost):
        assert name not in result.vhosts and name not in result.users
        assert api.vhost_exists(name) and api.user_exists(name), name
    assert result.ended == [] and LabSession.objects.get(pk=live.pk).is_active


def test_an_ended_labs_leftovers_are_swept(api, catalogue, learner, labs):
    """A lab ended in the database whose vhost is still there (its teardown never ran)."""
    session = lab_start(catalogue, learner)
    LabSession.objects.filter(pk=session.pk).update(state=LabSession.State.ENDED)
    # Made now, so only the grace protects it: none is given here.
    assert session.vhost in labs_sweep(grace_seconds=0).vhosts
    assert not api.vhost_exists(session.vhost) and not api.user_exists(session.rabbit_user)


def test_a_running_lab_whose_vhost_is_gone_is_ended(api, catalogue, learner, labs):
    gone = lab_start(catalogue, learner)
    kept = lab_start(catalogue, learner)
    LabSession.objects.update(created_at=gone.created_at.replace(year=2000))
    api.delete_vhost(gone.vhost)  # behind the console's back
    assert api.user_exists(gone.rabbit_user)

    result = labs_sweep(grace_seconds=300)

    assert result.ended == [gone.id]
    gone.refresh_from_db()
    assert gone.state == LabSession.State.ENDED and gone.ended_at is not None
    assert not gone.workloads.filter(running=True).exists()
    assert not api.user_exists(gone.rabbit_user)
    assert LabSession.objects.get(pk=kept.pk).state == LabSession.State.RUNNING
    assert api.vhost_exists(kept.vhost)


def test_a_starting_lab_is_never_swept(api, catalogue, learner, labs):
    """A lab being made or reset (`starting`) keeps its vhost, and one with no vhost yet is
    not ended."""
    session = lab_start(catalogue, learner)
    LabSession.objects.filter(pk=session.pk).update(
        state=LabSession.State.STARTING, created_at=session.created_at.replace(year=2000)
    )
    result = labs_sweep(grace_seconds=0)
    assert session.vhost not in result.vhosts and api.vhost_exists(session.vhost)
    api.delete_vhost(session.vhost)
    assert labs_sweep(grace_seconds=0).ended == []
    assert LabSession.objects.get(pk=session.pk).state == LabSession.State.STARTING


def test_the_beat_sends_the_sweep_task(api, catalogue, learner, labs, settings):
    """The task the beat sends every LAB_SWEEP_SECONDS runs the sweep (called in-process)."""
    from django.conf import settings as live

    from exercises.tasks import sweep_labs

    assert live.CELERY_BEAT_SCHEDULE["sweep-labs"] == {
        "task": sweep_labs.name,
        "schedule": live.LAB_SWEEP_SECONDS,
    }
    session = lab_start(catalogue, learner)
    LabSession.objects.filter(pk=session.pk).update(
        state=LabSession.State.ENDED, teardown_pending=True
    )
    settings.LAB_SWEEP_GRACE_SECONDS = 300
    assert sweep_labs()["torn_down"] == [session.id]
    assert not api.vhost_exists(session.vhost)


def test_a_reset_does_not_bring_back_a_lab_the_sweeper_ended(api, catalogue, learner, labs):
    """A reset claims the lab (still not ended, same generation) before it deletes
    anything: a lab ended meanwhile stays ended and gets no vhost again."""
    from exercises.services import LabBusy, LabError, lab_session_reset

    session = lab_start(catalogue, learner)
    stale = LabSession.objects.get(pk=session.pk)
    assert lab_session_reset(session=session).generation == 2  # alive: a reset works
    with pytest.raises(LabBusy):
        lab_session_reset(session=stale)  # an older generation: refused
    api.delete_vhost(session.vhost)
    LabSession.objects.update(created_at=session.created_at.replace(year=2000))
    assert labs_sweep(grace_seconds=300).ended == [session.id]
    with pytest.raises(LabError, match="has ended"):
        lab_session_reset(session=session)  # in memory still running, in the database not
    assert not api.vhost_exists(session.vhost)
    assert LabSession.objects.get(pk=session.pk).state == LabSession.State.ENDED
