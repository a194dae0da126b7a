"""What a learner sees on the lab page at 1440×900: the inspector, the toasts, the publish
result, the workload settings, and a lab that ended while its page was open."""

import json
import re
import time

import pytest
from playwright.sync_api import expect

from exercises.services import lab_session_start, workload_stop
from labconsole.broker import amqp
from tests.browser.test_lab_e2e import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORT = {"width": 1440, "height": 900}  # the page fixture (conftest.py) opens at this size


def open_lab(page, url, session):
    log_in(page, url)
    page.goto(f"{url}/labs/{session.id}/")
    page.wait_for_function("() => window.labConsole.state.connected === true")


def send_frame(session, frame: dict) -> None:
    """A frame as the lab's monitor publishes it, on the console's frames exchange."""
    connection = amqp.connect(amqp.console_parameters(name="test-frame"))
    try:
        body = json.dumps({"seq": 1, "type": "frame", **frame}).encode()
        amqp.publish_frames(connection.channel(), [(session.id, body)])
    finally:
        amqp.close_quietly(connection)


# Words that a browser breaks in the middle, one rectangle per line they occupy.
BROKEN_WORDS = """(table) => {
    const broken = [];
    for (const cell of table.querySelectorAll("th, td")) {
        const text = cell.firstChild;
        if (!text || text.nodeType !== Node.TEXT_NODE) continue;
        let at = 0;
        for (const word of text.data.split(" ")) {
            const range = document.createRange();
            range.setStart(text, at);
            range.setEnd(text, at + word.length);
            const lines = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
            if (word && lines.size > 1) broken.push(word);
            at += word.length + 1;
        }
    }
    return broken;
}"""


def test_the_x_death_table_keeps_its_words_whole(page, live_server_url, catalogue, learner, labs):
    session = lab_session_start(exercise=catalogue["dlq-retries"], owner=learner, run=False)
    open_lab(page, live_server_url, session)
    x_death = [
        {
            "count": 3,
            "reason": reason,
            "queue": queue,
            "exchange": exchange,
            "routing-keys": ["order.created"],
            "time": 1_750_000_000,
        }
        for reason, queue, exchange in (
            ("expired", "orders.retry", "orders.retry-dlx"),
            ("rejected", "orders", "orders.dlx"),
        )
    ]
    event = {
        "seq": 1,
        "t": 1_750_000_000.5,
        "kind": "delivered",
        "workload": "processor",
        "queue": "orders",
        "message_id": "order-17",
        "body": {"order": 17},
        "x_death": x_death,
    }
    send_frame(session, {"events": [event]})
    page.locator('#log-rows tr[data-seq="1"]').click()
    table = page.locator("#inspector table.x-death")
    expect(table).to_be_visible()
    assert table.evaluate(BROKEN_WORDS) == []


INTERACTIVE = "button, input, select, textarea, a[href], summary"

# The visible controls a box covers.
COVERED = """([box, selector]) => [...document.querySelectorAll(selector)]
    .filter((el) => el.checkVisibility() && !el.closest("#toasts"))
    .filter((el) => {
        const r = el.getBoundingClientRect();
        return r.width && r.height && r.left < box.x + box.width && box.x < r.right
            && r.top < box.y + box.height && box.y < r.bottom;
    })
    .map((el) => el.outerHTML.slice(0, 80))"""


@pytest.mark.parametrize("slug", ["dlq-retries", "monitoring-alerts"])
def test_toasts_cover_no_control(page, live_server_url, catalogue, learner, labs, slug):
    """Nor an alert rule's chip, in an exercise with alert rules."""
    session = lab_session_start(exercise=catalogue[slug], owner=learner, run=False)
    open_lab(page, live_server_url, session)
    for n in range(3):
        page.evaluate(f"() => window.consoleToast('Step complete: step number {n}', 'ok')")
    toasts = page.locator("#toasts")
    expect(toasts.locator(".toast")).to_have_count(3)
    box = toasts.bounding_box()
    assert box["height"] > 0
    chips = page.locator("#alerts [data-alert]")
    expect(chips).to_have_count(3 if slug == "monitoring-alerts" else 0)
    assert page.evaluate(COVERED, [box, f"{INTERACTIVE}, #alerts [data-alert]"]) == []


