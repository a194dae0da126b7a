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


def log_rows(page) -> list[str]:
    return page.eval_on_selector_all("#log-rows tr", "rows => rows.map(r => r.dataset.seq)")


def replay_seqs(page) -> set[str]:
    """The events of the second the page replays, as replay.js handed it over."""
    return set(
        page.evaluate("() => window.labConsole.replay.second.events.map(e => String(e.seq))")
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
    # The log shows that second's events, and goes on showing them whatever redraws it: a
    # filter changed and back, a socket that reconnects (its snapshot redraws the page).
    replayed_rows = log_rows(page)
    assert replayed_rows and set(replayed_rows) <= replay_seqs(page)
    page.select_option("#log-filter-kind", index=1)
    page.select_option("#log-filter-kind", index=0)
    assert log_rows(page) == replayed_rows
    frames = page.evaluate("() => window.labConsole.state.framesReceived")
    page.evaluate("() => window.labConsole.reconnect()")
    page.wait_for_function(
        f"() => window.labConsole.state.connected && "
        f"window.labConsole.state.framesReceived > {frames + 2}"
    )
    assert log_rows(page) == replayed_rows
    assert shown(page) == replayed
    page.locator("#sandbox-replay").screenshot(path=str(SCREENSHOTS / "sandbox-replay.png"))

    page.locator("#replay-live").click()
    expect(banner).to_be_hidden()
    page.wait_for_function(
        f"() => Number(document.querySelector({COUNTER!r}).textContent.replace(/,/g, ''))"
        f" > {replayed + 4}"
    )
