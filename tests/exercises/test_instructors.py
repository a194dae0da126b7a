"""The Instructors group and the `instructor` command: instructors see exercises and classes in
the admin and nothing else; learners do not get into the admin at all."""

import importlib

import pytest
from django.contrib.auth.models import Group
from django.core.management import CommandError, call_command
from django.urls import reverse

from tests.support import text_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def instructors_group(db):
    """The group as its migration makes it: the flush after a transactional test empties
    every table, the migration's rows too."""
    from django.apps import apps

    migration = importlib.import_module("exercises.migrations.0008_instructors_group")
    migration.instructors_group(apps, None)


@pytest.fixture
def instructor(django_user_model):
    user = django_user_model.objects.create_user("ada", password="ada-pass-12")
    call_command("instructor", "ada")
    user.refresh_from_db()
    return user


def test_the_group_has_the_admin_permissions_on_exercises_and_classes_only():
    """The migration's group may view, add and change exercises, their versions, classes and
    class members, delete exercises and classes, and nothing else."""
    group = Group.objects.get(name="Instructors")
    codenames = set(group.permissions.values_list("content_type__app_label", "codename"))
    expected = {
        ("exercises", f"{action}_{model}")
        for model in ("exercise", "exerciseversion", "classroom", "classmember")
        for action in ("view", "add", "change")
    } | {("exercises", "delete_exercise"), ("exercises", "delete_classroom")}
    assert codenames == expected


def test_the_command_makes_and_unmakes_an_instructor(instructor):
    """An existing user becomes staff in the group; --remove undoes both."""
    assert instructor.is_staff and not instructor.is_superuser
    assert instructor.groups.filter(name="Instructors").exists()
    call_command("instructor", "ada", "--remove")
    instructor.refresh_from_db()
    assert not instructor.is_staff and not instructor.groups.exists()


def test_the_command_creates_an_instructor(client, django_user_model):
    """--create --password makes a new user who can log in to the admin."""
    call_command("instructor", "grace", "--create", "--password", "grace-pass-12")
    user = django_user_model.objects.get(username="grace")
    assert user.is_staff and user.check_password("grace-pass-12")
    assert client.login(username="grace", password="grace-pass-12")
    assert client.get(reverse("admin:index")).status_code == 200


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["nobody"], "there is no user 'nobody'; make one with --create --password"),
        (["someone", "--create"], "--create needs --password for the new user"),
        (["ada", "--password", "x"], "--password is only for a new user, with --create"),
        (["ada", "--create", "--password", "x-pass-123"], "a user 'ada' exists already"),
    ],
    ids=["no-such-user", "create-without-password", "password-without-create", "exists"],
)
def test_the_command_says_what_is_wrong(instructor, arguments, message):
    """Bad arguments are refused with what to do instead."""
    with pytest.raises(CommandError, match=message):
        call_command("instructor", *arguments)


def test_an_instructor_sees_only_exercises_and_classes(client, instructor, catalogue):
    """The admin index of an instructor lists exercises and classes; no users, groups, labs
    or checkpoint results, and those pages are refused."""
    client.force_login(instructor)
    response = client.get(reverse("admin:index"))
    assert response.status_code == 200
    models = {m["object_name"] for app in response.context["app_list"] for m in app["models"]}
    assert {"Exercise", "Classroom"} <= models
    assert models <= {"Exercise", "ExerciseVersion", "Classroom", "ClassMember"}
    page = text_of(response)
    assert "Users" not in page and "Groups" not in page and "Lab sessions" not in page
    for name in (
        "auth_user_changelist",
        "auth_group_changelist",
        "exercises_labsession_changelist",
        "exercises_checkpointresult_changelist",
    ):
        assert client.get(reverse(f"admin:{name}")).status_code == 403, name


def test_an_instructor_duplicates_and_edits(client, instructor, catalogue):
    """An instructor copies a built-in, edits the copy, and reads its history."""
    client.force_login(instructor)
    original = catalogue["direct-routing"]
    response = client.post(
        reverse("admin:exercises_exercise_duplicate", args=[original.pk]), follow=True
    )
    assert response.status_code == 200
    copy = original.copies.get()
    source = copy.source.replace("rate: 2\n", "rate: 3\n", 1)
    change = reverse("admin:exercises_exercise_change", args=[copy.pk])
    assert client.post(change, {"source": source}).status_code == 302
    history = text_of(client.get(reverse("admin:exercises_exercise_versions", args=[copy.pk])))
    assert "version 2" in history and "ada" in history


def test_a_learner_has_no_admin(client_in):
    """A signed-in learner (not staff) is sent to the admin's login, on every admin page."""
    for url in (
        reverse("admin:index"),
        reverse("admin:exercises_exercise_changelist"),
        reverse("admin:exercises_exercise_try_new"),
    ):
        response = client_in.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("admin:login")), url