def test_the_publish_result_shows_beside_the_button(
    page, live_server_url, catalogue, learner, labs
):
    session = lab_session_start(exercise=catalogue["dlq-retries"], owner=learner, run=False)
    open_lab(page, live_server_url, session)
    form = page.locator("#publish-form")
    form.locator("input[name=routing_key]").fill("order.created")
    button = form.locator("button[type=submit]")
    button.click()
    result = page.locator("#publish-result .result")
    expect(result).to_contain_text("order.created")
    page.wait_for_timeout(300)  # the scroll into view
    # In the window and in the part of the controls panel that shows, beside the button.
    assert result.evaluate(
        """(el) => {
            const r = el.getBoundingClientRect();
            const panel = document.getElementById("controls").getBoundingClientRect();
            const bottom = Math.min(innerHeight, panel.bottom);
            return r.top >= Math.max(0, panel.top) && r.bottom <= bottom;
        }"""
    )
    result_box, button_box = result.bounding_box(), button.bounding_box()
    assert abs(result_box["y"] - button_box["y"]) < 40, (result_box, button_box)


@pytest.mark.parametrize(("locale", "unit"), [("en-US", "ms"), ("ru-RU", "мс")])
def test_each_queue_shows_its_latency(
    browser, live_server_url, catalogue, learner, labs, worker, locale, unit
):
    """The consumers' publish-to-delivery times, p50 and p99, on each queue of the diagram,
    in the page's language; a dash while a queue has no recent deliveries."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner)
    context = browser.new_context(viewport=VIEWPORT, locale=locale)
    page = context.new_page()
    try:
        open_lab(page, live_server_url, session)
        latency = page.locator('[data-node="q:temperature"] .node-latency tspan')
        expect(latency).to_contain_text("p99")
        expect(latency).to_have_text(re.compile(rf"^p50 \d[\d.,]* · p99 \d[\d.,]* {unit}$"))
        # Its consumer stopped, the queue has no recent deliveries: a dash.
        workload_stop(workload=session.workloads.get(name="temperature-display"))
        expect(latency).to_have_text(f"p50 – · p99 – {unit}")
        pressure = page.locator('[data-node="q:pressure"] .node-latency tspan')
        expect(pressure).to_contain_text("· p99 ")
        expect(pressure).not_to_contain_text("–")
    finally:
        context.close()


@pytest.mark.parametrize(
    ("locale", "ok", "firing"), [("en-US", "OK", "FIRING"), ("ru-RU", "OK", "СРАБОТАЛО")]
)
def test_an_alert_fires_and_clears_on_the_page(
    browser, live_server_url, catalogue, learner, labs, worker, locale, ok, firing
):
    """The monitoring exercise played from the page: a consumer made to reject everything
    fills the DLQ, its alert turns red with the queue outlined and a line in the log; the
    DLQ drained, it is OK again."""
    session = lab_session_start(exercise=catalogue["monitoring-alerts"], owner=learner)
    context = browser.new_context(viewport=VIEWPORT, locale=locale)
    page = context.new_page()
    try:
        open_lab(page, live_server_url, session)
        chip = page.locator('#alerts [data-alert="dlq-filling"]')
        dlq = page.locator('[data-node="q:orders.dlq"]')
        expect(chip).to_have_attribute("data-state", "ok")
        expect(chip.locator(".alert-state")).to_have_text(ok)
        expect(chip).to_have_attribute("title", re.compile(r"^orders\.dlq: .+ > 10$"))
        expect(page.locator("#alerts [data-alert]")).to_have_count(3)

        card = page.locator("#workload-fulfilment")
        card.locator('input[name="fail"]').fill("1")
        card.locator(".settings-form button[type=submit]").click()
        expect(chip).to_have_attribute("data-state", "firing", timeout=20_000)
        expect(chip.locator(".alert-state")).to_have_text(re.compile(rf"^{firing} \d+"))
        expect(dlq).to_have_class(re.compile(r"\bis-alerting\b"))
        expect(page.locator('#log-rows tr[data-kind="alert"]').first).to_contain_text("dlq-filling")

        card = page.locator("#workload-fulfilment")
        card.locator('input[name="fail"]').fill("0")
        card.locator(".settings-form button[type=submit]").click()
        page.locator("#workload-dlq-handler [data-role=toggle]").click()
        expect(chip).to_have_attribute("data-state", "ok", timeout=20_000)
        expect(chip.locator(".alert-state")).to_have_text(ok)
        expect(dlq).not_to_have_class(re.compile(r"\bis-alerting\b"))
    finally:
        context.close()


def test_a_delivery_stamped_before_its_publish_lists_after_it(
    page, live_server_url, catalogue, learner, labs
):
    """The monitor stamps a publish when the firehose brings it, the consumer its delivery:
    a delivery may carry a time a few milliseconds before its publish's. The message's
    journey in the inspector still lists the publish first, then the delivery, then the
    ack; events further apart than the clocks' skew keep their times' order."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    open_lab(page, live_server_url, session)
    t = 1_750_000_000.5
    message = {"message_id": "order-5", "body": {"order": 5}}
    events = [
        {"seq": 1, "t": t - 0.005, "kind": "delivered", "workload": "temperature-display",
         "queue": "temperature", **message},
        {"seq": 2, "t": t, "kind": "published", "workload": "temperature-sensor",
         "exchange": "sensors", "routing_key": "temperature", "routed_queues": ["temperature"],
         **message},
        {"seq": 3, "t": t + 0.002, "kind": "acked", "workload": "temperature-display",
         "queue": "temperature", **message},
        {"seq": 4, "t": t - 2, "kind": "published", "workload": "temperature-sensor",
         "exchange": "sensors", "routing_key": "temperature", "routed_queues": ["temperature"],
         "message_id": "order-4"},
        {"seq": 5, "t": t - 2.5, "kind": "delivered", "workload": "temperature-display",
         "queue": "temperature", "message_id": "order-4"},
        # Rejected and redelivered every 100 ms, within the skew: no publish among them, so
        # nothing moves.
        *(
            {"seq": 6 + i, "t": t + 10 + i * 0.1, "kind": kind, "workload": "temperature-display",
             "queue": "temperature", "message_id": "order-6"}
            for i, kind in enumerate(["delivered", "rejected", "delivered", "rejected"])
        ),
        # A consumer's reply (an RPC server publishing to the client's queue) stamped by
        # the monitor 3 ms after the client's delivery of it: the reply's publish first.
        {"seq": 10, "t": t + 20, "kind": "delivered", "workload": "temperature-display",
         "queue": "temperature", "message_id": "reply-7"},
        {"seq": 11, "t": t + 20.003, "kind": "published", "workload": "pressure-display",
         "exchange": "", "routing_key": "temperature", "routed_queues": ["temperature"],
         "message_id": "reply-7"},
        # The learner's own publish is theirs by name in the journey, not "@you".
        {"seq": 12, "t": t + 30, "kind": "published", "workload": "@you", "exchange": "sensors",
         "routing_key": "temperature", "routed_queues": ["temperature"], "message_id": "mine"},
        {"seq": 13, "t": t + 30.01, "kind": "delivered", "workload": "temperature-display",
         "queue": "temperature", "message_id": "mine"},
    ]  # fmt: skip
    send_frame(session, {"events": events})
    page.locator('#log-rows tr[data-seq="1"]').click()
    journey = page.locator("#inspector .journey li")
    expect(journey).to_have_count(3)
    kinds = journey.evaluate_all("(items) => items.map((li) => li.className.split(' ')[0])")
    assert kinds == ["flow-published", "flow-delivered", "flow-acked"], kinds
    expect(journey.nth(1)).to_have_class(re.compile(r"\bis-current\b"))

    # Two seconds apart is no clock's skew: the times' order stands.
    page.locator('#log-rows tr[data-seq="4"]').click()
    kinds = journey.evaluate_all("(items) => items.map((li) => li.className.split(' ')[0])")
    assert kinds == ["flow-delivered", "flow-published"], kinds

    page.locator('#log-rows tr[data-seq="6"]').click()
    kinds = journey.evaluate_all("(items) => items.map((li) => li.className.split(' ')[0])")
    assert kinds == ["flow-delivered", "flow-rejected", "flow-delivered", "flow-rejected"], kinds

    page.locator('#log-rows tr[data-seq="10"]').click()
    kinds = journey.evaluate_all("(items) => items.map((li) => li.className.split(' ')[0])")
    assert kinds == ["flow-published", "flow-delivered"], kinds

    page.locator('#log-rows tr[data-seq="12"]').click()
    expect(journey.first).to_have_text(re.compile(r"published · you$"))


