"""Runs the monitor of one lab (labconsole/flow/monitor.py) with this app's rows: the
graph and queues from the pinned spec, the checks, and the results saved as they pass."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import close_old_connections

from labconsole.broker import amqp, control
from labconsole.broker.management import BrokerError, ManagementClient
from labconsole.flow.monitor import LabMonitor

from . import checks
from .models import CheckpointResult, LabSession, Workload
from .topology import Router, lab_graph

log = logging.getLogger(__name__)

SLICE_SECONDS = 300.0


def monitor_lab(*, session_id: str, generation: int, state: dict | None = None) -> str:
    from .tasks import claim_control_queue, run_monitor

    session = LabSession.objects.filter(pk=session_id).first()
    if session is None or session.generation != generation or not session.is_active:
        return "not current"
    spec = session.spec
    api = ManagementClient()

    def still_current() -> bool:
        close_old_connections()
        return LabSession.objects.filter(
            pk=session_id, generation=generation, state=LabSession.State.RUNNING
        ).exists()

    passed = set(session.results.values_list("checkpoint", flat=True))

    def evaluate(record, queues) -> dict[str, bool]:
        bindings_cache: list = []

        def bindings() -> list[dict]:
            if not bindings_cache:
                try:
                    bindings_cache.extend(api.bindings(session.vhost))
                except BrokerError:
                    log.debug("bindings of %s not read", session.vhost, exc_info=True)
            return bindings_cache

        workloads = {
            w.name: {"running": w.running, **w.settings}
            for w in Workload.objects.filter(session_id=session_id)
        }
        results = checks.evaluate(
            spec,
            record=record,
            broker={"queues": queues, "bindings": bindings},
            workloads=workloads,
            passed=passed,
        )
        for checkpoint, ok in results.items():
            if ok and checkpoint not in passed:
                CheckpointResult.objects.get_or_create(session_id=session_id, checkpoint=checkpoint)
                passed.add(checkpoint)
                log.info("lab %s: checkpoint %s passed", session_id, checkpoint)
        return results

    console = amqp.connect(amqp.console_parameters(name=f"labconsole monitor {session_id}"))
    try:
        channel = console.channel()
        amqp.declare_console_exchanges(channel)
        queue = f"{settings.LABCONSOLE_PREFIX}.monitor.{session_id}"
        if not claim_control_queue(channel, queue, control.monitor_key(session_id)):
            return "held elsewhere"
        graph = lab_graph(spec)
        monitor = LabMonitor(
            session=session_id,
            lab_params=amqp.parameters(
                vhost=session.vhost,
                user=session.rabbit_user,
                password=session.rabbit_password,
                name="labconsole monitor",
            ),
            console=console,
            flow_exchange=amqp.flow_exchange(),
            control_queue=queue,
            reports_queue=amqp.reports_queue(session_id),
            firehose_queue=amqp.firehose_queue(),
            router=Router(graph),
            queues=[q.name for q in spec.topology.queues],
            consumers={c.name: c.queue for c in spec.workloads.consumers},
            evaluate=evaluate,
            still_current=still_current,
            fps=settings.FLOW_FRAMES_PER_SECOND,
            slice_seconds=SLICE_SECONDS,
            state=state,
            management_queues=lambda: api.queues(session.vhost),
        )
        outcome = monitor.run()
        if outcome == "ended":
            monitor.publish("status", {"state": "ended", "message": "This lab has ended."})
    finally:
        amqp.close_quietly(console)
    close_old_connections()
    if outcome in ("slice", "lost") and still_current():
        run_monitor.apply_async(
            args=[session_id, generation],
            kwargs={"state": monitor.export()},
            countdown=1 if outcome == "lost" else 0,
        )
    return outcome
