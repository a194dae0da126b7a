"""The exercise editor in the admin, in Chromium: CodeMirror with line numbers, a mistake
marked at its line and shown by the preview, and the diagram back once it is fixed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from exercises.services import exercise_save
from tests.exercises.test_admin_editor import DOCUMENT

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORT = {"width": 1440, "height": 900}
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / os.environ.get("SCREENSHOTS_DIR", "test-artifacts/screenshots")


def test_a_mistake_is_marked_at_its_line_and_the_fix_brings_the_diagram_back(
    page, live_server_url, django_user_model
):
    """Typing a bad rate marks its line and lists the problem in the preview, keeping the
    last diagram; fixing it and adding a queue draws the new queue."""
    django_user_model.objects.create_superuser("author", password="a-pass-12")
    exercise, _changed = exercise_save(source=DOCUMENT)
    page.goto(
        f"{live_server_url}/admin/login/?next=/admin/exercises/exercise/{exercise.pk}/change/"
    )
    page.fill("#id_username", "author")
    page.fill("#id_password", "a-pass-12")
    page.click("input[type=submit]")

    editor = page.locator(".exercise-editor .CodeMirror")
    expect(editor).to_be_visible()
    expect(editor.locator(".CodeMirror-linenumber", has_text="24")).to_be_visible()
    preview = page.locator(".exercise-preview")
    expect(preview).to_have_attribute("data-state", "valid")
    expect(preview.locator('[data-node="q:errors"]')).to_be_visible()
    expect(preview.locator('.preview-step[data-step="look"] h4')).to_have_text("Look")
    preview.locator('[data-language="ru"]').click()
    expect(preview.locator('.preview-step[data-step="look"] h4')).to_have_text("Смотрите")

    # A mistake typed on line 24 (rate: 2 -> rate: 2x).
    editor.locator(".CodeMirror-line", has_text="rate: 2").click()
    page.keyboard.press("End")
    page.keyboard.type("x")
    marker = editor.locator('.editor-problem-marker[data-line="24"]')
    expect(marker).to_be_visible()
    assert "workloads.producers[0].rate" in marker.get_attribute("title")
    expect(preview).to_have_attribute("data-state", "invalid")
    expect(preview.locator('[data-role="problems"] li')).to_have_text(
        'line 24, column 13: workloads.producers[0].rate: must be a number (got the string "2x")'
    )
    # The last good diagram stays while the text is wrong.
    expect(preview.locator('[data-node="q:errors"]')).to_be_visible()

    # Fixed, and a queue added: the mark goes and the diagram shows the new queue.
    page.keyboard.press("Backspace")
    editor.locator(".CodeMirror-line", has_text="- name: errors").click()
    page.keyboard.press("Home")
    page.keyboard.type("- name: audit")
    page.keyboard.press("Enter")  # the new line keeps the indentation
    expect(preview).to_have_attribute("data-state", "valid")
    expect(editor.locator(".editor-problem-marker")).to_have_count(0)
    expect(preview.locator('[data-role="problems"]')).to_be_hidden()
    expect(preview.locator('[data-node="q:audit"]')).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "admin-exercise-editor.png"))

    # Saving carries the edited text.
    page.click("input[name=_continue]")
    exercise.refresh_from_db()
    assert "- name: audit" in exercise.source
