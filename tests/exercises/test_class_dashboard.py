"""The class dashboard: its summary (cells, current steps, idle and failing learners,
counts), read in a fixed number of queries, pushed over its WebSocket when it changes; and
the class's message reaching the learners' open lab pages."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from exercises import classes
from exercises.models import CheckpointResult, ClassMember, LabSession
from tests.exercises.test_access import lab_row
from tests.exercises.test_classes import make_class, make_instructor
from tests.exercises.test_stream import connect, headers_for, receive, run
from tests.support import text_of

pytestmark = pytest.mark.django_db(transaction=True)

LONG_AGO = "2020-01-01T00:00:00+00:00"


@pytest.fixture
def teacher(django_user_model):
    return make_instructor(django_user_model)


@pytest.fixture
def classroom(teacher, catalogue):
    return make_class(teacher, [catalogue["hello-world"]])


def member(classroom, django_user_model, name):
    user = django_user_model.objects.create_user(name)
    ClassMember.objects.create(classroom=classroom, user=user, display_name=name.title())
    return user


def test_the_summary_shows_cells_current_steps_idle_failing_and_counts(
    classroom, catalogue, django_user_model
):
    """Ada passed step 1 and is on step 2; Bob stands on step 1 since long ago; Cy's lab
    ended while the class runs and Dee's alert fires; Eve has no lab yet."""
    hello = catalogue["hello-world"]
    ada = lab_row(member(classroom, django_user_model, "ada"), hello, classroom, "running")
    ada.steps_shown = {"watch-hello": LONG_AGO, "queue-waits": timezone.now().isoformat()}
    ada.save()
    for cp in ("hello-routed", "hello-acked"):
        CheckpointResult.objects.create(session=ada, checkpoint=cp)
    bob = lab_row(member(classroom, django_user_model, "bob"), hello, classroom, "running")
    LabSession.objects.filter(pk=bob.pk).update(created_at=timezone.now() - timedelta(hours=1))
    lab_row(member(classroom, django_user_model, "cy"), hello, classroom, "ended")
    dee = lab_row(member(classroom, django_user_model, "dee"), hello, classroom, "running")
    dee.monitor_state = {"alerts": {"backlog": ["firing", 1.0]}, "record": {"big": [1] * 50}}
    dee.save()
    member(classroom, django_user_model, "eve")

    summary = classes.classroom_dashboard(classroom=classroom)
    rows = {row["name"]: row for row in summary["learners"]}
    steps = [s["id"] for s in summary["exercises"][0]["steps"]]
    assert steps[:2] == ["watch-hello", "queue-waits"]
    ada_cells = rows["Ada"]["labs"]["hello-world"]["cells"]
    assert ada_cells["watch-hello"] == "passed" and ada_cells["queue-waits"] == "current"
    assert rows["Ada"]["current"]["step"] == "queue-waits" and rows["Ada"]["idle_since"] is None
    assert rows["Bob"]["labs"]["hello-world"]["cells"]["watch-hello"] == "current"
    assert rows["Bob"]["idle_since"] is not None
    assert rows["Cy"]["failing"] == ["hello-world: lab ended"]
    assert rows["Cy"]["labs"]["hello-world"]["end_url"] == ""
    assert rows["Dee"]["failing"] == ["hello-world: alert backlog firing"]
    assert rows["Eve"]["labs"] == {} and rows["Eve"]["current"] is None
    assert summary["counts"]["hello-world"]["watch-hello"] == 1
    assert summary["counts"]["hello-world"]["queue-waits"] == 0


def test_the_summary_costs_the_same_queries_for_5_or_50_learners(
    classroom, catalogue, django_user_model
):
    """No query per learner or per lab: the socket reads it twice a second."""

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            classes.classroom_dashboard(classroom=classroom)
        return len(captured)

    def add(n: int, start: int) -> None:
        for i in range(start, start + n):
            lab = lab_row(
                member(classroom, django_user_model, f"learner{i}"),
                catalogue["hello-world"],
                classroom,
                "running",
            )
            CheckpointResult.objects.create(session=lab, checkpoint="hello-routed")

    add(5, 0)
    few = queries()
    add(45, 5)
    assert queries() == few <= 5


