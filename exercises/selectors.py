"""Reads: what a user may see, shaped for the pages and the stream."""

from __future__ import annotations

import logging
from typing import get_args

import markdown
import nh3
from django.urls import reverse
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import get_language, pgettext_lazy
from django.utils.translation import gettext_lazy as _

from labconsole.workloads.ledger import page_counters

from .limits import LIMITS
from .models import Exercise, LabSession, SandboxMember, Workload
from .spec import BUILTIN_EXCHANGES, Exchange, LocalizedText, Queue, SpecError
from .topology import lab_graph, topology_version

log = logging.getLogger(__name__)

LEVELS = ["beginner", "intermediate", "advanced"]
LEVEL_NAMES = {
    "beginner": _("beginner"),
    "intermediate": _("intermediate"),
    "advanced": _("advanced"),
}

# The catalogue's tags that are words, in the reader's language. Tags that name a RabbitMQ
# thing (x-death, quorum-queues, publisher-confirms, ...) read the same in any language,
# as do the tags an instructor writes: they are shown as they are.
TAG_NAMES = {
    "acknowledgements": pgettext_lazy("exercise tag", "acknowledgements"),
    "alerts": pgettext_lazy("exercise tag", "alerts"),
    "analytics": pgettext_lazy("exercise tag", "analytics"),
    "audit": pgettext_lazy("exercise tag", "audit"),
    "basics": pgettext_lazy("exercise tag", "basics"),
    "cluster": pgettext_lazy("exercise tag", "cluster"),
    "compensation": pgettext_lazy("exercise tag", "compensation"),
    "durability": pgettext_lazy("exercise tag", "durability"),
    "events": pgettext_lazy("exercise tag", "events"),
    "failover": pgettext_lazy("exercise tag", "failover"),
    "load-test": pgettext_lazy("exercise tag", "load test"),
    "logging": pgettext_lazy("exercise tag", "logging"),
    "microservices": pgettext_lazy("exercise tag", "microservices"),
    "monitoring": pgettext_lazy("exercise tag", "monitoring"),
    "offsets": pgettext_lazy("exercise tag", "offsets"),
    "operations": pgettext_lazy("exercise tag", "operations"),
    "patterns": pgettext_lazy("exercise tag", "patterns"),
    "performance": pgettext_lazy("exercise tag", "performance"),
    "permissions": pgettext_lazy("exercise tag", "permissions"),
    "persistence": pgettext_lazy("exercise tag", "persistence"),
    "plugin": pgettext_lazy("exercise tag", "plugin"),
    "poison-messages": pgettext_lazy("exercise tag", "poison messages"),
    "priority": pgettext_lazy("exercise tag", "priority"),
    "project": pgettext_lazy("exercise tag", "project"),
    "queues": pgettext_lazy("exercise tag", "queues"),
    "redelivery": pgettext_lazy("exercise tag", "redelivery"),
    "reliability": pgettext_lazy("exercise tag", "reliability"),
    "replay": pgettext_lazy("exercise tag", "replay"),
    "restart": pgettext_lazy("exercise tag", "restart"),
    "retention": pgettext_lazy("exercise tag", "retention"),
    "retries": pgettext_lazy("exercise tag", "retries"),
    "routing": pgettext_lazy("exercise tag", "routing"),
    "saga": pgettext_lazy("exercise tag", "saga"),
    "security": pgettext_lazy("exercise tag", "security"),
    "sharding": pgettext_lazy("exercise tag", "sharding"),
    "transactions": pgettext_lazy("exercise tag", "transactions"),
    "users": pgettext_lazy("exercise tag", "users"),
}


def tag_items(tags) -> list[dict]:
    """Tags as the pages show them: the value (for the filter) and its name."""
    return [{"value": t, "name": str(TAG_NAMES.get(t, t))} for t in tags]


def level_choices() -> list[tuple[str, str]]:
    """The levels for the catalogue's filter: (value, name in the reader's language)."""
    return [(level, LEVEL_NAMES[level]) for level in LEVELS]


def localized(text: LocalizedText) -> str:
    """An exercise's text in the active language (Django's, chosen by LocaleMiddleware);
    English where the exercise has none in it."""
    return text.get(get_language() or "en")


