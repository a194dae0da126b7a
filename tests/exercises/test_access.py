"""Who may watch a lab and who may change it, on every path: the lab's pages, its
endpoints, the class's endpoints and the lab's WebSocket. A learner sees their own labs;
an instructor watches the labs of their own classes (read-only) and resets or ends them
through the class; staff watch every lab."""

from __future__ import annotations

import secrets

import pytest
from django.urls import reverse

from exercises import classes
from exercises.models import ClassMember, LabSession, Workload
from tests.exercises.test_classes import make_class, make_instructor
from tests.exercises.test_stream import connect, headers_for, receive, run
from tests.support import text_of

pytestmark = pytest.mark.django_db(transaction=True)


def lab_row(owner, exercise, classroom=None, state=LabSession.State.ENDED) -> LabSession:
    """A lab as the database has it, with nothing on the broker (the pages and checks of
    access need no more)."""
    return LabSession.objects.create(
        owner=owner,
        exercise=exercise,
        classroom=classroom,
        exercise_version=exercise.version,
        source=exercise.source,
        rabbit_password=secrets.token_urlsafe(8),
        state=state,
        steps_shown={exercise.spec.steps[0].id: "2026-01-01T00:00:00+00:00"},
    )


@pytest.fixture
def people(django_user_model, learner, catalogue):
    teacher = make_instructor(django_user_model, "teacher")
    classroom = make_class(teacher, [catalogue["hello-world"]])
    ClassMember.objects.create(classroom=classroom, user=learner, display_name="Ada")
    return {
        "owner": learner,
        "teacher": teacher,
        "other_teacher": make_instructor(django_user_model, "other-teacher"),
        "other_learner": django_user_model.objects.create_user("other", password="other-pass-1"),
        "staff": django_user_model.objects.create_user("ops", is_staff=True),
        "classroom": classroom,
    }


VIEW_URLS = ("lab", "lab-steps", "lab-topology-panel")
ACTION_URLS = {
    "lab-workload": ["sender"],
    "lab-step": ["queue-waits"],
    "lab-publish": [],
    "lab-topology": [],
    "lab-reset": [],
    "lab-end": [],
}


def test_who_may_watch_a_lab_on_its_pages(client, people, catalogue):
    """The owner, the class's instructor and staff: 200; anyone else 403."""
    session = lab_row(people["owner"], catalogue["hello-world"], people["classroom"])
    expected = {
        "owner": 200,
        "teacher": 200,
        "staff": 200,
        "other_teacher": 403,
        "other_learner": 403,
    }
    for who, status in expected.items():
        client.force_login(people[who])
        for name in VIEW_URLS:
            assert client.get(reverse(name, args=[session.id])).status_code == status, (who, name)


def test_an_instructor_watches_only_labs_started_in_their_class(client, people, catalogue):
    """The same learner's lab started outside the class stays theirs alone."""
    session = lab_row(people["owner"], catalogue["hello-world"])
    client.force_login(people["teacher"])
    assert client.get(reverse("lab", args=[session.id])).status_code == 403


def test_a_watcher_gets_the_lab_read_only(client, people, catalogue):
    """A banner names the learner; no Reset, End, publish, topology or Next step."""
    session = lab_row(
        people["owner"], catalogue["hello-world"], people["classroom"], LabSession.State.RUNNING
    )
    Workload.objects.create(session=session, name="receiver", kind=Workload.Kind.CONSUMER)
    client.force_login(people["teacher"])
    page = text_of(client.get(reverse("lab", args=[session.id])))
    assert "Viewing Ada's lab (read-only)" in page
    for control in ('id="lab-actions"', 'id="publish-form"', 'id="topology-card"'):
        assert control not in page
    assert 'class="toggle-form" inert' in page
    client.force_login(people["owner"])
    own = client.get(reverse("lab", args=[session.id])).content.decode()
    assert "read-only" not in own and 'id="lab-actions"' in own and 'id="publish-form"' in own


def test_only_the_owner_changes_a_lab_from_its_endpoints(client, people, catalogue):
    """Watchers get 403 on every POST endpoint, and the lab's page if they land on one."""
    session = lab_row(
        people["owner"], catalogue["hello-world"], people["classroom"], LabSession.State.RUNNING
    )
    for who in ("teacher", "staff", "other_learner"):
        client.force_login(people[who])
        for name, args in ACTION_URLS.items():
            url = reverse(name, args=[session.id, *args])
            assert client.post(url, headers={"HX-Request": "true"}).status_code == 403, (who, url)
            landed = client.get(url)
            if who == "other_learner":
                assert landed.status_code == 403
            else:
                assert landed.status_code == 302 and landed["Location"] == f"/labs/{session.id}/"
    session.refresh_from_db()
    assert session.state == LabSession.State.RUNNING
    client.force_login(people["owner"])
    # The owner passes the check: the step is refused for its own reason.
    step = client.post(reverse("lab-step", args=[session.id, "queue-waits"]))
    assert (
        step.status_code == 400 and "finish the step before this one first" in step.content.decode()
    )


def test_the_class_endpoints_are_for_its_instructor_and_its_labs(
    client, people, catalogue, django_user_model
):
    """Reset and End through the class: its instructor only, and only labs of the class."""
    session = lab_row(
        people["owner"], catalogue["hello-world"], people["classroom"], LabSession.State.RUNNING
    )
    elsewhere = make_class(people["other_teacher"], [catalogue["hello-world"]], name="other")
    outside = lab_row(people["other_learner"], catalogue["hello-world"], elsewhere)
    end = reverse("class-lab-end", args=[people["classroom"].pk, session.id])
    reset = reverse("class-lab-reset", args=[people["classroom"].pk, session.id])
    for who in ("owner", "other_teacher", "staff"):
        client.force_login(people[who])
        assert client.post(end).status_code == 403, who
        assert client.post(reset).status_code == 403, who
    client.force_login(people["teacher"])
    assert client.get(end).status_code == 405
    foreign = reverse("class-lab-end", args=[people["classroom"].pk, outside.id])
    assert client.post(foreign).status_code == 403
    assert client.post(end).status_code == 204
    session.refresh_from_db()
    assert session.state == LabSession.State.ENDED


def test_the_instructor_resets_a_learners_running_lab(client, people, catalogue, labs):
    """A real lab, reset through the class: the same lab, a new generation."""
    session = classes.class_lab_start(
        classroom=people["classroom"], user=people["owner"], exercise=catalogue["hello-world"]
    )
    client.force_login(people["teacher"])
    url = reverse("class-lab-reset", args=[people["classroom"].pk, session.id])
    assert client.post(url).status_code == 204
    session.refresh_from_db()
    assert session.generation == 2 and session.state == LabSession.State.RUNNING


def test_who_may_open_a_labs_socket(people, catalogue):
    """The class's instructor and staff get the snapshot; another instructor gets 4403."""
    session = lab_row(people["owner"], catalogue["hello-world"], people["classroom"])
    path = f"/ws/labs/{session.id}/"
    headers = {who: headers_for(people[who]) for who in people if who != "classroom"}

    async def scenario():
        for who in ("teacher", "staff"):
            ws, connected, _ = await connect(path, headers[who])
            assert connected
            assert (await receive(ws, "snapshot"))["lab"]["id"] == session.id
            await ws.disconnect()
        for who in ("other_teacher", "other_learner"):
            ws, connected, _ = await connect(path, headers[who])
            assert connected
            assert await ws.receive_output(timeout=5) == {"type": "websocket.close", "code": 4403}
            await ws.disconnect()

    run(scenario)
