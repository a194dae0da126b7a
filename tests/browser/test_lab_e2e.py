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
        connections = api.listing("connections?columns=name,client_properties")
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


def next_step(page, step):
    """The learner has read the step and moves on to `step`."""
    left = page.locator(".step.is-current .step-title").inner_text()
    page.evaluate(TOASTS_RECORDED)
    page.locator(".step.is-current .step-next-btn").click()
    expect(page.locator(f'.step[data-step="{step}"]')).to_have_class(re.compile(r"\bis-current\b"))
    # The steps column came back from the server: the frames after it do not announce the
    # step just left (complete already) a second time.
    page.wait_for_timeout(600)
    said = page.evaluate("() => window.toastsSaid")
    assert not [t for t in said if left in t], said


# Records the text of every toast shown from now on, in window.toastsSaid.
TOASTS_RECORDED = """() => {
  window.toastsSaid = [];
  new MutationObserver((changes) => changes.forEach((c) => c.addedNodes.forEach(
    (n) => window.toastsSaid.push(n.textContent)))).observe(
    document.getElementById("toasts"), { childList: true });
}"""


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
    next_step(page, "unknown-key")
    publish(page, "sensors", "humidity")
    publish(page, "sensors", "Temperature")
    expect_passed(page, "humidity-dropped", "case-sensitive")
    # The learner's own node counts those publishes and has an edge to the exchange.
    expect(page.locator('svg#topology .node[data-node="p:@you"]')).to_contain_text("sent 2")
    expect(page.locator('svg#topology .edge[data-edge="publish:p:@you>x:sensors:"]')).to_have_count(
        1
    )

    # Steps 3 and 4: a queue nobody reads fills up, then drains.
    next_step(page, "stop-display")
    toggle(page, "pressure-display", running=False)
    expect_passed(page, "display-stopped", "pressure-backlog")
    page.wait_for_function("() => window.labConsole.state.queues.pressure.ready >= 5")
    page.emulate_media(color_scheme="dark")
    page.wait_for_timeout(2500)  # let the step highlight and colour transitions finish
    page.screenshot(path=str(SCREENSHOTS / "lab-direct-routing-dark.png"))
    page.emulate_media(color_scheme="light")
    next_step(page, "restart-display")
    toggle(page, "pressure-display", running=True)
    expect_passed(page, "display-running", "pressure-drained")

    # Step 5: the Topology panel opens for this step; a queue for humidity, bound by key.
    expect(page.locator("#topology-panel")).to_contain_text("not part of this step")
    next_step(page, "bind-humidity")
    expect(page.locator("#topology-panel fieldset")).to_be_enabled()
    page.locator("#topology-card > summary").click()
    page.locator("#topology-queue input[name=name]").fill("humidity")
    page.locator("#topology-queue button[type=submit]").click()
    expect(page.locator("#topology-result")).to_contain_text("Done")
    bind = page.locator("#topology-bind")
    bind.locator("select[name=source]").select_option("sensors")
    bind.locator("input[name=destination]").fill("humidity")
    bind.locator("input[name=routing_key]").fill("humidity")
    bind.locator("button[type=submit]").click()
    expect(page.locator('svg#topology .node[data-node="q:humidity"]')).to_be_visible()
    publish(page, "sensors", "humidity")
    page.wait_for_function("() => (window.labConsole.state.queues.humidity || {}).ready === 1")
    expect_passed(page, "humidity-bound", "humidity-routed")
    expect(page.locator(".step[data-state=complete]")).to_have_count(len(session.spec.steps))

    # End the lab: the page says so, and the vhost is gone from the broker.
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#lab-end")
    page.wait_for_url(re.compile(r"/exercises/direct-routing/$"))
    assert not api.vhost_exists(session.vhost)
    session.refresh_from_db()
    assert session.state == LabSession.State.ENDED


