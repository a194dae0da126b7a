"""One lab started, reset and ended by several requests at the same moment, as several web
processes serving one learner's tabs would: one of the conflicting requests wins, the
others are told why (never a 500), and the lab and its vhost end up agreeing. On
PostgreSQL (the production database, `make test`'s second pass) and on SQLite alike."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pika.exceptions as px
import pytest
from django.db import connection
from django.test import Client
from django.urls import reverse

from exercises.models import LabSession, Workload
from exercises.services import LabBusy, LabError, lab_session_reset, lab_session_start
from labconsole.broker import amqp
from tests.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def at_once(*calls: Callable[[], object]) -> list[object]:
    """Runs each call in a thread of its own, all released together; returns what each
    returned or raised. Each thread has its own database connection, closed at its end."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int, call: Callable[[], object]) -> None:
        try:
            barrier.wait()
            results[i] = call()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def lab_works(session: LabSession) -> bool:
    """The lab's user opens its vhost with the password the database holds."""
    try:
        amqp.close_quietly(
            amqp.connect(
                amqp.parameters(
                    vhost=session.vhost, user=session.rabbit_user, password=session.rabbit_password
                )
            )
        )
    except px.AMQPError:
        return False
    return True


def assert_gone(api, session_id: str) -> None:
    """The lab is ended (or was never recorded) and nothing of it is left on the broker."""
    vhost = amqp.lab_vhost(session_id)
    row = LabSession.objects.filter(pk=session_id).first()
    assert row is None or row.state == LabSession.State.ENDED, row and row.state
    assert not api.vhost_exists(vhost), f"{vhost} left on the broker"
    assert not api.user_exists(vhost), f"user {vhost} left on the broker"


def starting_lab(owner) -> LabSession:
    """Waits for `owner`'s lab that another thread is starting to be recorded."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        session = LabSession.objects.filter(owner=owner).first()
        if session is not None:
            return session
        time.sleep(0.002)
    raise AssertionError("no lab recorded")


def test_resets_at_once_one_wins(api, catalogue, learner, labs):
    """Four resets of one lab: one makes the lab again, the other three are told another
    request is resetting it; the lab runs once, with the password the broker knows."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    copies = [LabSession.objects.get(pk=session.pk) for _ in range(4)]
    results = at_once(*[lambda s=s: lab_session_reset(session=s) for s in copies])
    won = [r for r in results if isinstance(r, LabSession)]
    lost = [r for r in results if not isinstance(r, LabSession)]
    assert len(won) == 1, results
    assert all(isinstance(r, LabBusy) for r in lost), lost
    assert all("another request" in str(r).lower() for r in lost), lost
    session.refresh_from_db()
    assert session.state == LabSession.State.RUNNING and session.generation == 2
    assert lab_works(session)
    names = sorted(Workload.objects.filter(session=session).values_list("name", flat=True))
    spec = session.spec.workloads
    assert names == sorted(w.name for w in [*spec.producers, *spec.consumers])


@pytest.mark.parametrize("attempt", range(3))
def test_reset_and_end_at_once_leave_the_lab_ended(api, catalogue, learner, labs, attempt):
    """Reset and End pressed together (two tabs): whichever comes first, the lab ends and
    its vhost and user are gone; both pages answer with a redirect."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    resetter, ender = logged_in(learner), logged_in(learner)
    # End a little later each time, to land in a different step of the reset.
    results = at_once(
        lambda: resetter.post(reverse("lab-reset", args=[session.pk])),
        lambda: (time.sleep(0.03 * attempt), ender.post(reverse("lab-end", args=[session.pk])))[1],
    )
    assert [r.status_code for r in results] == [302, 302], results
    assert_gone(api, session.pk)


def test_end_while_starting_ends_the_lab(api, catalogue, learner, labs, monkeypatch):
    """End pressed on a lab whose start has not finished (its page open in another tab):
    the start says the lab was ended instead of showing a lab that runs without a vhost,
    and nothing of it stays on the broker. The start waits, once its broker objects are
    made, for the End to be recorded: a loaded machine may otherwise finish the start
    before the End's request gets that far."""
    from exercises import services

    provision = services._provision

    def provision_then_wait_for_the_end(session):
        provision(session)
        wait_for(
            lambda: LabSession.objects.filter(pk=session.pk, state=LabSession.State.ENDED).exists(),
            timeout=10,
            message="the End recorded",
        )

    monkeypatch.setattr(services, "_provision", provision_then_wait_for_the_end)
    starter, ender = logged_in(learner), logged_in(learner)
    start_url = reverse("lab-start", args=[catalogue["direct-routing"].slug])

    def end_when_recorded():
        session = starting_lab(learner)
        return session.pk, ender.post(reverse("lab-end", args=[session.pk]))

    started, (session_id, ended) = at_once(lambda: starter.post(start_url), end_when_recorded)
    assert ended.status_code == 302
    assert started.status_code == 200, started.status_code  # the exercise page, with why
    assert "ended while it was starting" in started.content.decode()
    assert_gone(api, session_id)


def test_reset_while_starting_is_refused(api, catalogue, learner, labs, monkeypatch):
    """Reset of a lab still starting is refused with its reason; the start finishes and
    the lab runs with the vhost and password it made. The start waits, once its broker
    objects are made, for the reset to have been answered (however loaded the machine)."""
    from exercises import services

    copies = {}
    answered = threading.Event()
    provision = services._provision

    def provision_then_wait_for_the_reset(session):
        provision(session)
        assert answered.wait(10), "the reset answered"

    monkeypatch.setattr(services, "_provision", provision_then_wait_for_the_reset)

    def reset_when_recorded():
        copies["session"] = starting_lab(learner)
        try:
            return lab_session_reset(session=copies["session"])
        finally:
            answered.set()

    started, reset = at_once(
        lambda: lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False),
        reset_when_recorded,
    )
    assert isinstance(started, LabSession), started
    assert isinstance(reset, LabBusy), reset
    assert isinstance(reset, LabError)
    started.refresh_from_db()
    assert started.state == LabSession.State.RUNNING and started.generation == 1
    assert lab_works(started)


def test_starts_at_once_keep_the_lab_limit(api, catalogue, learner, labs, settings):
    """Five starts by one learner at the same moment with room for two labs: two start,
    three are refused with the limit's message (429), and only two vhosts are made."""
    settings.LAB_MAX_PER_USER = 2
    clients = [logged_in(learner) for _ in range(5)]
    url = reverse("lab-start", args=[catalogue["direct-routing"].slug])
    results = at_once(*[lambda c=c: c.post(url) for c in clients])
    codes = sorted(r.status_code for r in results)
    assert codes == [302, 302, 429, 429, 429], codes
    running = LabSession.objects.filter(owner=learner).exclude(state=LabSession.State.ENDED)
    assert running.count() == 2
    assert all(api.vhost_exists(s.vhost) for s in running)
    refused = [r for r in results if r.status_code == 429]
    assert all("You already have 2 labs running" in r.content.decode() for r in refused)


def test_labs_started_at_once_all_trace(api, catalogue, learner, labs, settings):
    """Eight labs started at the same moment, as a class does: every vhost's firehose is
    on at the broker, though RabbitMQ can lose a tracing turned on beside another one."""
    settings.LAB_MAX_PER_USER = 8
    started = at_once(
        *[
            lambda: lab_session_start(
                exercise=catalogue["direct-routing"], owner=learner, run=False
            )
            for _ in range(8)
        ]
    )
    assert all(isinstance(s, LabSession) for s in started), started
    assert {s.vhost: api.traces(s.vhost) for s in started} == {s.vhost: True for s in started}
