"""The runtime of one worker process, with this app's rows.

A Celery task only asks a worker process to run a workload or a monitor: the process
claims it (a lease in the database), hands it as a unit to the process's I/O loop
(labconsole/runtime) and the task returns at once. So tasks are short, the worker's pool
is `solo` (no pool thread ever touches Celery's connection: threads pools deadlock on a
broker reconnect), and a worker that dies costs no Celery redelivery dance:

- every `RUNTIME_RENEW_SECONDS` the keeper thread renews the leases of the units this
  process runs and saves what each would resume from (progress, counters, the monitor's
  flow record); a unit whose row says it should no longer run here is stopped;
- the same thread looks for units whose lease ran out (their worker died) and sends their
  task again; whichever worker takes it resumes from the saved state.

The database row is the truth about what should run (`Workload.running`, the lab's state),
so a control message lost in a broker outage is made good by the next renewal.
"""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import queue
import secrets
import socket
import threading
import time
from datetime import timedelta

import pika
from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import Q
from django.utils import timezone

from labconsole.broker import amqp, control
from labconsole.broker.brokers import CLUSTER
from labconsole.broker.management import BrokerError, quorum_of
from labconsole.flow.monitor import TRACED_AGAIN, TRACES, UNTRACED, LabMonitor, streams_of
from labconsole.flow.reporter import FlowReporter
from labconsole.runtime.bus import ConsoleBus, Incoming
from labconsole.runtime.unit import Unit
from labconsole.workloads.runner import UNITS, WorkloadUnit

from . import checks, selectors
from .models import CheckpointResult, LabSession, Workload
from .topology import Router, lab_graph, stored_topology_version, topology_version

log = logging.getLogger(__name__)

JSON = pika.BasicProperties(content_type="application/json")
# A unit's task was sent and no worker has claimed it yet: how long before it is sent again.
DISPATCH_GRACE = timedelta(seconds=15)
DISPATCH_STUCK_SECONDS = 20.0
KEEPER_STALLED_SECONDS = 15.0


def lease() -> timedelta:
    return timedelta(seconds=settings.RUNTIME_LEASE_SECONDS)


def _claimable(now, me: str, *, owner: str = "owner", lease: str = "lease_until") -> Q:
    """Nobody holds it (never claimed, sent again, or its holder's lease ran out), or this
    process does already."""
    return (
        Q(**{owner: ""})
        | Q(**{f"{lease}__isnull": True})
        | Q(**{f"{lease}__lt": now})
        | Q(**{owner: me})
    )


