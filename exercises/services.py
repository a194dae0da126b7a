"""Lab sessions and their workloads: everything that changes state goes through here."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pika
import pika.exceptions as px
from django.conf import settings
from django.db import transaction
from django.utils import timezone, translation
from django.utils.text import format_lazy
from django.utils.translation import gettext, ngettext_lazy
from django.utils.translation import gettext_lazy as _

from labconsole.broker import amqp, control
from labconsole.broker.brokers import CLUSTER
from labconsole.broker.management import BrokerError
from labconsole.cluster.provider import cluster_provider
from labconsole.workloads.load import load_setting

from . import cluster_pool, provisioning, quotas
from .limits import LIMITS
from .models import (
    CheckpointResult,
    Classroom,
    Exercise,
    ExerciseVersion,
    LabSession,
    RateEvent,
    Workload,
)
from .selectors import lab_topology_editable
from .spec import ExerciseSpec, SpecError, load_spec_file, parse_spec
from .topology import lab_graph, topology_version

log = logging.getLogger(__name__)

CATALOGUE_DIR = Path(__file__).resolve().parent / "catalogue"


class LabError(Exception):
    """A lab could not be started or changed; the message says why, for a person (a lazy
    translation where the page shows it in the reader's language)."""


class LabBusy(LabError):
    """Another request is starting, resetting or ending the lab at this moment; it won."""


class LimitReached(LabError):
    """The user reached one of their limits (exercises/quotas.py); the page answers 429."""


# --- exercises -----------------------------------------------------------------------------


def exercise_apply_source(*, exercise: Exercise, source: str) -> Exercise:
    """Sets the exercise's YAML and the columns read from it (not saved). A changed source
    of a saved exercise is a new version; running labs keep the version they started with.
    Raises SpecError for a bad document."""
    spec = parse_spec(source)
    if exercise.pk and exercise.source != source:
        exercise.version += 1
    exercise.slug = spec.slug
    exercise.title = spec.title.en
    exercise.level = spec.level
    exercise.minutes = spec.minutes
    exercise.tags = list(spec.tags)
    exercise.source = source
    exercise.__dict__.pop("spec", None)
    return exercise


def exercise_save(*, source: str, builtin: bool = False, author=None) -> tuple[Exercise, bool]:
    """Creates or updates the exercise the YAML describes (found by its slug), a new
    version by `author` where known. Returns (exercise, changed). Raises SpecError for a
    bad document."""
    slug = parse_spec(source).slug
    exercise = Exercise.objects.filter(slug=slug).first() or Exercise(builtin=builtin)
    if exercise.pk and exercise.source == source:
        return exercise, False
    exercise_apply_source(exercise=exercise, source=source)
    exercise_commit(exercise=exercise, author=author)
    return exercise, True


def exercise_load_builtin(*, directory: Path = CATALOGUE_DIR) -> list[tuple[Exercise, bool]]:
    """Loads every YAML file of the built-in catalogue; all are validated before any is saved."""
    sources = []
    errors = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            load_spec_file(path)
        except SpecError as exc:
            errors.extend(f"{path.name}: {e}" for e in exc.errors)
        sources.append(path.read_text(encoding="utf-8"))
    if errors:
        raise SpecError(errors)
    with transaction.atomic():
        return [exercise_save(source=s, builtin=True) for s in sources]


# --- lab sessions --------------------------------------------------------------------------


def _workload_settings(spec: ExerciseSpec) -> list[tuple[str, str, dict, bool]]:
    rows = []
    for p in spec.workloads.producers:
        data = p.model_dump(exclude={"name", "autostart"})
        # The keys as the page lists them, and their weights beside them.
        data["routing_keys"] = [k.key for k in p.routing_keys]
        data["routing_key_weights"] = [k.weight for k in p.routing_keys]
        rows.append((p.name, Workload.Kind.PRODUCER, data, p.autostart))
    for c in spec.workloads.consumers:
        data = c.model_dump(exclude={"name", "autostart", "behaviour"})
        data.update(c.behaviour.model_dump())
        rows.append((c.name, Workload.Kind.CONSUMER, data, c.autostart))
    return rows


def _provision(session: LabSession) -> None:
    try:
        provisioning.provision(
            session.spec,
            vhost=session.vhost,
            user=session.rabbit_user,
            password=session.rabbit_password,
            quotas=quotas.lab_quotas(user=session.owner, sandbox=session.sandbox),
            broker=session.broker,
        )
    except BrokerError as exc:
        if exc.status == 0 and session.spec.broker == CLUSTER:
            raise LabError(
                _(
                    "This exercise runs on a cluster of the console's own, which does not "
                    "answer: %(reason)s. End the lab and start it again."
                )
                % {"reason": exc.reason}
            ) from exc
        raise LabError(
            format_lazy(_("the broker refused the lab's topology: {reason}"), reason=exc.reason)
        ) from exc


def _create_workloads(session: LabSession) -> None:
    Workload.objects.bulk_create(
        Workload(session=session, name=name, kind=kind, settings=data)
        for name, kind, data, _ in _workload_settings(session.spec)
    )


def _start_tasks(session: LabSession, *, run_workloads: bool) -> None:
    from .runtime import DISPATCH_GRACE
    from .tasks import run_monitor

    control.declare_reports_queue(session.id)
    LabSession.objects.filter(pk=session.pk).update(
        monitor_owner="", monitor_lease_until=timezone.now() + DISPATCH_GRACE
    )
    if run_workloads:
        autostart = {name for name, _, _, auto in _workload_settings(session.spec) if auto}
        for workload in session.workloads.filter(name__in=autostart):
            # The worker that takes the monitor runs these too (their reports then stay in
            # that process): they are marked running before the monitor's task goes, with
            # no task of their own. Should no worker take them within ADOPT_SECONDS (the
            # monitor's worker died), a worker's keeper sends their tasks.
            workload_start(workload=workload, adopt=True)
    run_monitor.apply_async(args=[session.id, session.generation])


def _refuse_over_vhost_limits(
    spec: ExerciseSpec, limits: quotas.LabQuotas, *, sandbox: bool = False
) -> None:
    """A lab whose own objects exceed its vhost's limits would fail half-way: say so first.
    Every workload connects as the lab's user (one connection, a consumer two channels),
    and so do the monitor (two channels) and a publish from the page (one)."""
    queues = len(spec.topology.queues) + 1  # and the firehose's
    connections = len(spec.workloads.producers) + len(spec.workloads.consumers) + 2
    channels = len(spec.workloads.producers) + 2 * len(spec.workloads.consumers) + 3
    needs = [
        (queues, limits.queues, _("queues")),
        (connections, limits.connections, _("connections")),
        (channels, limits.channels, _("channels")),
    ]
    over = [
        format_lazy(_("{what}: {needed} (at most {limit})"), what=what, needed=n, limit=cap)
        for n, cap, what in needs
        if n > cap
    ]
    if over:
        over = format_lazy(", ".join(["{}"] * len(over)), *over)
        raise LabError(
            format_lazy(
                _(
                    "This sandbox would need more than a sandbox may use: {over}. Start it "
                    "with fewer workloads, or without them and add them one by one."
                )
                if sandbox
                else _("This exercise needs more than a lab may use: {over}. Ask an instructor."),
                over=over,
            )
        )


def _record_within_limits(session: LabSession, limits: quotas.LabQuotas) -> None:
    """Saves the new lab if its owner is within their limits (labs at once, then starts a
    minute, so a refused lab does not use up a start), else raises LimitReached. Starts by
    one owner take turns on the owner's row (on SQLite, the IMMEDIATE transaction makes
    every writer take turns), so two at once cannot both take the last place."""
    with transaction.atomic():
        quotas.owner_lock(user=session.owner)
        running = quotas.labs_running(user=session.owner)
        if running >= limits.labs:
            raise LimitReached(
                format_lazy(
                    _(
                        "You already have {running} labs running, the most one person may "
                        "have at once. End one of them (End lab on its page) and start again."
                    ),
                    running=running,
                )
            )
        action = RateEvent.Action.START
        if not quotas.rate_take(
            user=session.owner, action=action, per_minute=limits.starts_per_minute
        ):
            raise LimitReached(
                format_lazy(
                    _(
                        "You started {limit} labs in the last minute, the most one person "
                        "may. Try again in {seconds} s."
                    ),
                    limit=limits.starts_per_minute,
                    seconds=quotas.rate_retry_after(user=session.owner, action=action),
                )
            )
        session.save()


def _refuse_missing_plugins(session: LabSession) -> None:
    """Refuses a lab whose exercise needs a plugin its broker has not enabled, before
    anything is made. Asked of the broker at each start: a plugin may be enabled or
    disabled at any time. A broker that does not answer is left to the provisioning,
    which says why. The pool's clusters, which the lab has none of yet, enable the same
    plugins on every node."""
    needed = session.spec.plugins
    if not needed:
        return
    try:
        if session.spec.broker == CLUSTER:
            enabled = list(cluster_provider().plugins)
        else:
            enabled = session.broker.api().enabled_plugins()
    except BrokerError:
        return
    missing = [name for name in needed if name not in enabled]
    if missing:
        raise LabError(
            format_lazy(
                ngettext_lazy(
                    "This exercise needs the RabbitMQ plugin {names}, which the broker has "
                    "not enabled. Whoever runs the broker enables it with: "
                    "rabbitmq-plugins enable {plugins}",
                    "This exercise needs the RabbitMQ plugins {names}, which the broker has "
                    "not enabled. Whoever runs the broker enables them with: "
                    "rabbitmq-plugins enable {plugins}",
                    len(missing),
                ),
                names=", ".join(missing),
                plugins=" ".join(missing),
            )
        )


def _first_step_shown(spec: ExerciseSpec) -> dict[str, str]:
    """A lab opens on its first step: its checkpoints count from the lab's start."""
    return {spec.steps[0].id: timezone.now().isoformat()} if spec.steps else {}


def _ended_meanwhile(session: LabSession) -> bool:
    return LabSession.objects.filter(pk=session.pk, state=LabSession.State.ENDED).exists()


def _ended_while_starting() -> LabBusy:
    return LabBusy(_("This lab was ended while it was starting; start a new one."))


def _mark_running(session: LabSession) -> None:
    """STARTING -> RUNNING, unless another request ended the lab meanwhile: then what this
    start or reset made on the broker goes too, and the caller is told."""
    made = LabSession.objects.filter(
        pk=session.pk, generation=session.generation, state=LabSession.State.STARTING
    ).update(state=LabSession.State.RUNNING)
    if not made:
        session.state = LabSession.State.ENDED
        lab_session_teardown(session=session)
        raise _ended_while_starting()
    session.state = LabSession.State.RUNNING


def lab_session_start(
    *,
    exercise: Exercise,
    owner,
    run: bool = True,
    source: str | None = None,
    enforce_quotas: bool = True,
    classroom: Classroom | None = None,
    trial: bool = False,
    sandbox: bool = False,
    team=None,
) -> LabSession:
    """Provisions a lab for `exercise` (its current version) and starts its monitor and,
    with `run`, the workloads that start by themselves. Nothing is left behind on failure.
    The owner's limits (labs at once, starts a minute) hold unless `enforce_quotas` is
    false, which only operators' tools (the `lab` command, benchmarks) pass; the vhost's
    limits always hold. A lab started in `classroom` is watched by its instructor
    (exercises/classes.py)."""
    session = LabSession(
        owner=owner,
        exercise=exercise,
        classroom=classroom,
        exercise_version=exercise.version,
        source=source or exercise.source,
        rabbit_password=secrets.token_urlsafe(24),
        trial=trial,
        sandbox=sandbox,
        team=team,
    )
    try:
        session.spec  # noqa: B018 - a bad document fails here, before anything is made
    except SpecError as exc:
        raise LabError(format_lazy(_("the exercise is not valid:\n{errors}"), errors=exc)) from exc
    if session.spec.broker == CLUSTER and not cluster_pool.pool_enabled():
        raise LabError(
            _(
                "This exercise runs on a cluster of the console's own, and this console runs "
                "none (LAB_CLUSTER_SIZE or LAB_CLUSTER_MAX is 0)."
            )
        )
    _refuse_missing_plugins(session)
    session.steps_shown = _first_step_shown(session.spec)
    limits = quotas.lab_quotas(user=owner, sandbox=sandbox)
    _refuse_over_vhost_limits(session.spec, limits, sandbox=sandbox)
    if enforce_quotas:
        _record_within_limits(session, limits)
    else:
        session.save()
    try:
        if session.spec.broker == CLUSTER:
            _take_cluster(session)
        _create_workloads(session)
        _provision(session)  # removes what it made on the broker if it fails
    except BaseException as exc:
        # An End meanwhile deletes the vhost under the provisioning: say that, not how
        # the broker refused the rest; the ended lab stays recorded for its open page.
        if isinstance(exc, LabError) and _ended_meanwhile(session):
            raise _ended_while_starting() from exc
        if session.cluster is not None:
            cluster_pool.lab_cluster_release(session=session)
        session.delete()
        raise
    _mark_running(session)
    try:
        _start_tasks(session, run_workloads=run)
    except (px.AMQPError, OSError) as exc:
        lab_session_stop(session=session)
        session.delete()
        raise LabError(
            format_lazy(_("the lab's workloads could not be started: {error}"), error=repr(exc))
        ) from exc
    return session


def _take_cluster(session: LabSession) -> None:
    """Gives a new lab on a cluster its cluster: its class's, or a warm one of its own
    (exercises/cluster_pool.py)."""
    try:
        session.cluster = cluster_pool.lab_cluster_take(
            owner=session.owner, classroom=session.classroom
        )
    except cluster_pool.NoCluster as exc:
        raise LabError(str(exc)) from exc
    LabSession.objects.filter(pk=session.pk).update(cluster=session.cluster)


def _stop_tasks(session: LabSession) -> None:
    for workload in session.workloads.filter(running=True):
        send_quietly(control.workload_key(workload.id), {"op": "stop"})
    session.workloads.update(running=False)
    send_quietly(control.monitor_key(session.id), {"op": "stop"})
    with contextlib.suppress(px.AMQPError, OSError):
        control.delete_reports_queue(session.id)


def _announce(session: LabSession, kind: str, message: dict) -> None:
    """Tells every viewer of the lab (their WebSockets) what changed."""
    send_quietly(
        amqp.lab_key(session.id, kind), {"type": kind, **message}, exchange=amqp.flow_exchange()
    )


def lab_announce_status(*, session: LabSession, state: str, message: str) -> None:
    """Tells every open page of the lab a status of its own `state` with `message`, shown
    as it is (docs/live-protocol.md, `status`)."""
    _announce(session, "status", {"state": state, "message": message})


def _announce_workload(workload: Workload) -> None:
    _announce(
        workload.session,
        "workload",
        {
            "name": workload.name,
            "kind": workload.kind,
            "running": workload.running,
            "settings": workload.settings,
        },
    )


def send_quietly(key: str, message: dict, exchange: str | None = None) -> None:
    try:
        control.send(key, message, exchange=exchange)
    except (px.AMQPError, OSError):
        # Deleting the vhost ends every task of the lab anyway; this only makes it faster.
        log.warning("control message %s to %s not sent", message, key, exc_info=True)


def lab_session_teardown(*, session: LabSession) -> bool:
    """Deletes the ended lab's vhost and user. If the broker is away or refuses, the lab is
    marked `teardown_pending` for the sweeper to try again. Returns whether it was done.
    A lab whose cluster is gone has nothing left to delete."""
    cluster_gone = session.spec.broker == CLUSTER and session.cluster is None
    try:
        if not cluster_gone:
            provisioning.teardown(
                vhost=session.vhost, user=session.rabbit_user, broker=session.broker
            )
    except BrokerError as exc:
        log.warning("lab %s: vhost and user not deleted yet (%s)", session.id, exc.reason)
        pending = True
    else:
        pending = False
    if session.teardown_pending != pending:
        session.teardown_pending = pending
        LabSession.objects.filter(pk=session.pk).update(teardown_pending=pending)
    return not pending


def lab_session_stop(*, session: LabSession, reason: str = "") -> LabSession:
    """Ends the lab at once (in the database), stops the workloads and the monitor and
    deletes the vhost and user; `reason` says why when the console ends it by itself
    ("idle"). With the broker away the lab ends all the same and its
    vhost and user are deleted by the sweeper once the broker is back. Idempotent, and
    safe beside a start or reset of the same lab: those see it ended when they finish
    (a conditional update) and delete what they made."""
    now = timezone.now()
    if (
        LabSession.objects.filter(pk=session.pk)
        .exclude(state=LabSession.State.ENDED)
        .update(state=LabSession.State.ENDED, ended_at=now, end_reason=reason)
    ):
        session.ended_at, session.end_reason = now, reason
    session.state = LabSession.State.ENDED
    _stop_tasks(session)
    lab_session_teardown(session=session)
    cluster_pool.lab_cluster_release(session=session)
    _announce(session, "status", {"state": "ended", "message": "This lab has ended."})
    return session


def lab_session_reset(*, session: LabSession) -> LabSession:
    """Stop and start again with the same spec, in the same session (its page stays).
    Only a running lab, as the caller last saw it, is reset: of several resets at once one
    wins, and a lab still starting or being reset is left to that request (LabBusy)."""
    ended = LabError(_("this lab has ended; start a new one from the exercise page"))
    if not session.is_active:
        raise ended
    # Starting again before the vhost goes, and only if nothing (the sweeper, another
    # request) ended or reset the lab meanwhile: a lab that is starting is never swept.
    password = secrets.token_urlsafe(24)
    claimed = LabSession.objects.filter(
        pk=session.pk, generation=session.generation, state=LabSession.State.RUNNING
    ).update(
        generation=session.generation + 1,
        rabbit_password=password,
        state=LabSession.State.STARTING,
        # The new lab's monitor starts from nothing: no counters, checks or step marks of
        # the lab before the reset.
        monitor_state={},
    )
    if not claimed:
        if (
            not LabSession.objects.filter(pk=session.pk)
            .exclude(state=LabSession.State.ENDED)
            .exists()
        ):
            raise ended
        raise LabBusy(
            _("Another request is starting or resetting this lab; wait a moment and look again.")
        )
    session.generation += 1
    session.rabbit_password = password
    session.state = LabSession.State.STARTING
    session.monitor_state = {}
    _stop_tasks(session)
    try:
        provisioning.teardown(vhost=session.vhost, user=session.rabbit_user, broker=session.broker)
    except BrokerError as exc:
        lab_session_stop(session=session)  # the sweeper deletes it when the broker is back
        raise LabError(
            format_lazy(_("the lab could not be reset: {reason}"), reason=exc.reason)
        ) from exc
    session.workloads.all().delete()
    CheckpointResult.objects.filter(session=session).delete()
    # The exercise's own topology again, not the one the learner edited, and the document
    # the lab started from, not one a sandbox's added or removed workloads rewrote.
    session.topology = {}
    if session.origin:
        session.source, session.origin = session.origin, ""
    session.__dict__.pop("spec", None)
    LabSession.objects.filter(pk=session.pk).update(topology={}, source=session.source, origin="")
    session.steps_shown = _first_step_shown(session.spec)
    LabSession.objects.filter(pk=session.pk).update(steps_shown=session.steps_shown)
    _create_workloads(session)
    try:
        _provision(session)
    except LabError as exc:
        # The old lab is gone and the new one could not be made: this lab has ended.
        ended_meanwhile = _ended_meanwhile(session)
        lab_session_stop(session=session)
        if ended_meanwhile:
            raise _ended_while_starting() from exc
        raise
    _mark_running(session)
    _start_tasks(session, run_workloads=True)
    _announce(session, "status", {"state": "reset", "message": "The lab was reset."})
    return session


#: Seconds lab_step_show waits for the lab's monitor to mark the new step.
STEP_MARK_TIMEOUT = 1.0


def _tell_monitor_steps(session: LabSession, shown: dict) -> None:
    """The lab's monitor marks where a new step's checkpoints start counting from, and says
    it did before this returns: whatever the learner does next (a publish right after
    "Next step") counts for the new step, not into its starting mark. A monitor that does
    not answer in STEP_MARK_TIMEOUT (down, taken over) gets the marks when it resumes from
    the lab's row (exercises/runtime.py)."""
    try:
        answer = control.ask(
            control.monitor_key(session.id),
            {"op": "steps", "shown": shown},
            timeout=STEP_MARK_TIMEOUT,
        )
    except (px.AMQPError, OSError):
        log.warning("lab %s: the steps shown were not sent to its monitor", session.id)
        return
    if answer is None:
        log.info("lab %s: its monitor did not confirm the steps shown in time", session.id)


def lab_step_show(*, session: LabSession, step: str) -> LabSession:
    """The learner moves on to `step`, the one after the last step shown, once that one is
    complete. Records when it was first shown (its checkpoints count only what happens
    from then on) and tells the lab's monitor. Showing a step shown before changes
    nothing."""
    if not session.is_active:
        raise LabError(_("this lab has ended"))
    steps = session.spec.steps
    ids = [s.id for s in steps]
    if step not in ids:
        raise LabError(format_lazy(_("this exercise has no step '{step}'"), step=step))
    with transaction.atomic():
        row = LabSession.objects.select_for_update().get(pk=session.pk)
        shown = dict(row.steps_shown)
        if step in shown:
            session.steps_shown = shown
            return session
        index = ids.index(step)
        previous = steps[index - 1] if index else None
        passed = set(row.results.values_list("checkpoint", flat=True))
        if (
            previous is None
            or previous.id not in shown
            or any(cp.id not in passed for cp in previous.checkpoints)
        ):
            raise LabError(_("finish the step before this one first"))
        shown[step] = timezone.now().isoformat()
        row.steps_shown = shown
        row.save(update_fields=["steps_shown"])
    session.steps_shown = shown
    _tell_monitor_steps(session, shown)
    # Every open page of the lab opens the step too (docs/live-protocol.md, `steps`).
    _announce(session, "steps", {"shown": sorted(shown)})
    return session


def lab_session_touch(*, session: LabSession) -> None:
    LabSession.objects.filter(pk=session.pk).update(last_seen_at=timezone.now())


def lab_sessions_sweep_idle(*, idle_minutes: int, sandbox: bool = False) -> list[str]:
    """Ends the labs (with `sandbox`, the sandboxes) nobody has looked at for
    `idle_minutes`; returns their ids."""
    cutoff = timezone.now() - timezone.timedelta(minutes=idle_minutes)
    ended = []
    for session in LabSession.objects.exclude(state=LabSession.State.ENDED).filter(
        last_seen_at__lt=cutoff, sandbox=sandbox
    ):
        lab_session_stop(session=session, reason="idle")
        ended.append(session.id)
    return ended


# --- the learner changes the topology -------------------------------------------------------

#: What an edit acts on, and the list of the topology it is kept in. Policies are edited
#: from a sandbox's page only (exercises/lab_controls.py).
TOPOLOGY_KINDS = {
    "exchange": "exchanges",
    "queue": "queues",
    "binding": "bindings",
    "policy": "policies",
}
#: The lists a lab's number of objects (LIMITS.lab_objects) counts; policies have their own.
COUNTED_KINDS = ("exchanges", "queues", "bindings")
BINDING_FIELDS = ("source", "destination", "destination_type", "routing_key", "arguments")


class TopologyRefused(LabError):
    """An edit of the lab's topology broke a rule. `errors` holds (field, message) pairs,
    the field as the edit's form names it ("name", "arguments.x-max-priority"), or "" for
    the edit as a whole."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"{f}: {m}" if f else str(m) for f, m in errors))


def _binding_identity(b: dict) -> tuple:
    return tuple(
        json.dumps(b.get(f) or {}, sort_keys=True) if f == "arguments" else b.get(f)
        for f in BINDING_FIELDS
    )


def _spec_problems(exc: SpecError, focus: str, *, deleting: bool) -> list[tuple[str, str]]:
    """The spec's messages for the edited topology: those about the object being declared
    (`focus`, like `topology.queues[3]`) by its field; any other names where the rest of
    the lab still uses what an edit would remove."""
    errors = []
    for line in exc.errors:
        path, _sep, message = line.partition(": ")
        if path == focus or path.startswith((focus + ".", focus + "[")):
            errors.append((path[len(focus) :].lstrip("."), message))
        elif deleting:
            errors.append(
                (
                    "",
                    format_lazy(
                        _("it is still used: {path}: {message}"), path=path, message=message
                    ),
                )
            )
        else:
            errors.append(("", line))
    return errors


def _apply_on_broker(session: LabSession, kind: str, action: str, item: dict) -> None:
    api = session.broker.api()
    vhost = session.vhost
    if kind == "exchange" and action == "declare":
        api.put_exchange(vhost, item["name"], {k: v for k, v in item.items() if k != "name"})
    elif kind == "exchange":
        api.delete_exchange(vhost, item["name"])
    elif kind == "queue" and action == "declare":
        arguments = {**item["arguments"], "x-queue-type": item["type"]}
        definition = {"durable": item["durable"], "auto_delete": item["auto_delete"]}
        api.put_queue(vhost, item["name"], {**definition, "arguments": arguments})
    elif kind == "queue":
        api.delete_queue(vhost, item["name"])
    elif kind == "policy" and action == "declare":
        policy = {k: item[k] for k in ("pattern", "priority", "definition")}
        api.put_policy(vhost, item["name"], {**policy, "apply-to": item["apply_to"]})
    elif kind == "policy":
        api.delete_policy(vhost, item["name"])
    elif action == "declare":
        api.bind(
            vhost,
            item["source"],
            item["destination"],
            item["destination_type"],
            {"routing_key": item["routing_key"], "arguments": item["arguments"]},
        )
    elif not api.unbind(
        vhost,
        item["source"],
        item["destination"],
        item["destination_type"],
        routing_key=item["routing_key"],
        arguments=item["arguments"],
    ):
        log.warning("lab %s: binding %s was not on the broker", session.id, item)


def _undo_declare(session: LabSession, kind: str, item: dict) -> None:
    try:
        _apply_on_broker(session, kind, "delete", item)
    except BrokerError:
        log.warning("lab %s: %s %s made but not recorded, nor taken back", session.id, kind, item)


def _edited_topology(
    topology: dict, kind: str, action: str, item: dict
) -> tuple[dict, str | None, list[tuple[str, str]]]:
    """The topology after the edit, the path of the object it declares (None for a
    deletion), and what is wrong with the edit itself (something that is not there)."""
    plural = TOPOLOGY_KINDS[kind]
    new = {**topology, plural: list(topology[plural])}
    if action == "declare":
        new[plural].append(item)
        return new, f"topology.{plural}[{len(new[plural]) - 1}]", []
    if kind == "binding":
        identity = _binding_identity(item)
        kept = [b for b in new["bindings"] if _binding_identity(b) != identity]
        if len(kept) == len(new["bindings"]):
            return new, None, [("", _("there is no such binding in this lab"))]
        new["bindings"] = kept
        return new, None, []
    name = item["name"]
    if not any(o["name"] == name for o in new[plural]):
        what = _(
            "'{name}' is not an exchange of this lab (the broker's own amq.* cannot be deleted)"
        )
        if kind == "queue":
            what = _("'{name}' is not a queue of this lab")
        elif kind == "policy":
            what = _("'{name}' is not a policy of this lab")
        return new, None, [("name", format_lazy(what, name=name))]
    new[plural] = [o for o in new[plural] if o["name"] != name]
    # The broker deletes the bindings of what it deletes: so does the topology.
    new["bindings"] = [
        b
        for b in new["bindings"]
        if not (
            (kind == "exchange" and b["source"] == name)
            or (b["destination"] == name and b["destination_type"] == kind)
        )
    ]
    return new, None, []


def _topology_with(row: LabSession, kind: str, action: str, item: dict) -> ExerciseSpec:
    """The lab's exercise with the edit made to its topology, if the current step allows
    edits, the lab stays within its number of objects and the result follows every rule of
    the format. Raises LabError or TopologyRefused."""
    if not lab_topology_editable(session=row):
        raise LabError(_("Changing the topology is not part of this step."))
    new, focus, errors = _edited_topology(row.spec.topology.model_dump(), kind, action, item)
    if errors:
        raise TopologyRefused(errors)
    objects = sum(len(new[k]) for k in COUNTED_KINDS)
    if action == "declare" and objects > LIMITS.lab_objects:
        too_many = _(
            "a lab may have at most {limit} exchanges, queues and bindings in all; delete one first"
        )
        raise TopologyRefused([("", format_lazy(too_many, limit=LIMITS.lab_objects))])
    try:
        return row.spec.with_topology(new)
    except SpecError as exc:
        problems = _spec_problems(exc, focus or "(none)", deleting=action == "delete")
        raise TopologyRefused(problems) from None


@dataclass(frozen=True)
class TopologyChanged:
    """An edit that was made: `message` says what, for the page."""

    message: str
    graph: dict


def lab_topology_change(
    *, session: LabSession, kind: str, action: str, item: dict[str, Any]
) -> TopologyChanged:
    """Declares or deletes an exchange, a queue or a policy, or binds or unbinds (`kind`
    one of exchange, queue, binding, policy; `action` declare or delete), on the lab's vhost, as the
    console's administrator, like provisioning. The lab's topology with the edit is checked
    by every rule of the exercise format first (exercises.spec), and kept in the lab's
    row once the broker made it, so that the page, a second tab, the monitor and the
    checks all see it; every viewer is sent the new graph, the monitor its new routes.
    A refused edit (TopologyRefused, LabError) changes nothing on the broker or in the
    database. `item` is the object as in an exercise document (for a deletion, its name).
    """
    if kind not in TOPOLOGY_KINDS or action not in ("declare", "delete"):
        raise LabError(_("unknown topology change"))
    if not session.is_active:
        raise LabError(_("this lab has ended"))
    prefix = f"{settings.LABCONSOLE_PREFIX}."
    if action == "declare" and kind != "binding" and str(item.get("name", "")).startswith(prefix):
        raise TopologyRefused(
            [
                (
                    "name",
                    format_lazy(
                        _("names starting with '{prefix}' are the console's own"), prefix=prefix
                    ),
                )
            ]
        )
    made = False
    try:
        with transaction.atomic():
            row = LabSession.objects.select_for_update().get(pk=session.pk)
            if row.state == LabSession.State.ENDED:
                raise LabError(_("this lab has ended"))
            spec = _topology_with(row, kind, action, item)
            if row.sandbox and kind == "queue" and action == "declare":
                refusal = quotas.sandbox_queues_refusal(queues=len(spec.topology.queues))
                if refusal:
                    raise TopologyRefused([("", refusal)])
            if action == "declare":  # as the format read it, with its defaults
                item = getattr(spec.topology, TOPOLOGY_KINDS[kind])[-1].model_dump()
            try:
                _apply_on_broker(row, kind, action, item)
            except BrokerError as exc:
                raise LabError(
                    format_lazy(_("the broker refused it: {reason}"), reason=exc.reason)
                ) from exc
            made = True
            row.topology = spec.topology.model_dump()
            row.save(update_fields=["topology"])
    except Exception:
        if made and action == "declare":
            # Made on the broker, not recorded (the database failed): take it back.
            _undo_declare(session, kind, item)
        raise
    session.topology = row.topology
    session.__dict__["spec"] = spec
    graph = lab_graph(spec)
    send_quietly(
        control.monitor_key(session.id),
        {
            "op": "topology",
            "graph": graph,
            "queues": [q.name for q in spec.topology.queues],
            "version": topology_version(spec),
        },
    )
    _announce(
        session,
        "topology",
        {
            "graph": graph,
            "exchanges": [*(x.name for x in spec.topology.exchanges), ""],
            "version": topology_version(spec),
            "change": {"kind": kind, "action": action, "item": item},
        },
    )
    return TopologyChanged(message=_("Done: the diagram shows the change."), graph=graph)


# --- workloads -----------------------------------------------------------------------------

# How long a new lab's workloads wait for the worker of the lab's monitor to take them
# before a keeper sends their tasks to any worker.
ADOPT_SECONDS = 3.0
PRODUCER_FIELDS = {"rate", "routing_key", "confirms", "mandatory", "transactions", "tx_batch"}
CONSUMER_FIELDS = {"prefetch", "ack", "fail", "on_fail", "requeue", "processing_ms"}


def workload_start(*, workload: Workload, adopt: bool = False) -> Workload:
    """Marks the workload running and sends its task; with `adopt`, the task is left to
    the worker of the lab's monitor (see _start_tasks)."""
    from .runtime import DISPATCH_GRACE
    from .tasks import run_workload

    if not workload.session.is_active:
        raise LabError(_("this lab has ended"))
    if workload.running:
        return workload
    if workload.session.sandbox:
        refusal = quotas.sandbox_start_refusal(session=workload.session, workload=workload)
        if refusal:
            raise LimitReached(refusal)
    workload.run += 1
    workload.running = True
    # Sent, not yet claimed by a worker: sent again if none has claimed it by then.
    workload.owner = ""
    grace = timezone.timedelta(seconds=ADOPT_SECONDS) if adopt else DISPATCH_GRACE
    workload.lease_until = timezone.now() + grace
    workload.save(update_fields=["run", "running", "owner", "lease_until"])
    if not adopt:
        run_workload.apply_async(args=[workload.id, workload.run])
    _announce_workload(workload)
    return workload


def workload_stop(*, workload: Workload) -> Workload:
    if workload.running:
        workload.running = False
        workload.save(update_fields=["running"])
        send_quietly(control.workload_key(workload.id), {"op": "stop"})
        _announce_workload(workload)
    return workload


def workload_ended(*, workload: Workload) -> None:
    """A workload stopped by itself (its count or duration was reached, it crashed)."""
    _announce_workload(workload)


def _refuse_sandbox_rate(workload: Workload, settings_after: dict) -> None:
    """A sandbox's producers and page publish at most SANDBOX_MAX_RATE in all: a rate or
    load that would go past it is refused (a stopped producer is counted when it starts)."""
    if not (workload.session.sandbox and workload.running):
        return
    refusal = quotas.sandbox_rate_refusal(
        session=workload.session, workload=workload, settings_after=settings_after
    )
    if refusal:
        raise LimitReached(refusal)


def workload_update(*, workload: Workload, changes: dict[str, Any]) -> Workload:
    """Applies validated changes (see exercises.forms) to the settings, live if running."""
    allowed = PRODUCER_FIELDS if workload.kind == Workload.Kind.PRODUCER else CONSUMER_FIELDS
    unknown = set(changes) - allowed
    if unknown:
        raise LabError(
            format_lazy(
                _("{workload}: cannot change {fields}"),
                workload=workload.name,
                fields=", ".join(sorted(unknown)),
            )
        )
    changes = {k: v for k, v in changes.items() if workload.settings.get(k) != v}
    if not changes:
        return workload
    merged = {**workload.settings, **changes}
    if merged.get("confirms") and merged.get("transactions"):
        raise LabError(
            format_lazy(
                _("{workload}: {problem}"),
                workload=workload.name,
                problem=_(
                    "a channel uses publisher confirms or transactions, not both: turn one "
                    "of them off"
                ),
            )
        )
    _refuse_sandbox_rate(workload, {**workload.settings, **changes})
    workload.settings = {**workload.settings, **changes}
    workload.save(update_fields=["settings"])
    if workload.running:
        send_quietly(control.workload_key(workload.id), {"op": "update", "settings": changes})
    _announce_workload(workload)
    return workload


def workload_load(*, workload: Workload, preset: str) -> Workload:
    """Runs a load preset on a producer (labconsole/workloads/load.py): its rate raised for
    the preset's time, from now; a producer that is stopped starts."""
    if workload.kind != Workload.Kind.PRODUCER:
        raise LabError(
            format_lazy(_("{workload}: only a producer runs a load"), workload=workload.name)
        )
    load = load_setting(preset)
    _refuse_sandbox_rate(workload, {**workload.settings, "load": load})
    workload.settings = {**workload.settings, "load": load}
    workload.save(update_fields=["settings"])
    if not workload.running:
        return workload_start(workload=workload)
    send_quietly(control.workload_key(workload.id), {"op": "update", "settings": {"load": load}})
    _announce_workload(workload)
    return workload


# --- one message from the page ---------------------------------------------------------------

PUBLISH_BLOCKED_TIMEOUT = 5  # seconds a publish from the page may wait on a blocked broker
BLOCKED = _("the broker is refusing messages for now (a resource alarm); try again in a moment")


@dataclass(frozen=True)
class Published:
    """What became of one message from the page: `routed` is false when the broker
    returned it (mandatory, and no queue bound); `message` says so in words."""

    routed: bool
    message: str


def _refuse_during_alarm(session: LabSession) -> None:
    """A publish would hang while the broker blocks publishers: say so at once instead."""
    try:
        alarms = session.broker.api().alarms()
    except BrokerError:
        return  # the publish itself will say what is wrong
    if alarms:
        raise LabError(format_lazy("{}: {}", BLOCKED, ", ".join(alarms)))


def lab_publish(
    *,
    session: LabSession,
    exchange: str,
    routing_key: str,
    body: str,
    headers: dict[str, Any] | None = None,
    persistent: bool = False,
    priority: int | None = None,
    expiration: int | None = None,
    mandatory: bool = False,
) -> Published:
    """Publishes one message as the lab's user, with publisher confirms. Returns what
    happened; raises LabError when the broker refused it."""
    if not session.is_active:
        raise LabError(_("this lab has ended"))
    limit = quotas.lab_quotas(user=session.owner).publishes_per_minute
    action = RateEvent.Action.PUBLISH
    if not quotas.rate_take(user=session.owner, action=action, per_minute=limit, session=session):
        raise LimitReached(
            format_lazy(
                _(
                    "You published {limit} messages from this page in the last minute, the "
                    "most one person may. Try again in {seconds} s, or let a producer "
                    "publish many."
                ),
                limit=limit,
                seconds=quotas.rate_retry_after(user=session.owner, action=action),
            )
        )
    if session.sandbox and (refusal := quotas.sandbox_rate_refusal(session=session)):
        raise LimitReached(refusal)
    _refuse_during_alarm(session)
    params = session.broker.parameters(
        vhost=session.vhost,
        user=session.rabbit_user,
        password=session.rabbit_password,
        name="labconsole-publish",
        blocked_timeout=PUBLISH_BLOCKED_TIMEOUT,
    )
    props = pika.BasicProperties(
        content_type="application/json",
        delivery_mode=2 if persistent else 1,
        priority=priority,
        expiration=str(expiration) if expiration is not None else None,
        message_id=secrets.token_hex(8),
        headers=headers or None,
        app_id="@you",
    )
    where = format_lazy(
        _("exchange '{exchange}' with key '{key}'"),
        exchange=exchange or _("(default)"),
        key=routing_key,
    )
    try:
        connection = amqp.connect(params)
    except px.AMQPError as exc:
        raise LabError(
            format_lazy(_("could not connect to the lab's vhost: {error}"), error=repr(exc))
        ) from exc
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(exchange, routing_key, body.encode(), props, mandatory=mandatory)
    except px.UnroutableError as exc:
        returned = exc.messages[0].method if exc.messages else None
        # The lab's monitor saw an unroutable publish; this says it came back to its
        # publisher, and the log shows it as returned.
        send_quietly(
            control.monitor_key(session.id),
            {
                "op": "returned",
                "message_id": props.message_id,
                "exchange": exchange,
                "routing_key": routing_key,
                "reply": f"{returned.reply_code} {returned.reply_text}" if returned else None,
            },
        )
        return Published(
            False,
            # No binding matched, or the one queue that did is down (its node stopped).
            format_lazy(_("returned: no queue took it from {where} (mandatory)"), where=where),
        )
    except px.NackError:
        raise LabError(
            format_lazy(_("the broker nacked the message to {where}"), where=where)
        ) from None
    except px.ChannelClosedByBroker as exc:
        raise LabError(
            format_lazy(
                _("the broker refused it: {code} {text}"),
                code=exc.reply_code,
                text=exc.reply_text,
            )
        ) from exc
    except (px.ConnectionBlockedTimeout, px.AMQPConnectionError) as exc:
        raise LabError(
            format_lazy(
                _("{blocked}, or the connection was lost ({error})"),
                blocked=BLOCKED,
                error=repr(exc),
            )
        ) from exc
    finally:
        amqp.close_quietly(connection)
    return Published(
        True,
        format_lazy(_("published to {where}; message id {id}"), where=where, id=props.message_id),
    )


# --- exercise versions, copies and trials (the admin; docs/authoring.md) --------------------


class ExerciseReadOnly(Exception):
    """A built-in exercise's text is the catalogue's: it is changed only by loading the
    catalogue, and edited as a copy (exercise_duplicate)."""


def exercise_commit(*, exercise: Exercise, author=None) -> Exercise:
    """Saves an exercise whose text `exercise_apply_source` set, and keeps a changed text as
    a new version (`ExerciseVersion`, by `author` where known). The number is counted from
    the row as it is now, under a lock: two people saving at once make two versions, not
    one number twice."""
    with transaction.atomic():
        saved = (
            Exercise.objects.select_for_update()
            .filter(pk=exercise.pk)
            .values("version", "source")
            .first()
            if exercise.pk
            else None
        )
        if saved is not None:
            exercise.version = saved["version"] + (saved["source"] != exercise.source)
        exercise.save()
        ExerciseVersion.objects.get_or_create(
            exercise=exercise,
            number=exercise.version,
            defaults={"source": exercise.source, "author": author},
        )
    return exercise


def exercise_edit(*, exercise: Exercise, author) -> Exercise:
    """An instructor's save from the admin: as `exercise_commit`, refusing a change of a
    built-in exercise's text (ExerciseReadOnly), however the request was made."""
    if exercise.builtin and exercise.pk:
        saved = Exercise.objects.filter(pk=exercise.pk).values_list("source", flat=True).first()
        if saved is not None and saved != exercise.source:
            raise ExerciseReadOnly(_("built-in: duplicate it to edit"))
    return exercise_commit(exercise=exercise, author=author)


def exercise_version_restore(*, version: ExerciseVersion, author) -> Exercise:
    """Makes an earlier text the exercise's newest again, as a new version, validated as
    any save (SpecError). Restoring the current text changes nothing."""
    exercise = version.exercise
    if exercise.builtin:
        raise ExerciseReadOnly(_("built-in: duplicate it to edit"))
    if version.source == exercise.source:
        return exercise
    slug = parse_spec(version.source).slug
    if Exercise.objects.filter(slug=slug).exclude(pk=exercise.pk).exists():
        raise SpecError(
            [
                gettext(
                    "slug: another exercise is called '{slug}' now; restore it as a copy"
                ).format(slug=slug)
            ]
        )
    exercise_apply_source(exercise=exercise, source=version.source)
    return exercise_commit(exercise=exercise, author=author)


SLUG_MAX = 63


def _copy_slug(slug: str) -> str:
    """`<slug>-copy`, else `<slug>-copy-2`, `-copy-3`, ...: the first free one, within the
    slug's length."""
    for n in range(1, 1000):
        suffix = "-copy" if n == 1 else f"-copy-{n}"
        candidate = slug[: SLUG_MAX - len(suffix)].rstrip("-") + suffix
        if not Exercise.objects.filter(slug=candidate).exists():
            return candidate
    raise SpecError([gettext("slug: '{slug}' has too many copies").format(slug=slug)])


def _copy_title(spec: ExerciseSpec) -> str:
    """The exercise's title as YAML, each language's text marked as a copy in that
    language. JSON strings are valid YAML scalars, so the texts need no other quoting."""
    texts = {"en": spec.title.en, **{k: v for k, v in (spec.title.model_extra or {}).items() if v}}
    lines = ["title:"]
    for code, text in texts.items():
        with translation.override(code):
            mark = gettext("(copy)")  # not inside the f-string: makemessages would miss it
            marked = f"{text} {mark}"
        lines.append(f"  {code}: {json.dumps(marked, ensure_ascii=False)}")
    return "\n".join(lines) + "\n"


# A top-level key of the document and the lines indented under it.
_TOP_LEVEL_KEY = r"^{key}:[^\n]*\n(?:(?:[ \t]*\n)*[ \t]+[^\n]*\n)*"


def _copy_source(source: str, slug: str) -> str:
    """The document with its slug and title replaced and nothing else changed (comments,
    order and layout stay), checked by parsing it again."""
    spec = parse_spec(source)
    text = source if source.endswith("\n") else source + "\n"
    text, slugs = re.subn(r"^slug:[^\n]*$", f"slug: {slug}", text, count=1, flags=re.M)
    block = re.compile(_TOP_LEVEL_KEY.format(key="title"), flags=re.M)
    text, titles = block.subn(lambda _m: _copy_title(spec), text, count=1)
    copy = parse_spec(text) if slugs and titles else None
    if copy is None or copy.slug != slug or copy.title.en == spec.title.en:
        raise SpecError(
            [gettext("(document): the slug and title could not be rewritten; copy it by hand")]
        )
    return text


def exercise_duplicate(*, exercise: Exercise, author) -> Exercise:
    """A copy of the exercise's saved text to edit: a new slug (`<slug>-copy`, ...) and
    "(copy)" in its title, written into its YAML; not built-in, not published, version 1,
    `copied_from` the original."""
    copy = Exercise(copied_from=exercise, builtin=False, published=False)
    exercise_apply_source(
        exercise=copy, source=_copy_source(exercise.source, _copy_slug(exercise.slug))
    )
    return exercise_commit(exercise=copy, author=author)


# A lab needs an exercise: a text tried from the admin's add form (no exercise yet) runs as
# its author's draft. A draft's slug starts with "_", which no exercise's slug may (the
# format's SLUG_PATTERN), so it never meets one; it is unpublished and hidden from the
# admin's list; its own text is the first one tried (each trial's lab keeps its own).
TRIAL_DRAFT_PREFIX = "_trial-"


def exercise_hidden_draft(*, user, source: str, prefix: str) -> tuple[Exercise, bool]:
    """A user's hidden exercise (`<prefix><user id>`: no slug of a real exercise starts
    with `_`, so it is never listed, never published): what their labs of a text that is no
    exercise (a trial of a new one, a sandbox) run under, as a lab needs an exercise. Made
    on first use; returns (draft, created)."""
    spec = parse_spec(source)
    draft, created = Exercise.objects.get_or_create(
        slug=f"{prefix}{user.pk}",
        defaults={
            "title": spec.title.en,
            "level": spec.level,
            "minutes": spec.minutes,
            "source": source,
            "published": False,
        },
    )
    return draft, created


def lab_session_try(*, source: str, user, exercise: Exercise | None) -> LabSession:
    """A throwaway lab (`trial`) of a text not yet saved, for `user` (an instructor trying
    an edit): `exercise` is the one being edited, None for a new one (the user's draft).
    The text is validated first (SpecError); the lab counts against the user's limits like
    any lab; a new trial of the same exercise ends the user's earlier ones. Nothing is
    left in the database or on the broker when it cannot start. Trials end by themselves
    soon after their page is closed (exercises/sweep.py)."""
    parse_spec(source)
    created = False
    if exercise is None:
        exercise, created = exercise_hidden_draft(
            user=user, source=source, prefix=TRIAL_DRAFT_PREFIX
        )
    for earlier in LabSession.objects.filter(owner=user, exercise=exercise, trial=True).exclude(
        state=LabSession.State.ENDED
    ):
        lab_session_stop(session=earlier)
    try:
        return lab_session_start(exercise=exercise, owner=user, source=source, trial=True)
    except BaseException:
        if created:
            exercise.delete()
        raise
