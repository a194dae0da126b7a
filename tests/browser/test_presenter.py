"""The presenter view at 1920×1080: the diagram alone fills the projector's screen with
large text, zooms and pans, and stays live."""

import pytest
from playwright.sync_api import expect

from exercises.services import lab_session_start
from tests.browser.test_lab_page import open_lab, send_frame

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORT = {"width": 1920, "height": 1080}  # a projector

MEASURE = """() => {
    const drawn = document.querySelector("#topology .viewport").getBoundingClientRect();
    const labels = [...document.querySelectorAll("#topology .node-label")];
    return {
        drawn: { left: drawn.left, top: drawn.top, width: drawn.width, height: drawn.height },
        label: Math.min(...labels.map((el) =>
            parseFloat(getComputedStyle(el).fontSize) * el.getScreenCTM().a)),
        scale: window.labConsole.state.diagramScale,
    };
}"""


def test_the_presenter_view_fills_the_screen_zooms_pans_and_stays_live(
    page, live_server_url, catalogue, learner, labs
):
    session = lab_session_start(exercise=catalogue["dlq-retries"], owner=learner, run=False)
    open_lab(page, live_server_url, session)
    page.locator("#presenter-toggle").click()
    expect(page.locator("#lab")).to_have_class("lab is-presenting")
    assert page.evaluate("location.hash") == "#presenter"  # a bookmark opens it again

    m = page.evaluate(MEASURE)
    assert m["label"] >= 18, m
    assert m["drawn"]["width"] >= 0.8 * 1920 or m["drawn"]["height"] >= 0.8 * 1080, m
    # Where the steps, the log and the controls were, the diagram's panel is on top.
    for x, y in ((100, 500), (700, 950), (1800, 600)):
        assert page.evaluate(
            f"() => !!document.elementFromPoint({x}, {y}).closest('.diagram-panel')"
        ), (x, y)

    # Zoom: the wheel and the buttons change the scale.
    page.mouse.move(960, 540)
    page.mouse.wheel(0, -300)
    zoomed = page.evaluate(MEASURE)
    assert zoomed["scale"] > m["scale"] * 1.05, (m, zoomed)
    page.locator("#zoom-out").click()
    assert page.evaluate(MEASURE)["scale"] < zoomed["scale"]

    # Pan: a drag on the background moves the drawing with the pointer.
    before = page.evaluate(MEASURE)["drawn"]
    page.mouse.move(400, 1000)
    page.mouse.down()
    page.mouse.move(550, 900, steps=5)
    page.mouse.up()
    after = page.evaluate(MEASURE)["drawn"]
    assert after["left"] - before["left"] == pytest.approx(150, abs=3), (before, after)
    assert after["top"] - before["top"] == pytest.approx(-100, abs=3), (before, after)

    # Live: a frame's numbers reach the queue's node.
    send_frame(session, {"queues": {"orders": {"ready": 4321, "unacked": 0, "consumers": 1}}})
    expect(page.locator('#topology .node[data-node="q:orders"]')).to_contain_text("4,321")

    # And back: Esc, or the bookmark without the fragment.
    page.keyboard.press("Escape")
    expect(page.locator("#lab")).not_to_have_class("lab is-presenting")
    assert page.evaluate("location.hash") == ""
    page.goto(f"{live_server_url}/labs/{session.id}/#presenter")
    expect(page.locator("#lab")).to_have_class("lab is-presenting")
