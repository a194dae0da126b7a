"""Every exercise of the built-in catalogue opens in the browser: its lab starts, its
diagram draws every queue, exchange and workload, its first frame arrives, and the
workloads' cards have the counters the steps name."""

import os

import pytest

from exercises.services import CATALOGUE_DIR, lab_session_start, lab_session_stop
from tests.browser.test_lab_page import open_lab

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
    for slug in slugs:
        session = lab_session_start(exercise=catalogue[slug], owner=learner)
        spec = session.spec
        open_lab(page, live_server_url, session)
        page.wait_for_function("() => window.labConsole.state.framesReceived > 0")
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