def test_a_complete_step_waits_for_the_learner(page, live_server_url, catalogue, learner, labs):
    """The first step completes while the learner reads it: the page marks it complete and
    offers "Next step" instead of moving on. What went by before the next step was shown
    does not pass it: a key nobody is bound to, published while step 1 was open, is not
    counted for step 2; the same publish after "Next step" is."""
    log_in(page, live_server_url)
    page.goto(f"{live_server_url}/exercises/direct-routing/")
    page.click("#start-lab")
    page.wait_for_url(re.compile(r"/labs/\w+/$"), timeout=15_000)
    first, second = (
        page.locator('.step[data-step="watch-routing"]'),
        page.locator('.step[data-step="unknown-key"]'),
    )
    expect(first).to_have_class(re.compile(r"\bis-current\b"))
    expect(second.locator(".step-body")).to_be_hidden()
    publish(page, "sensors", "humidity")
    expect_passed(page, "temperature-routed", "temperature-delivered")
    expect(first).to_have_attribute("data-state", "complete")
    page.wait_for_timeout(3000)  # the page stays on the complete step
    expect(first).to_have_class(re.compile(r"\bis-current\b"))
    expect(first.locator(".step-body")).to_be_visible()
    expect(second.locator(".step-body")).to_be_hidden()

    first.locator(".step-next-btn").click()
    expect(second).to_have_class(re.compile(r"\bis-current\b"))
    expect(second.locator(".step-body")).to_be_visible()
    expect(first).to_have_attribute("data-state", "complete")
    page.wait_for_timeout(3000)  # the monitor has heard of the step and evaluated it
    expect(page.locator('[data-checkpoint="humidity-dropped"]')).to_have_attribute(
        "data-state", "pending"
    )
    publish(page, "sensors", "humidity")
    expect_passed(page, "humidity-dropped")
    expect(page.locator('[data-checkpoint="case-sensitive"]')).to_have_attribute(
        "data-state", "pending"
    )
    expect(second.locator(".step-next-btn")).to_be_hidden()


def test_dead_letter_lab_shows_retries_and_parking(page, live_server_url, catalogue, learner, labs):
    """The retry loop is visible: dead-letter edges, x-death in the inspector, parking."""
    log_in(page, live_server_url)
    page.goto(f"{live_server_url}/exercises/dlq-retries/")
    page.click("#start-lab")
    page.wait_for_url(re.compile(r"/labs/\w+/$"), timeout=15_000)
    expect(page.locator('svg#topology .edge[data-edge^="dead-letter:q:orders>"]')).to_have_count(1)
    expect_passed(page, "retry-queue-holds", "orders-came-back", timeout=40_000)
    next_step(page, "count-and-park")
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

    # Step 2: the parked message, opened from the log, shows itself and its history, in
    # the queue it was parked in; its journey starts with its publish.
    page.select_option("#log-filter-kind", "parked")
    page.locator("#log-rows tr[data-kind=parked]").first.click()
    inspector = page.locator("#inspector")
    expect(inspector.locator(".insp-title .kind-badge")).to_have_text("parked")
    # Its route: published to the parking exchange, put in the parking queue (the two
    # share a name; the queue's row says where the copy is).
    route = inspector.locator("table.kv").first.evaluate(ROWS)
    assert route.get("queue") == "orders.parking", route
    assert route.get("exchange") == "orders.parking" and route.get("routing key") == "parked"
    # Its headers: x-death, one line per queue that dead-lettered it, and the others.
    sections = inspector.locator(".insp-section")
    x_death = sections.filter(has=page.locator("h3", has_text=re.compile(r"^x-death$")))
    expect(x_death.locator("table.x-death")).to_be_visible()
    deaths = x_death.locator("table.x-death tbody tr").evaluate_all(
        "(rows) => rows.map((r) => [...r.cells].map((c) => c.textContent))"
    )
    assert {(d[1], d[2]) for d in deaths} == {
        ("expired", "orders.retry"),
        ("rejected", "orders"),
    }, deaths
    assert all(int(d[0]) >= 3 for d in deaths if d[1] == "rejected"), deaths
    headers = sections.filter(has=page.locator("h3", has_text=re.compile(r"^Headers$")))
    expect(headers.locator("table.kv")).to_be_visible()
    # Its body, as the shop published it.
    body = sections.filter(has=page.locator("h3", has_text=re.compile(r"^Body$")))
    expect(body.locator(".body-pre")).to_be_visible()
    expect(body.locator(".body-pre")).to_contain_text('"order"')
    journey = inspector.locator(".journey li").all_text_contents()
    kinds = [
        next(k for k in ("published", "delivered", "rejected", "parked") if k in line)
        for line in journey
        if any(k in line for k in ("published", "delivered", "rejected", "parked"))
    ]
    assert kinds[0] == "published", journey
    assert kinds.index("delivered") > 0 and kinds[-1] in ("parked", "published"), journey

    # Dead-lettering and expiry are in the log too.
    for kind in ("dead-lettered", "expired"):
        page.select_option("#log-filter-kind", kind)
        expect(page.locator(f"#log-rows tr[data-kind={kind}]").first).to_be_attached()


