"""The admin's "Try it" in Chromium: an instructor edits an exercise's text without saving,
clicks Try it, and a new tab shows the lab of the edited text."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.core.management import call_command
from playwright.sync_api import expect

from exercises.models import LabSession
from exercises.services import exercise_duplicate
from tests.exercises.test_instructors import instructors_group  # noqa: F401 - a fixture

# Serialized rollback: the Instructors group comes from a migration, and the flush after
# each transactional test empties every table.
pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]

VIEWPORT = {"width": 1440, "height": 900}
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / os.environ.get("SCREENSHOTS_DIR", "test-artifacts/screenshots")


def test_try_opens_the_unsaved_text_in_a_new_tab(
    page, live_server_url, catalogue, django_user_model, labs
):
    """A queue typed into the editor and not saved is on the new tab's diagram, under the
    trial's banner; the exercise keeps its saved text."""
    call_command("instructor", "ada", "--create", "--password", "ada-pass-12")
    own = exercise_duplicate(
        exercise=catalogue["direct-routing"], author=django_user_model.objects.get(username="ada")
    )
    page.goto(f"{live_server_url}/admin/login/?next=/admin/exercises/exercise/{own.pk}/change/")
    page.fill("#id_username", "ada")
    page.fill("#id_password", "ada-pass-12")
    page.click("input[type=submit]")

    editor = page.locator(".CodeMirror")
    expect(editor).to_be_visible()
    # The cursor to the end of the queue `pressure`'s line (the editor draws only the lines
    # in view), then typed as a person would.
    page.evaluate(
        """() => {
            const cm = document.querySelector(".CodeMirror").CodeMirror;
            const line = cm.getValue().split("\\n").indexOf("    - name: pressure");
            cm.focus();
            cm.setCursor({ line, ch: cm.getLine(line).length });
            cm.scrollIntoView(null, 100);
        }"""
    )
    page.keyboard.press("Enter")  # the new line keeps the indentation
    page.keyboard.type("- name: audit")

    with page.context.expect_page() as opened:
        page.get_by_role("button", name="Try it").click()
    lab = opened.value
    lab.wait_for_load_state()
    expect(lab.locator("#trial-banner")).to_contain_text("A trial of unsaved text")
    expect(lab.locator('svg#topology .node[data-node="q:audit"]')).to_be_visible(timeout=15_000)
    expect(lab.locator('svg#topology .node[data-node="q:pressure"]')).to_be_visible()
    lab.screenshot(path=str(SCREENSHOTS / "admin-try-it.png"))

    session = LabSession.objects.get(trial=True)
    assert lab.url.endswith(session.get_absolute_url())
    assert "- name: audit" in session.source
    own.refresh_from_db()
    assert own.version == 1 and "- name: audit" not in own.source
    # The editor's tab is still there, with the edit, for the next try or a save.
    expect(page.locator(".CodeMirror-line", has_text="- name: audit")).to_be_visible()
    lab.close()
