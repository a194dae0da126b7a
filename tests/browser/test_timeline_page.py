"""The brokers' timeline on the page of a lab on the cluster, in headless Chromium: a node
stopped and started from the lab's panel appears in the strip under the diagram, with who
did it and where the messages stood; clicking it shows the log around it; it stays when
hundreds of message events have pushed it out of the log, and after a reload. A lab on the
shared broker has no strip."""

import pytest
from playwright.sync_api import expect

from exercises.services import lab_session_start
from tests.browser.test_lab_e2e import SCREENSHOTS, log_in

# The cluster's fixtures: one warm cluster for the lab to take, gone at the module's end.
from tests.cluster.conftest import boots_and_removals_done, no_cluster_left  # noqa: F401
from tests.cluster.test_local_cluster import Panel, _nodes, warm  # noqa: F401
from tests.support import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORT = {"width": 1440, "height": 900}

STOPPED = (
    "() => window.labConsole.state.events.some((e) => e.kind === 'broker' && e.action === 'stop')"
)
# No event of the page's log is within the timeline's window of the stop (10 s either side,
# MOMENT_S in main.js): the log has moved on from that moment altogether.
MOMENT_GONE = """() => {
  const s = window.labConsole.state;
  const stop = s.timeline.find((e) => e.action === 'stop');
  return !!stop && s.events.length > 0 && s.events.every((e) => Math.abs(e.t - stop.t) > 10);
}"""


def test_a_fault_stays_on_the_timeline_after_the_log_and_a_reload(
    warm,  # noqa: F811
    page,
    live_server_url,
    catalogue,
    learner,
    labs,
    client,
):
    """The learner's stop of a node: in the strip at once (you, the node, what it did, the
    messages sent and received then); a click filters the log to its moment and marks its
    row; 500 message events later the log has lost it and the strip has not, nor after a
    reload, where the log has nothing of that moment left and says so."""
    session = lab_session_start(exercise=catalogue["cluster-failover"], owner=learner)
    log_in(page, live_server_url)
    page.goto(f"{live_server_url}/labs/{session.id}/")
    page.wait_for_function("() => window.labConsole.state.connected === true")
    expect(page.locator("#timeline-empty")).to_be_visible()
    expect(page.locator('[data-counter="checkout.published"]')).not_to_have_text(
        "0", timeout=30_000
    )

    client.force_login(learner)
    panel = Panel(client, session)
    node = _nodes(session).nodes[-1].name
    assert "Stopping" in panel.fault(node, "stop")  # on its way: the page shows it at once
    fault = page.locator(f'#timeline-list li[data-node="{node}"][data-workload="@you"]').filter(
        has_text="stopped it"
    )
    expect(fault).to_have_count(1, timeout=15_000)
    expect(fault).to_contain_text("you")
    expect(fault).to_contain_text(node)
    expect(fault).to_contain_text(" sent · ")
    exact = fault.locator("time").get_attribute("title")
    assert exact and ":" in exact, exact  # the exact time on hover

    # The log around the stop: its row marked, the events of other moments left out.
    page.wait_for_function(STOPPED)
    fault.locator("button").click()
    expect(fault.locator("button")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#log-moment")).to_be_visible()
    expect(page.locator("#log-rows tr.is-moment")).to_have_count(1)
    expect(page.locator("#log-rows tr.is-moment")).to_contain_text("stopped it")
    page.locator("#log-moment").click()
    expect(page.locator("#log-moment")).to_be_hidden()
    expect(page.locator("#log-rows tr.is-moment")).to_have_count(0)

    on_node = page.locator(f'#timeline-list li[data-node="{node}"]')
    expect(on_node.filter(has_text="stopped (the VM runs)")).to_have_count(1, timeout=30_000)
    wait_for(lambda: panel.node_state(node) == "stopped", timeout=60, message=f"{node} stopped")
    panel.start(node)
    expect(on_node.filter(has_text="started it")).to_have_count(1, timeout=15_000)
    page.screenshot(path=str(SCREENSHOTS / "lab-timeline.png"))

    # Hundreds of message events later the page's log (500 events) no longer has the stop.
    page.wait_for_function(MOMENT_GONE, timeout=120_000)
    expect(
        page.locator('#log-rows tr[data-kind="broker"]').filter(has_text="stopped it")
    ).to_have_count(0)
    expect(fault).to_have_count(1)
    page.reload()
    page.wait_for_function("() => window.labConsole.state.snapshotsReceived > 0")
    expect(fault).to_have_count(1)
    expect(fault).to_contain_text("stopped it")
    page.wait_for_function(MOMENT_GONE)  # the snapshot's log has moved on too
    fault.locator("button").click()
    expect(page.locator("#log-empty")).to_be_visible()
    expect(page.locator("#log-empty")).to_contain_text("no events of that moment")

    # A lab on the shared broker has no brokers of its own to show.
    shared = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    page.goto(f"{live_server_url}{shared.get_absolute_url()}")
    expect(page.locator("#topology")).to_be_visible()
    expect(page.locator("#timeline")).to_have_count(0)
