"""Instructors edit exercises as YAML in the admin; a running lab keeps its version."""

import html

import pytest
from django.urls import reverse

from exercises.models import Exercise
from exercises.services import lab_session_start

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def admin_client_in(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("teacher", password="t-pass-12"))
    return client


@pytest.fixture
def editable(catalogue):
    """Direct routing as an instructor's own exercise: a built-in one is not edited here."""
    exercise = catalogue["direct-routing"]
    Exercise.objects.filter(pk=exercise.pk).update(builtin=False)
    exercise.builtin = False
    return exercise


def test_bad_yaml_is_refused_with_the_path(admin_client_in, editable):
    exercise = editable
    url = reverse("admin:exercises_exercise_change", args=[exercise.pk])
    source = exercise.source.replace("rate: 2\n", "rate: 0\n", 1)
    response = admin_client_in.post(url, {"source": source, "published": "on"})
    assert response.status_code == 200
    text = html.unescape(response.content.decode())
    assert "workloads.producers[0].rate:" in text
    exercise.refresh_from_db()
    assert exercise.version == 1 and "rate: 2\n" in exercise.source


def test_edit_is_a_new_version_and_running_labs_keep_theirs(
    admin_client_in, editable, learner, labs
):
    exercise = editable
    session = lab_session_start(exercise=exercise, owner=learner, run=False)
    url = reverse("admin:exercises_exercise_change", args=[exercise.pk])
    source = exercise.source.replace("rate: 2\n", "rate: 3\n", 1)
    response = admin_client_in.post(url, {"source": source, "published": "on"})
    assert response.status_code == 302
    exercise = Exercise.objects.get(pk=exercise.pk)
    assert exercise.version == 2 and exercise.spec.producer("temperature-sensor").rate == 3
    session.refresh_from_db()
    assert session.exercise_version == 1
    assert session.spec.producer("temperature-sensor").rate == 2


def billion_laughs(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("make_source", "expected"),
    [
        (lambda good: good + billion_laughs(9), "counting each alias as everything it repeats"),
        (lambda good: good + "deep: " + "[" * 600 + "]" * 600 + "\n", "nest deeper than 32"),
        (
            lambda good: good.replace("version: 1\n", "version: 1.0\n", 1),
            "version: must be an integer (got the number 1.0)",
        ),
        (
            lambda good: good.replace("routing_key: temperature\n", f"routing_key: {'é' * 200}\n"),
            "routing_key: must be at most 255 bytes in UTF-8 (got 400 bytes)",
        ),
        (lambda good: good + "title: again\n", "title: duplicate key (first at line"),
    ],
    ids=["alias-bomb", "600-levels", "version-1.0", "routing-key-400-bytes", "duplicate-key"],
)
def test_hostile_source_is_a_form_error(admin_client_in, editable, make_source, expected):
    """A document built to cost the server is refused as a form error naming where, not a
    500, and the exercise keeps its version."""
    exercise = editable
    assert "version: 1\n" in exercise.source and "routing_key: temperature\n" in exercise.source
    url = reverse("admin:exercises_exercise_change", args=[exercise.pk])
    response = admin_client_in.post(
        url, {"source": make_source(exercise.source), "published": "on"}
    )
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors["source"]
    assert any(expected in e for e in errors), errors
    assert all(len(e) < 500 for e in errors), errors
    exercise.refresh_from_db()
    assert exercise.version == 1


def test_oversized_source_is_refused_before_reading_it(admin_client_in, editable):
    """A document over the size limit is refused by its size, with the limit in the message."""
    exercise = editable
    url = reverse("admin:exercises_exercise_change", args=[exercise.pk])
    source = exercise.source + "# " + "x" * (200 * 1024) + "\n"
    response = admin_client_in.post(url, {"source": source, "published": "on"})
    assert response.status_code == 200
    assert response.context["adminform"].form.errors["source"] == [
        "(document): the document is larger than the limit of 128 KiB"
    ]