INSTRUCTORS_GROUP = "Instructors"


def user_is_instructor(user) -> bool:
    """Staff in the "Instructors" group, and staff superusers."""
    if not (user.is_authenticated and user.is_staff):
        return False
    return user.is_superuser or user.groups.filter(name=INSTRUCTORS_GROUP).exists()


def sandbox_is_member(user, session: LabSession) -> bool:
    """Whether `user` is one of a sandbox's team: its owner, a member of its team's group,
    or someone who joined through an invitation not revoked since."""
    if not (session.sandbox and user.is_authenticated):
        return False
    if session.owner_id == user.pk:
        return True
    if session.team_id is not None and user.groups.filter(pk=session.team_id).exists():
        return True
    return SandboxMember.objects.filter(
        session=session, user=user, invite__isnull=False, invite__revoked_at__isnull=True
    ).exists()


def can_act_on_lab(user, session: LabSession) -> bool:
    """Who changes a lab from its page and its endpoints (workloads, steps, publish,
    topology, reset, end): its owner only; a sandbox, its whole team (sandbox_is_member),
    though only its owner and staff end it (can_end_sandbox). The instructor of a class
    resets or ends its labs through the class's own endpoints (exercises/class_views.py)."""
    if not user.is_authenticated:
        return False
    return session.owner_id == user.pk or sandbox_is_member(user, session)


def can_end_sandbox(user, session: LabSession) -> bool:
    """A sandbox is its owner's to end, and staff's (who may end any lab they can see)."""
    if not user.is_authenticated:
        return False
    return session.owner_id == user.pk or (user.is_staff and can_view_lab(user, session))


def can_view_lab(user, session: LabSession) -> bool:
    """Who watches a lab (its page read-only, its JSON, its socket): its owner, the
    instructor of the class it was started in, and staff. Instructors are staff too, and
    see only their own classes' labs, unless they are superusers."""
    if can_act_on_lab(user, session):
        return True
    if not (user.is_authenticated and user.is_staff):
        return False
    if session.classroom_id is not None and session.classroom.instructor_id == user.pk:
        return True
    return user.is_superuser or not user_is_instructor(user)


def lab_allows_sandbox_controls(session: LabSession) -> bool:
    """Whether the lab page offers a sandbox's extra controls (policies in the topology
    editor, adding and removing workloads, purging and peeking at queues)."""
    return session.sandbox


def markdown_html(text: str) -> SafeString:
    html = markdown.markdown(text, extensions=["fenced_code", "tables", "sane_lists"])
    return mark_safe(nh3.clean(html))  # noqa: S308 - sanitised by nh3 just above


def markdown_inline(text: str) -> SafeString:
    """One line of Markdown (a checkpoint, a summary) without the paragraph around it."""
    html = markdown_html(text).strip()
    if html.startswith("<p>") and html.endswith("</p>") and html.count("<p>") == 1:
        html = html[3:-4]
    return mark_safe(html)  # noqa: S308 - sanitised by markdown_html


def exercise_card(exercise: Exercise) -> dict:
    spec = exercise.spec
    return {
        "slug": exercise.slug,
        "title": localized(spec.title),
        "summary": localized(spec.summary),
        "level": spec.level,
        "level_name": LEVEL_NAMES.get(spec.level, spec.level),
        "minutes": spec.minutes,
        "tags": tag_items(spec.tags),
        "url": exercise.get_absolute_url(),
    }


def _readable(exercise: Exercise) -> bool:
    """Whether the stored document still reads. One saved under looser limits of an
    earlier release is left out of the catalogue (and logged), not allowed to break it."""
    try:
        exercise.spec  # noqa: B018 - parsed once per version, then remembered
    except SpecError as exc:
        log.warning(
            "exercise %s (version %s) is not valid: %s", exercise.slug, exercise.version, exc
        )
        return False
    return True


def _catalogue_place(exercise: Exercise) -> tuple:
    """The course's exercises in the course's order (their `order`), then the others by
    level and title."""
    order = exercise.spec.order
    level = LEVELS.index(exercise.level) if exercise.level in LEVELS else len(LEVELS)
    return (order is None, order or 0, level, exercise.title)


