"""Fixtures for faults of the broker itself: a RabbitMQ node of the tests' own (never the
shared one), a Celery worker and labs in processes of their own pointed at it, and the
test's own calls (management API, control messages, publishing) sent to it too."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time

import pika
import pytest
from django.test import override_settings

from labconsole.broker import amqp, control
from labconsole.broker.management import ManagementClient
from tests.brokernode import BrokerNode
from tests.conftest import subprocess_env
from tests.support import ARTIFACTS, ROOT, Worker, wait_for


@pytest.fixture(scope="session")
def node():
    """A RabbitMQ node of the tests' own, on free ports, booted once per test run (and only
    if a test asks for it)."""
    n = BrokerNode()
    try:
        n.start()
        yield n
    finally:
        n.stop()
        left = n.leftovers()
        n.remove(keep_logs_in=ARTIFACTS)
        assert not left, f"processes of {n.node} left running: {left}"


@pytest.fixture(scope="module")
def node_env(node) -> dict[str, str]:
    env = subprocess_env()
    env.update(RABBITMQ_URL=node.amqp_url, RABBITMQ_API_URL=node.api_url)
    for key in ("RABBITMQ_API_USER", "RABBITMQ_API_PASSWORD"):
        env.pop(key, None)
    return env


@contextlib.contextmanager
def on_node(node):
    """The test's own broker calls go to the node: pika parameters and the management
    client read the settings at call time; the control module's cached channel (per
    thread) must not be one to the shared broker."""
    control._local.channel = None
    try:
        with override_settings(
            RABBITMQ_URL=node.amqp_url,
            RABBITMQ_API_URL=node.api_url,
            RABBITMQ_API_USER="guest",
            RABBITMQ_API_PASSWORD="guest",
        ):
            yield
    finally:
        channel = getattr(control._local, "channel", None)
        control._local.channel = None
        if channel is not None:
            amqp.close_quietly(channel.connection)


@pytest.fixture(scope="module")
def node_worker(django_db_setup, node, node_env):
    """One Celery worker of the console against the node (the solo pool and the runtime).
    The workers of the shared broker that other tests started share the database: their
    keepers would take over the node's units whose worker died and run them against the
    wrong broker. They are stopped meanwhile and started again after."""
    others = [w for w in Worker.alive if w.env is not node_env]
    for other in others:
        other.stop()
    w = Worker("restart-worker", env=node_env)
    w.start()
    try:
        yield w
    finally:
        w.stop()
        for other in others:
            other.start()


@pytest.fixture
def node_labs(node):
    """Labs started on the node are stopped afterwards; their vhosts must be gone."""
    from exercises.models import LabSession
    from exercises.services import lab_session_stop

    yield
    with on_node(node):
        vhosts = []
        for session in LabSession.objects.all():
            lab_session_stop(session=session)
            vhosts.append(session.vhost)
        left = set(ManagementClient().vhost_names()) & set(vhosts)
    assert not left, f"lab vhosts left on the node: {left}"


def start_lab(env: dict[str, str], slug: str):
    """`manage.py lab start <slug> --run --json` in a process of its own, so that its
    Celery tasks go to the node (this process's Celery app points at the shared broker)."""
    from exercises.models import LabSession

    result = subprocess.run(
        [sys.executable, "manage.py", "lab", "start", slug, "--run", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(result.stdout.strip().splitlines()[-1])
    return LabSession.objects.get(pk=data["session"])


class FrameWatcher:
    """Reads a lab's frames on the node from a queue of its own bound to the console's
    frames exchange. Each frame is kept with the wall time it was received."""

    def __init__(self, node, session_id: str):
        self.node = node
        self.session_id = session_id
        self.frames: list[tuple[float, dict]] = []
        self.connection = pika.BlockingConnection(
            pika.URLParameters(node.amqp_url + "%2F?connection_attempts=3&retry_delay=0.5")
        )
        self.channel = self.connection.channel()
        self.channel.exchange_declare(amqp.frames_exchange(), "headers", durable=True)
        self.queue = self.channel.queue_declare("", exclusive=True).method.queue
        amqp.bind_frames(self.channel, self.queue, session_id)

    def read(self, seconds: float) -> list[dict]:
        """Frames that arrive within `seconds` (what arrived before included)."""
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            method, props, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                self.connection.process_data_events(time_limit=min(left, 0.05))
                continue
            for text in amqp.lab_frames(self.session_id, props.headers, body):
                frame = json.loads(text)
                self.frames.append((time.time(), frame))
                got.append(frame)
        return got

    def wait(self, predicate, *, timeout: float, message: str) -> tuple[float, dict]:
        """The receive time and the first frame received so far or within `timeout` for
        which predicate(frame) holds."""
        start = 0
        deadline = time.monotonic() + timeout
        while True:
            for received, frame in self.frames[start:]:
                if predicate(frame):
                    return received, frame
            start = len(self.frames)
            if time.monotonic() > deadline:
                last = self.frames[-1][1].get("counters") if self.frames else None
                raise AssertionError(
                    f"timed out after {timeout} s: {message}; last counters {last}"
                )
            self.read(0.1)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()


@pytest.fixture
def frames(node):
    """Opens FrameWatchers on the node (a new one after each restart) and closes them."""
    watchers: list[FrameWatcher] = []

    def open_watcher(session_id: str) -> FrameWatcher:
        w = wait_for(
            lambda: _try(lambda: FrameWatcher(node, session_id)),
            timeout=30,
            message="a frame watcher connected to the node",
        )
        watchers.append(w)
        return w

    yield open_watcher
    for w in watchers:
        w.close()


def _try(make):
    try:
        return make()
    except (pika.exceptions.AMQPError, OSError):
        return None


@pytest.fixture
def second_worker(worker):
    """A second worker process beside the session's one, stopped after the test."""
    w = Worker("worker-b", env=subprocess_env())
    w.start()
    yield w
    w.stop()
