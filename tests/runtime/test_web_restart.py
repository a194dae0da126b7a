"""The web side through a broker restart: a real daphne against the tests' own node and a
WebSocket client that behaves as the lab page does (it acknowledges what it receives and,
should the socket close, connects again with the page's backoff). By design
(labconsole/flow/stream.py) the socket stays open while the web process reconnects to the
broker: the page is told the broker is unavailable, then that it is back, with a fresh
snapshot, and frames again."""

from __future__ import annotations

import contextlib
import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.test import Client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.runtime.conftest import start_lab
from tests.runtime.test_broker_restart import load_catalogue, record, wall
from tests.support import Daphne

pytestmark = pytest.mark.django_db(transaction=True)

PAGE_BACKOFF = (0.5, 1.0, 2.0, 4.0, 5.0)  # static/labconsole/lab/main.js


@pytest.fixture(scope="module")
def daphne(node_env, node_worker):
    web = Daphne("daphne-restart", env=node_env)
    web.start()
    yield web.port
    web.stop()


class Page:
    """What lab.js does with its socket, with every message kept and timed."""

    def __init__(self, port: int, lab_id: str, cookie: str):
        self.url = f"ws://127.0.0.1:{port}/ws/labs/{lab_id}/"
        self.headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}
        self.origin = f"http://127.0.0.1:{port}"
        self.ws = None
        self.messages: list[tuple[float, dict]] = []
        self.closes: list[tuple[float, int | None]] = []
        self.attempt = 0

    def open(self) -> bool:
        try:
            self.ws = connect(
                self.url, additional_headers=self.headers, origin=self.origin, legacy=True
            )
        except (OSError, ConnectionClosed, Exception):  # noqa: BLE001 - as a browser: retry
            self.ws = None
            return False
        self.attempt = 0
        return True

    def pump(self, seconds: float) -> None:
        """Reads for `seconds`, acknowledging; on a close, connects again with backoff."""
        deadline = time.monotonic() + seconds
        retry_at = 0.0
        while time.monotonic() < deadline:
            if self.ws is None:
                if time.monotonic() >= retry_at and not self.open():
                    delay = PAGE_BACKOFF[min(self.attempt, len(PAGE_BACKOFF) - 1)]
                    self.attempt += 1
                    retry_at = time.monotonic() + delay
                time.sleep(0.05)
                continue
            try:
                text = self.ws.recv(timeout=0.1)
            except TimeoutError:
                continue
            except ConnectionClosed as closed:
                self.closes.append((time.time(), closed.rcvd.code if closed.rcvd else None))
                self.ws = None
                retry_at = time.monotonic() + PAGE_BACKOFF[0]
                self.attempt = 1
                continue
            message = json.loads(text)
            self.messages.append((time.time(), message))
            if message.get("d") is not None:
                with contextlib.suppress(ConnectionClosed):  # the next recv says so
                    self.ws.send(json.dumps({"type": "ack", "d": message["d"]}))

    def first(self, predicate, *, timeout: float, message: str) -> tuple[float, dict]:
        deadline = time.monotonic() + timeout
        while True:
            for received, m in self.messages:
                if predicate(m):
                    return received, m
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s: {message}")
            self.pump(0.2)

    def close(self) -> None:
        if self.ws is not None:
            self.ws.close()


def test_the_page_gets_frames_again_after_a_soft_restart(node, node_env, daphne, node_labs):
    load_catalogue()
    session = start_lab(node_env, "direct-routing")
    client = Client()
    client.force_login(get_user_model().objects.get(username="admin"))
    page = Page(daphne, session.id, client.cookies[settings.SESSION_COOKIE_NAME].value)
    try:
        page.first(
            lambda m: m.get("type") == "snapshot", timeout=20, message="a snapshot on connect"
        )
        page.first(
            lambda m: (
                m.get("type") == "frame"
                and (m.get("counters", {}).get("temperature-sensor") or {}).get("published", 0) > 0
            ),
            timeout=20,
            message="frames counting published messages",
        )
        restarted = time.time()
        # The page keeps reading while the node restarts, as a browser does.
        with ThreadPoolExecutor(1) as pool:
            restart = pool.submit(node.soft_restart)
            while not restart.done():
                page.pump(0.2)
            back = restart.result()
        back_wall = wall(back)

        def published(m: dict) -> int:
            return (m.get("counters", {}).get("temperature-sensor") or {}).get("published", 0)

        frames_before = [m for _, m in page.messages if m.get("type") == "frame"]
        published_before = max(published(m) for m in frames_before if m["t"] <= back_wall)
        received, frame = page.first(
            lambda m: m.get("type") == "frame" and m.get("t", 0) > back_wall,
            timeout=20,
            message="a frame on the page after the restart",
        )
        page.first(
            lambda m: m.get("type") == "status" and m.get("state") == "broker-unavailable",
            timeout=5,
            message="the page told the broker is unavailable",
        )
        page.first(
            lambda m: m.get("type") == "status" and m.get("state") == "broker-back",
            timeout=5,
            message="the page told the broker is back",
        )
        _, snapshot = page.first(
            lambda m: m.get("type") == "snapshot" and m is not page.messages[0][1],
            timeout=5,
            message="a fresh snapshot on the same socket",
        )
        moving_at, _ = page.first(
            lambda m: (
                m.get("type") == "frame"
                and m.get("t", 0) > back_wall
                and published(m) > published_before
            ),
            timeout=20,
            message="the page counting new messages",
        )
        lost = [(round(t - restarted, 2), code) for t, code in page.closes]
        record(
            "soft restart, web page",
            socket_closed=lost,
            page_frame_s=round(received - back_wall, 2),
            page_counting_s=round(moving_at - back_wall, 2),
        )
        # The socket stayed open through the outage.
        assert not page.closes, page.closes
        assert snapshot["lab"]["state"] == "running"
    finally:
        page.close()
