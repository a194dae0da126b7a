"""Runs the console's processes and keeps them running: `python -m labconsole.supervise`
(`make run` and the Docker image start it; `--help` lists its flags).

It builds the list of children from the settings and the environment and hands it to
`Supervisor`:

- `web1` .. `webN`: daphne processes that all accept on one listening socket the supervisor
  binds itself and passes down as an inherited file descriptor (`daphne --fd`). The kernel
  spreads the connections among them; while one restarts, the others (and the socket's
  backlog) keep taking connections, so a client never sees "connection refused".
- `worker1` .. `workerN`: Celery workers, solo pool, one process each.
- `beat`: the one Celery beat, with a pidfile so that a second beat refuses to start.

A child that dies is started again after a backoff (1 s, doubling up to 30 s, back to 1 s
once a child has run for 60 s), with one log line saying which child and why. SIGINT or
SIGTERM stops every child (SIGTERM, then SIGKILL after 10 s) and exits 0. Each child's
output is printed line by line, prefixed with its name.

The loop is single-threaded (selectors, with signals delivered through a wake-up socket):
no thread can hold a lock while `subprocess` forks, so the `preexec_fn` that ties each
child's life to the supervisor's is safe. It reads the settings but does not set Django
up: the supervisor stays small (about 35 MB instead of 100) and imports little that could
fail.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ASGI_APPLICATION = "labconsole.asgi:application"


# --- The command lines: the one place that says how each kind of process is started. ---


def worker_command(name: str, *, pool: str = "solo", concurrency: int | None = None) -> list[str]:
    """A Celery worker named `<name>@<host>`. The console runs the solo pool (one task at a
    time; long-running work lives in threads the workers manage themselves); the test suite
    can still ask for another pool. A solo worker runs with `--concurrency 1`: Celery's
    prefetch is concurrency times CELERY_WORKER_PREFETCH_MULTIPLIER, and with
    CELERY_WORKER_CONCURRENCY it would hold hundreds of tasks it cannot start."""
    if concurrency is None and pool == "solo":
        concurrency = 1
    command = [
        sys.executable, "-m", "celery", "-A", "labconsole", "worker", "-P", pool,
        "--loglevel", "INFO", "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    return [*command, "-n", f"{name}@%h"]


def beat_command(schedule: str | os.PathLike, pidfile: str | os.PathLike) -> list[str]:
    """The Celery beat, keeping its schedule in `schedule`; it refuses to start while the
    beat named in `pidfile` is running."""
    return [
        sys.executable, "-m", "celery", "-A", "labconsole", "beat", "--loglevel", "INFO",
        "--schedule", str(schedule), "--pidfile", str(pidfile),
    ]  # fmt: skip


def web_command(fd: int) -> list[str]:
    """A daphne process accepting connections on the inherited listening socket `fd`."""
    return [sys.executable, "-m", "daphne", "--fd", str(fd), ASGI_APPLICATION]


def beat_pidfile(schedule: str | os.PathLike) -> Path:
    """The beat's pidfile lives beside its schedule file."""
    return Path(f"{schedule}.pid")


