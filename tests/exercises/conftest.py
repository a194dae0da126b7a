"""Fixtures of the instructors' tests: an instructor in the admin and an exercise of their
own."""

import pytest

from exercises.services import exercise_duplicate


@pytest.fixture
def teacher(django_user_model):
    return django_user_model.objects.create_superuser("teacher", password="t-pass-12")


@pytest.fixture
def admin_in(client, teacher):
    client.force_login(teacher)
    return client


@pytest.fixture
def own(catalogue, teacher):
    """An instructor's own exercise: a copy of Direct routing, at version 1."""
    return exercise_duplicate(exercise=catalogue["direct-routing"], author=teacher)
