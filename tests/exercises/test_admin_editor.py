"""The exercise editor: problems placed at their line and column, and the live preview the
admin's change form asks for while the instructor types."""

import pytest
from django.urls import reverse

from exercises.limits import LIMITS
from exercises.services import exercise_save
from exercises.spec import SpecError, parse_spec

pytestmark = pytest.mark.django_db

DOCUMENT = """\
version: 1
slug: tiny
title:
  en: Tiny
  ru: Крошечное
summary: s
description: d
level: beginner
minutes: 5
topology:
  exchanges:
    - {name: logs, type: direct}
  queues:
    - name: errors
      arguments:
        x-max-length: 10
  bindings:
    - {source: logs, destination: errors, routing_key: error}
workloads:
  producers:
    - name: app
      exchange: logs
      routing_key: error
      rate: 2
  consumers:
    - {name: reader, queue: errors}
steps:
  - id: look
    title:
      en: Look
      ru: Смотрите
    instructions:
      en: See **errors** fill.
      ru: Смотрите, как наполняется **errors**.
    hints: [Read the `errors` queue.]
    checkpoints:
      - id: got-some
        description: Some arrived
        check: {type: delivered, queue: errors, min: 1}
"""


def problems(text: str) -> list[tuple[int | None, int | None, str, str]]:
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    return [(p.line, p.column, p.path, p.message) for p in info.value.problems]


def test_the_document_is_valid():
    """The document the other tests break is valid as it is."""
    assert parse_spec(DOCUMENT).slug == "tiny"


def test_a_bad_value_deep_in_a_workload_is_placed_at_the_value():
    """A value the schema refuses is placed at the value, not at its key."""
    text = DOCUMENT.replace("      rate: 2\n", "      rate: fast\n")
    ((line, column, path, message),) = problems(text)
    assert (line, column, path) == (24, 13, "workloads.producers[0].rate")
    assert message.startswith("must be a number")
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    assert info.value.errors == [f"line 24, column 13: workloads.producers[0].rate: {message}"]


def test_a_missing_key_is_placed_at_its_mapping():
    """A required key that is missing has no place of its own: its mapping's is given."""
    text = DOCUMENT.replace("{name: reader, queue: errors}", "{name: reader}")
    assert problems(text) == [(26, 7, "workloads.consumers[0].queue", "required field is missing")]


def test_an_unknown_key_is_placed_at_that_key():
    """An unknown key is placed where it is written."""
    text = DOCUMENT.replace("      rate: 2\n", "      rate: 2\n      speed: 3\n")
    ((line, column, path, message),) = problems(text)
    assert (line, column, path) == (25, 14, "workloads.producers[0].speed")
    assert message.startswith("unknown field")


def test_a_block_value_is_placed_at_its_key():
    """A problem with a collection written below its key is placed at the key's line."""
    text = DOCUMENT.replace(
        "    - name: errors\n      arguments:\n        x-max-length: 10\n", "    name: errors\n"
    )
    ((line, column, path, message),) = problems(text)
    assert (line, column, path) == (13, 3, "topology.queues")
    assert message == "must be a list (got a mapping)"


def test_a_cross_reference_is_placed_at_its_value():
    """A name that refers to nothing (found once the whole document is read) is placed at
    the name."""
    text = DOCUMENT.replace("{name: reader, queue: errors}", "{name: reader, queue: nowhere}")
    ((line, column, path, message),) = problems(text)
    assert (line, column, path) == (26, 29, "workloads.consumers[0].queue")
    assert "'nowhere' is not a declared queue" in message


def test_a_yaml_syntax_error_is_placed_where_the_reader_stopped():
    """A YAML syntax error says the line and column of the mark the reader gave."""
    text = DOCUMENT.replace("  queues:\n", "  queues:\n  - [oops\n", 1)
    ((line, column, path, message),) = problems(text)
    assert (line, path) == (15, "(document)")
    assert column is not None
    assert message.startswith("YAML syntax error: ")


def test_a_refusal_by_the_document_limits_is_placed_at_its_value():
    """A string past the limit is refused where it starts; a duplicate key at the second."""
    long = "x" * (LIMITS.text_chars + 1)
    ((line, column, path, message),) = problems(DOCUMENT.replace("summary: s", f"summary: {long}"))
    assert (line, column, path) == (6, 10, "summary")
    assert message.startswith(f"a string of {LIMITS.text_chars + 1} characters")
    assert problems(DOCUMENT + "minutes: 6\n") == [
        (40, 1, "minutes", "duplicate key (first at line 9)")
    ]


def test_a_document_without_text_keeps_messages_without_a_place():
    """Problems found in data, not text (a lab's edited topology), name only the path."""
    with pytest.raises(SpecError) as info:
        parse_spec(DOCUMENT).with_topology({"queues": [{"name": ""}]})
    assert all(p.line is None for p in info.value.problems)
    assert info.value.errors[0].startswith("topology.queues[0].name: ")


# -- the preview ---------------------------------------------------------------------------


@pytest.fixture
def staff_client(client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("author", password="a-pass-12"))
    return client


def preview(client, text: str | bytes):
    body = text.encode() if isinstance(text, str) else text
    return client.post(
        reverse("admin:exercises_exercise_preview"), body, content_type="text/plain; charset=utf-8"
    )


