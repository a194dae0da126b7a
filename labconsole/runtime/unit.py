"""A unit: one long-running part of a lab (a producer, a consumer, the lab's monitor) on a
thread of its own, with one connection to the lab's vhost.

The thread sleeps in `process_data_events` until a message arrives on that connection, a
control message is posted to it (`post`, which wakes it from any thread), or its next
timer is due (`tick` returns when that is). So a unit costs CPU in proportion to the
messages it handles, not to the time it runs.

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

from labconsole.broker import amqp

from .bus import ConsoleBus, Incoming

log = logging.getLogger(__name__)

BACKOFF = (0.25, 0.5, 1.0, 2.0, 3.0)
LONGEST_SLEEP = 5.0  # even with nothing to do, look at the inbox and the clock this often
LOST = (px.AMQPConnectionError, px.StreamLostError, px.ConnectionWrongStateError, OSError)


class Stop(Exception):  # noqa: N818 - a way out of the loop, not an error
    """Raised inside a unit to end its run with `outcome`."""

    def __init__(self, outcome: str, message: str = ""):
        super().__init__(message or outcome)
        self.outcome = outcome
        self.message = message


class Unit:
    """Subclasses implement `connected` (open channels, start consuming), `handle` (a
    control message), `tick` (timed work; returns the monotonic time it wants to run
    again, or None) and may implement `disconnected` and `finish`."""

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
        self.control_key = control_key
        # The lab's pace key: whether anybody watches the lab (ops "pace"), for every unit.
        self.control_keys = [control_key] + ([pace_key] if pace_key else [])
        self.lab_params = lab_params
        self.still_current = still_current
        self.lab: pika.BlockingConnection | None = None
        self.inbox: deque[Incoming] = deque(maxlen=10_000)
        self.outcome: str | None = None
        self.message = ""
        self.reconnects = 0
        self.serving = False  # connected, and `connected()` done, since the last attempt
        self._wake_pending = False
        self._sleeping = threading.Event()
        self.thread: threading.Thread | None = None

    # --- any thread ------------------------------------------------------------------------
    def post(self, message: Incoming, *, wake: bool = True) -> None:
        """Hands a message to the unit. With `wake=False` it waits for the unit's next
        wake-up (a unit that is about to wake anyway need not be woken for it)."""
        self.inbox.append(message)
        if wake:
            self.wake()

    def request_stop(self, outcome: str = "stopped") -> None:
        self.post(Incoming("", b"", correlation_id=f"stop:{outcome}"))

    def wake(self) -> None:
        self._sleeping.set()
        connection = self.lab
        if connection is None or self._wake_pending:
            return
        self._wake_pending = True
        try:
            connection.add_callback_threadsafe(self._woken)
        except Exception:  # noqa: BLE001 - closed meanwhile: the loop will see the inbox
            self._wake_pending = False

    def _woken(self) -> None:
        self._wake_pending = False

    # --- the unit's thread -------------------------------------------------------------------
    def start(self, on_exit: Callable[[Unit], None]) -> None:
        def body():
            try:
                self.run()
            finally:
                on_exit(self)

        self.thread = threading.Thread(target=body, name=f"{self.kind} {self.name}", daemon=True)
        self.thread.start()

    def run(self) -> None:
        for key in self.control_keys:
            self.bus.bind(key, self.post)
        attempt = 0
        try:
            while self.outcome is None:
                self.serving = False
                try:
                    self._connect_and_serve()
                except Stop as stop:
                    self.outcome, self.message = stop.outcome, stop.message
                except LOST as exc:
                    self._close()
                    self.disconnected(exc)
                    # The vhost or user may be gone (the lab ended): the database says.
                    if not self._still_current():
                        self.outcome = "ended"
                        break
                    if self.serving:
                        attempt = 0  # it was connected: a new outage starts from the first step
                    delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
                    attempt += 1
                    self.reconnects += 1
                    log.info("%s %s: %s; again in %.2f s", self.kind, self.name, exc, delay)
                    self._sleep(delay)
                except Exception as exc:
                    # A bug must not leave the unit shown as running: say what broke, and end.
                    log.exception("%s %s failed", self.kind, self.name)
                    self.outcome, self.message = "failed", repr(exc)
        finally:
            for key in self.control_keys:
                self.bus.unbind(key, self.post)
            try:
                self.finish()
            except Exception:  # noqa: BLE001
                log.debug("%s %s: finish failed", self.kind, self.name, exc_info=True)
            self._close()

    def _connect_and_serve(self) -> None:
        self.lab = amqp.connect(self.lab_params)
        self._wake_pending = False
        self.connected()
        self.serving = True
        self._drain_inbox()
        while self.outcome is None:
            due = self.tick(time.monotonic())
            self._drain_inbox()
            if self.outcome is not None:
                break
            wait = LONGEST_SLEEP if due is None else max(0.0, due - time.monotonic())
            self.lab.process_data_events(time_limit=min(wait, LONGEST_SLEEP))
            self._drain_inbox()

    def _drain_inbox(self) -> None:
        while self.inbox and self.outcome is None:
            message = self.inbox.popleft()
            if message.routing_key == "" and (message.correlation_id or "").startswith("stop:"):
                raise Stop(message.correlation_id[5:])
            self.handle(message)

    def _sleep(self, seconds: float) -> None:
        """Backoff that a control message cuts short (a stop must not wait for it)."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0 and self.outcome is None:
            self._sleeping.clear()
            if self.inbox:
                try:
                    self._drain_inbox_offline()
                except Stop as stop:
                    self.outcome, self.message = stop.outcome, stop.message
                    return
            self._sleeping.wait(left)

    def _drain_inbox_offline(self) -> None:
        """Without a connection only a stop matters; the rest waits for the reconnect."""
        kept = deque()
        while self.inbox:
            message = self.inbox.popleft()
            if message.routing_key == "" and (message.correlation_id or "").startswith("stop:"):
                raise Stop(message.correlation_id[5:])
            kept.append(message)
        self.inbox.extendleft(reversed(kept))

    def _still_current(self) -> bool:
        """Whether the lab still wants this unit; when that cannot be told (the database
        is busy), it does: the next attempt asks again."""
        try:
            return self.still_current()
        except Exception:  # noqa: BLE001
            log.warning("%s %s: could not tell whether the lab wants it", self.kind, self.name)
            return True

    def _close(self) -> None:
        connection, self.lab = self.lab, None
        amqp.close_quietly(connection)

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
