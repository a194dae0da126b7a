"""The diagram has the room it needs: at 1440×900 it fills most of its panel with text a
learner reads at a glance, beside a readable steps column and a usable log."""

import pytest
from playwright.sync_api import expect

from exercises.services import lab_session_start
from tests.browser.test_lab_page import open_lab, send_frame

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORT = {"width": 1440, "height": 900}  # a laptop

# What the learner sees of the diagram, in CSS pixels on the screen.
MEASURE = """() => {
    const panel = document.getElementById("diagram").getBoundingClientRect();
    const drawn = document.querySelector("#topology .viewport").getBoundingClientRect();
    // The font size times the scale from the drawing to the screen.
    const size = (selector) => Math.min(...[...document.querySelectorAll(selector)]
        .map((el) => parseFloat(getComputedStyle(el).fontSize) * el.getScreenCTM().a));
    const box = (selector) => {
        const r = document.querySelector(selector).getBoundingClientRect();
        return { width: r.width, height: r.height };
    };
    const diagram = document.getElementById("diagram");
    return {
        panel: { left: panel.left, top: panel.top, right: panel.right, bottom: panel.bottom,
                 width: panel.width, height: panel.height },
        drawn: { left: drawn.left, top: drawn.top, right: drawn.right, bottom: drawn.bottom,
                 width: drawn.width, height: drawn.height },
        overflow: diagram.scrollWidth > diagram.clientWidth + 1
            || diagram.scrollHeight > diagram.clientHeight + 1,
        label: size("#topology .node-label"),
        stat: size("#topology .node-stat"),
        steps: box(".steps-panel"),
        log: box(".log-panel"),
    };
}"""


@pytest.mark.parametrize("slug", ["direct-routing", "dlq-retries"])
def test_the_diagram_fills_its_panel_at_1440_by_900(
    page, live_server_url, catalogue, learner, labs, slug
):
    session = lab_session_start(exercise=catalogue[slug], owner=learner, run=False)
    open_lab(page, live_server_url, session)
    m = page.evaluate(MEASURE)
    panel, drawn = m["panel"], m["drawn"]
    # Scaled to fit: inside its panel, nothing to scroll, and most of its width or height.
    assert not m["overflow"], m
    assert drawn["left"] >= panel["left"] - 1 and drawn["right"] <= panel["right"] + 1, m
    assert drawn["top"] >= panel["top"] - 1 and drawn["bottom"] <= panel["bottom"] + 1, m
    assert drawn["width"] >= 0.8 * panel["width"] or drawn["height"] >= 0.8 * panel["height"], m
    # Names and numbers readable at a glance.
    assert m["label"] >= 13, m
    assert m["stat"] >= 13, m
    assert m["steps"]["width"] >= 300, m
    # The log strip: some 360 px here, where a diagram taking 1.8 parts of 2.8 left it
    # 280 px, eight rows.
    assert m["log"]["height"] >= 320, m

    # The log and the message side by side, each wide enough to read.
    event = {"seq": 1, "t": 1_750_000_000.5, "kind": "published", "message_id": "m-1"}
    send_frame(session, {"events": [event]})
    page.locator('#log-rows tr[data-seq="1"]').click()
    expect(page.locator("#inspector")).to_be_visible()
    log, inspector = (
        page.locator(".log-panel").bounding_box(),
        page.locator("#inspector").bounding_box(),
    )
    assert log["width"] >= 400 and log["height"] >= 320, log
    assert inspector["width"] >= 290 and inspector["height"] >= 320, inspector
