"""The lab's owner changes the topology from the Topology panel; a second page of the same
lab (a second viewer) draws the change at once, without reloading: a queue declared and
bound appears, unbound loses its edge, deleted disappears."""

import pytest
from playwright.sync_api import expect

from exercises.services import lab_session_start
from tests.browser.test_lab_e2e import SCREENSHOTS, log_in
from tests.exercises.test_topology_edits import _with_edits

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORT = {"width": 1440, "height": 900}
NEW_EDGE = (
    "() => window.labConsole.graph.edges.some("
    "(e) => e.source === 'x:sensors' && e.target === 'q:humidity' && e.kind === 'binding')"
)


def open_lab(page, url, session):
    log_in(page, url)
    page.goto(f"{url}/labs/{session.id}/")
    page.wait_for_function("() => window.labConsole.state.connected === true")


def test_a_binding_made_in_one_page_is_drawn_in_the_other(
    page, browser, live_server_url, catalogue, learner, labs
):
    exercise = catalogue["direct-routing"]
    source = _with_edits(exercise.source, exercise=True, steps={})  # at every step
    session = lab_session_start(exercise=exercise, owner=learner, run=False, source=source)
    viewer_context = browser.new_context(viewport=VIEWPORT, locale="en-US")
    viewer = viewer_context.new_page()
    errors: list[str] = []
    viewer.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        open_lab(page, live_server_url, session)
        open_lab(viewer, live_server_url, session)
        viewer.evaluate("() => { window.notReloaded = true; }")

        page.locator("#topology-card > summary").click()
        queue_form = page.locator("#topology-queue")
        queue_form.locator("input[name=name]").fill("humidity")
        queue_form.locator("textarea[name=arguments]").fill("x-max-priority=300")
        queue_form.locator("button[type=submit]").click()
        expect(page.locator("#topology-result")).to_contain_text(
            "arguments.x-max-priority: must be an integer from 1 to 255"
        )
        # The refusal keeps what was typed, to be put right.
        expect(queue_form.locator("input[name=name]")).to_have_value("humidity")
        queue_form.locator("textarea[name=arguments]").fill("x-max-priority=5")
        queue_form.locator("button[type=submit]").click()
        expect(page.locator("#topology-result")).to_contain_text("Done")

        bind_form = page.locator("#topology-bind")
        bind_form.locator("select[name=source]").select_option("sensors")
        bind_form.locator("input[name=destination]").fill("humidity")
        bind_form.locator("input[name=routing_key]").fill("humidity")
        bind_form.locator("button[type=submit]").click()
        expect(page.locator("#topology-result")).to_contain_text("Done")
        page.wait_for_function(NEW_EDGE)

        # The second viewer draws it, and its panel lists the new binding to unbind.
        viewer.wait_for_function(NEW_EDGE, timeout=10_000)
        expect(
            viewer.locator('#topology path[data-edge^="binding:x:sensors>q:humidity"]')
        ).to_have_count(1)
        expect(viewer.locator('#topology [data-node="q:humidity"]')).to_have_count(1)
        expect(viewer.locator("#topology-unbind select[name=binding]")).to_contain_text(
            "sensors → humidity (humidity)"
        )
        assert viewer.evaluate("() => window.notReloaded") is True
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / "lab-topology-panel.png")

        # Unbound in one page: the edge goes from the other, the queue stays.
        unbind_form = page.locator("#topology-unbind")
        unbind_form.locator("select[name=binding]").select_option(
            label="sensors → humidity (humidity)"
        )
        unbind_form.locator("button[type=submit]").click()
        expect(page.locator("#topology-result")).to_contain_text("Done")
        viewer.wait_for_function(f"() => !({NEW_EDGE})()", timeout=10_000)
        expect(
            viewer.locator('#topology path[data-edge^="binding:x:sensors>q:humidity"]')
        ).to_have_count(0)
        expect(viewer.locator('#topology [data-node="q:humidity"]')).to_have_count(1)
        expect(viewer.locator("#topology-unbind select[name=binding]")).not_to_contain_text(
            "humidity"
        )

        # The queue deleted in one page: its node goes from the other.
        delete_form = page.locator("#topology-delete")
        delete_form.locator("select[name=kind]").select_option("queue")
        delete_form.locator("input[name=name]").fill("humidity")
        page.once("dialog", lambda dialog: dialog.accept())
        delete_form.locator("button[type=submit]").click()
        expect(page.locator("#topology-result")).to_contain_text("Done")
        expect(viewer.locator('#topology [data-node="q:humidity"]')).to_have_count(
            0, timeout=10_000
        )
        assert not viewer.evaluate(
            "() => window.labConsole.graph.nodes.some((n) => n.id === 'q:humidity')"
        )
        expect(viewer.locator('#topology [data-node="q:temperature"]')).to_have_count(1)
        assert viewer.evaluate("() => window.notReloaded") is True
    finally:
        viewer_context.close()
    assert not errors, f"JavaScript errors on the second page: {errors}"


def test_a_refusal_reads_in_russian_on_a_russian_page(
    browser, live_server_url, catalogue, learner, labs
):
    exercise = catalogue["direct-routing"]
    source = _with_edits(exercise.source, exercise=True, steps={})
    session = lab_session_start(exercise=exercise, owner=learner, run=False, source=source)
    context = browser.new_context(viewport=VIEWPORT, locale="ru-RU")
    page = context.new_page()
    try:
        open_lab(page, live_server_url, session)
        page.locator("#topology-card > summary").click()
        queue_form = page.locator("#topology-queue")
        queue_form.locator("input[name=name]").fill("humidity")
        queue_form.locator("textarea[name=arguments]").fill("x-max-priority=300")
        queue_form.locator("button[type=submit]").click()
        expect(page.locator("#topology-result")).to_contain_text(
            "arguments.x-max-priority: должно быть целым числом от 1 до 255"
        )
    finally:
        context.close()