def available_cores() -> int:
    """The number of cores this process may run on (os.cpu_count() where affinity is not
    known)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def listen(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """Binds the web socket. IPv4 only: daphne adopts an inherited socket as AF_INET."""
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise OSError(f"{host} is not an IPv4 address or name ({exc.strerror})") from exc
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(infos[0][4])
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


def clear_stale_beat_pidfile(pidfile: Path) -> str | None:
    """Celery removes a pidfile whose process is gone, but not one whose number has been
    reused by another process (common in a restarted container, where pids are small and
    repeat). Removes the pidfile when the process it names is alive but is no beat."""
    try:
        pid = int(pidfile.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if b"beat" in cmdline.split(b"\0"):
        return None
    pidfile.unlink(missing_ok=True)
    return f"removed {pidfile}: pid {pid} is not a beat"


# --- The supervisor. ---


@dataclass
class Backoff:
    initial: float = 1.0
    maximum: float = 30.0
    reset_after: float = 60.0  # a child that ran this long starts again after `initial`


@dataclass
class Child:
    name: str
    command: Sequence[str]
    pass_fds: tuple[int, ...] = ()
    # Called before each start; a string it returns is logged.
    before_start: Callable[[], str | None] | None = None


@dataclass
class _State:
    child: Child
    proc: subprocess.Popen | None = None
    started: float = 0.0
    delay: float = 0.0
    restart_at: float | None = 0.0  # monotonic time of the next start; None: not planned
    partial: bytes = b""
    fd: int | None = None  # the read end of the child's output pipe, while open
    reported: bool = False  # its exit has been logged


def _libc_prctl():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: no prctl
        return None


_prctl = _libc_prctl()  # looked up once here, not in the forked child
_PR_SET_PDEATHSIG = 1


def _die_with(parent_pid: int) -> Callable[[], None]:
    def preexec() -> None:
        # Runs in the child between fork and exec. PR_SET_PDEATHSIG asks the kernel to
        # SIGKILL this process when the thread that forked it (the supervisor's only
        # thread) dies, however it dies: SIGKILL included. It survives the exec. Without
        # prctl (not Linux) children of a SIGKILLed supervisor would live on.
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent_pid:  # the supervisor died before the prctl
                os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name}"
    return f"exited with code {returncode}"


class Supervisor:
    def __init__(
        self,
        children: Sequence[Child],
        *,
        backoff: Backoff | None = None,
        stop_timeout: float = 10.0,
        cwd: str | os.PathLike | None = None,
        env: dict[str, str] | None = None,
        out=None,
    ):
        names = [c.name for c in children]
        if len(set(names)) != len(names):
            raise ValueError(f"child names must differ: {names}")
        self.states = [_State(c) for c in children]
        self.backoff = backoff or Backoff()
        self.stop_timeout = stop_timeout
        self.cwd = cwd
        # Unbuffered, so that each line shows up as it is written.
        self.env = {**(os.environ if env is None else env), "PYTHONUNBUFFERED": "1"}
        self.out = out if out is not None else sys.stdout.buffer
        self.width = max([len("supervisor"), *map(len, names)])
        self._stop_requests = 0

    # Output

    def _write(self, name: str, line: bytes) -> None:
        if self.out is None:
            return
        try:
            self.out.write(f"{name:<{self.width}} | ".encode() + line.rstrip(b"\r") + b"\n")
        except OSError:  # the reader went away (a pipe into a pager that quit): carry on
            self._lose_output()

    def _flush(self) -> None:
        if self.out is not None:
            try:
                self.out.flush()
            except OSError:
                self._lose_output()

    def _lose_output(self) -> None:
        """Supervises on without output; what is still buffered goes to /dev/null, so that
        neither this nor the interpreter's last flush fails again."""
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.out.fileno())
            os.close(devnull)
        self.out = None

    def log(self, message: str) -> None:
        self._write("supervisor", message.encode())
        self._flush()

    def _read(self, state: _State, sel: selectors.BaseSelector) -> None:
        """Reads what the child wrote; prints every complete line."""
        try:
            data = os.read(state.fd, 65536)
        except BlockingIOError:
            return
        if data:
            *lines, state.partial = (state.partial + data).split(b"\n")
            if len(state.partial) > 65536:  # a very long line: print it in pieces
                lines.append(state.partial)
                state.partial = b""
        else:  # EOF: the child (and anything it started) is gone
            lines = [state.partial] if state.partial else []
            state.partial = b""
            sel.unregister(state.fd)
            state.proc.stdout.close()
            state.fd = None
        for line in lines:
            self._write(state.child.name, line)
        self._flush()

    # Children

    def _start(self, state: _State, sel: selectors.BaseSelector) -> None:
        child = state.child
        state.restart_at = None
        state.reported = False
        if child.before_start is not None and (message := child.before_start()):
            self.log(f"{child.name}: {message}")
        state.started = time.monotonic()
        try:
            state.proc = subprocess.Popen(
                child.command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=child.pass_fds,
                cwd=self.cwd,
                env=self.env,
                # Its own process group: Ctrl-C in a terminal reaches the supervisor only,
                # which then stops the children in order.
                process_group=0,
                preexec_fn=_die_with(os.getpid()),
            )
        except OSError as exc:
            state.proc = None
            self._plan_restart(state, f"could not start ({exc})")
            return
        state.fd = state.proc.stdout.fileno()
        os.set_blocking(state.fd, False)
        sel.register(state.fd, selectors.EVENT_READ, state)
        self.log(f"{child.name} started (pid {state.proc.pid})")

    def _plan_restart(self, state: _State, why: str) -> None:
        ran = time.monotonic() - state.started
        if ran >= self.backoff.reset_after or state.delay == 0:
            state.delay = self.backoff.initial
        self.log(f"{state.child.name} {why} after {ran:.1f} s; restarting in {state.delay:g} s")
        state.restart_at = time.monotonic() + state.delay
        state.delay = min(state.delay * 2, self.backoff.maximum)

    def _reap(self, sel: selectors.BaseSelector) -> None:
        for state in self.states:
            proc = state.proc
            if proc is None or state.reported or proc.poll() is None:
                continue
            # Print what it wrote last before saying it is gone.
            while state.fd is not None and select_readable(state.fd):
                self._read(state, sel)
            if state.fd is not None:  # a process it started still holds the pipe: let go
                sel.unregister(state.fd)
                proc.stdout.close()
                state.fd = None
            state.reported = True
            why = f"(pid {proc.pid}) {describe_exit(proc.returncode)}"
            if self._stop_requests:
                self.log(f"{state.child.name} {why}")
            else:
                self._plan_restart(state, why)

    def _running(self) -> list[_State]:
        return [s for s in self.states if s.proc is not None and s.proc.returncode is None]

    def _signal_all(self, sig: int) -> None:
        for state in self._running():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(state.proc.pid, sig)

    def _on_stop_signal(self, signum, frame) -> None:
        self._stop_requests += 1

    # The loop

    def run(self) -> int:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        old_wakeup = signal.set_wakeup_fd(wake_w.fileno())
        old_handlers = {
            sig: signal.signal(sig, handler)
            for sig, handler in (
                (signal.SIGINT, self._on_stop_signal),
                (signal.SIGTERM, self._on_stop_signal),
                (signal.SIGCHLD, lambda *_: None),  # wakes the loop through wake_w
            )
        }
        try:
            with selectors.DefaultSelector() as sel:
                sel.register(wake_r, selectors.EVENT_READ, None)
                return self._loop(sel, wake_r)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            wake_r.close()
            wake_w.close()

    def _loop(self, sel: selectors.BaseSelector, wake_r: socket.socket) -> int:
        deadline = None  # when stopping: SIGKILL what still runs at this time
        handled_stops = 0
        while True:
            self._reap(sel)
            now = time.monotonic()
            if self._stop_requests:
                if handled_stops == 0:
                    self.log(f"stopping: SIGTERM to all, SIGKILL after {self.stop_timeout:g} s")
                    self._signal_all(signal.SIGTERM)
                    deadline = now + self.stop_timeout
                elif self._stop_requests > handled_stops:
                    self.log("asked again: SIGKILL to all")
                    deadline = now
                handled_stops = self._stop_requests
                if deadline is not None and now >= deadline and self._running():
                    names = ", ".join(s.child.name for s in self._running())
                    self.log(f"still running, SIGKILL: {names}")
                    self._signal_all(signal.SIGKILL)
                    deadline = None
                if not self._running():
                    self.log("all stopped")
                    return 0
                timeout = 0.5 if deadline is None else max(0.0, deadline - now)
            else:
                for state in self.states:
                    if state.restart_at is not None and state.restart_at <= now:
                        self._start(state, sel)
                planned = [s.restart_at for s in self.states if s.restart_at is not None]
                timeout = max(0.0, min(planned) - time.monotonic()) if planned else None
            # SIGCHLD and the stop signals wake the select through wake_r; the cap is a
            # safety net only.
            for key, _ in sel.select(min(timeout, 1.0) if timeout is not None else 1.0):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        while wake_r.recv(4096):
                            pass
                else:
                    self._read(key.data, sel)


