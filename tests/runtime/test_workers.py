"""The worker runtime: the units of several labs spread over two worker processes, and a
killed worker's labs continuing on the other with their counters and sequence numbers."""

import asyncio

import pytest

from exercises.models import LabSession, Workload
from exercises.services import exercise_save, lab_session_start
from tests.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SEQUENCED = """
version: 1
slug: sequenced
title: Sequenced
summary: A producer numbering its messages
description: One queue, a producer whose message ids are its sequence numbers.
level: beginner
minutes: 5
topology:
  queues:
    - name: work
workloads:
  producers:
    - name: maker
      routing_key: work
      rate: 20
      properties:
        message_id: sequence
  consumers:
    - name: taker
      queue: work
      autostart: false
"""


def pid_of(owner: str) -> int | None:
    return int(owner.split(":")[1]) if owner else None


def unit_pids(session: LabSession) -> list[int | None]:
    session.refresh_from_db()
    pids = [
        pid_of(o) for o in session.workloads.filter(running=True).values_list("owner", flat=True)
    ]
    return [*pids, pid_of(session.monitor_owner)]


def published(session: LabSession) -> int:
    """What the lab's monitor counted for the producer, as saved for a worker taking over."""
    session.refresh_from_db()
    record = session.monitor_state.get("record", {})
    return record.get("workloads", {}).get("maker", {}).get("published", 0)


def message_ids(api, session) -> list[str]:
    messages = api.request(
        "POST",
        f"queues/{session.vhost}/work/get",
        {"count": 100000, "ackmode": "ack_requeue_true", "encoding": "auto"},
    )
    return [m["properties"]["message_id"] for m in messages]


def test_a_killed_workers_labs_continue_on_the_other(api, worker, second_worker, learner, labs):
    exercise, _ = exercise_save(source=SEQUENCED)
    sessions = [lab_session_start(exercise=exercise, owner=learner) for _ in range(4)]
    pids = {worker.proc.pid, second_worker.proc.pid}
    wait_for(
        lambda: all(set(unit_pids(s)) <= pids for s in sessions),
        message="every unit claimed by one of the two workers",
    )
    spread = [pid for s in sessions for pid in unit_pids(s)]
    assert set(spread) == pids, "units run in both worker processes"
    victim = second_worker.proc.pid
    wait_for(lambda: all(published(s) >= 20 for s in sessions), message="producing")
    before = {s.id: published(s) for s in sessions}

    second_worker.kill()

    survivor = worker.proc.pid
    wait_for(
        lambda: all(unit_pids(s) == [survivor] * len(unit_pids(s)) for s in sessions),
        timeout=30,
        message="the survivor took over every unit of the killed worker",
    )
    wait_for(
        lambda: all(published(s) >= before[s.id] + 40 for s in sessions),
        timeout=20,
        message="every lab producing again, its counter going on from where it was",
    )
    assert victim not in {pid for s in sessions for pid in unit_pids(s)}
    for session in sessions:
        ids = message_ids(api, session)
        numbers = sorted(int(i.rsplit("-", 1)[1]) for i in ids)
        # The sequence goes on: it never starts again at 1. A takeover repeats at most the
        # numbers sent after the last saved checkpoint (about a second and a half at 20/s).
        assert numbers.count(1) == 1
        repeated = len(numbers) - len(set(numbers))
        assert repeated <= 60, f"{repeated} sequence numbers sent twice"
        assert max(numbers) >= before[session.id] + 40
    assert Workload.objects.filter(session__in=sessions, running=True).count() == len(sessions)


def test_a_new_labs_workloads_run_beside_its_monitor(
    worker, second_worker, catalogue, learner, labs
):
    """The worker that takes a new lab's monitor runs its workloads too, so their reports
    stay in that process; labs still spread over both workers."""
    sessions = [
        lab_session_start(exercise=catalogue["direct-routing"], owner=learner) for _ in range(4)
    ]
    pids = {worker.proc.pid, second_worker.proc.pid}
    wait_for(
        lambda: all(None not in unit_pids(s) and len(unit_pids(s)) > 2 for s in sessions),
        message="every unit of every lab claimed",
    )
    for session in sessions:
        assert len(set(unit_pids(session))) == 1, (session.id, unit_pids(session))
    assert {unit_pids(s)[-1] for s in sessions} <= pids


def test_the_page_is_told_while_a_dead_workers_monitor_is_taken_over(
    catalogue, learner, labs, worker
):
    """The worker running the lab's monitor is killed: the socket is told the monitor is
    silent, and once a worker has taken it over, that it is back, with frames again."""
    from tests.exercises.test_stream import connect, headers_for, receive, run

    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner)
    wait_for(lambda: unit_pids(session)[-1] == worker.proc.pid, message="monitor claimed")
    headers = headers_for(learner)

    async def scenario():
        ws, connected, _ = await connect(f"/ws/labs/{session.id}/", headers)
        assert connected
        await receive(ws, "snapshot")
        before = 0
        while before < 3:
            first = await receive(ws, "frame")
            before = first["counters"].get("temperature-sensor", {}).get("published", 0)
        # A checkpoint saved with the count: the monitor takes one every second, the keeper
        # saves it every 1.5 s.
        await asyncio.sleep(3)
        worker.kill()
        try:
            silent = await receive(ws, "status", timeout=20)
            assert silent["state"] == "monitor-silent"
        finally:
            worker.start()
        back = await receive(ws, "status", timeout=30)
        assert back["state"] == "monitor-back"
        frame = await receive(ws, "frame", timeout=5)
        # The counters go on from where they were, not from zero.
        assert frame["counters"]["temperature-sensor"]["published"] >= before
        await ws.disconnect()

    run(scenario)