class Runtime:
    _instance: Runtime | None = None
    _lock = threading.Lock()

    @classmethod
    def get(cls) -> Runtime:
        with cls._lock:
            if cls._instance is None or cls._instance.pid != os.getpid():
                cls._instance = cls()
                cls._instance.start()
            return cls._instance

    def __init__(self):
        self.pid = os.getpid()
        self.owner = f"{socket.gethostname()}:{self.pid}:{secrets.token_hex(3)}"
        self.bus = ConsoleBus()
        self.units: dict[str, Unit] = {}
        self.monitors: dict[str, LabMonitor] = {}  # lab id -> its monitor, if it runs here
        self.written: dict[str, object] = {}  # unit key -> the checkpoint last saved
        self.units_lock = threading.Lock()
        self.stopping = threading.Event()
        self.keeper = threading.Thread(target=self._keep, name="runtime keeper", daemon=True)
        # Tasks sent again go through a thread of their own: sending may wait on a broker
        # that is coming back, and the keeper must never wait (its leases would lapse).
        self.dispatches: queue.Queue = queue.Queue()
        self.dispatching_since: float | None = None
        self.keeper_beat = time.monotonic()
        self.dispatcher: threading.Thread | None = None

    def start(self) -> None:
        self.bus.start()
        self.keeper.start()
        self._start_dispatcher()
        threading.Thread(target=self._watch_keeper, name="runtime watchdog", daemon=True).start()

    def _watch_keeper(self) -> None:
        """A keeper that stops renewing lets its units be taken over while they still run
        here. Should it ever stall, say so and write every thread's stack to the log, so
        that the cause can be found."""
        told = False
        while not self.stopping.wait(5.0):
            stalled = time.monotonic() - self.keeper_beat
            if stalled > KEEPER_STALLED_SECONDS and not told:
                log.error("the runtime keeper has not finished a round for %.0f s", stalled)
                faulthandler.dump_traceback(all_threads=True)
                told = True
            elif stalled <= KEEPER_STALLED_SECONDS:
                told = False

    def _start_dispatcher(self) -> None:
        self.dispatcher = threading.Thread(
            target=self._dispatch, name="runtime dispatcher", daemon=True
        )
        self.dispatcher.start()

    def _dispatch(self) -> None:
        me = threading.current_thread()
        while self.dispatcher is me:
            task, args, model, pk = self.dispatches.get()
            self.dispatching_since = time.monotonic()
            try:
                _send(task, args, model.objects.filter(pk=pk))
            except Exception:  # noqa: BLE001 - the database; the lease lapses and is retried
                log.exception("task %s%s not sent", task.name, args)
            finally:
                self.dispatching_since = None
                close_old_connections()

    def _check_dispatcher(self) -> None:
        since = self.dispatching_since
        if since is not None and time.monotonic() - since > DISPATCH_STUCK_SECONDS:
            log.warning(
                "sending tasks has been stuck for %.0f s; a new sender takes over",
                time.monotonic() - since,
            )
            self.dispatching_since = None
            self._start_dispatcher()

    # --- starting units (from a task) --------------------------------------------------------
    def run_workload(self, workload_id: int, run: int) -> str:
        now = timezone.now()
        claimed = (
            Workload.objects.filter(
                pk=workload_id, run=run, running=True, session__state=LabSession.State.RUNNING
            )
            .filter(_claimable(now, self.owner))
            .update(owner=self.owner, lease_until=now + lease())
        )
        if not claimed:
            return "not current or held elsewhere"
        key = f"w:{workload_id}:{run}"
        with self.units_lock:
            if key in self.units:
                return "already running here"
        workload = Workload.objects.select_related("session").get(pk=workload_id)
        session = workload.session
        progress = _resume_from(workload)
        reporter = FlowReporter(
            self._publish_flow,
            session=session.id,
            workload=workload.name,
            batch_ms=settings.FLOW_BATCH_MS,
            totals=progress.get("counts"),
        )
        unit = UNITS[workload.kind](
            name=workload.name,
            bus=self.bus,
            control_key=control.workload_key(workload.id),
            pace_key=control.pace_key(session.id),
            lab_params=session.broker.parameters(
                vhost=session.vhost,
                name=f"{workload.kind} {workload.name}",
                **_credentials(session, workload.settings.get("user")),
            ),
            still_current=lambda: _db(
                Workload.objects.filter(
                    pk=workload_id,
                    run=run,
                    running=True,
                    session__state=LabSession.State.RUNNING,
                ).exists
            ),
            settings=workload.settings,
            reporter=reporter,
            progress=progress,
        )
        unit.row = ("workload", workload_id, run)
        self._start(key, unit)
        return "started"

    def run_monitor(self, session_id: str, generation: int) -> str:
        now = timezone.now()
        claimed = (
            LabSession.objects.filter(
                pk=session_id, generation=generation, state=LabSession.State.RUNNING
            )
            .filter(_claimable(now, self.owner, owner="monitor_owner", lease="monitor_lease_until"))
            .update(monitor_owner=self.owner, monitor_lease_until=now + lease())
        )
        if not claimed:
            return "not current or held elsewhere"
        key = f"m:{session_id}:{generation}"
        with self.units_lock:
            if key in self.units:
                return "already running here"
        session = LabSession.objects.get(pk=session_id)
        unit = _monitor(session, self.bus)
        unit.row = ("monitor", session_id, generation)
        self.monitors[session_id] = unit
        self._start(key, unit)
        self._adopt(session_id)
        return "started"

    def _adopt(self, session_id: str) -> None:
        """Runs here, beside their monitor, the lab's workloads that were sent and not yet
        taken by any worker: their reports then never cross the broker. Their own tasks,
        when they arrive, find them taken."""
        waiting = Workload.objects.filter(
            session_id=session_id, running=True, owner="", session__state=LabSession.State.RUNNING
        ).values_list("id", "run")
        for workload_id, run in waiting:
            self.run_workload(workload_id, run)

    def _start(self, key: str, unit: Unit) -> None:
        unit.key = key
        with self.units_lock:
            self.units[key] = unit
        unit.start(on_exit=self._exited)

    def _publish_flow(self, routing_key: str, body: bytes) -> None:
        """A workload's report (on the loop). When the lab's monitor runs in this process
        too, it is handed over here and never crosses the broker; otherwise it goes to the
        lab's reports queue, which the monitor reads wherever it runs."""
        monitor = self.monitors.get(routing_key.split(".")[1])
        if monitor is not None and monitor.outcome is None and settings.RUNTIME_LOCAL_REPORTS:
            monitor.report_arrived(Incoming(routing_key, body))
        else:
            self.bus.publish(amqp.flow_exchange(), routing_key, body, JSON)

    # --- a unit ended (on the loop; its rows are written on the blocking pool) --------------
    def _exited(self, unit: Unit) -> None:
        with self.units_lock:
            self.units.pop(unit.key, None)
        self.written.pop(unit.key, None)
        if unit.row[0] == "monitor" and self.monitors.get(unit.row[1]) is unit:
            del self.monitors[unit.row[1]]
        self.bus.loop.run_blocking(lambda: self._record_exit(unit))

    def _record_exit(self, unit: Unit) -> None:
        kind, pk, run = unit.row
        try:
            if kind == "workload":
                _workload_exited(unit, pk, run, self.owner)
            else:
                _monitor_exited(unit, pk, run, self.owner)
        except Exception:  # noqa: BLE001 - the keeper's lease expiry is the fallback
            log.exception("%s %s: exit not recorded", unit.kind, unit.name)
        finally:
            close_old_connections()

    # --- the keeper thread -------------------------------------------------------------------
    def _keep(self) -> None:
        every = settings.RUNTIME_RENEW_SECONDS
        while not self.stopping.wait(every):
            try:
                self.renew()
                self.reconcile()
                self._check_dispatcher()
                self.keeper_beat = time.monotonic()
            except Exception:  # noqa: BLE001 - a database hiccup: try again next round
                log.exception("runtime keeper")
                close_old_connections()

    def renew(self) -> None:
        """Extends the leases of this process's units and saves their checkpoints; stops
        a unit whose row no longer wants it here; hands settings changed in the database
        to a workload that missed the control message."""
        with self.units_lock:
            units = list(self.units.values())
        if not units:
            return
        until = timezone.now() + lease()
        running = LabSession.State.RUNNING
        workloads = {u.row[1]: u for u in units if u.row[0] == "workload"}
        monitors = {u.row[1]: u for u in units if u.row[0] == "monitor"}
        with transaction.atomic():
            # What the database still wants this process to run: one read per table.
            wanted = {
                w["id"]: w
                for w in Workload.objects.filter(
                    pk__in=workloads, owner=self.owner, running=True, session__state=running
                ).values("id", "run", "settings")
            }
            sessions = {
                pk: (generation, shown, topology)
                for pk, generation, shown, topology in LabSession.objects.filter(
                    pk__in=monitors, monitor_owner=self.owner, state=running
                ).values_list("id", "generation", "steps_shown", "topology")
            }
            generations = {pk: generation for pk, (generation, _, _) in sessions.items()}
            keep_w = [pk for pk, u in workloads.items() if u.row[2] == _get(wanted, pk, "run")]
            keep_m = [pk for pk, u in monitors.items() if u.row[2] == generations.get(pk)]
            for pk in set(workloads) - set(keep_w):
                workloads[pk].request_stop("ended")
            for pk in set(monitors) - set(keep_m):
                monitors[pk].request_stop("ended")
            Workload.objects.filter(pk__in=keep_w).update(lease_until=until)
            LabSession.objects.filter(pk__in=keep_m).update(monitor_lease_until=until)
            # Checkpoints that changed since they were last saved, one statement per table.
            saved_w = [
                Workload(pk=pk, progress=workloads[pk].checkpoint)
                for pk in keep_w
                if self.written.get(workloads[pk].key) is not workloads[pk].checkpoint
            ]
            saved_m = [
                LabSession(pk=pk, monitor_state=monitors[pk].checkpoint)
                for pk in keep_m
                if self.written.get(monitors[pk].key) is not monitors[pk].checkpoint
            ]
            _save_json(Workload, "progress", [(r.pk, r.progress) for r in saved_w])
            _save_json(LabSession, "monitor_state", [(r.pk, r.monitor_state) for r in saved_m])
        for row in saved_w:
            self.written[workloads[row.pk].key] = row.progress
        for row in saved_m:
            self.written[monitors[row.pk].key] = row.monitor_state
        for pk in keep_w:
            _resync_settings(workloads[pk], wanted[pk]["settings"] or {})
        for pk in keep_m:
            _resync_steps(monitors[pk], sessions[pk][1] or {})
            _resync_topology(monitors[pk], pk, sessions[pk][2] or {})

    def reconcile(self) -> None:
        """Sends again the task of every unit whose lease ran out: its worker died."""
        from .tasks import run_monitor, run_workload

        now = timezone.now()
        running = LabSession.State.RUNNING
        for w in Workload.objects.filter(running=True, session__state=running, lease_until__lt=now):
            if Workload.objects.filter(pk=w.pk, lease_until=w.lease_until).update(
                owner="", lease_until=now + DISPATCH_GRACE
            ):
                log.warning("workload %s lost its worker; sending it again", w.pk)
                self.dispatches.put((run_workload, [w.pk, w.run], Workload, w.pk))
        for s in LabSession.objects.filter(state=running, monitor_lease_until__lt=now):
            if LabSession.objects.filter(pk=s.pk, monitor_lease_until=s.monitor_lease_until).update(
                monitor_owner="", monitor_lease_until=now + DISPATCH_GRACE
            ):
                log.warning("monitor of %s lost its worker; sending it again", s.pk)
                self.dispatches.put((run_monitor, [s.pk, s.generation], LabSession, s.pk))

    def shutdown(self, timeout: float = 5.0) -> None:
        """A warm shutdown: stop every unit and give up their leases at once, so that
        another worker takes them over without waiting for the leases to run out."""
        self.stopping.set()
        with self.units_lock:
            units = list(self.units.values())
        for unit in units:
            unit.request_stop("released")
        deadline = time.monotonic() + timeout
        for unit in units:
            unit.join(max(0.0, deadline - time.monotonic()))
        # Their exits are recorded on the blocking pool: let it finish before the loop ends.
        self.bus.loop.blocking.shutdown(wait=True, cancel_futures=False)
        self.bus.stop()
        self.bus.join(max(0.5, deadline - time.monotonic()))


