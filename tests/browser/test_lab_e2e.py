"""A learner plays "Direct routing" to the end in headless Chromium against the real
console: log in, start the lab, watch messages arrive, pass every checkpoint, end it."""

import os
import re
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from exercises.models import LabSession
from labconsole.flow.stream import CONNECTION_NAME
from tests.support import ROOT, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Screenshots go to test-artifacts/; SCREENSHOTS_DIR=docs/screenshots refreshes the docs'.
SCREENSHOTS = ROOT / os.environ.get("SCREENSHOTS_DIR", "test-artifacts/screenshots")


def log_in(page, url, username="learner", password="learner-pass-1"):
    page.goto(f"{url}/accounts/login/")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click(".login-card button[type=submit]")
    expect(page.locator("#cards")).to_be_visible()


def drop_stream_connections(api, web):
    """The web process's connection that feeds the lab pages is cut (a broker restart, a
    network blip between the web server and RabbitMQ)."""
    name = CONNECTION_NAME.format(pid=web.proc.pid)

    def streams():
        # The API lists a new connection once its statistics are in (up to 5 s).
        connections = api.request("GET", "connections?columns=name,client_properties")
        return [
            c["name"] for c in connections if c["client_properties"].get("connection_name") == name
        ]

    for name in wait_for(streams, timeout=15, message="the stream connection listed"):
        api.request("DELETE", f"connections/{quote(name, safe='')}", ok_missing=True)


def state(page, expression):
    return page.evaluate(f"() => window.labConsole && window.labConsole.state.{expression}")


def expect_passed(page, *checkpoints, timeout=30_000):
    for cp in checkpoints:
        expect(page.locator(f'[data-checkpoint="{cp}"]')).to_have_attribute(
            "data-state", "passed", timeout=timeout
        )


def publish(page, exchange, routing_key):
    form = page.locator("#publish-form")
    form.locator("select[name=exchange]").select_option(exchange)
    form.locator("input[name=routing_key]").fill(routing_key)
    form.locator("button[type=submit]").click()
    expect(page.locator("#publish-result")).to_contain_text(f"key '{routing_key}'")


def toggle(page, workload, running):
    card = page.locator(f"#workload-{workload}")
    card.locator("[data-role=toggle]").click()
    expect(page.locator(f"#workload-{workload}")).to_have_attribute(
        "data-running", "true" if running else "false"
    )


def test_play_direct_routing_to_the_end(
    page, web_server, live_server_url, catalogue, learner, api, labs
):
    log_in(page, live_server_url)
    page.locator('#cards .exercise-card[data-slug="direct-routing"]').click()
    page.click("#start-lab")
    page.wait_for_url(re.compile(r"/labs/\w+/$"), timeout=15_000)
    session = LabSession.objects.get(owner=learner)
    assert api.vhost_exists(session.vhost)

    # The topology is drawn and live: messages are counted and land in the right queue.
    expect(page.locator('svg#topology .node[data-node="x:sensors"]')).to_be_visible()
    page.wait_for_function("() => window.labConsole.state.connected === true")
    page.wait_for_function(
        "() => (window.labConsole.state.counters['temperature-display'] || {}).acked >= 3"
    )
    expect(page.locator('[data-counter="temperature-sensor.published"]')).not_to_have_text("0")
    expect(page.locator("#log-rows tr[data-kind=published]").first).to_be_attached()
    page.locator("#log-rows tr[data-kind=published]").first.click()
    expect(page.locator("#inspector")).to_contain_text("routing")
    expect_passed(page, "temperature-routed", "temperature-delivered")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "lab-direct-routing.png"))

    # A network blip: the page says it is reconnecting, then is live again with the
    # current numbers at once.
    snapshots = state(page, "snapshotsReceived")
    drop_stream_connections(api, web_server)
    page.wait_for_function(f"() => window.labConsole.state.snapshotsReceived > {snapshots}")
    expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    frames = state(page, "framesReceived")
    page.wait_for_function(f"() => window.labConsole.state.framesReceived > {frames}")

    # Step 2: messages whose key matches no binding are dropped.
    publish(page, "sensors", "humidity")
    publish(page, "sensors", "Temperature")
    expect_passed(page, "humidity-dropped", "case-sensitive")

    # Steps 3 and 4: a queue nobody reads fills up, then drains.
    toggle(page, "pressure-display", running=False)
    expect_passed(page, "display-stopped", "pressure-backlog")
    page.wait_for_function("() => window.labConsole.state.queues.pressure.ready >= 5")
    page.emulate_media(color_scheme="dark")
    page.wait_for_timeout(2500)  # let the step highlight and colour transitions finish
    page.screenshot(path=str(SCREENSHOTS / "lab-direct-routing-dark.png"))
    page.emulate_media(color_scheme="light")
    toggle(page, "pressure-display", running=True)
    expect_passed(page, "display-running", "pressure-drained")
    expect(page.locator(".step[data-state=complete]")).to_have_count(len(session.spec.steps))

    # End the lab: the page says so, and the vhost is gone from the broker.
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#lab-end")
    page.wait_for_url(re.compile(r"/exercises/direct-routing/$"))
    assert not api.vhost_exists(session.vhost)
    session.refresh_from_db()
    assert session.state == LabSession.State.ENDED


def test_dead_letter_lab_shows_retries_and_parking(page, live_server_url, catalogue, learner, labs):
    """The retry loop is visible: dead-letter edges, x-death in the inspector, parking."""
    log_in(page, live_server_url)
    page.goto(f"{live_server_url}/exercises/dlq-retries/")
    page.click("#start-lab")
    page.wait_for_url(re.compile(r"/labs/\w+/$"), timeout=15_000)
    expect(page.locator('svg#topology .edge[data-edge^="dead-letter:q:orders>"]')).to_have_count(1)
    expect_passed(page, "retry-queue-holds", "orders-came-back", timeout=40_000)
    expect_passed(page, "parked-after-three", timeout=60_000)
    page.wait_for_function(
        "() => (window.labConsole.state.counters['processor'] || {}).parked >= 1"
    )
    page.select_option("#log-filter-kind", "delivered")
    seq = page.wait_for_function(
        """() => {
            const e = window.labConsole.state.events.findLast(
                (e) => e.kind === "delivered" && e.x_death);
            return e && e.seq;
        }"""
    ).json_value()
    page.locator(f'#log-rows tr[data-seq="{seq}"]').click()
    expect(page.locator("#inspector")).to_contain_text("x-death")
    page.screenshot(path=str(SCREENSHOTS / "lab-dlq-retries.png"))


def test_another_learner_cannot_open_the_lab(
    page, live_server_url, catalogue, learner, django_user_model, labs
):
    from exercises.services import lab_session_start

    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    django_user_model.objects.create_user("intruder", password="intruder-pass-1")
    log_in(page, live_server_url, "intruder", "intruder-pass-1")
    response = page.goto(f"{live_server_url}{session.get_absolute_url()}")
    assert response.status == 403
