"""A sandbox's controls in Chromium: a consumer added from the page appears on the diagram
and its card's counters move; a peek at a queue shows its messages and what it cost."""

import pytest
from playwright.sync_api import expect

from exercises.lab_controls import lab_workload_add
from exercises.models import LabSession
from exercises.services import exercise_save, lab_publish, lab_session_start
from tests.browser.test_lab_e2e import log_in
from tests.exercises.test_lab_controls import SANDBOX

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORT = {"width": 1440, "height": 900}


def test_add_a_consumer_and_peek_from_the_page(page, live_server_url, learner, labs):
    """The learner adds a consumer of orders; its node is drawn and its acked counter
    moves. A peek at orders shows messages from the trace, saying nothing was read."""
    exercise, _ = exercise_save(source=SANDBOX)
    session = lab_session_start(exercise=exercise, owner=learner, run=True)
    LabSession.objects.filter(pk=session.pk).update(sandbox=True)
    session.sandbox = True
    lab_workload_add(
        session=session,
        kind="producer",
        item={"name": "buyer", "exchange": "shop", "routing_key": "order", "rate": 10},
    )
    log_in(page, live_server_url)
    page.goto(f"{live_server_url}/labs/{session.id}/")
    page.wait_for_function("() => window.labConsole.state.connected === true")

    page.locator("#sandbox-controls summary", has_text="Add a consumer").click()
    form = page.locator("#sandbox-add-consumer")
    form.locator("input[name=name]").fill("packer")
    form.locator("input[name=queue]").fill("nope")
    form.locator("button[type=submit]").click()
    expect(page.locator("#sandbox-workload-result")).to_contain_text("queue")
    form.locator("input[name=queue]").fill("orders")
    form.locator("button[type=submit]").click()
    expect(page.locator("#sandbox-workload-result")).to_contain_text("Added packer")
    page.wait_for_function("() => window.labConsole.graph.nodes.some((n) => n.id === 'c:packer')")
    expect(page.locator("#workload-packer")).to_be_visible()
    page.wait_for_function(
        "() => Number(document.querySelector('[data-counter=\"packer.acked\"]')?.textContent"
        ".replace(/\\D/g, '')) > 3"
    )

    page.locator("#sandbox-remove input[name=name]").fill("packer")
    page.once("dialog", lambda dialog: dialog.accept())
    page.locator("#sandbox-remove button[type=submit]").click()
    expect(page.locator("#workload-packer")).to_have_count(0)
    page.wait_for_function("() => !window.labConsole.graph.nodes.some((n) => n.id === 'c:packer')")

    lab_publish(session=session, exchange="shop", routing_key="order", body='{"peek": true}')
    queue = page.locator("#sandbox-queue")
    queue.locator("input[name=queue]").fill("orders")
    queue.locator("button[value=peek]").click()
    result = page.locator("#queue-result")
    expect(result).to_contain_text("nothing was read from the queue")
    expect(result.locator(".peek-message").first).to_be_visible()