def _db(query):
    close_old_connections()
    return query()


def _send(task, args: list, rows) -> None:
    """Sends a task; if the broker will not take it now, the row is left to be sent again
    at the next round."""
    try:
        task.apply_async(args=args)
    except Exception:  # noqa: BLE001 - the broker is away; try again next round
        log.warning("task %s%s not sent; trying again later", task.name, args, exc_info=True)
        field = "lease_until" if rows.model is Workload else "monitor_lease_until"
        rows.update(**{field: _over()})


def _resume_from(workload: Workload) -> dict:
    """The workload's saved progress, with counters no lower than what the lab's monitor
    last saw of it (the two are saved at different moments; the higher is nearer the
    truth), and a sequence that never goes back over messages already sent."""
    progress = dict(workload.progress or {})
    counts = selectors.workload_counts(workload)
    progress["counts"] = counts
    progress["sent"] = max(int(progress.get("sent", 0)), counts.get("published", 0))
    return progress


def _over():
    """A lease that has run out."""
    return timezone.now() - timedelta(seconds=1)


def _save_json(model, name: str, rows: list[tuple]) -> None:
    """Saves one JSON column of many rows in one executemany. (bulk_update builds a CASE
    per row: with fifty labs it was a quarter of a worker's CPU.)"""
    if not rows:
        return
    field = model._meta.get_field(name)
    quote = connection.ops.quote_name
    # Names from the model's own metadata; the values go as parameters.
    table, column, pk = model._meta.db_table, field.column, model._meta.pk.column
    sql = f"UPDATE {quote(table)} SET {quote(column)} = %s WHERE {quote(pk)} = %s"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.executemany(sql, [(field.get_db_prep_value(v, connection), pk) for pk, v in rows])


