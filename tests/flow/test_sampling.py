"""The tracing sampler's states (labconsole/flow/sampling.py), step by step in time."""

from labconsole.flow.sampling import FULL, OFF, OPENING, WINDOW, TraceSampler


def test_below_the_rate_the_lab_stays_traced_whole():
    s = TraceSampler(above=1000)
    assert s.step(0.25, 900) is None  # not half a second yet
    assert s.step(1.0, 900) is None and s.state == FULL and s.rate == 900
    assert s.due() is None  # nothing wakes an idle lab for it


def test_above_it_tracing_runs_one_window_a_period_until_the_rate_falls():
    s = TraceSampler(above=1000, window=0.25, period=2.5)
    assert s.step(1.0, 3000) is False and s.state == OFF and s.sampled and s.share == 10
    assert TraceSampler(above=1000).share == 10  # the default: 0.1 s every second
    assert s.due() == 1.0 + 2.25
    assert s.step(3.0, 3000) is None
    assert s.step(3.25, 3000) is True and s.state == OPENING and s.due() is None
    s.opened(3.3, 3000)  # the broker traces again: the window starts
    assert s.state == WINDOW and s.due() == 3.3 + 0.25
    assert s.step(3.4, 3100) is None
    assert s.step(3.55, 3500) is False and s.state == OFF
    # The window is read when the next is due: 2,000 a second, still sampled.
    assert s.step(5.8, 3600, window_rate=2000.0) is True and s.state == OPENING
    assert s.rate == 2000
    s.opened(5.8, 3600)
    assert s.step(6.05, 3700) is False
    # That one saw 400 a second, under half the rate: tracing on for good.
    assert s.step(8.3, 3800, window_rate=400.0) is True
    assert s.state == FULL and not s.sampled and s.rate == 400


def test_the_producers_reports_count_when_the_firehose_shows_less():
    s = TraceSampler(above=1000)
    assert s.step(1.0, 200, reported=2500.0) is False and s.rate == 2500


def test_a_failed_turn_on_waits_a_period_and_a_reset_measures_afresh():
    s = TraceSampler(above=1000, window=0.25, period=2.5)
    s.step(1.0, 5000)
    assert s.step(3.25, 5000) is True
    s.failed(3.3)
    assert s.state == OFF and s.due() == 3.3 + 2.25
    s.opened(3.4, 5000)  # a late answer to an attempt given up: nothing
    assert s.state == OFF
    s.reset(4.0, 5000)
    assert s.state == FULL and s.step(4.3, 9000) is None


def test_zero_never_samples():
    s = TraceSampler(above=0)
    assert s.step(5.0, 10**9) is None and s.due() is None and not s.sampled


def test_the_producers_reports_keep_a_window_that_saw_little_sampled():
    """The broker started tracing late and the window saw 400 a second; the producers
    report 3,000: still sampled."""
    s = TraceSampler(above=1000, window=0.25, period=2.5)
    s.step(1.0, 5000)
    s.step(3.25, 5000)
    s.opened(3.25, 5000)
    s.step(3.5, 5100)
    assert s.step(5.75, 5100, reported=3000.0, window_rate=400.0) is True
    assert s.state == OPENING and s.rate == 3000