def exercises_in_catalogue(exercises=None) -> list[Exercise]:
    """The published exercises that read (of `exercises`, a queryset, if given), in the
    catalogue's order."""
    chosen = (Exercise.objects.all() if exercises is None else exercises).filter(published=True)
    return sorted((e for e in chosen if _readable(e)), key=_catalogue_place)


def exercise_cards(*, tag: str = "", level: str = "") -> tuple[list[dict], list[dict]]:
    """Cards matching the filters, and every tag there is (for the filter), by name."""
    exercises = exercises_in_catalogue()
    tags = sorted(tag_items({t for e in exercises for t in e.tags}), key=lambda t: t["name"])
    cards = [
        exercise_card(e)
        for e in exercises
        if (not tag or tag in e.tags) and (not level or e.level == level)
    ]
    return cards, tags


def exercise_detail(exercise: Exercise) -> dict:
    spec = exercise.spec
    return {
        **exercise_card(exercise),
        "description_html": markdown_html(localized(spec.description)),
        "steps": [{"title": localized(s.title)} for s in spec.steps],
    }


ALERT_METRICS = {
    "messages": _("ready"),
    "unacked": _("unacked"),
    "consumers": _("consumers"),
    "p99_ms": _("p99, ms"),
}


def lab_alerts(session: LabSession) -> list[dict]:
    """The exercise's alert rules as the lab page lists them: the title, and the condition
    in the reader's language ("orders.dlq: ready > 10 for 5 s")."""
    views = []
    for alert in session.spec.alerts:
        sign, threshold = (">", alert.above) if alert.above is not None else ("<", alert.below)
        condition = f"{alert.queue}: {ALERT_METRICS[alert.metric]} {sign} {threshold:g}"
        if alert.for_seconds:
            condition += " " + _("for %(seconds)s s") % {"seconds": f"{alert.for_seconds:g}"}
        views.append(
            {
                "name": alert.name,
                "title": localized(alert.title),
                "queue": alert.queue,
                "condition": condition,
            }
        )
    return views


def lab_steps(session: LabSession, passed: set[str]) -> list[dict]:
    """The steps as the lab page shows them: those the learner was shown (the last of them
    is the current one, with the way on to the next once it is complete) and, after them,
    the steps still ahead, by title only."""
    steps = session.spec.steps
    shown = [step.id in session.steps_shown for step in steps]
    current = max((i for i, s in enumerate(shown) if s), default=-1)
    views = []
    for i, step in enumerate(steps):
        complete = all(cp.id in passed for cp in step.checkpoints)
        has_next = i == current and i + 1 < len(steps)
        views.append(
            {
                "id": step.id,
                "title": localized(step.title),
                "instructions_html": markdown_html(localized(step.instructions)),
                "hints": [markdown_html(localized(h)) for h in step.hints],
                "checkpoints": [
                    {
                        "id": cp.id,
                        "description": markdown_inline(localized(cp.description)),
                        "passed": cp.id in passed,
                    }
                    for cp in step.checkpoints
                ],
                "shown": shown[i],
                "current": i == current,
                "complete": complete,
                "next_url": (
                    reverse("lab-step", args=[session.id, steps[i + 1].id]) if has_next else ""
                ),
            }
        )
    return views


def lab_exchanges(session: LabSession) -> list[str]:
    """The exchanges the publish form offers: the lab's own first, the default one last."""
    return [*(x.name for x in session.spec.topology.exchanges), ""]


def lab_current_step(session: LabSession) -> str | None:
    """The step the learner is on: the last one shown, in the exercise's order."""
    shown = [s.id for s in session.spec.steps if s.id in session.steps_shown]
    return shown[-1] if shown else None


def lab_topology_editable(*, session: LabSession) -> bool:
    """Whether the learner may change the topology now: the lab runs, and the exercise (or
    its current step) allows it."""
    return session.is_active and session.spec.topology_edits_allowed(lab_current_step(session))


