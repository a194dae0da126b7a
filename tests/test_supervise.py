"""The console's supervisor (python -m labconsole.supervise), with real processes: daphne
children sharing one listening socket, restarts with backoff, the one beat, and no child
outliving the supervisor."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from django.conf import settings

from labconsole.broker import amqp
from tests.conftest import subprocess_env
from tests.support import ROOT, free_port, wait_for


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a process, None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    return state, int(ppid)


def alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def children_of(pid: int) -> dict[int, str]:
    """The live children of `pid`, with their command lines."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(int(entry.name))
        if stat is None or stat[1] != pid or stat[0] == "Z":
            continue
        try:
            found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
    return found


class Proc:
    """A supervisor process whose output lines are collected with their arrival times."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.pid = self.proc.pid
        self.lines: list[tuple[float, str]] = []
        self.seen_children: set[int] = set()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            self.lines.append((time.monotonic(), raw.decode(errors="replace").rstrip("\n")))

    @property
    def output(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def wait_line(self, pattern: str, *, start: int = 0, timeout: float = 60) -> tuple[int, float]:
        """Index and arrival time of the first line from `start` on matching `pattern`."""
        regex = re.compile(pattern)

        def find():
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"supervisor exited:\n{self.output}")
            for i in range(start, len(self.lines)):
                if regex.search(self.lines[i][1]):
                    return (i, self.lines[i][0])
            return None

        try:
            return wait_for(find, timeout=timeout, interval=0.05, message=pattern)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- output ---\n{self.output}") from None

    def children(self) -> dict[int, str]:
        found = children_of(self.pid)
        self.seen_children |= set(found)
        return found

    def terminate(self, timeout: float = 30) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def cleanup(self) -> None:
        """After a failed test: nothing of it stays behind."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for pid in self.seen_children:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def start(django_db_setup):
    started: list[Proc] = []

    def start(argv: list[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(argv, env or subprocess_env())
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.cleanup()


def serve(*args: str) -> list[str]:
    return [sys.executable, "-m", "labconsole.supervise", *args]


def test_web_processes_share_the_socket_and_one_killed_is_replaced(start):
    port = free_port()
    url = f"http://127.0.0.1:{port}/accounts/login/"
    sup = start(serve("--port", str(port), "--web-processes", "2", "--workers", "0", "--no-beat"))
    assert sup.wait_line(r"^web1 +\| .*Listening on TCP address")
    assert sup.wait_line(r"^web2 +\| .*Listening on TCP address")
    webs = wait_for(
        lambda: len(w := [p for p, c in sup.children().items() if "daphne --fd" in c]) == 2 and w,
        message="two daphne children",
    )

    # Poll the page all along, one new connection per request. The lock keeps a request
    # from being in flight in the process at the moment it is killed: what is measured is
    # whether the console answers while that process is gone and being restarted.
    answers: list[tuple[float, int | str]] = []
    lock = threading.Lock()
    done = threading.Event()

    def poll():
        while not done.is_set():
            with lock:
                try:
                    status = requests.get(url, timeout=5, headers={"Connection": "close"})
                    answers.append((time.monotonic(), status.status_code))
                except requests.RequestException as exc:
                    answers.append((time.monotonic(), repr(exc)))
            time.sleep(0.01)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        wait_for(lambda: len(answers) >= 10, message="first answers")
        victim = webs[0]
        with lock:
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: not alive(victim), message="the killed daphne is gone")
            killed_at = time.monotonic()
        index, _ = sup.wait_line(rf"^supervisor +\| (web\d) \(pid {victim}\) was killed by SIGKILL")
        name = re.search(r"(web\d) \(pid", sup.lines[index][1]).group(1)
        assert re.search(r"restarting in 1 s$", sup.lines[index][1]), sup.lines[index][1]
        _, back_at = sup.wait_line(rf"^{name} +\| .*Listening on TCP address", start=index)
        time.sleep(0.5)
    finally:
        done.set()
        poller.join(10)

    during = [status for at, status in answers if killed_at <= at <= back_at]
    assert len(during) >= 10, f"only {len(during)} requests while {name} was away"
    failed = [status for _, status in answers if status != 200]
    assert not failed, f"{len(failed)} of {len(answers)} requests failed: {failed[:3]}"

    now = [p for p, c in sup.children().items() if "daphne --fd" in c]
    assert len(now) == 2 and victim not in now and webs[1] in now, (webs, now)

    assert sup.terminate() == 0
    assert "all stopped" in sup.lines[-1][1]
    left = [pid for pid in sup.seen_children if alive(pid)]
    assert not left, f"children outlived the supervisor: {left}"
    assert children_of(sup.pid) == {}


FLAKY = """
import sys
from labconsole.supervise import Backoff, Child, Supervisor

life, reset_after = float(sys.argv[1]), float(sys.argv[2])
code = "import sys, time; print('up', flush=True); time.sleep(%s); sys.exit(3)" % life
child = Child("flaky", [sys.executable, "-c", code])
backoff = Backoff(initial=0.1, maximum=0.4, reset_after=reset_after)
sys.exit(Supervisor([child], backoff=backoff).run())
"""


@pytest.mark.parametrize(
    ("life", "reset_after", "expected"),
    [
        # Dies at once: 0.1 s, doubling, up to the maximum.
        ("0", "60", [0.1, 0.2, 0.4, 0.4, 0.4]),
        # Runs longer than reset_after each time: always the initial delay.
        ("0.3", "0.2", [0.1, 0.1, 0.1, 0.1, 0.1]),
    ],
)
def test_a_child_that_keeps_dying_is_restarted_with_backoff(start, life, reset_after, expected):
    sup = start([sys.executable, "-c", FLAKY, life, reset_after])
    sup.wait_line(r"^flaky +\| up$")
    restarts = []
    for _ in expected:
        i, _at = sup.wait_line(
            r"^supervisor +\| flaky \(pid \d+\) exited with code 3 after [\d.]+ s; "
            r"restarting in ([\d.]+) s$",
            start=restarts[-1] + 1 if restarts else 0,
        )
        restarts.append(i)
    sup.wait_line(r"^flaky +\| up$", start=restarts[-1])
    assert sup.terminate() == 0

    delays = [float(re.search(r"in ([\d.]+) s$", sup.lines[i][1]).group(1)) for i in restarts]
    assert delays == expected, sup.output
    # Each start came at least the announced delay after the exit before it.
    for i, delay in zip(restarts, delays, strict=True):
        exited_at = sup.lines[i][0]
        up_at = next(at for at, line in sup.lines[i:] if re.match(r"^flaky +\| up$", line))
        assert delay <= up_at - exited_at < delay + 5, (delay, up_at - exited_at)


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def test_a_supervisor_whose_output_is_gone_supervises_on_and_stops_cleanly():
    """Its output piped into a pager that quit: it goes on, then stops with status 0."""
    script = (
        "import sys\n"
        "from labconsole.supervise import Child, Supervisor\n"
        "code = 'import time\\nwhile True: print(\"tick\", flush=True); time.sleep(0.05)'\n"
        "sys.exit(Supervisor([Child('ticker', [sys.executable, '-c', code])]).run())\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, env=subprocess_env()
    )
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert b"ticker" in lines[-1], lines
        ticker = wait_for(lambda: list(children_of(proc.pid)), message="the ticker")[0]
        proc.stdout.close()  # the reader goes away; the ticker goes on printing
        time.sleep(0.5)
        assert proc.poll() is None and alive(ticker)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert not alive(ticker)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def console_names_cleanup(api):
    yield
    api.delete_named(amqp.console_vhost(), settings.LABCONSOLE_PREFIX + ".")


def test_a_second_beat_refuses_to_run(start, tmp_path, console_names_cleanup):
    env = {**subprocess_env(), "CELERY_BEAT_SCHEDULE_FILENAME": str(tmp_path / "schedule")}
    pidfile = tmp_path / "schedule.pid"
    first = start(serve("--no-web", "--workers", "0"), env)
    first.wait_line(r"^beat +\| .*beat: Starting")
    beat = wait_for(lambda: _read_pid(pidfile), message="pidfile")
    assert "beat" in first.children()[beat]

    second = start(serve("--no-web", "--workers", "0"), env)
    second.wait_line(r"^beat +\| .*already exists")
    second.wait_line(r"^supervisor +\| beat \(pid \d+\) exited with code 73 .*restarting in 1 s$")
    assert alive(beat) and int(pidfile.read_text()) == beat

    assert second.terminate() == 0
    assert int(pidfile.read_text()) == beat
    assert first.terminate() == 0
    assert not alive(beat)
    assert not pidfile.exists()


def test_no_child_outlives_a_killed_supervisor(start, tmp_path, console_names_cleanup):
    env = {**subprocess_env(), "CELERY_BEAT_SCHEDULE_FILENAME": str(tmp_path / "schedule")}
    port = free_port()
    # A node name of its own: a worker's control queue is exclusive on the shared broker.
    workers = ("--workers", "1", "--worker-name", f"supervise-test-{os.getpid()}-")
    sup = start(serve("--port", str(port), "--web-processes", "1", *workers), env)
    sup.wait_line(r"^web1 +\| .*Listening on TCP address")
    sup.wait_line(r"^worker1 +\| .* ready\.")
    sup.wait_line(r"^beat +\| .*beat: Starting")
    children = sup.children()
    kinds = sorted(
        next(k for k in ("daphne", "worker", "beat") if k in cmd) for cmd in children.values()
    )
    assert kinds == ["beat", "daphne", "worker"], children
    worker = next(cmd for cmd in children.values() if " worker " in cmd)
    assert "-P solo" in worker and "--concurrency 1 " in worker, worker
    assert f"-n supervise-test-{os.getpid()}-1@%h" in worker, worker

    sup.proc.kill()
    sup.proc.wait(10)
    wait_for(
        lambda: not [pid for pid in children if alive(pid)],
        timeout=10,
        message=f"children of the SIGKILLed supervisor gone: {children}",
    )
    # The web port is free again: nothing holds the listening socket.
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