def test_the_preview_draws_a_valid_text_with_its_steps_in_both_languages(staff_client):
    """A valid text gives the lab page's graph, and its steps in English and Russian, the
    Markdown rendered."""
    response = preview(staff_client, DOCUMENT)
    assert response.status_code == 200
    answer = response.json()
    assert answer["problems"] == []
    nodes = {n["id"] for n in answer["graph"]["nodes"]}
    assert {"p:app", "x:logs", "q:errors", "c:reader"} <= nodes
    assert answer["title"] == {"en": "Tiny", "ru": "Крошечное"}
    (en,) = answer["steps"]["en"]
    (ru,) = answer["steps"]["ru"]
    assert en["title"] == "Look" and ru["title"] == "Смотрите"
    assert "<strong>errors</strong>" in en["instructions_html"]
    assert "Смотрите, как наполняется <strong>errors</strong>" in ru["instructions_html"]
    assert en["hints"] == ["<p>Read the <code>errors</code> queue.</p>"]
    assert ru["checkpoints"] == ["Some arrived"]


def test_the_preview_lists_the_problems_of_an_invalid_text(staff_client):
    """An invalid text gives its problems, each with its line, and no graph."""
    response = preview(staff_client, DOCUMENT.replace("      rate: 2\n", "      rate: -1\n"))
    assert response.status_code == 422
    answer = response.json()
    assert answer["graph"] is None
    ((problem),) = answer["problems"]
    assert problem["line"] == 24 and problem["path"] == "workloads.producers[0].rate"
    assert problem["text"].startswith("line 24, column 13: workloads.producers[0].rate: ")


def test_the_preview_refuses_an_oversized_body(staff_client):
    """A body past the document limit is refused by its size."""
    response = preview(staff_client, DOCUMENT + "# " + "x" * LIMITS.document_bytes + "\n")
    assert response.status_code == 413
    assert response.json()["problems"][0]["message"].startswith(
        "the document is larger than the limit"
    )


def test_the_preview_is_for_staff_only(client, learner, django_user_model):
    """Anonymous and non-staff users are sent to the login page; staff without the right
    to change or add exercises are refused."""
    assert preview(client, DOCUMENT).status_code == 302
    client.force_login(learner)
    assert preview(client, DOCUMENT).status_code == 302
    staff = django_user_model.objects.create_user("helper", password="h-pass-12", is_staff=True)
    client.force_login(staff)
    assert preview(client, DOCUMENT).status_code == 403


def test_the_preview_checks_the_csrf_token(django_user_model):
    """A post without the CSRF token is refused."""
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(django_user_model.objects.create_superuser("author", password="a-pass-12"))
    assert preview(client, DOCUMENT).status_code == 403


def test_the_preview_answers_posts_only(staff_client):
    """A GET is not a preview."""
    assert staff_client.get(reverse("admin:exercises_exercise_preview")).status_code == 405


def test_the_change_and_add_forms_have_the_editor(staff_client):
    """The change form's YAML field is the editor's, with CodeMirror, the preview's URL
    and the preview's template; the add form's too."""
    exercise, _changed = exercise_save(source=DOCUMENT)
    response = staff_client.get(reverse("admin:exercises_exercise_change", args=[exercise.pk]))
    text = response.content.decode()
    assert 'data-editor="yaml"' in text
    assert f'data-preview-url="{reverse("admin:exercises_exercise_preview")}"' in text
    assert "vendor/codemirror/lib/codemirror.js" in text
    assert 'src="/static/labconsole/admin/editor.js" type="module"' in text
    assert 'id="exercise-preview-template"' in text
    add_form = staff_client.get(reverse("admin:exercises_exercise_add")).content.decode()
    assert 'data-editor="yaml"' in add_form and 'id="exercise-preview-template"' in add_form


def test_a_text_submitted_with_crlf_line_ends_is_kept_with_lf(staff_client):
    """A browser posts the textarea's lines ending in CR LF: the saved text has the file's
    LF, and posting the same text again is no new version."""
    exercise, _changed = exercise_save(source=DOCUMENT)
    url = reverse("admin:exercises_exercise_change", args=[exercise.pk])
    edited = DOCUMENT.replace("rate: 2", "rate: 3")
    for _ in range(2):
        response = staff_client.post(
            url, {"source": edited.replace("\n", "\r\n"), "published": "on"}
        )
        assert response.status_code == 302, response.content.decode()[:2000]
    exercise.refresh_from_db()
    assert exercise.source == edited.rstrip("\n")  # the form strips the ends, as before
    assert exercise.version == 2


def test_a_slug_another_exercise_has_is_refused_at_its_line(staff_client):
    """Saving a text under another exercise's slug is a problem placed at the slug, not a
    database error; nothing is saved."""
    first, _ = exercise_save(source=DOCUMENT)
    second, _ = exercise_save(source=DOCUMENT.replace("slug: tiny", "slug: small"))
    url = reverse("admin:exercises_exercise_change", args=[second.pk])
    response = staff_client.post(url, {"source": DOCUMENT, "published": "on"})
    assert response.status_code == 200
    assert "line 2, column 7: slug: another exercise is called &#x27;tiny&#x27;" in (
        response.content.decode()
    )
    second.refresh_from_db()
    assert second.slug == "small" and second.version == 1