def _get(rows: dict, pk, field: str):
    return rows.get(pk, {}).get(field)


def _credentials(session: LabSession, user: str | None) -> dict[str, str]:
    """The lab's user, or one of the exercise's own users a producer publishes as."""
    if not user:
        return {"user": session.rabbit_user, "password": session.rabbit_password}
    return {
        "user": amqp.lab_extra_user(session.rabbit_user, user),
        "password": amqp.lab_extra_password(session.rabbit_password, user),
    }


def _resync_settings(unit: WorkloadUnit, wanted: dict) -> None:
    changed = {k: v for k, v in wanted.items() if unit.settings.get(k) != v}
    if changed:
        unit.post(Incoming("", json.dumps({"op": "update", "settings": changed}).encode()))


def _resync_steps(unit: LabMonitor, shown: dict[str, str]) -> None:
    """Steps the learner was shown that the monitor has not marked (the control message
    was lost, or it went to a worker that died)."""
    if any(unit.marks.get(step, (None,))[0] != at for step, at in shown.items()):
        unit.post(Incoming("", json.dumps({"op": "steps", "shown": shown}).encode()))


def _resync_topology(unit: LabMonitor, session_id: str, topology: dict) -> None:
    """The learner changed the topology and the monitor was not told (the control message
    was lost): it is given the lab's topology as the row has it. An unedited lab's monitor
    routes by the exercise's, as it started."""
    if not topology or stored_topology_version(topology) == unit.topology_version:
        return
    spec = LabSession.objects.get(pk=session_id).spec
    message = {
        "op": "topology",
        "graph": lab_graph(spec),
        "queues": [q.name for q in spec.topology.queues],
        "version": topology_version(spec),
    }
    unit.post(Incoming("", json.dumps(message).encode()))


