"""A class in headless Chromium against the real console: an instructor creates it on the
page and opens its dashboard; a learner with no account joins with the code in another
browser, starts Hello World and passes its first step; the dashboard shows the pass."""

import pytest
from django.contrib.auth.models import Group
from playwright.sync_api import expect

from exercises.models import Classroom, LabSession
from exercises.selectors import INSTRUCTORS_GROUP
from tests.browser.test_lab_e2e import SCREENSHOTS, expect_passed, log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_a_class_from_creation_to_a_pass_on_the_dashboard(
    page, browser, live_server_url, catalogue, django_user_model, labs
):
    """The dashboard's cell of the learner's first step turns passed by itself."""
    teacher = django_user_model.objects.create_user(
        "teacher", password="teacher-pass-1", is_staff=True
    )
    group, _ = Group.objects.get_or_create(name=INSTRUCTORS_GROUP)
    teacher.groups.add(group)
    log_in(page, live_server_url, "teacher", "teacher-pass-1")
    page.click("#classes-link")
    page.click("#class-new")
    page.fill("input[name=name]", "Morning group")
    page.check(f'input[name=exercises][value="{catalogue["hello-world"].pk}"]')
    page.click("#class-form button[type=submit]")
    code = page.locator("#join-code").inner_text().strip()
    assert code == Classroom.objects.get(name="Morning group").join_code
    expect(page.locator("#join-qr svg")).to_be_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "class.png")
    page.click("#class-dashboard-link")
    expect(page.locator("#dash-connection")).to_have_attribute("data-state", "live")
    expect(page.locator("#dash-empty")).to_be_visible()

    context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="en-US")
    learner = context.new_page()
    errors: list[str] = []
    learner.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        learner.goto(f"{live_server_url}/join/")
        learner.fill("input[name=code]", code.lower())
        learner.fill("input[name=display_name]", "Ada")
        learner.click("#join-form button[type=submit]")
        expect(learner.locator("h1")).to_contain_text("Morning group")
        row = page.locator('#dashboard-grid tr[data-learner="Ada"]')
        expect(row).to_be_visible()
        learner.click('[data-exercise="hello-world"] button')
        expect(learner.locator("#connection")).to_have_attribute("data-state", "live")
        assert LabSession.objects.get(owner__class_memberships__display_name="Ada").classroom
        expect_passed(learner, "hello-routed", "hello-acked")
        cell = row.locator('td[data-step="watch-hello"]')
        expect(cell).to_have_attribute("data-state", "passed", timeout=10_000)
        expect(
            page.locator('tfoot td[data-exercise="hello-world"][data-step="watch-hello"]')
        ).to_have_text("1")
        page.screenshot(path=SCREENSHOTS / "class-dashboard.png")
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the learner's page: {errors}"
