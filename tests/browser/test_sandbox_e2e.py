"""A team sandbox in Chromium, as two people use it: the owner starts it from the New
sandbox form and shares a link; a teammate opens it in another browser; each sees the
other under "People here", a queue one declares is drawn on the other's diagram, a
consumer one adds is drawn on the other's; a stranger gets the 403 page, and a teammate
whose link is revoked is told so on the page."""

import re

import pytest
from playwright.sync_api import expect

from exercises.models import LabSession
from exercises.sandboxes import sandbox_invite_create, sandbox_invite_revoke
from tests.browser.test_lab_e2e import SCREENSHOTS, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORT = {"width": 1440, "height": 900}
CONNECTED = "() => window.labConsole.state.connected === true"


def _drawn(node: str) -> str:
    return f"() => window.labConsole.graph.nodes.some((n) => n.id === {node!r})"


@pytest.fixture
def other_page(browser):
    """A page of a second browser context, for another person; no JavaScript errors."""
    pages, errors = [], []

    def new():
        context = browser.new_context(viewport=VIEWPORT, locale="en-US")
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        pages.append(context)
        return page

    yield new
    for context in pages:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_two_members_build_a_sandbox_together(
    page, other_page, live_server_url, learner, django_user_model, labs
):
    """The owner and a teammate see each other, each other's queue and consumer; a
    stranger gets 403; the teammate, once the link is revoked, is told so."""
    django_user_model.objects.create_user("bob", password="bob-pass-1", first_name="Bob")
    django_user_model.objects.create_user("eve", password="eve-pass-1")
    url = live_server_url

    log_in(page, url)
    page.goto(f"{url}/sandboxes/new/")
    # What a start needs shows when it is chosen: an empty vhost needs no exercise.
    expect(page.locator("[data-field=exercise]")).to_be_hidden()
    page.locator("input[name=start][value=exercise]").check()
    expect(page.locator("[data-field=exercise]")).to_be_visible()
    page.locator("input[name=start][value=empty]").check()
    page.fill("input[name=name]", "Orders repro")
    page.screenshot(path=str(SCREENSHOTS / "sandbox-new.png"))
    page.locator("#sandbox-form button[type=submit]").click()
    page.wait_for_url(re.compile(r"/labs/"))
    page.wait_for_function(CONNECTED)
    session = LabSession.objects.get(sandbox=True, owner=learner)
    expect(page.locator("#sandbox-limits")).to_contain_text("queues")

    bob = other_page()
    log_in(bob, url, "bob", "bob-pass-1")
    invite = sandbox_invite_create(session=session, user=learner)
    bob.goto(f"{url}/sandboxes/join/{invite.token}/")
    bob.wait_for_url(re.compile(rf"/labs/{session.id}/"))
    bob.wait_for_function(CONNECTED)
    expect(page.locator("#people-list li[data-user]")).to_have_text(["Bob"], timeout=15_000)
    expect(bob.locator("#people-list li[data-user]")).to_have_text(["learner"], timeout=15_000)
    # The list of sandboxes, in another tab of the owner's, says who has it open.
    listing = page.context.new_page()
    listing.goto(f"{url}/sandboxes/")
    here = listing.locator(f'tr[data-sandbox="{session.id}"] .sandbox-here')
    expect(here).to_have_text("Bob, learner")
    listing.close()
    page.locator("#invite-create").click()
    expect(page.locator("#invite-message")).to_be_visible()
    page.locator("#controls").screenshot(path=str(SCREENSHOTS / "sandbox-cards.png"))

    page.locator("#topology-card > summary").click()
    queue_form = page.locator("#topology-queue")
    queue_form.locator("input[name=name]").fill("orders")
    queue_form.locator("button[type=submit]").click()
    expect(page.locator("#topology-result")).to_contain_text("Done")
    bob.wait_for_function(_drawn("q:orders"), timeout=15_000)

    bob.locator("#sandbox-controls summary", has_text="Add a consumer").click()
    form = bob.locator("#sandbox-add-consumer")
    # The consumer's choices are offered, not an empty list.
    expect(form.locator("select[name=on_fail] option")).to_have_text(["reject", "nack"])
    expect(form.locator("select[name=ack] option")).to_have_text(["manual", "auto"])
    form.locator("input[name=name]").fill("packer")
    form.locator("input[name=queue]").fill("orders")
    form.locator("button[type=submit]").click()
    expect(bob.locator("#sandbox-workload-result")).to_contain_text("Added packer")
    page.wait_for_function(_drawn("c:packer"), timeout=15_000)
    expect(page.locator("#workload-packer")).to_be_visible()
    page.screenshot(path=str(SCREENSHOTS / "sandbox-owner.png"))
    bob.screenshot(path=str(SCREENSHOTS / "sandbox-member.png"))

    eve = other_page()
    log_in(eve, url, "eve", "eve-pass-1")
    response = eve.goto(f"{url}/labs/{session.id}/")
    assert response.status == 403
    expect(eve.locator("h1, h2").first).to_contain_text("Access denied")

    sandbox_invite_revoke(invite=invite)
    queue = bob.locator("#sandbox-queue")
    queue.locator("input[name=queue]").fill("orders")
    queue.locator("button[value=peek]").click()
    expect(bob.locator("#sandbox-refused")).to_contain_text("no longer have access")
    expect(bob.locator("#sandbox-limits")).to_have_count(0)
