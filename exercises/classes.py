"""Classes: an instructor's class, its learners joining it with a code, the labs they start
in it, and the summary its live dashboard shows. Services (writes) and selectors (reads) of
classes, in the project's `<entity>_<action>` shape (docs/classes.md)."""

from __future__ import annotations

import logging
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import IntegrityError, transaction
from django.db.models import Count, Q
from django.db.models.fields.json import KeyTransform
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

from . import cluster_pool, selectors, services
from .models import CheckpointResult, ClassMember, Classroom, Exercise, LabSession
from .selectors import user_is_instructor

log = logging.getLogger(__name__)

# Said over a lab's live stream to its open pages (labconsole/flow/stream.py keeps the
# message of a state it has no text of its own for).
CLASS_MESSAGE_STATE = "class-message"


class ClassError(Exception):
    """A class could not be joined or a lab started in it; the message says why, for a
    person."""


# --- who is who ----------------------------------------------------------------------------


def can_instruct(user: AbstractBaseUser | AnonymousUser, classroom: Classroom) -> bool:
    """Who runs the class's dashboard, its messages and its learners' labs: its own
    instructor, and staff superusers."""
    if not user_is_instructor(user):
        return False
    return classroom.instructor_id == user.pk or user.is_superuser


# --- reads ---------------------------------------------------------------------------------


def classroom_state(classroom: Classroom, *, now: datetime | None = None) -> str:
    """ "upcoming", "running" or "ended" (ended by hand, or past its end)."""
    now = now or timezone.now()
    if classroom.ended_at or now >= classroom.ends_at:
        return "ended"
    return "upcoming" if now < classroom.starts_at else "running"


def classroom_exercises(classroom: Classroom) -> list[Exercise]:
    """The class's exercises that are published and read, in the catalogue's order."""
    return selectors.exercises_in_catalogue(classroom.exercises.all())


def classrooms_taught(*, user) -> list[dict]:
    """The instructor's classes, newest first, with their state and how many joined."""
    now = timezone.now()
    return [
        {"classroom": c, "state": classroom_state(c, now=now), "learners": c.learners}
        for c in Classroom.objects.filter(instructor=user).annotate(learners=Count("members"))
    ]


def classroom_join_url(classroom: Classroom) -> str:
    return reverse("class-join-code", args=[classroom.join_code])


def membership_current(*, user) -> ClassMember | None:
    """The running class the user most recently joined, if any."""
    if not user.is_authenticated:
        return None
    now = timezone.now()
    return (
        ClassMember.objects.select_related("classroom")
        .filter(
            user=user,
            classroom__ended_at__isnull=True,
            classroom__starts_at__lte=now,
            classroom__ends_at__gt=now,
        )
        .order_by("-joined_at")
        .first()
    )


def lab_owner_name(*, session: LabSession) -> str:
    """The learner's name as the class knows them, else their username."""
    if session.classroom_id:
        member = ClassMember.objects.filter(
            classroom_id=session.classroom_id, user_id=session.owner_id
        ).first()
        if member:
            return member.display_name
    return session.owner.get_username()


def lab_class_message(*, session: LabSession) -> str:
    """The latest message of the class the lab was started in, while the class runs."""
    if session.classroom_id is None or session.classroom.ended_at:
        return ""
    return session.classroom.message


def _step_complete(step, passed: set[str]) -> bool:
    return all(cp.id in passed for cp in step.checkpoints)


