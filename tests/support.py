"""Helpers shared by the test suite and the benchmarks: polling, and a real Celery worker
in a process of its own."""

from __future__ import annotations

import html
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from labconsole.supervise import worker_command

ROOT = Path(__file__).resolve().parent.parent
# Logs of the processes the tests start, and what tests keep: a folder of each run's own when
# runs go side by side (scripts/test).
ARTIFACTS = ROOT / os.environ.get("TEST_ARTIFACTS", "test-artifacts")


def wait_for(predicate, *, timeout: float = 20.0, interval: float = 0.2, message: str = ""):
    """Polls until predicate() is truthy and returns its value; fails with `message`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s: {message or predicate}")
        time.sleep(interval)


class Worker:
    """A Celery worker process as the console runs it (labconsole.supervise.worker_command:
    the solo pool, the runtime's threads), logging to `<log_dir>/<name>.log`. Its node name
    carries this process's id, so that two test runs on one broker do not collide."""

    alive: set[Worker] = set()  # started and not yet stopped or killed, in this test run

    def __init__(self, name: str, *, env: dict[str, str], log_dir: Path = ARTIFACTS):
        self.name = name
        self.env = env
        self.proc: subprocess.Popen | None = None
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"

    def start(self) -> None:
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        start = self.log.tell()
        self.proc = subprocess.Popen(
            worker_command(f"{self.name}-{os.getpid()}"),
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"celery worker exited; see {self.log_path}")
            return b" ready." in self.log_path.read_bytes()[start:]

        wait_for(ready, timeout=60, message="celery worker ready")
        Worker.alive.add(self)

    def kill(self) -> None:
        """SIGKILL: the worker dies without acknowledging what it was running."""
        Worker.alive.discard(self)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        Worker.alive.discard(self)
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def lab_vhosts_of_this_run(api) -> set[str]:
    """The lab vhosts on the broker tagged with this test run's mark: other runs (and
    consoles) share the broker and make and delete vhosts of their own meanwhile."""
    from labconsole.broker import amqp

    return {v["name"] for v in api.vhosts() if amqp.lab_mark() in (v.get("tags") or [])}


def free_port() -> int:
    """A free port of 127.0.0.1 below the kernel's ephemeral range. A port from that range
    can be taken while its server is down (a broker restart, a web process restarted on the
    same port) by a client reconnecting to it: the kernel may give the client that very
    port as its own, and the socket connects to itself."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        port = random.randrange(10_000, max(low, 10_001))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


class Daphne:
    """A daphne process serving the console on a free port of 127.0.0.1."""

    alive: set[Worker] = set()  # started and not yet stopped or killed, in this test run

    def __init__(self, name: str, *, env: dict[str, str], log_dir: Path = ARTIFACTS):
        self.name = name
        self.env = env
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
             "labconsole.asgi:application"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"daphne exited; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False

        wait_for(up, timeout=30, message=f"{self.name} listening")

    def stop(self) -> None:
        Worker.alive.discard(self)
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


def text_of(response) -> str:
    """A Django test response's page as text, entities decoded."""
    return html.unescape(response.content.decode())
