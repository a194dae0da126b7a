"""Classes: instructors create and end them, learners join with a code (with or without an
account) and start the class's exercises in them; a class past its end ends by itself."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.urls import reverse
from django.utils import timezone

from exercises import classes, selectors
from exercises.models import ClassMember, Classroom, LabSession
from exercises.tasks import end_due_classes
from tests.support import text_of

pytestmark = pytest.mark.django_db


def make_instructor(django_user_model, name="teacher"):
    user = django_user_model.objects.create_user(name, password=f"{name}-pass-1", is_staff=True)
    group, _ = Group.objects.get_or_create(name=selectors.INSTRUCTORS_GROUP)
    user.groups.add(group)
    return user


def make_class(instructor, exercises, *, starts=-5, ends=60, capacity=None, name="RabbitMQ 101"):
    now = timezone.now()
    return classes.classroom_create(
        instructor=instructor,
        name=name,
        exercises=exercises,
        starts_at=now + timedelta(minutes=starts),
        ends_at=now + timedelta(minutes=ends),
        capacity=capacity,
    )


@pytest.fixture
def instructor(django_user_model):
    return make_instructor(django_user_model)


@pytest.fixture
def classroom(instructor, catalogue):
    return make_class(instructor, [catalogue["hello-world"], catalogue["direct-routing"]])


def test_an_instructor_is_staff_in_the_group_or_a_staff_superuser(django_user_model):
    """The group alone, or staff alone, is not enough; a staff superuser is."""
    assert selectors.user_is_instructor(make_instructor(django_user_model))
    staff = django_user_model.objects.create_user("staff", is_staff=True)
    grouped = django_user_model.objects.create_user("grouped")
    grouped.groups.add(Group.objects.get(name=selectors.INSTRUCTORS_GROUP))
    superuser = django_user_model.objects.create_superuser("root", password="root-pass-1")
    assert not selectors.user_is_instructor(staff)
    assert not selectors.user_is_instructor(grouped)
    assert selectors.user_is_instructor(superuser)


def test_an_instructor_creates_a_class_on_the_page_and_gets_its_code_and_qr(
    client, instructor, catalogue
):
    """The form lists the published exercises in the catalogue's order; the class page
    shows the code, the join link and an SVG QR code of it."""
    client.force_login(instructor)
    form = client.get(reverse("class-new")).content.decode()
    assert form.index("Hello World") < form.index("Direct routing")
    now = timezone.localtime()
    response = client.post(
        reverse("class-new"),
        {
            "name": "Morning group",
            "exercises": [catalogue["hello-world"].pk],
            "starts_at": now.strftime("%Y-%m-%dT%H:%M"),
            "ends_at": (now + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M"),
            "capacity": "30",
        },
    )
    classroom = Classroom.objects.get(name="Morning group")
    assert response.status_code == 302 and response["Location"] == f"/classes/{classroom.pk}/"
    assert list(classroom.exercises.all()) == [catalogue["hello-world"]]
    assert classroom.capacity == 30 and classroom.instructor == instructor
    page = client.get(response["Location"]).content.decode()
    assert classroom.join_code in page
    assert f"/join/{classroom.join_code}/" in page
    assert "<svg" in page[page.index('id="join-qr"') :]
    assert "Morning group" in client.get(reverse("classes")).content.decode()


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"ends_at": "2020-01-01T09:00"}, "must end after it starts"),
        ({"capacity": "0"}, "greater than or equal to 1"),
        ({"exercises": []}, "choose at least one exercise"),
        ({"name": ""}, "This field is required"),
    ],
)
def test_a_bad_class_form_says_what_is_wrong(client, instructor, catalogue, change, error):
    """Each bound is the form's, and the page says which field is wrong."""
    client.force_login(instructor)
    data = {
        "name": "x",
        "exercises": [catalogue["hello-world"].pk],
        "starts_at": "2020-01-01T10:00",
        "ends_at": "2099-01-01T10:00",
        **change,
    }
    response = client.post(reverse("class-new"), data)
    assert response.status_code == 400
    assert error in response.content.decode()
    assert not Classroom.objects.exists()


