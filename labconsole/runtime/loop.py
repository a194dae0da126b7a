"""The I/O loop of one worker process: a single thread that carries every AMQP connection
the process holds (each unit's connection to its lab's vhost, and the console bus).

Every pika callback, timer and control message of the process's units runs on this
thread, one at a time; nothing else touches their connections. Work that may block (the
database, the management API) goes to a small pool of threads (`run_blocking`) and its
result comes back to the loop. Other threads hand work in with `call_soon`.

One loop instead of a thread per unit: a wake-up costs a timer in a heap and an epoll
call, not a thread switch under the interpreter's lock (docs/architecture.md).
"""

from __future__ import annotations

import functools
import logging
import math
import random
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pika
from django.db import close_old_connections
from pika.adapters.select_connection import IOLoop

log = logging.getLogger(__name__)

BLOCKING_THREADS = 4  # database and management API calls of all the process's units
# Units' timers fall on a grid of this step, so that the many units of a process wake in
# one pass of the loop and what they send leaves in one write per connection.
TIMER_GRID = 0.005
# ... and may fire this much before the instant a unit asked for, rather than a whole step
# after it.
TIMER_EARLY = 0.001
# Where this process's grids start: two processes' frames do not all leave at one instant.
_PHASE = random.random()


def on_grid(t: float, step: float = TIMER_GRID) -> float:
    """The first instant at or after `t` (a time.monotonic() reading) on this process's grid
    of `step` seconds."""
    offset = _PHASE * step
    return math.ceil((t - offset) / step) * step + offset


def guarded(fn: Callable, *args: Any) -> None:
    """A callback's exception must not end the loop (it would end every unit)."""
    try:
        fn(*args)
    except Exception:  # noqa: BLE001
        log.exception("runtime loop: %r failed", fn)


class _IOLoop(IOLoop):
    """pika's loop, with every timer guarded, pika's own ones too. pika takes the timers
    due in a pass off its heap before it runs them: one that raises (the heartbeat timer of
    a connection whose socket is gone, say) would drop the rest of that pass for good, a
    unit's next tick or a consumer's acknowledgement among them."""

    def call_later(self, delay, callback):
        return super().call_later(delay, functools.partial(guarded, callback))


class Loop:
    def __init__(self):
        self.ioloop = _IOLoop()
        self.thread = threading.Thread(target=self._run, name="runtime loop", daemon=True)
        self.blocking = ThreadPoolExecutor(BLOCKING_THREADS, thread_name_prefix="runtime blocking")
        self._stopping = False

    # --- any thread -----------------------------------------------------------------------
    def start(self) -> None:
        if not self.thread.is_alive() and self.thread.ident is None:
            self.thread.start()

    def stop(self) -> None:
        self._stopping = True
        self.ioloop.add_callback_threadsafe(self.ioloop.stop)

    def join(self, timeout: float | None = None) -> None:
        self.thread.join(timeout)

    def in_loop(self) -> bool:
        return threading.current_thread() is self.thread

    def call_soon(self, fn: Callable, *args: Any) -> None:
        """Runs `fn(*args)` on the loop thread, after what it is doing now."""
        self.ioloop.add_callback_threadsafe(functools.partial(guarded, fn, *args))

    def run_blocking(
        self,
        fn: Callable[[], Any],
        then: Callable[[Any, BaseException | None], None] | None = None,
    ) -> None:
        """Runs `fn()` on a thread of the blocking pool; `then(result, error)` runs on the
        loop thread when it is done."""

        def job():
            result, error = None, None
            try:
                result = fn()
            except Exception as exc:  # noqa: BLE001 - handed to `then`
                error = exc
                if then is None:
                    log.exception("runtime: a blocking call failed")
            finally:
                close_old_connections()
            if then is not None:
                self.call_soon(then, result, error)

        self.blocking.submit(job)

    # --- the loop thread --------------------------------------------------------------------
    def call_later(self, delay: float, fn: Callable, *args: Any):
        return self.ioloop.call_later(max(0.0, delay), functools.partial(fn, *args))

    def cancel(self, handle) -> None:
        if handle is not None:
            self.ioloop.remove_timeout(handle)

    def connect(
        self,
        params: list[pika.ConnectionParameters],
        *,
        on_open: Callable[[pika.SelectConnection], None],
        on_failed: Callable[[BaseException], None],
        on_close: Callable[[pika.SelectConnection, BaseException], None],
    ) -> Attempt:
        """Opens a connection on this loop, trying the nodes of `params` in turn; the
        callbacks run on the loop thread."""
        return Attempt(self, params, on_open, on_failed, on_close)

    guarded = staticmethod(guarded)

    def _run(self) -> None:
        while not self._stopping:
            try:
                self.ioloop.start()
            except Exception:  # noqa: BLE001 - the loop carries every unit: it goes on
                log.exception("runtime loop: a callback failed")
        self.blocking.shutdown(wait=False, cancel_futures=True)


class Attempt:
    """A connection being opened: the node tried now is `connection`; `abandon()` gives
    up (the owner is stopping), after which no callback of it runs."""

    def __init__(self, loop: Loop, params, on_open, on_failed, on_close):
        self.loop = loop
        self.left = list(params)
        self.on_open, self.on_failed, self.on_close = on_open, on_failed, on_close
        self.abandoned = False
        self.connection: pika.SelectConnection | None = None
        self._next()

    def _next(self) -> None:
        self.connection = pika.SelectConnection(
            self.left.pop(0),
            on_open_callback=self._opened,
            on_open_error_callback=self._failed,
            on_close_callback=self._closed,
            custom_ioloop=self.loop.ioloop,
        )

    def _opened(self, connection) -> None:
        if self.abandoned:
            close_quietly(connection)
        else:
            self.loop.guarded(self.on_open, connection)

    def _failed(self, connection, exc) -> None:
        if self.abandoned:
            return
        if self.left:
            self._next()
        else:
            self.loop.guarded(self.on_failed, exc)

    def _closed(self, connection, exc) -> None:
        if not self.abandoned:
            self.loop.guarded(self.on_close, connection, exc)

    def abandon(self) -> None:
        self.abandoned = True
        close_quietly(self.connection)


def close_quietly(connection) -> None:
    """Closes a connection of the loop whatever its state (opening, open, closing)."""
    if connection is None or connection.is_closing or connection.is_closed:
        return
    try:
        connection.close()
    except Exception:  # noqa: BLE001 - already going: nothing to say
        log.debug("close of %r failed", connection, exc_info=True)
