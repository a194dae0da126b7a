"""Celery tasks: thin interfaces that load a lab's rows and run its workloads and monitor.

Workloads and monitors are long-running. They are acknowledged late (settings), so a
worker that dies hands them to another; and each run ends after a slice of time and
sends itself again, so that no delivery stays unacknowledged long enough to meet the
broker's consumer timeout (30 minutes by default).
"""

from __future__ import annotations

import logging
import time

import pika.exceptions as px
from celery import shared_task
from django.conf import settings
from django.db import close_old_connections

from labconsole.broker import amqp, control
from labconsole.flow.reporter import FlowReporter
from labconsole.workloads.runner import RUNS

from .models import LabSession, Workload
from .services import workload_ended

log = logging.getLogger(__name__)

SLICE_SECONDS = 300.0
LOCK_WAIT_SECONDS = 15.0


def _current_workload(workload_id: int, run: int) -> Workload | None:
    workload = Workload.objects.select_related("session").filter(pk=workload_id).first()
    if (
        workload is None
        or workload.run != run
        or not workload.running
        or workload.session.state != LabSession.State.RUNNING
    ):
        return None
    return workload


def claim_control_queue(channel, name: str, routing_key: str) -> bool:
    """Declares the task's exclusive control queue. The broker lets one connection hold it,
    so two copies of one task (a redelivery while the first still runs) cannot both run.
    Waits for a dying holder to let go; False if the queue stays held."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            channel.queue_declare(name, exclusive=True, auto_delete=True)
            channel.queue_bind(name, amqp.control_exchange(), routing_key)
            return True
        except px.ChannelClosedByBroker as exc:
            if exc.reply_code != 405 or time.monotonic() > deadline:  # 405 RESOURCE_LOCKED
                raise
            time.sleep(0.5)
            channel = channel.connection.channel()


@shared_task(name="labconsole.workloads.run_workload")
def run_workload(workload_id: int, run: int, progress: dict | None = None) -> str:
    close_old_connections()
    workload = _current_workload(workload_id, run)
    if workload is None:
        return "not current"
    session = workload.session
    console = amqp.connect(
        amqp.console_parameters(name=f"labconsole workload {session.id}/{workload.name}")
    )
    try:
        channel = console.channel()
        amqp.declare_console_exchanges(channel)
        queue = f"{settings.LABCONSOLE_PREFIX}.workload.{workload.id}"
        if not claim_control_queue(channel, queue, control.workload_key(workload.id)):
            return "held elsewhere"
        # Read the settings after the control queue exists, so no change falls between.
        workload = _current_workload(workload_id, run)
        if workload is None:
            return "not current"
        reporter = FlowReporter(
            console.channel(),
            exchange=amqp.flow_exchange(),
            session=session.id,
            workload=workload.name,
            batch_ms=settings.FLOW_BATCH_MS,
        )
        outcome = RUNS[workload.kind](
            name=workload.name,
            settings=workload.settings,
            lab_params=amqp.parameters(
                vhost=session.vhost,
                user=session.rabbit_user,
                password=session.rabbit_password,
                name=f"{workload.kind} {workload.name}",
            ),
            console=console,
            control_queue=queue,
            reporter=reporter,
            progress=progress,
            slice_seconds=SLICE_SECONDS,
        ).run()
    finally:
        amqp.close_quietly(console)
    close_old_connections()
    log.info("workload %s/%s: %s %s", session.id, workload.name, outcome.state, outcome.message)
    if outcome.state in ("slice", "lost") and _current_workload(workload_id, run) is not None:
        # A lost connection with the lab still running is a broker restart or a network
        # blip: come back a second later, as a real client's reconnect would.
        countdown = 1 if outcome.state == "lost" else 0
        run_workload.apply_async(args=[workload_id, run, outcome.progress], countdown=countdown)
        return outcome.state
    if Workload.objects.filter(pk=workload_id, run=run, running=True).update(running=False):
        workload_ended(workload=Workload.objects.select_related("session").get(pk=workload_id))
    return outcome.state


@shared_task(name="labconsole.workloads.run_monitor")
def run_monitor(session_id: str, generation: int, state: dict | None = None) -> str:
    from .monitoring import monitor_lab

    close_old_connections()
    return monitor_lab(session_id=session_id, generation=generation, state=state)


@shared_task(name="exercises.sweep_idle_labs")
def sweep_idle_labs() -> list[str]:
    from .services import lab_sessions_sweep_idle

    return lab_sessions_sweep_idle(idle_minutes=settings.LAB_IDLE_MINUTES)