# A two-column table of the inspector as {first cell: second cell}.
ROWS = """(t) => Object.fromEntries(
    [...t.rows].map((r) => [r.cells[0].textContent, r.cells[1].textContent]))"""


def test_another_learner_cannot_open_the_lab(
    page, live_server_url, catalogue, learner, django_user_model, labs
):
    from exercises.services import lab_session_start

    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    django_user_model.objects.create_user("intruder", password="intruder-pass-1")
    log_in(page, live_server_url, "intruder", "intruder-pass-1")
    response = page.goto(f"{live_server_url}{session.get_absolute_url()}")
    assert response.status == 403
    # The site's own page: its header, the error card with its heading, the way back.
    expect(page).to_have_title("Access denied · RabbitMQ Lab Console")
    expect(page.locator(".site-header .brand")).to_be_visible()
    card = page.locator("main .error-card")
    expect(card.locator("h1")).to_have_text("Access denied")
    expect(card.locator(".error-code")).to_have_text("Error 403")
    expect(card.locator("a.btn-primary")).to_have_attribute("href", "/")
    # Styled by console.css: a raised card in the middle of the page, its code in capitals.
    style = card.evaluate(
        """(el) => {
            const code = getComputedStyle(el.querySelector(".error-code"));
            const r = el.getBoundingClientRect();
            return { shadow: getComputedStyle(el).boxShadow, width: r.width,
                     centre: r.left + r.width / 2, transform: code.textTransform };
        }"""
    )
    assert style["shadow"] != "none" and style["transform"] == "uppercase", style
    assert style["width"] <= 480 and abs(style["centre"] - 1366 / 2) <= 2, style


DOT_LIFETIME = """() => new Promise((resolve) => {
    const layer = document.querySelector("#topology .dots");
    const born = new MutationObserver((records) => {
        for (const r of records) for (const dot of r.addedNodes) {
            born.disconnect();
            const t0 = performance.now();
            const gone = new MutationObserver(() => {
                if (!dot.isConnected) { gone.disconnect(); resolve(performance.now() - t0); }
            });
            gone.observe(layer, { childList: true });
            return;
        }
    });
    born.observe(layer, { childList: true });
})"""

DOTS = """() => [...document.querySelectorAll("#topology .dot")]
    .map((d) => `${d.dataset.messageId} ${d.getAttribute("transform")}`)"""


def test_the_animation_pauses_and_slows_down_for_a_closer_look(
    page, live_server_url, catalogue, learner, labs
):
    """At 1/4 speed a dot takes four times as long to cross; paused, the dots stand still
    (and no new ones start) while counters and the log go on, and hovering a dot opens its
    message."""
    log_in(page, live_server_url)
    page.goto(f"{live_server_url}/exercises/direct-routing/")
    page.click("#start-lab")
    page.wait_for_url(re.compile(r"/labs/\w+/$"), timeout=15_000)
    page.wait_for_function("() => window.labConsole.state.connected === true")

    # At 1x one edge takes 350 ms, and no trace of this lab is longer than two edges.
    assert page.evaluate(DOT_LIFETIME) < 1200
    page.select_option("#anim-speed", "0.25")
    assert page.evaluate(DOT_LIFETIME) >= 1300

    page.wait_for_function(
        "() => document.querySelectorAll('#topology .dot[visibility=visible]').length >= 2"
    )
    page.click("#anim-pause")
    expect(page.locator("#anim-pause")).to_have_attribute("aria-pressed", "true")
    still = page.evaluate(DOTS)
    assert still
    frames = state(page, "framesReceived")
    published = state(page, "counters['temperature-sensor'].published")
    events = state(page, "events.length")
    shown_before = page.locator('[data-counter="temperature-sensor.published"]').inner_text()
    page.wait_for_timeout(2500)
    assert page.evaluate(DOTS) == still
    assert state(page, "framesReceived") > frames
    assert state(page, "counters['temperature-sensor'].published") > published
    assert state(page, "events.length") > events
    expect(page.locator('[data-counter="temperature-sensor.published"]')).not_to_have_text(
        shown_before
    )

    dot = page.locator("#topology .dot[visibility=visible]").first
    message_id = dot.get_attribute("data-message-id")
    dot.hover()
    expect(page.locator("#inspector")).to_be_visible()
    expect(page.locator("#inspector")).to_have_attribute("data-message-id", message_id)

    page.click("#anim-pause")
    expect(page.locator("#anim-pause")).to_have_attribute("aria-pressed", "false")
    page.wait_for_function(f"() => ({DOTS})().join() !== {still!r}.join()")
