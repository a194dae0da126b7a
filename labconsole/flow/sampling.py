"""Tracing sampled above a rate: what a lab monitor does with its vhost's firehose when the
lab publishes faster than a live view needs to see every message.

The broker makes a trace copy of every message published while a vhost traces, which costs
it about a quarter of its throughput at full speed (docs/benchmarks.md). Above `above`
publishes a second, measured over half a second of full tracing, the monitor turns the
lab's tracing off, and on again for `window` seconds in every `period`: a tenth of a
second each second, so that the log's newest event is never more than a second old. Each
window measures the rate again, read when the next is due (all its traces are in by
then); when one saw fewer than `below` a second, tracing goes on for good. So below the
rate the lab is traced whole. Above it the broker traces a tenth of the time, the log and
the animation show that sample (the page says so), and the rates in of exchanges and
queues are the windows' shares of the lab's rate. The counters the workloads report stay
exact either way.

The rate is the higher of what the firehose showed and what the lab's producers report
they publish: a monitor that falls behind its firehose still sees a busy lab as busy, and
a publisher that is not one of the lab's workloads (a sandbox's own client) is seen in the
windows.

A pure state machine: the monitor calls `step` with the time, the count of publishes
traced so far, the producers' reported rate and the last window's rate, turns tracing on
or off as it answers, and calls `opened` once the broker said tracing is on.
"""

from __future__ import annotations

from dataclasses import dataclass

FULL, OFF, OPENING, WINDOW = "full", "off", "opening", "window"
MEASURE_SECONDS = 0.5  # half a second of full tracing measures the rate


@dataclass
class TraceSampler:
    above: float  # publishes a second over which tracing is sampled; 0: never
    window: float = 0.1
    period: float = 1.0
    state: str = FULL
    since: float = 0.0
    start_count: int = 0
    rate: float = 0.0  # the last rate measured, publishes a second

    @property
    def below(self) -> float:
        return self.above / 2

    @property
    def sampled(self) -> bool:
        return self.state != FULL

    @property
    def share(self) -> int:
        """Tracing runs one `window` in this many."""
        return max(1, round(self.period / self.window))

    def step(
        self, now: float, traced: int, reported: float = 0.0, window_rate: float | None = None
    ) -> bool | None:
        """True: turn tracing on; False: turn it off; None: leave it as it is.
        `window_rate`: the last window's rate, once all its traces are in (at the end of
        the period it began); the broker starts and stops tracing a busy channel late, so
        the monitor reads it from when the broker said on to when it said off."""
        if self.above <= 0:
            return None
        if self.state == FULL:
            if now - self.since < MEASURE_SECONDS:
                return None
            self.rate = max((traced - self.start_count) / (now - self.since), reported)
            self.since, self.start_count = now, traced
            if self.rate > self.above:
                self.state = OFF
                return False
            return None
        if self.state == OFF:
            if now - self.since < self.period - self.window:
                return None
            if window_rate is not None:
                self.rate = max(window_rate, reported)
                if self.rate < self.below:  # on, for good
                    self.state, self.since, self.start_count = FULL, now, traced
                    return True
            self.state, self.since = OPENING, now
            return True
        if self.state == WINDOW and now - self.since >= self.window:
            self.state, self.since = OFF, now
            return False
        return None

    def opened(self, now: float, traced: int) -> None:
        """The broker traces again: the window starts now."""
        if self.state == OPENING:
            self.state, self.since, self.start_count = WINDOW, now, traced

    def failed(self, now: float) -> None:
        """The broker did not turn tracing on: try again in a period."""
        if self.state == OPENING:
            self.state, self.since = OFF, now

    def due(self) -> float | None:
        """When `step` has something to do next. None while tracing runs whole (the rate is
        measured at the monitor's own next wake-up: an idle lab is not woken for it) or
        while the broker is asked to trace again."""
        if self.above <= 0 or self.state in (FULL, OPENING):
            return None
        if self.state == OFF:
            return self.since + self.period - self.window
        return self.since + self.window

    def reset(self, now: float, traced: int) -> None:
        """Tracing is on whole again (a reconnect turned it on): measure afresh."""
        self.state, self.since, self.start_count = FULL, now, traced
