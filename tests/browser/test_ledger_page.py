"""The delivery ledger and a broker event on the lab page, in headless Chromium: the
producer's card counts what its consumers received and what went missing, and a fault
the monitor is told of appears in the log as the timeline words it."""

import pytest
from playwright.sync_api import expect

from exercises.services import exercise_save, lab_session_start, workload_start
from labconsole.broker import control
from tests.browser.test_lab_e2e import log_in
from tests.exercises.test_ledger import LEDGER

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_ledger_and_a_fault_on_the_page(page, live_server_url, learner, labs):
    exercise, _ = exercise_save(source=LEDGER)
    session = lab_session_start(exercise=exercise, owner=learner)
    log_in(page, live_server_url)
    page.goto(f"{live_server_url}/labs/{session.id}/")
    page.wait_for_function("() => window.labConsole.state.connected === true")

    counter = lambda name: page.locator(f'[data-counter="{name}"]')  # noqa: E731
    # keeper: all sixty arrived, some of them twice (its consumer requeues 30% of them).
    expect(counter("keeper.received")).to_have_text("60", timeout=30_000)
    expect(counter("keeper.missing")).to_have_text("0")
    expect(counter("keeper.duplicates")).not_to_have_text("0")
    # capper: its queue keeps ten of sixty; once they are read, fifty are missing.
    expect(counter("capper.confirmed")).to_have_text("60", timeout=30_000)
    workload_start(workload=session.workloads.get(name="late"))
    expect(counter("capper.received")).to_have_text("10", timeout=30_000)
    expect(counter("capper.missing")).to_have_text("50")

    # A fault as the Brokers panel tells the monitor of it: a row of the log.
    control.send(
        control.monitor_key(session.id),
        {"op": "broker", "event": {"node": "lab1", "action": "kill", "workload": "@you"}},
    )
    row = page.locator('tr[data-kind="broker"]')
    expect(row).to_have_count(1, timeout=10_000)
    expect(row).to_contain_text("broker")
    expect(row).to_contain_text("you")
    expect(row).to_contain_text("lab1")
    expect(row).to_contain_text("killed it")
