"""The lab page shows what the pattern exercises teach: an RPC request joined to its
reply by correlation_id in the message panel, and a producer's ACCESS_REFUSED, live, in
the event log and on its card."""

import pytest

from exercises.services import lab_session_start, workload_start
from tests.browser.test_lab_page import open_lab

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_request_and_its_reply_are_joined_and_a_refusal_is_shown(
    page, live_server_url, catalogue, learner, labs, worker
):
    rpc = lab_session_start(exercise=catalogue["rpc"], owner=learner)
    open_lab(page, live_server_url, rpc)
    # A request the client read the reply of: its panel lists the reply's delivery.
    page.wait_for_function(
        "() => Number(document.querySelector('[data-counter=\"client-inbox.acked\"]')"
        ".textContent) >= 2"
    )
    page.click("#log-pause")
    request = page.locator('#log-rows tr[data-kind="published"]', has_text="client").last
    request.click()
    inspector = page.locator("#inspector")
    joined = inspector.locator(".insp-section", has_text="correlation_id")
    assert joined.locator("li", has_text="client-inbox").count() == 1
    assert joined.locator("li", has_text="published · server").count() == 1

    security = lab_session_start(exercise=catalogue["security-permissions"], owner=learner)
    workload_start(workload=security.workloads.get(name="audit-writer"))
    open_lab(page, live_server_url, security)
    page.wait_for_function(
        "() => Number(document.querySelector('[data-counter=\"audit-writer.access_refused\"]')"
        ".textContent) >= 1"
    )
    error = page.locator('#log-rows tr[data-kind="error"]').first
    assert "ACCESS_REFUSED" in error.inner_text()
    error.click()
    assert "403 ACCESS_REFUSED" in page.locator("#inspector").inner_text()
