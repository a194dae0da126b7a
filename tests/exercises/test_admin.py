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


def test_bad_yaml_is_refused_with_the_path(admin_client_in, catalogue):
    exercise = catalogue["direct-routing"]
    url = reverse("admin:exercises_exercise_change", args=[exercise.pk])
    source = exercise.source.replace("rate: 2\n", "rate: 0\n", 1)
    response = admin_client_in.post(url, {"source": source, "published": "on"})
    assert response.status_code == 200
    text = html.unescape(response.content.decode())
    assert "workloads.producers[0].rate:" in text
    exercise.refresh_from_db()
    assert exercise.version == 1 and "rate: 2\n" in exercise.source


def test_edit_is_a_new_version_and_running_labs_keep_theirs(
    admin_client_in, catalogue, learner, labs
):
    exercise = catalogue["direct-routing"]
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
