"""Two pages of one lab (two tabs of its owner, or a projector beside a laptop): a step
opened in one opens in the other, without reloading."""

import re

import pytest
from playwright.sync_api import expect

from exercises.services import lab_session_start
from tests.browser.test_lab_e2e import expect_passed, next_step
from tests.browser.test_topology_edits import VIEWPORT, open_lab

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_step_opened_in_one_page_opens_in_the_other(
    page, browser, live_server_url, catalogue, learner, labs
):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=True)
    other_context = browser.new_context(viewport=VIEWPORT, locale="en-US")
    other = other_context.new_page()
    errors: list[str] = []
    other.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        open_lab(page, live_server_url, session)
        open_lab(other, live_server_url, session)
        other.evaluate("() => { window.notReloaded = true; }")
        # Both pages are live: the first step completes in each.
        expect_passed(page, "temperature-routed", "temperature-delivered", timeout=40_000)
        expect_passed(other, "temperature-routed", "temperature-delivered")
        step = other.locator('.step[data-step="unknown-key"]')
        expect(step).not_to_have_class(re.compile(r"\bis-current\b"))

        next_step(page, "unknown-key")
        expect(step).to_have_class(re.compile(r"\bis-current\b"), timeout=10_000)
        expect(step).to_have_attribute("data-shown", "true")
        # The step it left keeps its passed checkpoints.
        expect_passed(other, "temperature-routed", "temperature-delivered")
        assert other.evaluate("() => window.notReloaded") is True
        assert not errors, errors
    finally:
        other_context.close()
