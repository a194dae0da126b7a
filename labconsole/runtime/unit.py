"""A unit: one long-running part of a lab (a producer, a consumer, the lab's monitor) with
one connection to the lab's vhost, run by its worker process's I/O loop
(labconsole/runtime/loop.py).

A unit does nothing between a message on its connection, a control message (through the
console bus, or `post` from any thread) and its next timer (`tick` returns when that is).
So a unit costs CPU in proportion to the messages it handles, not to the time it runs,
and a worker process holds its units on one thread, however many there are.

When the connection is lost (a broker restart, a network blip, a memory alarm that
outlasts `blocked_connection_timeout`) the unit connects again with backoff, for as long as
`still_current()` says the lab wants it, and carries on from where it was: its counters
and progress live in the unit, not in the connection.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import pika
import pika.exceptions as px

from .bus import ConsoleBus, Incoming
from .loop import TIMER_EARLY, Attempt, close_quietly, on_grid

log = logging.getLogger(__name__)

BACKOFF = (0.25, 0.5, 1.0, 2.0, 3.0)
LONGEST_SLEEP = 5.0  # even with nothing to do, look at the clock this often
CLOSE_WAIT = 5.0  # a run ends this long after its close at the latest
# Errors of a connection that is going away: its close callback says the rest.
GOING = (px.ConnectionWrongStateError, px.StreamLostError, px.ConnectionClosed)


class Stop(Exception):  # noqa: N818 - a way out of the run, not an error
    """Raised inside a unit to end its run with `outcome`."""

    def __init__(self, outcome: str, message: str = ""):
        super().__init__(message or outcome)
        self.outcome = outcome
        self.message = message


class Unit:
    """Subclasses implement `connected` (open channels, start consuming; on the loop, so
    asynchronously), `handle` (a control message), `tick` (timed work; returns the
    monotonic time it wants to run again, or None) and may implement `disconnected` and
    `finish`. Callbacks a subclass gives pika go through `guard`."""

    kind = "unit"

    def __init__(
        self,
        *,
        name: str,
        bus: ConsoleBus,
        control_key: str,
        pace_key: str | None = None,
        lab_params: list[pika.ConnectionParameters],
        still_current: Callable[[], bool],
    ):
        self.name = name
        self.key = name  # the runtime's name for this run of the unit
        self.row: tuple = ()  # what the runtime's rows call it
        self.bus = bus
        self.loop = bus.loop
        self.control_key = control_key
        # The lab's pace key: whether anybody watches the lab (ops "pace"), for every unit.
        self.control_keys = [control_key] + ([pace_key] if pace_key else [])
        self.lab_params = lab_params
        self.still_current = still_current
        self.lab: pika.SelectConnection | None = None
        self.outcome: str | None = None
        self.message = ""
        self.reconnects = 0
        self.serving = False  # connected, and `connected()` done, since the last attempt
        self.blocked = False  # the broker blocks the connection (a memory or disk alarm)
        self.done = threading.Event()
        self._on_exit: Callable[[Unit], None] = lambda unit: None
        self._attempt: Attempt | None = None
        self._attempts = 0
        self._offline: deque[Incoming] = deque(maxlen=1_000)  # control messages while away
        self._timer = None
        self._timer_at: float | None = None
        self._timer_wanted = 0.0
        self._retry = None
        self._finished = False

    # --- any thread ------------------------------------------------------------------------
    def start(self, on_exit: Callable[[Unit], None]) -> None:
        """Runs the unit on its loop; `on_exit(unit)` is called on the loop when it ends."""
        self._on_exit = on_exit
        self.loop.call_soon(self._begin)

    def post(self, message: Incoming) -> None:
        self.loop.call_soon(self._receive, message)

    def request_stop(self, outcome: str = "stopped") -> None:
        self.loop.call_soon(self.stop, outcome)

    def join(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)

    # --- the loop thread --------------------------------------------------------------------
    def _begin(self) -> None:
        for key in self.control_keys:
            self.bus.bind(key, self._receive)
        self._connect()

    def _connect(self) -> None:
        self._retry = None
        if self.outcome is not None:
            self._finish()
            return
        self.serving = False
        self._attempt = self.loop.connect(
            self.lab_params, on_open=self._opened, on_failed=self._lost, on_close=self._closed
        )

    def _opened(self, connection: pika.SelectConnection) -> None:
        self.lab = connection
        self.blocked = False
        connection.add_on_connection_blocked_callback(lambda *_: self._set_blocked(True))
        connection.add_on_connection_unblocked_callback(lambda *_: self._set_blocked(False))
        self.guard(self._serve)

    def _serve(self) -> None:
        self.connected()
        self.serving = True
        self._attempts = 0
        while self._offline and self.outcome is None:
            self.handle(self._offline.popleft())
        self.poke()

    def _set_blocked(self, blocked: bool) -> None:
        self.blocked = blocked
        self.poke()

    def _closed(self, connection, exc: BaseException) -> None:
        if connection is not self.lab:
            return
        self.lab = None
        self._cancel_timer()
        if self.outcome is not None:
            self._finish()
        else:
            self._lost(exc)

    def _lost(self, exc: BaseException) -> None:
        self.lab = None
        if self.outcome is not None:
            self._finish()
            return
        self.guard(self.disconnected, exc)
        if self.serving:
            self._attempts = 0  # it was connected: a new outage starts from the first step
        self.serving = False
        # The vhost or user may be gone (the lab ended): the database says.
        self.loop.run_blocking(self._still_current, lambda current, _: self._again(current, exc))

    def _again(self, current: bool, exc: BaseException) -> None:
        if self.outcome is not None:
            self._finish()
            return
        if not current:
            self.outcome = "ended"
            self._finish()
            return
        delay = BACKOFF[min(self._attempts, len(BACKOFF) - 1)]
        self._attempts += 1
        self.reconnects += 1
        log.info("%s %s: %s; again in %.2f s", self.kind, self.name, str(exc) or repr(exc), delay)
        self._retry = self.loop.call_later(delay, self._connect)

    def _receive(self, message: Incoming) -> None:
        if self.outcome is not None:
            return
        if message.routing_key == "" and (message.correlation_id or "").startswith("stop:"):
            self.stop(message.correlation_id[5:])
            return
        if not self.serving:
            self._offline.append(message)  # handled once connected again
            return
        self.guard(self.handle, message)
        self.poke()

    def stop(self, outcome: str = "stopped", message: str = "") -> None:
        """Ends the run: the connection is closed, then `finish()` and `on_exit`."""
        if self.outcome is not None:
            return
        self.outcome, self.message = outcome, message
        self._cancel_timer()
        self.loop.cancel(self._retry)
        self._retry = None
        lab = self.lab
        if lab is not None and lab.is_open:
            close_quietly(lab)  # `_closed` finishes the run
            # ... or this, should the broker never answer the close.
            self.loop.call_later(CLOSE_WAIT, self._finish)
            return
        if self._attempt is not None:
            self._attempt.abandon()
        self._finish()

    def abort(self) -> None:
        """Drops the connection without an AMQP close, as a process that dies does: the
        broker requeues what it held. What the unit already sent (acknowledgements, say)
        is written first, as a process's earlier writes would have been."""
        lab, self.lab, self._attempt = self.lab, None, None

        def drop(deadline: float) -> None:
            try:
                if lab._transport.get_write_buffer_size() and time.monotonic() < deadline:
                    self.loop.call_later(0.005, drop, deadline)
                    return
                # pika's own way to drop a socket (its heartbeat timeout's): the
                # heartbeat timer goes with it, and the close callback learns why.
                lab._terminate_stream(px.StreamLostError("the workload crashed"))
            except Exception:  # noqa: BLE001 - already gone
                log.debug("abort of %s failed", self.name, exc_info=True)

        drop(time.monotonic() + 1.0)

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        self._cancel_timer()
        for key in self.control_keys:
            self.bus.unbind(key, self._receive)
        try:
            self.finish()
        except Exception:  # noqa: BLE001
            log.debug("%s %s: finish failed", self.kind, self.name, exc_info=True)
        close_quietly(self.lab)
        self.lab = None
        try:
            self._on_exit(self)
        finally:
            self.done.set()

    def guard(self, fn: Callable, *args) -> None:
        """Runs a callback of the unit: a Stop ends the run; a lost connection is left to
        its close callback; any other error is a bug, said in the log and the outcome."""
        try:
            fn(*args)
        except Stop as stop:
            self.stop(stop.outcome, stop.message)
        except GOING:
            log.debug("%s %s: connection going", self.kind, self.name, exc_info=True)
        except Exception as exc:
            log.exception("%s %s failed", self.kind, self.name)
            self.stop("failed", repr(exc))

    def guarded(self, fn: Callable) -> Callable:
        """`fn` wrapped in `guard`, for pika to call."""
        return lambda *args: self.guard(fn, *args)

    # --- timers -------------------------------------------------------------------------------
    def poke(self) -> None:
        """Runs `tick` soon (after the messages pika is handing over now)."""
        self._schedule(time.monotonic())

    def _schedule(self, due: float) -> None:
        if self.outcome is not None or not self.serving:
            return
        wanted, due = due, on_grid(due - TIMER_EARLY)
        if self._timer is not None:
            if self._timer_at == due:
                self._timer_wanted = max(self._timer_wanted, wanted)
            if self._timer_at <= due:
                return
            self.loop.cancel(self._timer)
        self._timer_at, self._timer_wanted = due, wanted
        self._timer = self.loop.call_later(due - time.monotonic(), self._on_timer)

    def _cancel_timer(self) -> None:
        self.loop.cancel(self._timer)
        self._timer = self._timer_at = None

    def _on_timer(self) -> None:
        # A timer that fired up to TIMER_EARLY before the instant it was asked for is on
        # time: the unit's deadlines stay on the grid instead of drifting a step each round.
        now = max(time.monotonic(), self._timer_wanted)
        self._timer = self._timer_at = None
        if self.outcome is not None or not self.serving:
            return
        due = None
        try:
            due = self.tick(now)
        except Stop as stop:
            self.stop(stop.outcome, stop.message)
            return
        except GOING:
            return
        except Exception as exc:
            log.exception("%s %s failed", self.kind, self.name)
            self.stop("failed", repr(exc))
            return
        now = time.monotonic()
        self._schedule(min(due if due is not None else now + LONGEST_SLEEP, now + LONGEST_SLEEP))

    def _still_current(self) -> bool:
        """Whether the lab still wants this unit; when that cannot be told (the database
        is busy), it does: the next attempt asks again."""
        try:
            return self.still_current()
        except Exception:  # noqa: BLE001
            log.warning("%s %s: could not tell whether the lab wants it", self.kind, self.name)
            return True

    # --- for subclasses ----------------------------------------------------------------------
    def connected(self) -> None:
        raise NotImplementedError

    def handle(self, message: Incoming) -> None:
        """A control message other than stop."""

    def tick(self, now: float) -> float | None:
        return None

    def disconnected(self, exc: BaseException) -> None:
        """The connection was lost; the unit will connect again unless the lab is gone."""

    def finish(self) -> None:
        """The run is over (`self.outcome` says why): last words, if any."""
