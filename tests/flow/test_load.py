"""Load presets: the rate a producer publishes at while one runs, and the summary the
monitor makes of it."""

import pytest

from labconsole.flow.monitor import LOAD_COUNTERS, FlowRecord, LoadRun
from labconsole.workloads.load import LOAD_PRESETS, effective_rate, load_setting, running_load


def test_a_load_raises_the_rate_until_its_end_and_no_further():
    load = load_setting("stress", now=1000.0)
    assert load == {"preset": "stress", "rate": 5000, "until": 1030.0}
    settings = {"rate": 2, "load": load}
    assert effective_rate(settings, 1000.0) == 5000
    assert effective_rate(settings, 1029.9) == 5000
    assert effective_rate(settings, 1030.0) == 2
    assert running_load(settings, 1030.0) is None
    assert effective_rate({"rate": 2}, 1000.0) == 2


def test_an_unknown_preset_is_not_run():
    with pytest.raises(KeyError):
        load_setting("meltdown")
    assert set(LOAD_PRESETS) == {"spike", "stress"}


def test_the_summary_gives_what_changed_and_the_most_each_queue_held():
    run = LoadRun("gateway", load_setting("spike", now=0.0), {"published": 100, "returned": 1})
    run.started = 0.0
    run.observe({"orders": {"ready": 40, "unacked": 10}, "audit": {"ready": 0, "unacked": 0}})
    run.observe({"orders": {"ready": 5, "unacked": 0, "latency": [3.0, 250.0]}})
    run.observe({"orders": {"ready": 0, "unacked": 0, "latency": [2.0, 90.0]}})
    summary = run.summary({"published": 9100, "returned": 1, "confirmed": 0})
    assert summary["kind"] == "load" and summary["preset"] == "spike"
    assert summary["published"] == 9000 and summary["returned"] == 0
    assert summary["peak"] == {"orders": 50}  # an empty queue is left out
    assert summary["p99_ms"] == 250.0
    assert summary["seconds"] == 10.0
    assert set(LOAD_COUNTERS) <= set(summary)
    # Carried to a new monitor mid-load.
    again = LoadRun("gateway", run.load, {}, run.export())
    assert again.before["published"] == 100 and again.peak == {"orders": 50}


def test_finished_loads_count_since_the_step():
    record = FlowRecord()
    record.loads["gateway"] += 1
    mark = FlowRecord.restore(record.export())
    assert record.since(mark).loads["gateway"] == 0
    record.loads["gateway"] += 1
    assert FlowRecord.restore(record.export()).since(mark).loads["gateway"] == 1