def _workload_exited(unit: WorkloadUnit, workload_id: int, run: int, owner: str) -> None:
    from .services import workload_ended

    mine = Workload.objects.filter(pk=workload_id, run=run, owner=owner)
    ended = unit.outcome in ("finished", "crashed", "failed") and bool(
        mine.filter(running=True).update(running=False)
    )
    # Released with a lease already over: if the lab still wants the workload (a worker
    # shutting down gave it up, or its thread failed), the next round sends it again.
    mine.update(owner="", lease_until=_over(), progress=unit.checkpoint)
    if ended:
        workload_ended(workload=Workload.objects.select_related("session").get(pk=workload_id))
    log.info("workload %s/%s: %s %s", unit.name, run, unit.outcome, unit.message)


def _monitor_exited(unit: LabMonitor, session_id: str, generation: int, owner: str) -> None:
    mine = LabSession.objects.filter(pk=session_id, generation=generation, monitor_owner=owner)
    # Whoever ended the lab (lab_session_stop) told its viewers; a monitor also stops for
    # a reset or when another worker took it over, which end nothing.
    mine.update(monitor_owner="", monitor_lease_until=_over(), monitor_state=unit.checkpoint)
    log.info("monitor %s/%s: %s %s", session_id, generation, unit.outcome, unit.message)


class _Lazy(dict):
    """A mapping read from the database only if a check asks for it."""

    def __init__(self, load):
        super().__init__()
        self._load = load

    def get(self, key, default=None):
        if self._load is not None:
            self.update(self._load())
            self._load = None
        return super().get(key, default)


