"""The console heals after faults of the broker: a soft restart (`stop_app`/`start_app`), a
hard one (the Erlang VM killed with SIGKILL and started again on its data) and a memory
alarm, on a RabbitMQ node the tests start for themselves (tests/brokernode.py). The
console runs against it in processes of its own: a Celery worker, and labs started with
`manage.py lab start`. What each test measured is printed and appended to
test-artifacts/broker-faults.jsonl (docs/reliability.md reports the worst runs)."""

from __future__ import annotations

import json
import time

import pika
import pytest
from django.utils import timezone

from exercises.models import LabSession, Workload
from exercises.services import LabError, exercise_save, lab_publish, workload_stop
from labconsole.broker import amqp
from labconsole.broker.management import ManagementClient
from tests.runtime.conftest import on_node, start_lab
from tests.support import ARTIFACTS, Worker, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

RECOVERY = 10.0  # seconds from the node being back to frames and workloads moving again

DURABLE = """
version: 1
slug: durable-confirms
title: Durable with confirms
summary: Persistent messages with publisher confirms into a durable queue
description: A producer with confirms and persistent messages; nobody consumes.
level: beginner
minutes: 5
topology:
  queues:
    - name: ledger
workloads:
  producers:
    - name: bookkeeper
      routing_key: ledger
      rate: 200
      confirms: true
      properties:
        persistent: true
"""


def record(fault: str, **numbers) -> None:
    line = {"fault": fault, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), **numbers}
    print(json.dumps(line))
    ARTIFACTS.mkdir(exist_ok=True)
    with open(ARTIFACTS / "broker-faults.jsonl", "a") as out:
        out.write(json.dumps(line) + "\n")


def wall(monotonic: float) -> float:
    """A monotonic instant as wall time (frames carry the monitor's wall time)."""
    return time.time() - (time.monotonic() - monotonic)


def moving_counter(workload: Workload) -> str:
    """The counter that grows while the workload moves messages."""
    return "published" if workload.kind == Workload.Kind.PRODUCER else "acked"


def expected(session: LabSession) -> dict[str, str]:
    return {w.name: moving_counter(w) for w in session.workloads.filter(running=True)}


def counters(frame: dict, workload: str) -> dict:
    return (frame.get("counters") or {}).get(workload) or {}


def all_moving(frame: dict, wanted: dict[str, str], above: dict[str, int]) -> bool:
    return all(counters(frame, w).get(k, 0) > above.get(w, 0) for w, k in wanted.items())


def baseline(session: LabSession, watcher, wanted: dict[str, str]) -> dict[str, int]:
    """Each workload's counter before the restart: the highest of what the frames showed
    and what its unit saved after losing the connection (the runtime's checkpoint)."""
    seen = {w: 0 for w in wanted}
    for _, frame in watcher.frames:
        for w, k in wanted.items():
            seen[w] = max(seen[w], counters(frame, w).get(k, 0))
    for w in session.workloads.filter(name__in=wanted):
        seen[w.name] = max(
            seen[w.name], (w.progress or {}).get("counts", {}).get(wanted[w.name], 0)
        )
    return seen


def load_catalogue() -> None:
    from exercises.services import exercise_load_builtin

    exercise_load_builtin()


def play(node, frames, env, slug: str) -> tuple[LabSession, object]:
    """Starts a lab of `slug` and waits until every workload moves messages."""
    session = start_lab(env, slug)
    watcher = frames(session.id)
    wanted = expected(session)
    watcher.wait(
        lambda f: all_moving(f, wanted, {}),
        timeout=30,
        message=f"every workload of {slug} moving: {wanted}",
    )
    return session, watcher


class Baselines(dict):
    """Called while the node is down: each lab's counters at the disconnect, once the
    runtime's keeper has saved them (every RUNTIME_RENEW_SECONDS)."""

    def __init__(self, *labs: tuple[LabSession, object]):
        super().__init__()
        self.labs = labs

    def __call__(self) -> None:
        time.sleep(2.0)
        for session, watcher in self.labs:
            self[session.id] = baseline(session, watcher, expected(session))


