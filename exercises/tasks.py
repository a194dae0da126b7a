"""Celery tasks: thin interfaces to the worker's runtime and the services.

`run_workload` and `run_monitor` only ask this worker process to run the unit (see
exercises/runtime.py): they return at once, and the unit runs on a thread of its own
until the lab no longer wants it. Workers use the `solo` pool, so a task never runs on a
thread that shares Celery's broker connection.
"""

from __future__ import annotations

import logging

from celery import shared_task
from celery.signals import worker_ready, worker_shutdown
from django.conf import settings
from django.db import close_old_connections

log = logging.getLogger(__name__)


@shared_task(name="labconsole.workloads.run_workload")
def run_workload(workload_id: int, run: int) -> str:
    from .runtime import Runtime

    close_old_connections()
    return Runtime.get().run_workload(workload_id, run)


@shared_task(name="labconsole.workloads.run_monitor")
def run_monitor(session_id: str, generation: int) -> str:
    from .runtime import Runtime

    close_old_connections()
    return Runtime.get().run_monitor(session_id, generation)


@shared_task(name="exercises.sweep_idle_labs")
def sweep_idle_labs() -> list[str]:
    from .sandboxes import sandbox_viewers_sweep
    from .services import lab_sessions_sweep_idle

    sandbox_viewers_sweep()
    return lab_sessions_sweep_idle(idle_minutes=settings.LAB_IDLE_MINUTES) + (
        lab_sessions_sweep_idle(idle_minutes=settings.SANDBOX_IDLE_MINUTES, sandbox=True)
    )


@shared_task(name="exercises.sweep_trial_labs")
def sweep_trial_labs() -> list[str]:
    """Ends the trial labs of the admin's "Try it" whose pages are closed (exercises/sweep.py)."""
    from .sweep import trials_sweep

    return trials_sweep(
        grace_seconds=settings.LAB_TRIAL_GRACE_SECONDS,
        idle_minutes=settings.LAB_TRIAL_IDLE_MINUTES,
    )


@shared_task(name="exercises.sweep_clusters")
def sweep_clusters() -> list[int]:
    """Keeps the pool of clusters true to its labs and classes (exercises/cluster_pool.py)."""
    from .cluster_pool import pool_sweep

    return pool_sweep(idle_minutes=settings.LAB_CLUSTER_IDLE_MINUTES)


@shared_task(name="exercises.end_due_classes")
def end_due_classes() -> list[int]:
    """A class past its end ends by itself, with its labs (exercises/classes.py)."""
    from .classes import classrooms_end_due

    return classrooms_end_due()


@shared_task(name="exercises.sweep_labs")
def sweep_labs() -> dict[str, list[str]] | None:
    """Reconciles the broker's lab vhosts and users with the database (exercises/sweep.py);
    while the broker is away it does nothing and the next round tries again."""
    from dataclasses import asdict

    from labconsole.broker.management import BrokerError

    from .sweep import labs_sweep

    try:
        return asdict(labs_sweep(grace_seconds=settings.LAB_SWEEP_GRACE_SECONDS))
    except BrokerError as exc:
        log.warning("sweep not done: %s", exc.reason)
        return None


@worker_ready.connect
def _start_runtime(**_) -> None:
    """The keeper starts with the worker, so a worker that has run nothing yet still takes
    over the units of one that died."""
    from .runtime import Runtime

    Runtime.get()


@worker_shutdown.connect
def _stop_runtime(**_) -> None:
    from .runtime import Runtime

    if Runtime._instance is not None:
        Runtime._instance.shutdown()
