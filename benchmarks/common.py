"""What the benchmarks share: the bench's own database and names on the broker (set up on
import, before Django), the console under test started as the product runs it, readings
of CPU time and memory from /proc, and small statistics helpers.

Importing this module sets DATABASE_URL to a fresh SQLite file in a temporary directory
and LABCONSOLE_PREFIX to `labconsole-bench-<pid>`; `cleanup()` removes both.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "labconsole.settings")
os.environ.setdefault("LABCONSOLE_PREFIX", f"labconsole-bench-{os.getpid()}")
# A database of its own, shared with the console processes the benchmarks start.
BENCH_DIR = Path(tempfile.mkdtemp(prefix="labconsole-bench-"))
BENCH_DB = BENCH_DIR / "bench.sqlite3"
os.environ["DATABASE_URL"] = f"sqlite:///{BENCH_DB}"

import django  # noqa: E402

django.setup()

import requests  # noqa: E402
from django.conf import settings  # noqa: E402

from labconsole.broker import amqp  # noqa: E402
from labconsole.broker.management import ManagementClient  # noqa: E402
from labconsole.supervise import available_cores, beat_command, beat_pidfile  # noqa: E402
from tests.support import Daphne, Worker, wait_for  # noqa: E402

CATALOGUE = ROOT / "exercises" / "catalogue"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


# --- small statistics ----------------------------------------------------------------------


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f} ms"


def percentile(histogram: Counter, q: float) -> float | None:
    """The q-th percentile (0..100) of a histogram {value: count}; None when it is empty."""
    total = sum(histogram.values())
    if not total:
        return None
    rank = q / 100 * total
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= rank:
            return value
    return max(histogram)


def fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms"


# --- the bench's database and broker objects ----------------------------------------------

_prepared = False


def prepare_db() -> None:
    """Migrates the bench database and loads the built-in exercises (once)."""
    global _prepared
    if not _prepared:
        from django.core.management import call_command

        from exercises.services import exercise_load_builtin

        call_command("migrate", verbosity=0)
        exercise_load_builtin()
        _prepared = True


def exercise(slug: str):
    from exercises.models import Exercise

    prepare_db()
    return Exercise.objects.get(slug=slug)


def user(username: str):
    from django.contrib.auth import get_user_model

    prepare_db()
    return get_user_model().objects.get_or_create(username=username)[0]


def session_cookie(owner) -> str:
    """A new logged-in session of `owner` (the value of the `sessionid` cookie)."""
    from django.test import Client

    client = Client()
    client.force_login(owner)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def lab_vhost(api: ManagementClient, *, tracing: bool = False) -> str:
    """A scratch vhost the console's user may use (deleted by the caller)."""
    name = f"lab-bench{secrets.token_hex(4)}"
    api.put_vhost(name, tracing=tracing)
    if tracing:
        api.confirm_tracing(name)
    api.request(
        "PUT",
        f"permissions/{name}/{amqp.console_credentials()[0]}",
        {"configure": ".*", "write": ".*", "read": ".*"},
    )
    return name


def cleanup(api: ManagementClient) -> None:
    """Deletes the console's exchanges and queues of this run and the bench's files (kept,
    with the console's logs, when BENCH_KEEP_LOGS is set)."""
    api.delete_named(amqp.console_vhost(), os.environ["LABCONSOLE_PREFIX"] + ".")
    if os.environ.get("BENCH_KEEP_LOGS"):
        print(f"logs and database kept in {BENCH_DIR}")
    else:
        shutil.rmtree(BENCH_DIR, ignore_errors=True)


# --- /proc ------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on