def classroom_learner_view(*, classroom: Classroom, user) -> list[dict]:
    """The class's exercises as a learner sees them on the class's page: how far they got
    in their latest lab of each, and whether it runs (Continue) or not (Start)."""
    labs: dict[int, LabSession] = {}
    for lab in LabSession.objects.filter(classroom=classroom, owner=user).order_by("created_at"):
        labs[lab.exercise_id] = lab
    passed_by_lab: dict[str, set[str]] = {}
    for lab_id, checkpoint in CheckpointResult.objects.filter(
        session_id__in=[lab.pk for lab in labs.values()]
    ).values_list("session_id", "checkpoint"):
        passed_by_lab.setdefault(lab_id, set()).add(checkpoint)
    views = []
    for exercise in classroom_exercises(classroom):
        steps = exercise.spec.steps
        lab = labs.get(exercise.pk)
        passed = passed_by_lab.get(lab.pk, set()) if lab else set()
        views.append(
            {
                "slug": exercise.slug,
                "title": selectors.localized(exercise.spec.title),
                "steps": len(steps),
                "complete": sum(_step_complete(s, passed) for s in steps),
                "lab_url": lab.get_absolute_url() if lab and lab.is_active else "",
                "start_url": reverse("class-lab-start", args=[classroom.pk, exercise.slug]),
            }
        )
    return views


def _failing(lab: dict, alerts: dict, class_running: bool) -> list[str]:
    """Why a learner's lab needs the instructor: it ended while the class runs (by itself,
    the sweeper, or the learner), or its alert rules fire."""
    reasons = []
    if lab["state"] == LabSession.State.ENDED and class_running:
        reasons.append(str(_("lab ended")))
    for name, (state, _since) in (alerts or {}).items():
        if state == "firing":
            reasons.append(str(format_lazy(_("alert {name} firing"), name=name)))
    return reasons


def classroom_dashboard(*, classroom: Classroom, now: datetime | None = None) -> dict:
    """The class as its dashboard draws it: the exercises' steps (columns), each learner's
    latest lab of each exercise (cells passed / current / todo), who has not moved for
    CLASS_IDLE_MINUTES, whose lab fails, and how many passed each step. A fixed number of
    queries whatever the class's size (members, exercises, labs, results), so that the
    dashboard's socket can read it twice a second."""
    now = now or timezone.now()
    state = classroom_state(classroom, now=now)
    idle_after = timedelta(minutes=settings.CLASS_IDLE_MINUTES)
    exercises = classroom_exercises(classroom)
    members = list(classroom.members.values_list("user_id", "display_name"))
    labs: dict[tuple[int, int], dict] = {}
    for lab in (
        LabSession.objects.filter(classroom=classroom)
        .order_by("created_at")
        .values("id", "owner_id", "exercise_id", "state", "steps_shown", "created_at")
        .annotate(alerts=KeyTransform("alerts", "monitor_state"))
    ):
        labs[(lab["owner_id"], lab["exercise_id"])] = lab
    results: dict[str, dict[str, datetime]] = {}
    for lab_id, checkpoint, at in CheckpointResult.objects.filter(
        session_id__in=[lab["id"] for lab in labs.values()]
    ).values_list("session_id", "checkpoint", "passed_at"):
        results.setdefault(lab_id, {})[checkpoint] = at

    columns = []
    counts: dict[str, dict[str, int]] = {}
    for exercise in exercises:
        steps = exercise.spec.steps
        columns.append(
            {
                "slug": exercise.slug,
                "title": selectors.localized(exercise.spec.title),
                "steps": [{"id": s.id, "title": selectors.localized(s.title)} for s in steps],
            }
        )
        counts[exercise.slug] = {s.id: 0 for s in steps}

    learners = []
    for user_id, name in members:
        row = {"name": name, "labs": {}, "current": None, "idle_since": None, "failing": []}
        moved_latest = None
        for exercise in exercises:
            lab = labs.get((user_id, exercise.pk))
            if lab is None:
                continue
            passed = results.get(lab["id"], {})
            shown = lab["steps_shown"] or {}
            steps = exercise.spec.steps
            shown_ids = [s.id for s in steps if s.id in shown]
            current = shown_ids[-1] if shown_ids else None
            cells = {}
            for step in steps:
                if _step_complete(step, set(passed)):
                    cells[step.id] = "passed"
                    counts[exercise.slug][step.id] += 1
                elif step.id == current:
                    cells[step.id] = "current"
                else:
                    cells[step.id] = "todo"
            moves = [lab["created_at"], *passed.values()]
            moves += [datetime.fromisoformat(at) for at in shown.values()]
            moved = max(moves)
            active = lab["state"] != LabSession.State.ENDED
            failing = _failing(lab, lab["alerts"], state == "running")
            row["labs"][exercise.slug] = {
                "id": lab["id"],
                "state": lab["state"],
                "cells": cells,
                "current": current,
                "moved_at": moved.isoformat(),
                "failing": failing,
                "view_url": reverse("lab", args=[lab["id"]]),
                "reset_url": reverse("class-lab-reset", args=[classroom.pk, lab["id"]])
                if active
                else "",
                "end_url": reverse("class-lab-end", args=[classroom.pk, lab["id"]])
                if active
                else "",
            }
            row["failing"] += [f"{exercise.slug}: {reason}" for reason in failing]
            if active and (moved_latest is None or moved > moved_latest[0]):
                step_title = next(
                    (selectors.localized(s.title) for s in steps if s.id == current), ""
                )
                moved_latest = (moved, exercise.slug, current, step_title)
        if moved_latest:
            moved, slug, step, step_title = moved_latest
            row["current"] = {"exercise": slug, "step": step, "title": step_title}
            if now - moved >= idle_after:
                row["idle_since"] = moved.isoformat()
        learners.append(row)
    return {
        "class": {
            "id": classroom.pk,
            "name": classroom.name,
            "state": state,
            "ends_at": classroom.ends_at.isoformat(),
            "message": classroom.message,
        },
        "idle_minutes": settings.CLASS_IDLE_MINUTES,
        "exercises": columns,
        "learners": learners,
        "counts": counts,
    }


