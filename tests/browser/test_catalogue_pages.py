"""Every exercise of the built-in catalogue opens in the browser as a learner opens it:
from its card, with the exercise page's Start button, every other one in Russian. Its lab
starts, its diagram draws every queue, exchange and workload, its first frame arrives,
its first step reads in the page's language, and the workloads' cards have the counters
the steps name."""

import os
import re

import pytest
from playwright.sync_api import expect

from exercises.models import LabSession
from exercises.services import CATALOGUE_DIR, lab_session_stop
from tests.browser.test_lab_e2e import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

VIEWPORT = {"width": 1440, "height": 900}
SHOTS = os.environ.get("CATALOGUE_SHOTS")  # a directory: keep a screenshot of each lab


def test_every_exercise_draws_its_diagram_and_gets_frames(
    page, live_server_url, catalogue, learner, labs
):
    slugs = sorted(p.stem for p in CATALOGUE_DIR.glob("*.yaml"))
    assert set(slugs) <= set(catalogue)
    # A lab on the local cluster is played in tests/cluster, which starts the cluster.
    slugs = [slug for slug in slugs if catalogue[slug].spec.broker == "shared"]
    log_in(page, live_server_url)
    language = "en"
    for i, slug in enumerate(slugs):
        wanted = "ru" if i % 2 else "en"
        if wanted != language:
            page.locator(f'.lang-switch button[value="{wanted}"]').click()
            expect(page.locator("html")).to_have_attribute("lang", wanted)
            language = wanted
        page.goto(f"{live_server_url}/")
        page.locator(f'#cards .exercise-card[data-slug="{slug}"]').click()
        page.click("#start-lab button")
        page.wait_for_url(re.compile(r"/labs/\w+/$"), timeout=15_000)
        session = LabSession.objects.get(id=page.url.rstrip("/").rsplit("/", 1)[1])
        spec = session.spec
        assert session.exercise.slug == slug
        page.wait_for_function("() => window.labConsole.state.framesReceived > 0")
        first = spec.steps[0].title
        title = first.get(language)
        expect(page.locator(".step.is-current .step-title")).to_have_text(title)
        drawn = set(
            page.eval_on_selector_all(
                "#topology [data-node]", "els => els.map(e => e.dataset.node)"
            )
        )
        names = {q.name for q in spec.topology.queues} | {x.name for x in spec.topology.exchanges}
        names |= {w.name for w in (*spec.workloads.producers, *spec.workloads.consumers)}
        missing = {n for n in names if not any(node.endswith(f":{n}") for node in drawn)}
        assert not missing, f"{slug}: not on the diagram: {missing} (drawn: {sorted(drawn)})"
        # Each consumer's card counts redeliveries; a producer with confirms, refusals; a
        # transactional producer, its committed messages; every producer, its returns.
        for c in spec.workloads.consumers:
            assert page.locator(f'[data-counter="{c.name}.redelivered"]').count() == 1
        for p in spec.workloads.producers:
            refused = page.locator(f'[data-counter="{p.name}.nacked_by_broker"]').count()
            assert refused == (1 if p.confirms else 0), (slug, p.name)
            committed = page.locator(f'[data-counter="{p.name}.committed"]').count()
            assert committed == (1 if p.transactions else 0), (slug, p.name)
            assert page.locator(f'[data-counter="{p.name}.returned"]').count() == 1
        if SHOTS:
            page.wait_for_timeout(3000)
            page.screenshot(path=f"{SHOTS}/{slug}.png")
        lab_session_stop(session=session)