def process_tree(root: int) -> list[int]:
    """`root` and every process descended from it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(roots: Iterable[int], *, children: bool = True) -> float:
    """User and system CPU time of the processes and, with `children`, of all their
    descendants, counting descendants that have ended and were waited for."""
    total = 0
    for root in roots:
        for pid in process_tree(root) if children else [root]:
            if fields := _stat(pid):
                total += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return total / CLK_TCK


def rss_bytes(roots: Iterable[int]) -> int:
    """Resident memory of the processes and all their descendants."""
    total = 0
    for root in roots:
        for pid in process_tree(root):
            with contextlib.suppress(OSError):
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_SIZE
    return total


def broker_pids() -> list[int]:
    """RabbitMQ's Erlang VM on this machine (empty if the broker runs elsewhere). Its CPU
    is read for the VM alone (children=False): the short-lived helpers it runs may end
    without being waited for, and their time would be lost from a total mid-interval."""
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if Path(f"/proc/{entry.name}/comm").read_text().strip() == "beam.smp":
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


# --- the console under test -----------------------------------------------------------------


@dataclass
class Console:
    """The console's processes: web servers (each with its own URL), Celery workers, beat."""

    urls: list[str]
    web: list[subprocess.Popen] = field(default_factory=list)
    workers: list[Worker] = field(default_factory=list)
    others: list[subprocess.Popen] = field(default_factory=list)
    logs: list = field(default_factory=list)

    def pids(self) -> dict[str, list[int]]:
        return {
            "web": [p.pid for p in self.web],
            "worker": [w.proc.pid for w in self.workers],
            "other": [p.pid for p in self.others],
        }

    def all_pids(self) -> list[int]:
        return [pid for group in self.pids().values() for pid in group]

    def check(self) -> None:
        for proc in self.web + self.others + [w.proc for w in self.workers]:
            if proc.poll() is not None:
                raise RuntimeError(f"a console process exited ({proc.args}); logs in {BENCH_DIR}")

    def stop(self) -> None:
        for proc in self.web + self.others:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.web + self.others:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for worker in self.workers:
            worker.stop()
        for log in self.logs:
            log.close()


def console_env() -> dict[str, str]:
    """The environment of the console's processes: the bench's database and names."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "labconsole.settings",
        "DATABASE_URL": os.environ["DATABASE_URL"],
        "LABCONSOLE_PREFIX": os.environ["LABCONSOLE_PREFIX"],
        "CELERY_BEAT_SCHEDULE_FILENAME": str(BENCH_DIR / "celerybeat-schedule"),
        # No warm cluster booted by the beat's sweep (a core for 20 s, and nodes that
        # outlive the bench), unless a benchmark of the pool asks for one.
        "LAB_CLUSTER_WARM": os.environ.get("LAB_CLUSTER_WARM", "0"),
        "PYTHONUNBUFFERED": "1",
    }


def start_console(web: int | None = None, workers: int | None = None) -> Console:
    """Starts the console as the product runs it (`make run`, labconsole.supervise): by
    default one daphne and one solo-pool Celery worker per core, and one beat. The
    supervisor's web processes share one listening socket; here each has a port of its
    own, so that the viewers can be spread over them evenly and each process's CPU read.
    This is the one place that knows how the console's processes start."""
    web = available_cores() if web is None else web
    workers = available_cores() if workers is None else workers
    prepare_db()
    env = console_env()
    console = Console(urls=[])
    try:
        for i in range(web):
            daphne = Daphne(f"daphne-{i}", env=env, log_dir=BENCH_DIR)
            daphne.start()
            console.logs.append(daphne.log)
            console.web.append(daphne.proc)
            console.urls.append(daphne.url)
        beat_log = open(BENCH_DIR / "beat.log", "ab")  # noqa: SIM115 - closed in stop()
        console.logs.append(beat_log)
        schedule = BENCH_DIR / "celerybeat-schedule"
        console.others.append(
            subprocess.Popen(
                beat_command(schedule, beat_pidfile(schedule)),
                cwd=ROOT,
                env=env,
                stdout=beat_log,
                stderr=subprocess.STDOUT,
            )
        )
        for i in range(workers):
            worker = Worker(f"bench-{os.getpid()}-{i}", env=env, log_dir=BENCH_DIR)
            console.workers.append(worker)
            worker.start()
        for url in console.urls:

            def up(url=url) -> bool:
                console.check()
                try:
                    return requests.get(f"{url}/accounts/login/", timeout=2).status_code == 200
                except requests.ConnectionError:
                    return False

            wait_for(up, timeout=60, message=f"daphne answering at {url}")
    except BaseException:
        console.stop()
        raise
    return console


def measure_cpu(console: Console, seconds: float) -> dict[str, float | None]:
    """Share of one core (1.0 = one core busy) used over `seconds` by each group of the
    console's processes (web, worker, other: beat; children included), by all of them
    (`console`), and by the broker (None if it runs elsewhere)."""
    groups = {**console.pids(), "broker": broker_pids()}
    t0 = time.monotonic()
    before = {k: cpu_seconds(v, children=k != "broker") for k, v in groups.items()}
    time.sleep(seconds)
    after = {k: cpu_seconds(v, children=k != "broker") for k, v in groups.items()}
    elapsed = time.monotonic() - t0
    shares = {k: (after[k] - before[k]) / elapsed for k in groups}
    shares["console"] = shares["web"] + shares["worker"] + shares["other"]
    if not groups["broker"]:
        shares["broker"] = None
    return shares