def test_the_badges_read_in_russian_on_a_russian_page(
    browser, live_server_url, catalogue, learner, labs
):
    """An exchange's unroutable count and a producer's returned count, on a page in
    Russian (the language the learner chose: Django's cookie): Russian numbers on the
    badges, Russian words in their tooltips and in the log's notes."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    context = browser.new_context(viewport=VIEWPORT, locale="en-US")
    context.add_cookies([{"name": "django_language", "value": "ru", "url": live_server_url}])
    page = context.new_page()
    try:
        open_lab(page, live_server_url, session)
        assert page.evaluate("document.documentElement.lang") == "ru"
        send_frame(
            session,
            {
                "exchanges": {"sensors": {"unroutable": 1234}},
                "counters": {"temperature-sensor": {"returned": 2048}},
                # A publish the broker refused, and an RPC request nobody answered: the
                # log names them in Russian too.
                "events": [
                    {
                        "kind": "nacked_by_broker",
                        "seq": 1,
                        "t": time.time(),
                        "workload": "temperature-sensor",
                        "exchange": "sensors",
                    },
                    {"kind": "unanswered", "seq": 2, "t": time.time(), "workload": "you"},
                    # The monitor found the vhost no longer traced, and traced it again.
                    {"kind": "broker", "seq": 3, "t": time.time(), "tracing": "restored"},
                ],
            },
        )
        refused = page.locator("#log-rows tr[data-kind=nacked_by_broker] .kind-badge")
        expect(refused).to_have_text("отвергнуто")
        expect(page.locator("#log-rows tr[data-kind=unanswered] .kind-badge")).to_have_text(
            "без ответа"
        )
        expect(page.locator("#log-rows tr[data-kind=broker] td.m")).to_have_text(
            "брокер перестал трассировать эту лабораторию: трассировка снова включена; "
            "отправленное за это время не показано"
        )
        kinds = page.locator("#log-filter-kind option").all_inner_texts()
        assert "отвергнуто" in kinds and "nacked_by_broker" not in kinds, kinds
        exchange = page.locator('#topology [data-node="x:sensors"] .node-badge')
        producer = page.locator('#topology [data-node="p:temperature-sensor"] .node-badge')
        expect(exchange).to_have_attribute("visibility", "visible")
        expect(exchange.locator("text")).to_have_text("✕ 1\u00a0234")
        expect(exchange.locator("title")).to_have_text("1\u00a0234 без маршрута")
        expect(producer).to_have_attribute("visibility", "visible")
        expect(producer.locator("text")).to_have_text("↩ 2\u00a0048")
        expect(producer.locator("title")).to_have_text("возвращено: 2\u00a0048")
    finally:
        context.close()


def test_the_prefetch_field_says_beside_it_that_0_means_no_limit(
    page, live_server_url, catalogue, learner, labs
):
    """A consumer's settings: the note that prefetch 0 means no limit is shown beside the
    field, whole, inside the consumer's card."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    open_lab(page, live_server_url, session)
    card = page.locator("#workload-temperature-display")
    field = card.locator("input[name=prefetch]")
    note = page.locator(f"#{field.get_attribute('aria-describedby')}")
    note.scroll_into_view_if_needed()
    expect(field).to_be_visible()
    expect(note).to_be_visible()
    expect(note).to_have_text(re.compile(r"^0 means no limit"))
    f, n, c = field.bounding_box(), note.bounding_box(), card.bounding_box()
    # On the field's right, level with it, within the card and the window.
    assert n["x"] >= f["x"] + f["width"], (f, n)
    assert n["y"] < f["y"] + f["height"] and f["y"] < n["y"] + n["height"], (f, n)
    assert c["x"] <= n["x"] and n["x"] + n["width"] <= c["x"] + c["width"], (c, n)
    assert n["y"] >= 0 and n["y"] + n["height"] <= VIEWPORT["height"], n
    # Nothing of it cut off, and large enough to read.
    assert note.evaluate("(el) => el.scrollHeight <= el.clientHeight + 1"), n
    assert note.evaluate("(el) => parseFloat(getComputedStyle(el).fontSize)") >= 11