def heals(session: LabSession, above: dict, watcher, back: float, fault: str) -> dict:
    """After the node is back: new frames within RECOVERY seconds, and every workload's
    counter past `above`, its value at the disconnect. `watcher` reads the frames since
    the node was back. Returns the times measured."""
    wanted = expected(session)
    back_wall = wall(back)
    # Times are the monitor's (the frame's `t`); a viewer gets a frame milliseconds later.
    _, first = watcher.wait(
        lambda f: f.get("t", 0) > back_wall,
        timeout=RECOVERY,
        message=f"a new frame after the {fault}",
    )
    _, frame = watcher.wait(
        lambda f: f.get("t", 0) > back_wall and all_moving(f, wanted, above),
        timeout=RECOVERY,
        message=f"every workload moving again after the {fault}, past {above}",
    )
    # The firehose flows again (its queue and the vhost's tracing are back): a routed
    # publish is drawn only from what the firehose saw.
    _, traced = watcher.wait(
        lambda f: (
            f.get("t", 0) > back_wall
            and any(s.get("kind") == "routed" for s in f.get("samples", []))
        ),
        timeout=RECOVERY,
        message=f"a routed publish seen by the firehose after the {fault}",
    )
    return {
        "first_frame_s": round(first["t"] - back_wall, 2),
        "firehose_s": round(traced["t"] - back_wall, 2),
        "all_moving_s": round(frame["t"] - back_wall, 2),
        "before": above,
        "after": {w: counters(frame, w).get(k) for w, k in wanted.items()},
    }


def new_lab_plays(node, frames, env) -> float:
    started = time.monotonic()
    play(node, frames, env, "direct-routing")
    return round(time.monotonic() - started, 2)


def test_soft_restart_during_a_running_lab(node, node_env, node_worker, frames, node_labs):
    load_catalogue()
    session, before = play(node, frames, node_env, "direct-routing")
    before.read(2.0)
    down = Baselines((session, before))

    back = node.soft_restart(while_down=down)
    after = frames(session.id)

    times = heals(session, down[session.id], after, back, "soft restart")
    new_lab = new_lab_plays(node, frames, node_env)
    record("soft restart", outage_s=node.last_outage(), **times, new_lab_playing_s=new_lab)


def queue_state(node, vhost: str, queue: str) -> dict | None:
    with on_node(node):
        return ManagementClient().request(
            "GET", f"queues/{_q(vhost)}/{_q(queue)}?columns=name,durable,arguments",
            ok_missing=True,
        )  # fmt: skip


