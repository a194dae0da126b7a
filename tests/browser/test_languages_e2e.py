"""A learner switches the console to Russian in headless Chromium: the catalogue and the
live lab page (legend, badges, counters, event kinds, workload states, drawn by lab.js
from Django's JavaScript catalogue) say nothing in English."""

import re

import pytest
from playwright.sync_api import expect

from tests.browser.test_lab_e2e import SCREENSHOTS, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The English the lab page's own parts show (not the exercise's names: queues, workloads).
# AMQP's names (ack, nack, reject, prefetch, vhost, x-death, ...) are the same in Russian.
LAB_ENGLISH = [
    "published",
    "confirmed",
    "returned",
    "routed",
    "unroutable",
    "delivered",
    "acked",
    "nacked",
    "rejected",
    "dead-lettered",
    "expired",
    "parked",
    "started",
    "updated",
    "crashed",
    "binding",
    "alternate",
    "running",
    "stopped",
    "producer",
    "consumer",
    "ready",
    "unacked",
    "sent",
    "msg/s",
    "you",
    "publish form",
    "Live",
    "Connecting",
    "Legend",
    "Event log",
    "Workloads",
    "All events",
    "Pause",
    "Clear",
    "Time",
    "Event",
    "Message",
    "Start",
    "Stop",
    "Apply",
    "Publish",
    "Exchange",
    "Routing key",
    "Headers",
    "key=value",
    "Body",
    "Priority",
    "default",
]
CATALOGUE_ENGLISH = [
    "Exercises",
    "Pick an exercise",
    "All levels",
    "Topic",
    "beginner",
    "intermediate",
    "exercises",
    "min",
    "Log out",
    "Direct routing",
]


# What the learner reads by its name or kind, and must read whole: an element of these
# that shows fewer characters than it holds ("temperature-…", "подтверж…").
CUT_SHORT = """() => [...document.querySelectorAll(
    '.workload-card h3, .workload-meta > *, .counters dt, .kind-badge, .log th, .legend li'
  )].filter(e => e.offsetParent && e.scrollWidth > e.clientWidth + 1)
    .map(e => `${e.className || e.tagName}: ${e.textContent.trim()}`)"""


def english_in(text: str, words: list[str]) -> list[str]:
    return [w for w in words if re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", text)]


def choose_russian(page):
    page.locator('.lang-switch button[value="ru"]').click()
    expect(page.locator("html")).to_have_attribute("lang", "ru")


def test_the_lab_page_in_russian(page, live_server_url, catalogue, learner, labs):
    log_in(page, live_server_url)
    choose_russian(page)
    cards = page.locator("#cards").inner_text()
    header = page.locator(".site-header").inner_text()
    head = page.locator(".page-head").inner_text() + page.locator("form.filters").inner_text()
    assert "Прямая маршрутизация" in cards and "Упражнения" in header
    assert not english_in(cards + header + head, CATALOGUE_ENGLISH), cards + header + head

    page.locator('#cards .exercise-card[data-slug="direct-routing"]').click()
    expect(page.locator("#start-lab button")).to_contain_text("Начать лабораторию")
    page.click("#start-lab")
    page.wait_for_url(re.compile(r"/labs/\w+/$"), timeout=15_000)
    page.wait_for_function("() => window.labConsole.state.connected === true")
    page.wait_for_function(
        "() => (window.labConsole.state.counters['temperature-display'] || {}).acked >= 3"
    )
    expect(page.locator("#log-rows tr[data-kind=acked]").first).to_be_attached()
    # A workload stopped from the page: its card comes back from the server, and lab.js
    # flips the other tabs' cards with its own words.
    page.locator("#workload-pressure-display [data-role=toggle]").click()
    expect(page.locator("#workload-pressure-display")).to_have_attribute("data-running", "false")
    expect(page.locator("#workload-pressure-display [data-role=state]")).to_have_text("остановлен")
    page.wait_for_function("() => window.labConsole.state.queues.pressure.ready >= 1")

    parts = {
        "connection": page.locator("#connection").inner_text(),
        "legend": page.locator(".legend-bar").inner_text(),
        "diagram": page.locator("svg#topology").text_content(),
        "node titles": " ".join(page.locator("svg#topology .node > title").all_text_contents()),
        "log": page.locator(".log-panel").inner_text(),
        "event kinds": " ".join(page.locator("#log-filter-kind option").all_inner_texts()),
        "controls": page.locator("#controls").inner_text(),
    }
    assert "В эфире" in parts["connection"]
    assert "маршрут / доставка" in parts["legend"] and "привязка" in parts["legend"]
    assert "готово" in parts["diagram"] and "сообщ./с" in parts["diagram"], parts["diagram"]
    assert "отправлено" in parts["log"] or "подтверждено" in parts["log"]
    assert "отказ (nack)" in parts["event kinds"] and "в dead-letter" in parts["event kinds"]
    assert "работает" in parts["controls"] and "получено" in parts["controls"]
    left = {name: english_in(text, LAB_ENGLISH) for name, text in parts.items()}
    assert not any(left.values()), left
    # The Russian words are longer than the English: none is cut, nor a workload's name.
    cut = sorted(set(page.evaluate(CUT_SHORT)))
    assert not cut, cut
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "lab-direct-routing-ru.png"))

    # The inspector of a message.
    page.locator("#log-rows tr[data-kind=acked]").first.click()
    inspector = page.locator("#inspector").inner_text()
    assert "очередь" in inspector and not english_in(inspector, ["workload", "queue", "Body"])
