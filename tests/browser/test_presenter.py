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

# The drawing as it stays: laid out (ELK answers asynchronously) and not laid out again
# for a second, the diagram's new size having been taken into account.
SETTLED = """async () => {
    for (;;) {
        await window.labConsole.drawn;
        const shown = window.labConsole.layout;
        await new Promise((resolve) => setTimeout(resolve, 1000));
        await window.labConsole.drawn;
        if (window.labConsole.layout === shown) return;
    }
}"""


def test_the_presenter_view_fills_the_screen_zooms_pans_and_stays_live(
    page, live_server_url, catalogue, learner, labs
):
    session = lab_session_start(exercise=catalogue["dlq-retries"], owner=learner, run=False)
    open_lab(page, live_server_url, session)
    page.locator("#presenter-toggle").click()
    expect(page.locator("#lab")).to_have_class("lab is-presenting")
    assert page.evaluate("location.hash") == "#presenter"  # a bookmark opens it again
    page.evaluate(SETTLED)  # laid out again for the screen and its larger text

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


# Every text of the drawing that shows, as large as the screen shows it: its font size
# times the drawing's scale.
SHOWN = """() => {
    const shown = (selector) => [...document.querySelectorAll(`#topology ${selector}`)]
        .filter((el) => getComputedStyle(el).visibility === "visible" && el.textContent.trim())
        .map((el) => parseFloat(getComputedStyle(el).fontSize) * el.getScreenCTM().a);
    return {
        names: shown(".node-label"),
        numbers: shown(".node-stat"),
        badges: shown(".node-badge-text"),
        keys: shown(".edge-label text"),
    };
}"""


@pytest.mark.parametrize("slug", ["final-project", "microservices-saga"])
def test_names_numbers_and_routing_keys_read_at_18_px_on_a_projector(
    page, live_server_url, catalogue, learner, labs, slug
):
    """The catalogue's largest topologies: the nodes' names, their numbers (a queue's
    depths and rates, a workload's counts, an exchange's unroutable and a producer's
    returned badges) and the edges' routing keys are all at least 18 px on the screen."""
    session = lab_session_start(exercise=catalogue[slug], owner=learner, run=False)
    open_lab(page, live_server_url, session)
    nodes = [n["id"] for n in page.evaluate("() => window.labConsole.graph.nodes")]
    exchange = next(n[2:] for n in nodes if n.startswith("x:") and n != "x:")
    producer = next(n[2:] for n in nodes if n.startswith("p:") and n != "p:@you")
    send_frame(
        session,
        {"exchanges": {exchange: {"unroutable": 7}}, "counters": {producer: {"returned": 12}}},
    )
    for node in (f"x:{exchange}", f"p:{producer}"):
        expect(page.locator(f'#topology [data-node="{node}"] .node-badge')).to_have_attribute(
            "visibility", "visible"
        )
    page.locator("#presenter-toggle").click()
    expect(page.locator("#lab")).to_have_class("lab is-presenting")
    page.evaluate(SETTLED)

    sizes = page.evaluate(SHOWN)
    assert len(sizes["badges"]) == 2, sizes
    assert all(sizes[kind] for kind in ("names", "numbers", "keys")), sizes
    smallest = {kind: round(min(found), 1) for kind, found in sizes.items()}
    assert all(size >= 18 for size in smallest.values()), smallest