# --- writes --------------------------------------------------------------------------------


def classroom_create(
    *,
    instructor,
    name: str,
    exercises: list[Exercise],
    starts_at: datetime,
    ends_at: datetime,
    capacity: int | None = None,
) -> Classroom:
    """A new class with a join code of its own (a clash with another class's code, rare,
    draws another)."""
    for _attempt in range(5):
        try:
            with transaction.atomic():
                classroom = Classroom.objects.create(
                    name=name,
                    instructor=instructor,
                    starts_at=starts_at,
                    ends_at=ends_at,
                    capacity=capacity,
                )
                classroom.exercises.set(exercises)
                return classroom
        except IntegrityError:
            continue
    raise ClassError(_("no free join code was found; try again"))


def _guest_user(display_name: str):
    """A user for someone who joins without an account: no password to log in with, a
    username nobody chose."""
    user_model = get_user_model()
    user = user_model(username=f"guest-{secrets.token_hex(6)}", first_name=display_name[:150])
    user.set_unusable_password()
    user.save()
    return user


def classroom_join(*, code: str, user, display_name: str) -> ClassMember:
    """Joins the class of `code` as `user` (a signed-in user), or, with no user, as a new
    user of that name only. Joining a class one is in already returns that membership.
    Raises ClassError saying why a join is refused."""
    code = code.strip().upper()
    display_name = display_name.strip()
    classroom = Classroom.objects.filter(join_code=code).first()
    if classroom is None:
        raise ClassError(format_lazy(_("no class has the code {code}"), code=code))
    now = timezone.now()
    state = classroom_state(classroom, now=now)
    if state == "upcoming":
        raise ClassError(
            format_lazy(
                _("this class has not started yet: it starts at {time}"),
                time=formats.date_format(timezone.localtime(classroom.starts_at), "j E Y, H:i"),
            )
        )
    if state == "ended":
        raise ClassError(_("this class has ended"))
    if user is not None and user.is_authenticated:
        mine = ClassMember.objects.filter(classroom=classroom, user=user).first()
        if mine:
            return mine
        display_name = display_name or user.get_username()
    if not display_name:
        raise ClassError(_("enter the name the class will see"))
    with transaction.atomic():
        # One join at a time per class: the capacity and the names are counted under it.
        Classroom.objects.select_for_update().filter(pk=classroom.pk).first()
        if classroom.members.filter(display_name__iexact=display_name).exists():
            raise ClassError(
                format_lazy(
                    _("the name {name} is taken in this class; choose another"),
                    name=display_name,
                )
            )
        if classroom.capacity is not None and classroom.members.count() >= classroom.capacity:
            raise ClassError(
                format_lazy(
                    _("this class is full ({capacity} learners)"), capacity=classroom.capacity
                )
            )
        if user is None or not user.is_authenticated:
            user = _guest_user(display_name)
        try:
            with transaction.atomic():
                return ClassMember.objects.create(
                    classroom=classroom, user=user, display_name=display_name
                )
        except IntegrityError as exc:  # the same name, joined a moment before
            raise ClassError(
                format_lazy(
                    _("the name {name} is taken in this class; choose another"),
                    name=display_name,
                )
            ) from exc


