"""The class dashboard under a full class: 50 learners with a running lab each, the
instructor's dashboard open in a client process of its own (a real WebSocket, logged in).
Measured: the time from a step's checkpoints written (CheckpointResult, as a lab's monitor
writes them) to the dashboard frame that shows the step passed, over some dozens of passes,
and the web process's CPU meanwhile and while nothing changes. docs/benchmarks.md.

    .venv/bin/python benchmarks/run.py class_dashboard
    .venv/bin/python benchmarks/classes.py client <url> <origin> <cookie>   (the client)
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import timedelta

from labconsole.broker.management import ManagementClient

LEARNERS = 50
PASSES = 60
IDLE_SECONDS = 10.0


def client(url: str, origin: str, cookie: str) -> None:
    """Prints, for each dashboard frame, when it arrived and which learners' steps it shows
    passed ("<learner> <step>")."""
    from websockets.sync.client import connect

    with connect(url, origin=origin, additional_headers={"Cookie": f"sessionid={cookie}"}) as ws:
        for text in ws:
            frame = json.loads(text)
            if frame.get("type") != "dashboard":
                continue
            passed = [
                f"{row['name']} {step}"
                for row in frame["learners"]
                for lab in row["labs"].values()
                for step, cell in lab["cells"].items()
                if cell == "passed"
            ]
            print(json.dumps({"t": time.time(), "passed": passed}), flush=True)


class DashboardClient:
    """The client process, and the frames it reported so far."""

    def __init__(self, url: str, origin: str, cookie: str):
        from common import BENCH_DIR

        log = open(BENCH_DIR / "dashboard-client.log", "ab")  # noqa: SIM115 - the child's
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "client", url, origin, cookie],
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()
        self.frames: list[dict] = []
        self.arrived = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self.arrived:
                self.frames.append(json.loads(line))
                self.arrived.notify_all()

    def first_showing(self, passed: str | None, after: float = 0, timeout: float = 10.0) -> dict:
        """The first frame since `after` (a time.time()) that shows `passed` (any frame, for
        None)."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                for frame in self.frames:
                    if frame["t"] >= after and (passed is None or passed in frame["passed"]):
                        return frame
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"no dashboard frame showed {passed!r} in {timeout} s")
                self.arrived.wait(left)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def bench_class_dashboard(api: ManagementClient) -> None:
    """One class of LEARNERS learners, each with a running lab (their producers off), and
    the instructor's dashboard: pass-to-dashboard latency and the web process's CPU."""
    from common import (
        cpu_seconds,
        exercise,
        fmt_ms,
        percentile,
        session_cookie,
        start_console,
        user,
    )
    from django.contrib.auth.models import Group
    from django.db import transaction
    from django.utils import timezone
    from live import EXERCISE, start_labs, stop_labs

    from exercises import classes
    from exercises.models import CheckpointResult, ClassMember
    from exercises.selectors import INSTRUCTORS_GROUP

    console = start_console(web=1)
    teacher = user("bench-teacher")
    teacher.is_staff = True
    teacher.save()
    teacher.groups.add(Group.objects.get_or_create(name=INSTRUCTORS_GROUP)[0])
    spec_exercise = exercise(EXERCISE)
    now = timezone.now()
    classroom = classes.classroom_create(
        instructor=teacher,
        name="bench class",
        exercises=[spec_exercise],
        starts_at=now - timedelta(minutes=1),
        ends_at=now + timedelta(hours=1),
    )
    sessions = []
    dashboard = None
    try:
        for i in range(LEARNERS):
            learner = user(f"bench-learner-{i}")
            ClassMember.objects.create(classroom=classroom, user=learner, display_name=f"L{i}")
            (session,) = start_labs(1, learner, producers=False)
            session.classroom = classroom
            session.save(update_fields=["classroom"])
            sessions.append(session)
        base = console.urls[0]
        dashboard = DashboardClient(
            f"{base.replace('http', 'ws', 1)}/ws/classes/{classroom.pk}/",
            base,
            session_cookie(teacher),
        )
        dashboard.first_showing(None, timeout=30)
        web = console.pids()["web"]
        cpu = cpu_seconds(web)
        time.sleep(IDLE_SECONDS)
        idle_cpu = (cpu_seconds(web) - cpu) / IDLE_SECONDS

        # Each pass completes one step of one lab: its checkpoints written at once.
        names = {s.pk: f"L{i}" for i, s in enumerate(sessions)}
        plan = [(s, step) for step in spec_exercise.spec.steps for s in sessions][:PASSES]
        random.shuffle(plan)
        latencies: Counter = Counter()
        cpu, t0 = cpu_seconds(web), time.monotonic()
        for session, step in plan:
            written = time.time()
            with transaction.atomic():
                for cp in step.checkpoints:
                    CheckpointResult.objects.get_or_create(session=session, checkpoint=cp.id)
            shown = dashboard.first_showing(f"{names[session.pk]} {step.id}", after=written)
            latencies[int((shown["t"] - written) * 1000)] += 1
            time.sleep(random.uniform(0.2, 0.6))  # passes fall anywhere in the read cycle
        busy_cpu = (cpu_seconds(web) - cpu) / (time.monotonic() - t0)
        print(
            f"class dashboard ({LEARNERS} learners, {LEARNERS} running labs, 1 dashboard): "
            f"checkpoint written to dashboard frame p50 {fmt_ms(percentile(latencies, 50))}, "
            f"p99 {fmt_ms(percentile(latencies, 99))} over {len(plan)} passes "
            f"(target: within 1 s); web process CPU {busy_cpu:.1%} of a core while passing, "
            f"{idle_cpu:.1%} with nothing changing"
        )
    finally:
        if dashboard is not None:
            dashboard.close()
        stop_labs(sessions)
        classes.classroom_end(classroom=classroom)
        console.stop()


BENCHMARKS = {"class_dashboard": bench_class_dashboard}

if __name__ == "__main__" and sys.argv[1:2] == ["client"]:
    client(*sys.argv[2:5])
