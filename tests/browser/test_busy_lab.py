"""A busy lab in headless Chromium: the page keeps up with the newest events and says
that it shows a sample of them, while its counters stay exact."""

import time

import pytest
from playwright.sync_api import expect

from exercises.services import lab_session_start, workload_update
from tests.browser.test_lab_e2e import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_busy_lab_shows_the_newest_events_and_says_it_samples(
    page, live_server_url, catalogue, learner, labs
):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner)
    log_in(page, live_server_url)
    page.goto(f"{live_server_url}/labs/{session.id}/")
    page.wait_for_function("() => window.labConsole.state.connected === true")
    page.wait_for_function(
        "() => (window.labConsole.state.counters['temperature-sensor'] || {}).published >= 2"
    )
    # At two messages a second every event is shown: the sample notice is alive but hidden.
    expect(page.locator("#events-sampled")).to_be_hidden()

    sensor = session.workloads.get(name="temperature-sensor")
    workload_update(workload=sensor, changes={"rate": 2000})
    expect(page.locator("#events-sampled")).to_be_visible(timeout=15_000)
    expect(page.locator("#events-sampled")).to_contain_text("1 in")

    # The log's newest row is from the last second or so, not from a backlog.
    page.wait_for_timeout(3000)
    newest = page.evaluate("() => Math.max(...window.labConsole.state.events.map((e) => e.t || 0))")
    assert time.time() - newest < 1.0, f"the newest event is {time.time() - newest:.2f} s old"
