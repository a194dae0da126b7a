"""Reads: what a user may see, shaped for the pages and the stream."""

from __future__ import annotations

import logging

import markdown
import nh3
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import get_language
from django.utils.translation import gettext_lazy as _

from .models import Exercise, LabSession
from .spec import LocalizedText, SpecError
from .topology import lab_graph

log = logging.getLogger(__name__)

LEVELS = ["beginner", "intermediate", "advanced"]
LEVEL_NAMES = {
    "beginner": _("beginner"),
    "intermediate": _("intermediate"),
    "advanced": _("advanced"),
}


def level_choices() -> list[tuple[str, str]]:
    """The levels for the catalogue's filter: (value, name in the reader's language)."""
    return [(level, LEVEL_NAMES[level]) for level in LEVELS]


def localized(text: LocalizedText) -> str:
    """An exercise's text in the active language (Django's, chosen by LocaleMiddleware);
    English where the exercise has none in it."""
    return text.get(get_language() or "en")


def can_view_lab(user, session: LabSession) -> bool:
    """The owner only, for now; teams and instructors will be added here."""
    return user.is_authenticated and session.owner_id == user.pk


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
        "tags": list(spec.tags),
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


def exercise_cards(*, tag: str = "", level: str = "") -> tuple[list[dict], list[str]]:
    """Cards matching the filters, and every tag there is (for the filter)."""
    exercises = [e for e in Exercise.objects.filter(published=True) if _readable(e)]
    exercises.sort(key=lambda e: (LEVELS.index(e.level) if e.level in LEVELS else 9, e.title))
    tags = sorted({t for e in exercises for t in e.tags})
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


def lab_steps(session: LabSession, passed: set[str]) -> list[dict]:
    return [
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
        }
        for step in session.spec.steps
    ]


def lab_exchanges(session: LabSession) -> list[str]:
    """The exchanges the publish form offers: the lab's own first, the default one last."""
    return [*(x.name for x in session.spec.topology.exchanges), ""]


def lab_workload_view(workload, url: str, error: str = "") -> dict:
    return {
        "name": workload.name,
        "kind": workload.kind,
        "running": workload.running,
        "settings": workload.settings,
        "url": url,
        "error": error,
    }


def lab_state(session: LabSession) -> dict:
    """What a viewer needs at once on (re)connecting, before the monitor's numbers."""
    return {
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
    }