def _q(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def message_count(node, session: LabSession, queue: str) -> int:
    """Exact: a passive declare on the node as the lab's user."""
    params = pika.URLParameters(
        f"amqp://{session.rabbit_user}:{session.rabbit_password}@127.0.0.1:{node.port}/"
        f"{_q(session.vhost)}"
    )
    connection = pika.BlockingConnection(params)
    try:
        return connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()


def stop_and_settle(node, session: LabSession, name: str) -> Workload:
    """Stops a workload and waits for its unit's last saved progress."""
    workload = session.workloads.get(name=name)
    with on_node(node):
        workload_stop(workload=workload)
    return wait_for(
        lambda: Workload.objects.filter(pk=workload.pk, running=False, owner="").first(),
        timeout=20,
        message=f"{name} stopped, its final progress saved",
    )


def test_hard_restart_loses_no_confirmed_message(node, node_env, node_worker, frames, node_labs):
    load_catalogue()
    exercise_save(source=DURABLE)
    session, before = play(node, frames, node_env, "durable-confirms")
    dr_session, dr_before = play(node, frames, node_env, "direct-routing")
    wait_for(
        lambda: (
            (Workload.objects.get(session=session).progress or {})
            .get("counts", {})
            .get("confirmed", 0)
            >= 400
        ),
        timeout=20,
        message="a few seconds of confirmed messages",
    )
    before.read(0.5)
    dr_before.read(0.5)

    down = Baselines((session, before), (dr_session, dr_before))

    back = node.hard_restart(while_down=down)
    dr_after, after = frames(dr_session.id), frames(session.id)

    times = heals(dr_session, down[dr_session.id], dr_after, back, "hard restart")
    confirms = heals(session, down[session.id], after, back, "hard restart")

    # What a hard restart loses, the monitor puts back: the firehose queue and tracing.
    for lab in (session, dr_session):
        firehose = queue_state(node, lab.vhost, amqp.firehose_queue())
        assert firehose and firehose["durable"], f"firehose queue of {lab.vhost}: {firehose}"

        def tracing(vhost=lab.vhost) -> bool:
            with on_node(node):
                return ManagementClient().request("GET", f"vhosts/{_q(vhost)}")["tracing"]

        # Within the 10 s of the broker: the monitor turns it on once the node's
        # management API answers, which may be after its frames flow again.
        wait_for(tracing, timeout=10, message=f"tracing of {lab.vhost} on after the restart")

    producer = stop_and_settle(node, session, "bookkeeper")
    counts = producer.progress["counts"]
    in_queue = message_count(node, session, "ledger")
    record(
        "hard restart",
        outage_s=node.last_outage(),
        **times,
        confirms_lab=confirms,
        published=counts.get("published"),
        confirmed=counts.get("confirmed"),
        in_queue=in_queue,
        lost=max(0, counts.get("confirmed", 0) - in_queue),
    )
    assert counts.get("confirmed", 0) > 400
    assert in_queue >= counts["confirmed"], (
        f"{counts['confirmed'] - in_queue} of {counts['confirmed']} confirmed messages lost"
    )


def test_parked_messages_survive_a_hard_restart(node, node_env, node_worker, frames, node_labs):
    load_catalogue()
    session = start_lab(node_env, "dlq-retries")
    watcher = frames(session.id)
    watcher.wait(
        lambda f: counters(f, "processor").get("parked", 0) >= 3,
        timeout=40,
        message="orders parked",
    )

    saved = {}

    def while_down():
        time.sleep(2.0)  # the runtime's keeper saves the counters at the disconnect
        saved.update(baseline(session, watcher, {"processor": "parked"}))

    back = node.hard_restart(while_down=while_down)

    after = frames(session.id)
    back_wall = wall(back)
    parked_before = saved["processor"]
    moving_at, _ = after.wait(
        lambda f: (
            f.get("t", 0) > back_wall and counters(f, "processor").get("parked", 0) > parked_before
        ),
        timeout=30,
        message=f"orders parked again after the restart (past {parked_before})",
    )
    stop_and_settle(node, session, "shop")
    consumer = stop_and_settle(node, session, "processor")
    parked = consumer.progress["counts"]["parked"]
    in_parking = message_count(node, session, "orders.parking")
    record(
        "hard restart, parking",
        outage_s=node.last_outage(),
        parking_again_s=round(moving_at - back_wall, 2),
        parked=parked,
        in_parking=in_parking,
        lost=max(0, parked - in_parking),
    )
    assert in_parking >= parked, f"{parked - in_parking} of {parked} parked messages lost"


def api_alarms(node) -> list[str]:
    """The alarms as lab_publish sees them (the management API's live health check)."""
    with on_node(node):
        return ManagementClient().alarms()


def test_memory_alarm_refuses_at_once_and_heals(node, node_env, node_worker, frames, node_labs):
    load_catalogue()
    session, watcher = play(node, frames, node_env, "direct-routing")
    wanted = expected(session)
    node.set_memory_alarm()
    try:
        wait_for(node.alarms, timeout=20, message="the memory alarm in force")
        in_force = time.monotonic()
        # The health check answers live: no lag behind the alarm itself (the node
        # statistics, read before, showed it 1 to 6 s late).
        wait_for(lambda: api_alarms(node), timeout=20, message="the alarm seen by the console")
        seen_after = time.monotonic() - in_force
        started = time.monotonic()
        with on_node(node), pytest.raises(LabError, match="refusing messages") as refused:
            lab_publish(session=session, exchange="sensors", routing_key="temperature", body="{}")
        answered = time.monotonic() - started
        assert answered < 3.0, f"the refusal took {answered:.2f} s"
        watcher.read(2.0)
    finally:
        node.clear_memory_alarm()
    wait_for(lambda: not node.alarms(), timeout=20, message="the memory alarm cleared")
    cleared = time.monotonic()
    wait_for(lambda: not api_alarms(node), timeout=20, message="the console sees it cleared")
    cleared_after = time.monotonic() - cleared
    above = baseline(session, watcher, wanted)
    with on_node(node):
        outcome = lab_publish(
            session=session, exchange="sensors", routing_key="temperature", body='{"n": 1}'
        )
    assert outcome.routed, outcome.message
    _, frame = watcher.wait(
        lambda f: all_moving(f, wanted, above),
        timeout=RECOVERY,
        message=f"every workload moving after the alarm, past {above}",
    )
    record(
        "memory alarm",
        refused_in_s=round(answered, 3),
        refusal=str(refused.value),
        api_shows_alarm_after_s=round(seen_after, 2),
        api_shows_clear_after_s=round(cleared_after, 2),
        all_moving_after_clear_s=round(frame["t"] - wall(cleared), 2),
    )


def test_a_killed_worker_and_a_broker_restart(node, node_env, node_worker, frames, node_labs):
    """Two independent faults at once: one of two workers is killed, and the broker is
    restarted while the survivor takes its units over. The lab plays on, on the survivor."""
    load_catalogue()
    second = Worker("restart-worker-b", env=node_env)
    second.start()
    try:
        _killed_worker_and_restart(node, node_env, node_worker, frames, second)
    except Exception as exc:
        # The faults' record keeps the failure with the figures of the other faults.
        record("worker SIGKILL + soft restart: failed", error=f"{type(exc).__name__}: {exc}"[:4000])
        raise
    finally:
        second.stop()


def _killed_worker_and_restart(node, node_env, node_worker, frames, second) -> None:
    """The test above, between starting the second worker and stopping it."""
    sessions = [play(node, frames, node_env, "direct-routing") for _ in range(2)]
    victim = second.proc.pid

    def pids() -> set[int]:
        owners = list(
            Workload.objects.filter(session__in=[s for s, _ in sessions], running=True).values_list(
                "owner", flat=True
            )
        )
        owners += [LabSession.objects.get(pk=s.pk).monitor_owner for s, _ in sessions]
        return {int(o.split(":")[1]) if o else 0 for o in owners}

    wait_for(lambda: victim in pids(), timeout=20, message="the second worker runs units")
    second.kill()
    down = Baselines(*sessions)
    back = node.soft_restart(while_down=down)
    watchers = [frames(s.id) for s, _ in sessions]
    survivor = node_worker.proc.pid
    try:
        wait_for(lambda: pids() == {survivor}, timeout=40, message="the survivor runs all")
    except AssertionError as exc:
        rows = list(
            Workload.objects.filter(session__in=[s for s, _ in sessions]).values_list(
                "id", "running", "owner", "lease_until"
            )
        )
        monitors = [
            LabSession.objects.filter(pk=s.pk).values_list("monitor_owner", "monitor_lease_until")[
                0
            ]
            for s, _ in sessions
        ]
        raise AssertionError(
            f"{exc}; at {timezone.now()}: survivor {survivor}, victim {victim}, workloads {rows}, "
            f"monitors {monitors}"
        ) from exc
    times = [
        heals(s, down[s.id], after, back, "worker kill + restart")
        for (s, w), after in zip(sessions, watchers, strict=True)
    ]
    record(
        "worker SIGKILL + soft restart",
        outage_s=node.last_outage(),
        all_moving_s=max(t["all_moving_s"] for t in times),
        first_frame_s=max(t["first_frame_s"] for t in times),
    )