YOUR_EVENTS = """() => window.labConsole.state.events
    .filter((e) => e.workload === "@you").map((e) => [e.kind, e.message_id])"""


def test_a_mandatory_publish_nothing_is_bound_for_is_logged_as_returned(
    page, live_server_url, catalogue, learner, labs, worker
):
    """From the page's Publish form, mandatory, with a key no queue is bound with: the
    broker returns it, and the log has one row for it, of kind returned (not unroutable
    as well)."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner)
    open_lab(page, live_server_url, session)
    form = page.locator("#publish-form")
    form.locator("select[name=exchange]").select_option("sensors")
    form.locator("input[name=routing_key]").fill("humidity")
    form.locator("input[name=mandatory]").check()
    form.locator("button[type=submit]").click()
    expect(page.locator("#publish-result")).to_contain_text("returned")

    row = page.locator("#log-rows tr[data-kind=returned]").filter(has_text="humidity")
    expect(row).to_have_count(1, timeout=10_000)
    expect(row.locator("td").nth(2)).to_have_text("you")
    message_id = row.get_attribute("data-message-id")
    assert message_id
    # The page's word that it came back and the firehose's record of it made one row; the
    # record alone would have been logged as unroutable after a second.
    page.wait_for_timeout(2500)
    assert page.evaluate(YOUR_EVENTS) == [["returned", message_id]]
    expect(page.locator(f'#log-rows tr[data-message-id="{message_id}"]')).to_have_count(1)
    expect(page.locator("#log-rows tr[data-kind=unroutable]").filter(has_text="you")).to_have_count(
        0
    )


def test_a_workloads_node_says_what_its_card_set(page, live_server_url, catalogue, learner, labs):
    """The diagram's node of a workload says the settings its card last applied (a
    consumer's prefetch, a producer's rate), not the exercise's, and still does after a
    reload."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    open_lab(page, live_server_url, session)
    consumer = page.locator('svg#topology .node[data-node="c:temperature-display"] .node-detail')
    producer = page.locator('svg#topology .node[data-node="p:temperature-sensor"] .node-detail')
    expect(consumer).to_have_text(re.compile(r"^prefetch 10,"))
    expect(producer).to_have_text("2.0 msg/s")

    card = page.locator("#workload-temperature-display")
    card.locator("input[name=prefetch]").fill("1")
    card.get_by_role("button", name="Apply").click()
    expect(consumer).to_have_text(re.compile(r"^prefetch 1,"))
    card = page.locator("#workload-temperature-sensor")
    card.locator("input[name=rate]").fill("7")
    card.get_by_role("button", name="Apply").click()
    expect(producer).to_have_text("7.0 msg/s")
    title = page.locator('svg#topology .node[data-node="c:temperature-display"] > title')
    expect(title).to_contain_text("prefetch 1,")

    page.reload()
    page.wait_for_function("() => window.labConsole.state.connected === true")
    expect(consumer).to_have_text(re.compile(r"^prefetch 1,"))
    expect(producer).to_have_text("7.0 msg/s")