def _monitor(session: LabSession, bus: ConsoleBus) -> LabMonitor:
    """The lab's monitor with this app's rows: the graph and queues from the pinned spec,
    the checks, and the results saved as they pass."""
    session_id, generation = session.id, session.generation
    spec = session.spec
    api = session.broker.api()
    passed = set(session.results.values_list("checkpoint", flat=True))
    all_checkpoints = {cp.id for step in spec.steps for cp in step.checkpoints}
    first_leaders: dict[str, str] = {}  # quorum queue -> its leader when a check first read it

    def evaluate(record, queues, marks) -> dict[str, bool]:
        if all_checkpoints <= passed:
            return dict.fromkeys(all_checkpoints, True)
        bindings_cache: list = []

        def bindings() -> list[dict]:
            if not bindings_cache:
                try:
                    bindings_cache.extend(api.bindings(session.vhost))
                except BrokerError:
                    log.debug("bindings of %s not read", session.vhost, exc_info=True)
            return bindings_cache

        placement_cache: list[dict] = []

        def placement() -> dict[str, dict]:
            """The lab's queues as the management API places them, read once per
            evaluation; the quorum checks and queue_down share the one read."""
            if not placement_cache:
                try:
                    found = {q["name"]: q for q in api.queue_placement(session.vhost)}
                except BrokerError:
                    log.debug("queues of %s not read", session.vhost, exc_info=True)
                    found = {}
                placement_cache.append(found)
            return placement_cache[0]

        def quorum() -> dict[str, dict]:
            found = quorum_of(list(placement().values()))
            for name, q in found.items():
                if q["leader"]:
                    first_leaders.setdefault(name, q["leader"])
            return found

        workloads = _Lazy(
            lambda: {
                w.name: {"running": w.running, **w.settings}
                for w in Workload.objects.filter(session_id=session_id)
            }
        )
        results = checks.evaluate(
            spec,
            record=record,
            broker={
                "queues": queues,
                "bindings": bindings,
                "quorum": quorum,
                "placement": placement,
                "first_leader": first_leaders.get,
            },
            workloads=workloads,
            passed=passed,
            shown=marks,
        )
        for checkpoint, ok in results.items():
            if ok and checkpoint not in passed:
                CheckpointResult.objects.get_or_create(session_id=session_id, checkpoint=checkpoint)
                passed.add(checkpoint)
                log.info("lab %s: checkpoint %s passed", session_id, checkpoint)
        return results

    expiring = {q.name for q in spec.topology.queues if "x-expires" in q.arguments}

    def read_expiring() -> dict[str, dict]:
        return {
            q["name"]: {"ready": q.get("messages_ready") or 0, "consumers": q.get("consumers", 0)}
            for q in api.queues(session.vhost)
            if q["name"] in expiring
        }

    def ensure_tracing() -> str:
        """Whether the vhost traces (or is gone: nothing more to do), traces again, or
        does not yet. A node that takes AMQP connections again may not yet answer on its
        management API, or may not yet hold the vhost's setting: read back, and the
        monitor tries again."""
        try:
            if api.traces(session.vhost) is not False:
                return TRACES  # it traces; or it is gone, which ends the lab (the sweeper)
            # Never makes the vhost again.
            if not api.tracing_on(session.vhost):
                return TRACES
            return TRACED_AGAIN if api.traces(session.vhost) is not False else UNTRACED
        except BrokerError:
            log.warning("tracing of %s not turned on again yet", session.vhost, exc_info=True)
            return UNTRACED

    graph = lab_graph(spec)
    read_broker_events = None
    if session.spec.broker == CLUSTER and session.cluster is not None:
        from .cluster import broker_events_reader, lab_local_cluster

        read_broker_events = broker_events_reader(session.vhost, api, lab_local_cluster(session))

    return LabMonitor(
        session=session_id,
        bus=bus,
        control_key=control.monitor_key(session_id),
        lab_params=session.broker.parameters(
            vhost=session.vhost,
            user=session.rabbit_user,
            password=session.rabbit_password,
            name="labconsole monitor",
        ),
        still_current=lambda: _db(
            LabSession.objects.filter(
                pk=session_id, generation=generation, state=LabSession.State.RUNNING
            ).exists
        ),
        flow_exchange=amqp.flow_exchange(),
        reports_queue=amqp.reports_queue(session_id),
        declare_reports=lambda channel: amqp.declare_reports_queue(channel, session_id),
        firehose_queue=amqp.firehose_queue(),
        firehose_arguments=session.broker.firehose_arguments,
        firehose_patterns=amqp.FIREHOSE_PATTERNS,
        router=Router(graph),
        make_router=Router,
        streams=streams_of(graph),
        topology_version=topology_version(spec),
        queues=[q.name for q in spec.topology.queues],
        consumers={c.name: c.queue for c in spec.workloads.consumers},
        mandatory={p.name for p in spec.workloads.producers if p.mandatory},
        expiring=expiring,
        read_expiring=read_expiring,
        evaluate=evaluate,
        ensure_tracing=ensure_tracing,
        read_broker_events=read_broker_events,
        pace=lambda seconds: bus.publish(
            amqp.control_exchange(),
            control.pace_key(session_id),
            json.dumps({"op": "pace", "seconds": seconds}).encode(),
            JSON,
        ),
        alert_rules=[alert.rule() for alert in spec.alerts],
        replay_seconds=settings.SANDBOX_REPLAY_SECONDS if session.sandbox else 0,
        fps=settings.FLOW_FRAMES_PER_SECOND,
        state=session.monitor_state,
        shown=session.steps_shown,
    )
