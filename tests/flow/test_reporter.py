"""The report pace: full rate while somebody watches the lab, every UNWATCHED_INTERVAL
otherwise."""

import time

from labconsole.flow import reporter as module
from labconsole.flow.reporter import FlowReporter


def make() -> tuple[FlowReporter, list]:
    sent = []
    r = FlowReporter(lambda key, body: sent.append(body), session="s", workload="w", batch_ms=100)
    return r, sent


def test_a_new_workload_reports_at_full_pace():
    r, _ = make()
    r.count("published")
    assert r.due() == r.last_flush + 0.1 * module.COUNTS_ONLY_BATCHES
    r.event("published")
    assert r.due() == r.last_flush + 0.1


def test_unwatched_reports_wait_and_a_watch_brings_full_pace_back():
    r, _ = make()
    r.watched_until = time.monotonic() - 1  # the first watched seconds are over
    r.flush()
    r.event("published")
    assert r.due() == r.last_flush + module.UNWATCHED_INTERVAL
    r.watch(15)
    assert r.due() == r.last_flush + 0.1


def test_nothing_to_report_is_never_due():
    r, sent = make()
    assert r.due() is None
    r.count("published")
    r.flush()
    assert len(sent) == 1 and r.due() is None