def test_only_instructors_run_classes(client, learner, instructor, classroom, django_user_model):
    """A learner may not create or list classes; another instructor may not open this one."""
    client.force_login(learner)
    assert client.get(reverse("classes")).status_code == 403
    assert client.get(reverse("class-new")).status_code == 403
    assert client.get(reverse("class", args=[classroom.pk])).status_code == 403
    client.force_login(make_instructor(django_user_model, "other-teacher"))
    for name in ("class", "class-dashboard"):
        assert client.get(reverse(name, args=[classroom.pk])).status_code == 403
    assert client.post(reverse("class-end", args=[classroom.pk])).status_code == 403
    assert Classroom.objects.get(pk=classroom.pk).ended_at is None


def test_joining_without_an_account_takes_a_name_only(client, classroom):
    """A new user with no usable password, logged in, sent to the class's page."""
    response = client.post(
        reverse("class-join"), {"code": classroom.join_code.lower(), "display_name": "Ada"}
    )
    member = ClassMember.objects.get(classroom=classroom)
    assert response.status_code == 302
    assert response["Location"] == reverse("class-learn", args=[classroom.pk])
    assert member.display_name == "Ada" and not member.user.has_usable_password()
    page = client.get(response["Location"]).content.decode()
    assert "You are Ada in this class." in page
    assert "Hello World" in page and "Direct routing" in page


def test_joining_with_an_account_joins_as_that_user_and_again_changes_nothing(
    client_in, learner, classroom
):
    """The name defaults to the username; a second join is the same membership."""
    link = client_in.get(reverse("class-join-code", args=[classroom.join_code])).content.decode()
    assert f'value="{classroom.join_code}"' in link and 'value="learner"' in link
    for _ in range(2):
        response = client_in.post(
            reverse("class-join"), {"code": classroom.join_code, "display_name": ""}
        )
        assert response.status_code == 302
    assert list(ClassMember.objects.values_list("user", "display_name")) == [
        (learner.pk, "learner")
    ]
    catalogue_page = client_in.get(reverse("catalogue")).content.decode()
    assert "You are in the class RabbitMQ 101" in catalogue_page
    assert reverse("class-learn", args=[classroom.pk]) in catalogue_page


def test_joins_are_refused_with_a_reason(client, instructor, catalogue, django_user_model):
    """Unknown code, not started yet (and when it starts), ended, full, name taken."""
    hello = [catalogue["hello-world"]]
    later = make_class(instructor, hello, starts=90, ends=120, name="later")
    over = make_class(instructor, hello, name="over")
    classes.classroom_end(classroom=over)
    full = make_class(instructor, hello, capacity=1, name="full")
    classes.classroom_join(code=full.join_code, user=None, display_name="Bob")

    def refusal(code, name="Ada"):
        response = client.post(reverse("class-join"), {"code": code, "display_name": name})
        assert response.status_code == 400
        return text_of(response)

    assert "no class has the code ZZZZZZ" in refusal("zzzzzz")
    starts = timezone.localtime(later.starts_at)
    said = refusal(later.join_code)
    assert "has not started yet: it starts at" in said and starts.strftime("%H:%M") in said
    assert "this class has ended" in refusal(over.join_code)
    assert "this class is full (1 learners)" in refusal(full.join_code)
    open_class = make_class(instructor, hello, name="open")
    classes.classroom_join(code=open_class.join_code, user=None, display_name="Bob")
    assert "the name bob is taken in this class" in refusal(open_class.join_code, "bob")
    assert ClassMember.objects.count() == 2
    assert not django_user_model.objects.filter(first_name="Ada").exists()


def test_a_member_starts_the_class_exercises_while_it_runs(
    client_in, learner, classroom, catalogue, labs
):
    """The lab is the class's; Start again continues it; other exercises are refused."""
    classes.classroom_join(code=classroom.join_code, user=learner, display_name="")
    start = reverse("class-lab-start", args=[classroom.pk, "hello-world"])
    response = client_in.post(start, headers={"HX-Request": "true"})
    session = LabSession.objects.get(owner=learner)
    assert response["HX-Redirect"] == session.get_absolute_url()
    assert session.classroom == classroom
    client_in.post(start)
    assert LabSession.objects.filter(owner=learner).count() == 1
    page = client_in.get(reverse("class-learn", args=[classroom.pk])).content.decode()
    assert session.get_absolute_url() in page and "Continue" in page
    other = client_in.post(reverse("class-lab-start", args=[classroom.pk, "topic-routing"]))
    assert other.status_code == 400 and "topic-routing is not an exercise of this class" in (
        text_of(other)
    )