def lab_topology_view(session: LabSession) -> dict:
    """The Topology panel: what the lab has (to delete, bind or unbind), whether the
    learner may change it now, and how the last change went."""
    from .forms import binding_value

    t = session.spec.topology
    sources = [*(x.name for x in t.exchanges), *BUILTIN_EXCHANGES]
    return {
        "version": topology_version(session.spec),
        "url": reverse("lab-topology", args=[session.id]),
        "panel_url": reverse("lab-topology-panel", args=[session.id]),
        "editable": lab_topology_editable(session=session),
        "active": session.is_active,
        "exchanges": [x.name for x in t.exchanges],
        "sources": sources,
        "queues": [q.name for q in t.queues],
        "bindings": [
            {
                "value": binding_value(b.model_dump()),
                "label": f"{b.source} → {b.destination}"
                + (f" ({b.routing_key})" if b.routing_key else "")
                + (
                    " [" + ", ".join(f"{k}={v}" for k, v in b.arguments.items()) + "]"
                    if b.arguments
                    else ""
                ),
            }
            for b in t.bindings
        ],
        "exchange_types": get_args(Exchange.model_fields["type"].annotation),
        "queue_types": get_args(Queue.model_fields["type"].annotation),
        "objects": len(t.exchanges) + len(t.queues) + len(t.bindings),
        "limit": LIMITS.lab_objects,
    }


def lab_workload_view(workload, url: str, error: str = "") -> dict:
    return {
        "name": workload.name,
        "kind": workload.kind,
        "running": workload.running,
        "settings": workload.settings,
        "url": url,
        "error": error,
    }


def workload_counts(workload: Workload) -> dict[str, int]:
    """A workload's counters as last saved: the higher of its own figures and those its
    lab's monitor last saw of it (the two are saved at different moments; the higher is
    nearer the truth)."""
    counts = dict((workload.progress or {}).get("counts") or {})
    seen = (workload.session.monitor_state or {}).get("record", {}).get("workloads", {})
    for name, value in (seen.get(workload.name) or {}).items():
        counts[name] = max(counts.get(name, 0), value)
    return counts


def lab_last_numbers(session: LabSession) -> dict:
    """What an ended lab last reported, as a snapshot has it: the workloads' counters (the
    learner's own publishes under `@you`) and what the learner published to each exchange.
    No queue depths (its queues are gone) and no events (never kept). `kept` is false when
    nothing was saved: the lab ended before its monitor saved its first record."""
    saved = session.monitor_state or {}
    counters = {
        name: dict(counts)
        for name, counts in (saved.get("record") or {}).get("workloads", {}).items()
    }
    for workload in session.workloads.all():
        counts = workload_counts(workload)
        if counts:
            counters[workload.name] = counts
    for producer, ledger in (saved.get("record") or {}).get("ledger", {}).items():
        counters.setdefault(producer, {}).update(page_counters(ledger))
    unroutable, from_you = saved.get("unroutable") or {}, saved.get("from_you") or {}
    exchanges = {
        x: {
            "rate_in": 0.0,
            "unroutable": unroutable.get(x, 0),
            **({"from_you": from_you[x]} if x in from_you else {}),
        }
        for x in {*unroutable, *from_you}
    }
    return {
        "counters": counters,
        "queues": {},
        "exchanges": exchanges,
        "events": [],
        "kept": "record" in saved or bool(counters),
    }


def lab_state(session: LabSession) -> dict:
    """What a viewer needs at once on (re)connecting, before the monitor's numbers; for an
    ended lab, with the numbers it last reported."""
    state = {
        "lab": {
            "id": session.id,
            "state": session.state,
            "exercise": session.exercise.slug,
            "vhost": session.vhost,
        },
        "graph": lab_graph(session.spec),
        "workloads": {
            w.name: {"kind": w.kind, "running": w.running, "settings": w.settings}
            for w in session.workloads.all()
        },
        "checks": {cp: True for cp in session.results.values_list("checkpoint", flat=True)},
        # What happened to a lab's brokers, as its monitor last saved it: the monitor's
        # snapshot has it newer while the lab runs, and this stands in when it does not
        # answer; for an ended lab it is the timeline as it ended.
        "timeline": (session.monitor_state or {}).get("timeline", []),
    }
    if session.state == LabSession.State.ENDED:
        state.update(lab_last_numbers(session))
    return state
