"""A real daphne serving the console on a free port, and headless Chromium driven by
Playwright (Debian's chromium package; Playwright downloads no browser of its own)."""

from __future__ import annotations

import os
import shutil

import pytest
import requests

from tests.conftest import subprocess_env
from tests.support import Daphne, wait_for

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def web_server(worker, django_db_setup):
    web = Daphne("daphne", env=subprocess_env())
    web.start()

    def up() -> bool:
        try:
            return requests.get(f"{web.url}/accounts/login/", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    wait_for(up, timeout=30, message="daphne answering")
    yield web
    web.stop()


@pytest.fixture(scope="session")
def live_server_url(web_server):
    return web_server.url


@pytest.fixture(scope="module")
def browser():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"no Chromium at {CHROMIUM}: run `make test`, which installs it")
    # Playwright's sync API runs an event loop in this thread; the tests still touch the
    # database between browser steps, as Django allows when told.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()
    # The event loop of Playwright's sync API ends here; other tests run their own.
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


@pytest.fixture
def page(browser, request):
    """A page of a new browser context, at the test module's VIEWPORT if it names one."""
    viewport = getattr(request.module, "VIEWPORT", {"width": 1366, "height": 768})
    context = browser.new_context(viewport=viewport, locale="en-US")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