def test_only_members_start_labs_and_only_while_the_class_runs(
    client_in, learner, instructor, catalogue
):
    """Not a member: 403. A class that has not started: a clear refusal."""
    classroom = make_class(instructor, [catalogue["hello-world"]], starts=-5, ends=60)
    start = reverse("class-lab-start", args=[classroom.pk, "hello-world"])
    assert client_in.post(start).status_code == 403
    ClassMember.objects.create(classroom=classroom, user=learner, display_name="L")
    Classroom.objects.filter(pk=classroom.pk).update(starts_at=timezone.now() + timedelta(hours=1))
    refused = client_in.post(start)
    assert refused.status_code == 400 and "this class is not running" in text_of(refused)
    assert not LabSession.objects.exists()


def test_ending_a_class_ends_its_labs(client, instructor, classroom, learner, api, labs):
    """The End button's endpoint ends the class and deletes its labs' vhosts."""
    classes.classroom_join(code=classroom.join_code, user=learner, display_name="")
    session = classes.class_lab_start(
        classroom=classroom, user=learner, exercise=classroom.exercises.get(slug="hello-world")
    )
    assert session.vhost in api.vhost_names()
    client.force_login(instructor)
    response = client.post(reverse("class-end", args=[classroom.pk]))
    assert response.status_code == 302
    session.refresh_from_db()
    assert session.state == LabSession.State.ENDED
    assert session.vhost not in api.vhost_names()
    assert Classroom.objects.get(pk=classroom.pk).ended_at is not None


def test_a_class_past_its_end_ends_by_itself(instructor, classroom, learner, api, labs):
    """The beat task ends a class whose end passed, with its labs; a running one stays."""
    assert settings.CELERY_BEAT_SCHEDULE["end-due-classes"]["task"] == end_due_classes.name
    classes.classroom_join(code=classroom.join_code, user=learner, display_name="")
    session = classes.class_lab_start(
        classroom=classroom, user=learner, exercise=classroom.exercises.get(slug="hello-world")
    )
    assert end_due_classes() == []
    Classroom.objects.filter(pk=classroom.pk).update(ends_at=timezone.now())
    assert end_due_classes() == [classroom.pk]
    session.refresh_from_db()
    assert session.state == LabSession.State.ENDED
    assert session.vhost not in api.vhost_names()
    assert end_due_classes() == []


def test_the_header_leads_an_instructor_to_classes_and_a_member_to_their_class(
    client, instructor, classroom, django_user_model
):
    """Instructors see *Classes*; a learner in a running class sees *Your class*, under
    the name the class knows them by; a learner in no class sees neither. The sign-in
    page leads to joining a class."""
    client.force_login(instructor)
    page = client.get(reverse("catalogue")).content.decode()
    assert f'href="{reverse("classes")}"' in page and "Your class<" not in page
    client.logout()
    login = client.get(reverse("login")).content.decode()
    assert f'href="{reverse("class-join")}"' in login
    loner = django_user_model.objects.create_user("loner", password="loner-pass-1")
    client.force_login(loner)
    page = client.get(reverse("catalogue")).content.decode()
    assert f'href="{reverse("classes")}"' not in page
    assert reverse("class-learn", args=[classroom.pk]) not in page
    client.logout()
    client.post(
        reverse("class-join"), {"code": classroom.join_code, "display_name": "Grace Hopper"}
    )
    response = client.get(reverse("catalogue"))
    assert f'href="{reverse("class-learn", args=[classroom.pk])}"' in text_of(response)
    shown = text_of(response).split('class="user-name"', 1)[1].split("</span>", 1)[0]
    shown = shown.rsplit("</svg>", 1)[1]  # the name the header shows, after its icon
    assert shown.strip() == "Grace Hopper"


def test_a_learners_class_page_asks_for_the_latest_message(client, classroom):
    """The class page polls its message box; the answer is the box with the newest
    message, and an empty box once the class has ended."""
    client.post(reverse("class-join"), {"code": classroom.join_code, "display_name": "Ada"})
    url = reverse("class-learn", args=[classroom.pk])
    page = client.get(url).content.decode()
    assert 'id="class-message-box"' in page and 'hx-trigger="every 5s"' in page
    classes.classroom_message_send(classroom=classroom, message="Step 2 in five minutes")
    box = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "Step 2 in five minutes" in box and "<html" not in box
    classes.classroom_end(classroom=classroom)
    box = client.get(url, headers={"HX-Request": "true"}).content.decode()
    assert "Step 2 in five minutes" not in box
