"""Fixtures: the real RabbitMQ, a real Celery worker in its own process, and cleanup that
leaves no lab vhost, user or console queue behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.conf import settings

from labconsole.broker import amqp
from labconsole.broker.management import ManagementClient

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


def wait_for(predicate, *, timeout: float = 20.0, interval: float = 0.2, message: str = ""):
    """Polls until predicate() is truthy and returns its value; fails with `message`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s: {message or predicate}")
        time.sleep(interval)


def subprocess_env() -> dict[str, str]:
    """The environment for processes that must share this test run's database and names."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        LABCONSOLE_PREFIX=settings.LABCONSOLE_PREFIX,
        DATABASE_URL=f"sqlite:///{settings.DATABASES['default']['NAME']}",
        PYTHONUNBUFFERED="1",
    )
    return env


class Worker:
    """A Celery worker process, as `make run` starts it (threads pool)."""

    def __init__(self, name: str):
        self.name = name
        self.proc: subprocess.Popen | None = None
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"{name}.log"

    def start(self) -> None:
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "labconsole",
                "worker",
                "--loglevel",
                "INFO",
                "--without-mingle",
                "--without-gossip",
                "--concurrency",
                "60",
                "-n",
                f"{self.name}@%h",
            ],
            cwd=ROOT,
            env=subprocess_env(),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        start = self.log_path.stat().st_size if self.log_path.exists() else 0

        def ready() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"celery worker exited; see {self.log_path}")
            return b" ready." in self.log_path.read_bytes()[start:]

        wait_for(ready, timeout=60, message="celery worker ready")

    def kill(self) -> None:
        """SIGKILL: the worker dies without acknowledging what it was running."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture(scope="session")
def api() -> ManagementClient:
    client = ManagementClient()
    try:
        client.request("GET", "overview")
    except Exception as exc:  # noqa: BLE001
        pytest.exit(f"RabbitMQ's management API does not answer ({exc}); run `make test`.")
    return client


@pytest.fixture(scope="session")
def worker(django_db_setup, django_db_blocker, api):
    """One real Celery worker for the session; a test that kills it starts it again."""
    w = Worker("worker")
    w.start()
    yield w
    w.stop()
    api.delete_named(amqp.console_vhost(), settings.LABCONSOLE_PREFIX + ".")


@pytest.fixture
def labs(api):
    """Every lab a test starts is stopped afterwards, and its vhost and user must be gone."""
    from exercises.models import LabSession
    from exercises.services import lab_session_stop

    yield
    leftovers = []
    for session in LabSession.objects.all():
        lab_session_stop(session=session)
        leftovers.append(session.vhost)
    names = set(api.vhost_names())
    assert not names & set(leftovers), f"lab vhosts left on the broker: {names & set(leftovers)}"


@pytest.fixture
def catalogue(db):
    from exercises.services import exercise_load_builtin

    return {e.slug: e for e, _ in exercise_load_builtin()}


@pytest.fixture
def learner(django_user_model):
    return django_user_model.objects.create_user("learner", password="learner-pass-1")
