"""An ended lab's page: the counters it last reported (or, with none kept, a plain word
that none were), "ended" said once, its workloads stopped; and a second tab that was
watching the lab live switches to that by itself."""

import re

import pytest
from playwright.sync_api import expect

from exercises.models import LabSession, Workload
from exercises.services import lab_session_start, lab_session_stop
from tests.browser.test_lab_e2e import log_in
from tests.support import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Everything that says the lab ended, in the text a learner sees (hidden elements excluded).
SAID_ENDED = r"""() => (document.body.innerText.match(/\blab (has )?ended\b/gi) || []).length"""


def saved_record(session: LabSession) -> dict:
    session.refresh_from_db()
    return (session.monitor_state or {}).get("record", {}).get("workloads", {})


def monitor_gone(session: LabSession) -> bool:
    """The lab's monitor has stopped and saved its last flow record."""
    return LabSession.objects.filter(pk=session.pk, monitor_owner="").exists()


def expect_stopped(page, session: LabSession) -> None:
    names = list(session.workloads.values_list("name", flat=True))
    assert names
    for name in names:
        card = page.locator(f"#workload-{name}")
        expect(card).to_have_attribute("data-running", "false")
        expect(card.locator("[data-role=state]")).to_have_text("stopped")
        expect(card.locator("[data-role=toggle]")).to_be_disabled()
    workloads = page.evaluate("() => window.labConsole.state.workloads")
    assert sorted(workloads) == sorted(names)
    assert not any(w["running"] for w in workloads.values()), workloads


def test_an_ended_lab_shows_the_counters_it_last_reported(
    page, live_server_url, catalogue, learner, labs
):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner)
    wait_for(
        lambda: saved_record(session).get("temperature-display", {}).get("acked", 0) >= 3,
        timeout=30,
        message="the monitor saved a record with deliveries",
    )
    lab_session_stop(session=session)
    wait_for(lambda: monitor_gone(session), timeout=20, message="the monitor stopped")
    # The higher of the monitor's and each workload's own last figures.
    record = saved_record(session)
    last = {
        w.name: {
            k: max(v, record.get(w.name, {}).get(k, 0))
            for k, v in {**record.get(w.name, {}), **w.progress.get("counts", {})}.items()
        }
        for w in session.workloads.all()
    }
    assert last["temperature-sensor"]["published"] >= 3

    log_in(page, live_server_url)
    page.goto(f"{live_server_url}/labs/{session.id}/")
    expect(page.locator("#lab-ended")).to_be_visible()
    for workload, counter in (
        ("temperature-sensor", "published"),
        ("temperature-display", "delivered"),
        ("temperature-display", "acked"),
    ):
        expect(page.locator(f'[data-counter="{workload}.{counter}"]')).to_have_text(
            f"{last[workload][counter]:,}"
        )
    expect(page.locator("#lab-ended .banner-message")).to_have_text(
        "Its vhost and user are gone; the counters are the last it reported."
    )
    assert page.evaluate(SAID_ENDED) == 1
    expect(page.locator("#connection")).to_be_hidden()
    expect_stopped(page, session)
    # The log says why it is empty, not "no events yet".
    expect(page.locator("#log-empty")).to_have_text(
        "Events are shown only while the lab runs; none were kept."
    )


def test_an_ended_lab_with_nothing_kept_says_so(page, live_server_url, catalogue, learner, labs):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    wait_for(lambda: not monitor_gone(session), timeout=20, message="a worker took the monitor")
    lab_session_stop(session=session)
    wait_for(lambda: monitor_gone(session), timeout=20, message="the monitor stopped")
    # As a lab that ended before anything of it was saved.
    LabSession.objects.filter(pk=session.pk).update(monitor_state={})
    Workload.objects.filter(session=session).update(progress={})

    log_in(page, live_server_url)
    page.goto(f"{live_server_url}/labs/{session.id}/")
    expect(page.locator("#lab-ended .banner-message")).to_have_text(
        "Its vhost and user are gone, and no counters were kept from it."
    )
    assert "last" not in page.locator("#lab-ended").inner_text()
    assert page.evaluate(SAID_ENDED) == 1
    expect_stopped(page, session)


def test_every_open_tab_switches_to_the_ended_lab(page, live_server_url, catalogue, learner, labs):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner)
    log_in(page, live_server_url)
    other = page.context.new_page()
    errors: list[str] = []
    other.on("pageerror", lambda exc: errors.append(str(exc)))
    for tab in (page, other):
        tab.goto(f"{live_server_url}/labs/{session.id}/")
        tab.wait_for_function("() => window.labConsole.state.connected === true")
    other.wait_for_function(
        "() => (window.labConsole.state.counters['temperature-display'] || {}).acked >= 3"
    )
    expect(other.locator("#workload-temperature-sensor")).to_have_attribute("data-running", "true")

    # The first tab ends the lab; the second is told and changes by itself.
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#lab-end")
    page.wait_for_url(re.compile(r"/exercises/direct-routing/$"))
    expect(other.locator("#lab")).to_have_attribute("data-lab-state", "ended")
    expect(other.locator("#lab-ended")).to_be_visible()
    expect_stopped(other, session)
    other.wait_for_timeout(3000)  # the lab's monitor stops meanwhile: nothing more is said
    assert other.evaluate(SAID_ENDED) == 1
    expect(other.locator("#lab-ended .banner-message")).to_have_text(
        "Its vhost and user are gone; the counters are the last it reported."
    )
    # The numbers it was showing stay.
    acked = other.evaluate("() => window.labConsole.state.counters['temperature-display'].acked")
    assert acked >= 3
    expect(other.locator('[data-counter="temperature-display.acked"]')).to_have_text(f"{acked:,}")
    assert not errors, f"JavaScript errors on the second tab: {errors}"


def test_an_ended_lab_in_russian(browser, live_server_url, catalogue, learner, labs):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    lab_session_stop(session=session)
    wait_for(lambda: monitor_gone(session), timeout=20, message="the monitor stopped")
    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="ru-RU")
    try:
        page = context.new_page()
        log_in(page, live_server_url)
        page.goto(f"{live_server_url}/labs/{session.id}/")
        expect(page.locator("#lab-ended .banner-title")).to_have_text("Лаборатория завершена.")
        assert page.evaluate("() => document.body.innerText.split('завершен').length - 1") == 1
        expect(page.locator("#workload-temperature-sensor [data-role=state]")).to_have_text(
            "остановлен"
        )
        expect(page.locator("#log-empty")).to_have_text(
            "События видны, только пока лаборатория работает; они не сохранились."
        )
    finally:
        context.close()
