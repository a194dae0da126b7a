"""The worker's I/O loop: all of a process's units on one thread, and nothing that blocks
(the database, the management API) held up on it. Against the shared broker: the units
only open a connection each to the console's vhost and tick."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from labconsole.broker import amqp
from labconsole.runtime.bus import ConsoleBus
from labconsole.runtime.loop import TIMER_GRID, on_grid
from labconsole.runtime.unit import Unit
from tests.support import wait_for

UNITS = 30


class Ticker(Unit):
    """Ticks every 20 ms and records the thread it runs on."""

    kind = "ticker"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.ticks = 0
        self.threads: set[int] = set()
        self.times: list[float] = []

    def connected(self) -> None:
        self.threads.add(threading.get_ident())

    def tick(self, now: float) -> float:
        self.ticks += 1
        self.threads.add(threading.get_ident())
        self.times.append(time.monotonic())
        return now + 0.02


@pytest.fixture
def bus():
    bus = ConsoleBus(params=lambda: amqp.console_parameters(name="loop test bus"))
    bus.start()
    wait_for(bus.connected.is_set, message="bus connected")
    yield bus
    bus.stop()
    bus.join(10)


def tickers(bus: ConsoleBus, n: int, first: int = 0) -> list[Ticker]:
    units = [
        Ticker(
            name=f"ticker-{i}",
            bus=bus,
            control_key=f"loop-test.{i}",
            lab_params=amqp.console_parameters(name=f"loop test unit {i}"),
            still_current=lambda: True,
        )
        for i in range(first, first + n)
    ]
    for unit in units:
        unit.start(on_exit=lambda _: None)
    return units


def stop_all(units: list[Ticker]) -> None:
    for unit in units:
        unit.request_stop()
    for unit in units:
        assert unit.join(10), f"{unit.name} did not stop"
        assert unit.outcome == "stopped"


def test_all_units_of_a_process_run_on_its_one_loop_thread(bus):
    before = threading.active_count()
    units = tickers(bus, UNITS)
    try:
        wait_for(lambda: all(u.ticks >= 5 for u in units), message="every unit ticking")
        # Each unit has its own connection, and not one thread more than the loop's.
        assert all(u.lab is not None and u.lab.is_open for u in units)
        assert {t for u in units for t in u.threads} == {bus.loop.thread.ident}
        assert threading.active_count() <= before + 1  # at most a thread of the blocking pool
    finally:
        stop_all(units)


def test_a_blocking_call_does_not_hold_up_the_units(bus):
    units = tickers(bus, 3)
    try:
        wait_for(lambda: all(u.ticks >= 5 for u in units), message="every unit ticking")
        done = threading.Event()
        start = [u.ticks for u in units]
        # Asked for on the loop, as the units do.
        bus.loop.call_soon(bus.loop.run_blocking, lambda: time.sleep(1.0), lambda *_: done.set())
        assert done.wait(10), "the blocking call's result never came back to the loop"
        # 50 ticks a second each; during the second the blocking call took, they went on.
        assert all(u.ticks - s >= 10 for u, s in zip(units, start, strict=True)), [
            u.ticks - s for u, s in zip(units, start, strict=True)
        ]
    finally:
        stop_all(units)


def test_the_units_of_a_process_wake_together(bus):
    """Their timers fall on one grid: the units started at different moments wake in the
    same passes of the loop (so that what they send leaves together), not each on its own."""
    units = []
    for i in range(10):
        units += tickers(bus, 1, first=i)
        time.sleep(0.0037)  # started out of step with each other
    try:
        wait_for(lambda: all(u.ticks >= 20 for u in units), message="every unit ticking")
        times = sorted(t for u in units for t in u.times[5:])
        # Wake-ups less than a millisecond apart were one pass of the loop: ten units
        # ticking every 20 ms on a 5 ms grid share at most four passes a period.
        passes = 1 + sum(b - a > 0.001 for a, b in zip(times, times[1:], strict=False))
        assert passes * 2 <= len(times), (passes, len(times))
        # ... and every tick is on the grid (the drift of `now + 20 ms` does not add up).
        # Off the grid, the time after the last grid instant would be 2.5 ms in the median.
        late = sorted(t - on_grid(t - TIMER_GRID + 1e-9) for t in times)
        assert late[len(late) // 2] < 0.0015, late[len(late) // 2]
    finally:
        stop_all(units)


def test_a_timer_that_raises_leaves_the_others_of_its_pass(bus):
    """pika runs the timers due in a pass from a list it took off its heap: unguarded, one
    that raised (pika's heartbeat timer of a connection already gone, once) dropped the
    others for good, a consumer's acknowledgement among them, and the consumer stalled."""
    ran = threading.Event()

    def fail():
        raise RuntimeError("a timer that fails")

    def schedule():
        bus.loop.ioloop.call_later(0, fail)
        bus.loop.ioloop.call_later(0, ran.set)

    bus.loop.call_soon(schedule)
    assert ran.wait(5), "the timer due after the failing one never ran"


def test_a_unit_that_drops_its_socket_leaves_pika_nothing_to_trip_on(bus, caplog):
    """A crashing consumer drops its socket without an AMQP close. Done behind pika's back,
    its close callback met an unset error and its heartbeat timer a missing socket: two
    exceptions on the loop for every crash."""
    unit = tickers(bus, 1)[0]
    try:
        wait_for(lambda: unit.ticks >= 3, message="the unit ticking")
        connection = unit.lab
        assert connection._heartbeat_checker is not None  # what must go with the socket
        bus.loop.call_soon(unit.abort)
        wait_for(lambda: connection.is_closed, timeout=5, message="the dropped connection closed")
        assert connection._heartbeat_checker is None
        ticks = unit.ticks
        wait_for(lambda: unit.ticks >= ticks + 5, message="the loop going on")
        errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
        assert not errors, errors
    finally:
        stop_all([unit])
