"""A sandbox's replay in Chromium: after a few seconds of a busy sandbox, the scrubber
goes back, the page says it replays and shows an older counter than live, frames keep
coming without being drawn, and "Back to live" draws live again."""

import pytest
from playwright.sync_api import expect

from exercises import sandboxes
from tests.browser.test_lab_e2e import SCREENSHOTS, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORT = {"width": 1440, "height": 900}
COUNTER = '[data-counter="temperature-sensor.published"]'


def shown(page) -> int:
    return int(page.locator(COUNTER).inner_text().replace(",", ""))


def live(page) -> int:
    return page.evaluate(
        "() => window.labConsole.state.counters['temperature-sensor']?.published || 0"
    )


def test_scrub_back_and_return_to_live(page, live_server_url, learner, catalogue, labs):
    """The replayed second shows fewer messages published than live; live comes back."""
    source = sandboxes.sandbox_source_from_exercise(
        exercise=catalogue["direct-routing"], name="replay"
    )
    session = sandboxes.sandbox_create(owner=learner, name="replay", source=source)
    log_in(page, live_server_url)
    page.goto(f"{live_server_url}/labs/{session.id}/")
    page.wait_for_function("() => window.labConsole.state.connected === true")
    # Some ten seconds of history: the producer publishes 2 a second.
    page.wait_for_function(
        "() => (window.labConsole.state.counters['temperature-sensor']?.published || 0) >= 20",
        timeout=60_000,
    )

    page.locator("#replay-start").click()
    expect(page.locator("#replay-controls")).to_be_visible()
    page.locator("#replay-range").fill("1")  # an early second of the history
    banner = page.locator("#replay-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("Replay:")
    expect(banner).to_contain_text("ahead")
    replayed = shown(page)
    # Frames go on arriving, and are not drawn while the page replays.
    page.wait_for_function(
        f"() => window.labConsole.state.counters['temperature-sensor'].published > {replayed + 4}"
    )
    assert shown(page) == replayed < live(page)
    page.locator("#sandbox-replay").screenshot(path=str(SCREENSHOTS / "sandbox-replay.png"))

    page.locator("#replay-live").click()
    expect(banner).to_be_hidden()
    page.wait_for_function(
        f"() => Number(document.querySelector({COUNTER!r}).textContent.replace(/,/g, ''))"
        f" > {replayed + 4}"
    )