def select_readable(fd: int) -> bool:
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        return bool(sel.select(0))


# --- The command line. ---


def _count(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        count = int(value)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, not {value!r}") from None
    if count < 0:
        raise SystemExit(f"{name} must be 0 or more, not {count}")
    return count


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labconsole.settings")
    from django.conf import settings

    # Loading the settings also reads .env into the environment, read below.
    base_dir = Path(settings.BASE_DIR)
    schedule = base_dir / settings.CELERY_BEAT_SCHEDULE_FILENAME

    parser = argparse.ArgumentParser(
        prog="python -m labconsole.supervise",
        description=(
            "Runs the console in the foreground: daphne web processes on one listening "
            "socket, Celery workers and the one Celery beat; starts again any that dies. "
            "Ctrl-C (SIGINT) or SIGTERM stops them all."
        ),
    )
    parser.add_argument("--host", help="address to listen on (default: HOST, or 127.0.0.1)")
    parser.add_argument("--port", help="port to listen on (default: PORT, or 8000)")
    parser.add_argument(
        "--web",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the web processes (default: yes)",
    )
    parser.add_argument(
        "--web-processes",
        help="how many daphne processes (default: WEB_PROCESSES, or one per core)",
    )
    parser.add_argument(
        "--workers",
        help="how many Celery workers (default: WORKER_PROCESSES, or one per core)",
    )
    parser.add_argument(
        "--worker-name",
        default="worker",
        help="the workers' Celery node names are NAME1@host, NAME2@host, ...: two "
        "supervisors on one machine need different ones (default: worker)",
    )
    parser.add_argument(
        "--beat",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the Celery beat that ends idle labs (default: yes; one per deployment)",
    )
    args = parser.parse_args(argv)

    env = os.environ
    cores = available_cores()
    host = args.host or env.get("HOST") or "127.0.0.1"
    port = _count(args.port or env.get("PORT"), "PORT", 8000)
    web = _count(args.web_processes or env.get("WEB_PROCESSES"), "WEB_PROCESSES", cores)
    web = web if args.web else 0
    workers = _count(args.workers or env.get("WORKER_PROCESSES"), "WORKER_PROCESSES", cores)
    if not (web or workers or args.beat):
        parser.error("nothing to run: no web process, no worker and no beat")

    children: list[Child] = []
    sock = None
    if web:
        try:
            sock = listen(host, port)
        except OSError as exc:
            raise SystemExit(f"cannot listen on {host}:{port}: {exc}") from None
        fd = sock.fileno()
        children += [Child(f"web{i}", web_command(fd), pass_fds=(fd,)) for i in range(1, web + 1)]
    children += [
        Child(f"worker{i}", worker_command(f"{args.worker_name}{i}")) for i in range(1, workers + 1)
    ]
    if args.beat:
        pidfile = beat_pidfile(schedule)
        children.append(
            Child(
                "beat",
                beat_command(schedule, pidfile),
                before_start=lambda: clear_stale_beat_pidfile(pidfile),
            )
        )

    supervisor = Supervisor(children, cwd=base_dir)
    web_part = f"{web} web process(es) on {host}:{port}" if web else "no web process"
    beat_part = "the beat" if args.beat else "no beat"
    supervisor.log(f"running {web_part}, {workers} worker(s), {beat_part}")
    if web:
        supervisor.log(f"open http://{host}:{port}/ and log in")
    try:
        return supervisor.run()
    finally:
        if sock is not None:
            sock.close()


if __name__ == "__main__":
    sys.exit(main())