def test_the_dashboard_socket_sends_the_summary_and_each_change(
    classroom, teacher, catalogue, django_user_model
):
    """A passed checkpoint reaches the open socket; nothing is sent while nothing changes."""
    lab = lab_row(
        member(classroom, django_user_model, "ada"), catalogue["hello-world"], classroom, "running"
    )
    headers = headers_for(teacher)

    async def scenario():
        ws, connected, _ = await connect(f"/ws/classes/{classroom.pk}/", headers)
        assert connected
        try:
            first = await receive(ws, "dashboard")
            assert first["learners"][0]["labs"]["hello-world"]["cells"]["watch-hello"] == "current"
            assert await ws.receive_nothing(timeout=1.2)
            await sync_to_async(CheckpointResult.objects.create)(
                session=lab, checkpoint="hello-routed"
            )
            await sync_to_async(CheckpointResult.objects.create)(
                session=lab, checkpoint="hello-acked"
            )
            while True:
                update = await receive(ws, "dashboard", timeout=5)
                if update["counts"]["hello-world"]["watch-hello"] == 1:
                    break
            assert update["learners"][0]["labs"]["hello-world"]["cells"]["watch-hello"] == "passed"
        finally:
            await ws.disconnect()

    run(scenario)


def test_only_the_classes_instructor_opens_its_dashboard(
    client, classroom, teacher, learner, django_user_model
):
    """Learners and other instructors: the page 403, the socket closed with 4403; an
    unknown class 4404."""
    ClassMember.objects.create(classroom=classroom, user=learner, display_name="L")
    other = make_instructor(django_user_model, "other-teacher")
    client.force_login(teacher)
    assert client.get(reverse("class-dashboard", args=[classroom.pk])).status_code == 200
    for user in (learner, other):
        client.force_login(user)
        assert client.get(reverse("class-dashboard", args=[classroom.pk])).status_code == 403
    refused = [headers_for(learner), headers_for(other), headers_for(None)]
    teacher_headers = headers_for(teacher)

    async def scenario():
        for headers in refused:
            ws, connected, _ = await connect(f"/ws/classes/{classroom.pk}/", headers)
            assert connected
            error = json.loads(await ws.receive_from(timeout=5))
            assert error == {
                "type": "error",
                "message": "only the class's instructor sees its dashboard",
            }
            assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": 4403}
            await ws.disconnect()
        ws, _, _ = await connect("/ws/classes/999999/", teacher_headers)
        await ws.receive_from(timeout=5)
        assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": 4404}
        await ws.disconnect()

    run(scenario)


def test_the_class_message_reaches_open_lab_pages_and_the_class_page(
    client, classroom, teacher, learner, catalogue, labs
):
    """Sent from the dashboard: a `class-message` status on the learner's lab socket at
    once, and the message on their class page and lab page from then on."""
    classes.classroom_join(code=classroom.join_code, user=learner, display_name="Ada")
    session = classes.class_lab_start(
        classroom=classroom, user=learner, exercise=catalogue["hello-world"]
    )
    learner_headers = headers_for(learner)
    client.force_login(teacher)

    async def scenario():
        ws, connected, _ = await connect(f"/ws/labs/{session.id}/", learner_headers)
        assert connected
        try:
            await receive(ws, "snapshot", timeout=15)
            sent = await sync_to_async(client.post)(
                reverse("class-message", args=[classroom.pk]),
                {"message": "Break until 11:00"},
            )
            assert sent.status_code == 200
            status = await receive(ws, "status", timeout=10)
            assert status["state"] == "class-message"
            assert status["message"] == "Break until 11:00"
        finally:
            await ws.disconnect()

    run(scenario)
    client.force_login(learner)
    assert "Break until 11:00" in text_of(client.get(reverse("class-learn", args=[classroom.pk])))
    assert "Break until 11:00" in text_of(client.get(session.get_absolute_url()))
