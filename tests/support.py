"""Helpers shared by the test suite and the benchmarks: polling, and a real Celery worker
in a process of its own."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

from labconsole.supervise import worker_command

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
            raise AssertionError(f"timed out after {timeout} s: {message or predicate}")
        time.sleep(interval)


class Worker:
    """A Celery worker process, logging to `<log_dir>/<name>.log`. Its command line comes
    from the console's supervisor (labconsole.supervise.worker_command): `pool="solo"`
    starts it exactly as the console does; the default, the threads pool with
    `concurrency` threads, is what the current workloads need."""

    def __init__(
        self,
        name: str,
        *,
        env: dict[str, str],
        log_dir: Path = ARTIFACTS,
        concurrency: int = 60,
        pool: str = "threads",
    ):
        self.name = name
        self.env = env
        self.concurrency = concurrency
        self.pool = pool
        self.proc: subprocess.Popen | None = None
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"

    def start(self) -> None:
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        start = self.log.tell()
        self.proc = subprocess.Popen(
            worker_command(
                self.name,
                pool=self.pool,
                concurrency=None if self.pool == "solo" else self.concurrency,
            ),
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