def test_a_queue_the_broker_deleted_is_crossed_out(page, live_server_url, catalogue, learner, labs):
    """A queue the monitor finds gone (x-expires) is drawn crossed out and says so; back
    on the broker, it is drawn as before."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    open_lab(page, live_server_url, session)
    node = page.locator('#topology [data-node="q:pressure"]')
    send_frame(session, {"queues": {"pressure": {"ready": 3, "unacked": 0}}})
    expect(node.locator(".node-stat").first).to_contain_text("3")
    expect(node).not_to_have_class(re.compile(r"\bis-gone\b"))
    send_frame(session, {"queues": {"pressure": {"ready": 0, "consumers": 0, "missing": True}}})
    expect(node).to_have_class(re.compile(r"\bis-gone\b"))
    expect(node.locator(".node-stat").first).to_have_text("deleted by the broker")
    send_frame(session, {"queues": {"pressure": {"ready": 1, "unacked": 0, "missing": False}}})
    expect(node).not_to_have_class(re.compile(r"\bis-gone\b"))


def test_a_producers_edge_shows_the_key_its_card_set(
    page, live_server_url, catalogue, learner, labs
):
    """The publish edge of a producer is labelled with the routing key it publishes with
    now: a key changed on its card relabels the edge, here and after a reload."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    open_lab(page, live_server_url, session)
    label = page.locator(
        '#topology .edge-label[data-edge^="publish:p:temperature-sensor>"] text'
    ).first
    expect(label).to_have_text("temperature")
    card = page.locator("#workload-temperature-sensor")
    card.locator("input[name=routing_key]").fill("humidity")
    card.get_by_role("button", name="Apply").click()
    expect(label).to_have_text("humidity")
    page.reload()
    page.wait_for_function("() => window.labConsole.state.connected === true")
    expect(label).to_have_text("humidity")