def class_lab_start(*, classroom: Classroom, user, exercise: Exercise) -> LabSession:
    """A member's lab of one of the class's exercises, while the class runs: the running
    one they have of it in this class, else a new one."""
    if not classroom.members.filter(user=user).exists():
        raise ClassError(_("you are not in this class; join it with its code first"))
    if classroom_state(classroom) != "running":
        raise ClassError(_("this class is not running"))
    if exercise not in classroom_exercises(classroom):
        raise ClassError(
            format_lazy(_("{exercise} is not an exercise of this class"), exercise=exercise.slug)
        )
    running = (
        LabSession.objects.filter(classroom=classroom, owner=user, exercise=exercise)
        .exclude(state=LabSession.State.ENDED)
        .first()
    )
    if running:
        return running
    try:
        return services.lab_session_start(exercise=exercise, owner=user, classroom=classroom)
    except services.LabError as exc:
        raise ClassError(str(exc)) from exc


def class_lab(*, classroom: Classroom, lab_id: str) -> LabSession | None:
    """A lab started in the class (what its instructor may reset or end)."""
    return LabSession.objects.filter(classroom=classroom, pk=lab_id).first()


def classroom_end(*, classroom: Classroom) -> Classroom:
    """Ends the class and every lab started in it. Idempotent."""
    now = timezone.now()
    if Classroom.objects.filter(pk=classroom.pk, ended_at__isnull=True).update(ended_at=now):
        classroom.ended_at = now
    for session in LabSession.objects.filter(classroom=classroom).exclude(
        state=LabSession.State.ENDED
    ):
        services.lab_session_stop(session=session)
    cluster_pool.classroom_cluster_stop(classroom=classroom)
    return classroom


def classrooms_end_due(*, now: datetime | None = None) -> list[int]:
    """Ends the classes past their end, and those ended whose labs still run; returns the
    ids of the classes whose labs were ended."""
    now = now or timezone.now()
    over = Q(ends_at__lte=now) | Q(ended_at__isnull=False)
    running = [LabSession.State.STARTING, LabSession.State.RUNNING]
    due = Classroom.objects.filter(over & (Q(ended_at__isnull=True) | Q(labs__state__in=running)))
    ended = []
    for classroom in due.distinct():
        classroom_end(classroom=classroom)
        ended.append(classroom.pk)
    return ended


def classroom_message_send(*, classroom: Classroom, message: str) -> Classroom:
    """Keeps the message for the class's pages and tells every open page of the class's
    running labs at once."""
    classroom.message = message.strip()
    classroom.message_at = timezone.now()
    classroom.save(update_fields=["message", "message_at"])
    for session in LabSession.objects.filter(classroom=classroom).exclude(
        state=LabSession.State.ENDED
    ):
        services.lab_announce_status(
            session=session, state=CLASS_MESSAGE_STATE, message=classroom.message
        )
    return classroom