PAUSE_AS_IT_ARRIVES = """(seq) => new Promise((resolve) => {
    const timer = setInterval(() => {
        if (!window.labConsole.state.events.some((e) => String(e.seq) === seq)) return;
        clearInterval(timer);
        document.getElementById("log-pause").click();
        resolve(document.querySelector(`#log-rows tr[data-seq="${seq}"]`) !== null);
    }, 1);
})"""


def test_pausing_the_log_shows_what_arrived_before_the_click(
    page, live_server_url, catalogue, learner, labs
):
    """Rows reach the log in batches at most every 200 ms; pausing at once after an event
    arrived, before its batch was due, still shows it."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    open_lab(page, live_server_url, session)
    connection = amqp.connect(amqp.console_parameters(name="test-frame"))
    try:
        channel = connection.channel()

        def frame(seq: int) -> None:
            event = {"seq": seq, "t": time.time(), "kind": "published", "workload": "@you"}
            body = {"seq": seq, "type": "frame", "events": [event]}
            amqp.publish_frames(channel, [(session.id, json.dumps(body).encode())])

        frame(900_001)
        # Drawn: its batch has just gone, so the next one's is some 200 ms away.
        page.wait_for_selector('#log-rows tr[data-seq="900001"]', state="attached")
        frame(900_002)
        assert page.evaluate(PAUSE_AS_IT_ARRIVES, "900002")
    finally:
        amqp.close_quietly(connection)
    expect(page.locator("#log-pause")).to_have_attribute("aria-pressed", "true")
