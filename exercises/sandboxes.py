"""A team's sandbox (docs/sandboxes.md): a lab without steps that its owner, the members of
its team (a Django group) and whoever joined through one of its invitations see and change
together. Services (writes) and selectors (reads) of sandboxes; the lab page, its endpoints
and its socket are the lab's own, with the access of exercises/selectors.py.

A lab needs an exercise: a sandbox runs its owner's hidden exercise `_sandbox-<user>` (as
a trial runs `_trial-<user>`), and its own text in `LabSession.source`: the document it
was started from, with the sandbox's name as its title, no steps, on the shared broker.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import yaml
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from pydantic import BaseModel

from labconsole.broker import amqp
from labconsole.broker.brokers import SHARED
from labconsole.broker.management import BrokerError

from . import services
from .definitions import (
    DefinitionsError,
    Skipped,
    definitions_read,
    exercise_definitions,
    topology_from_definitions,
)
from .forms import AddConsumerForm
from .models import Exercise, LabSession, SandboxInvite, SandboxMember, SandboxViewer, Workload
from .selectors import can_end_sandbox, localized
from .spec import Behaviour, Consumer, ExerciseSpec, Producer, SpecError, parse_spec

log = logging.getLogger(__name__)

SANDBOX_DRAFT_PREFIX = "_sandbox-"
NAME_MAX = 80
#: Seconds after which a page not heard from (its socket pings every 20 s) is taken for
#: gone: a browser that crashed, a lost network. The page's own list (sandbox.js) reads
#: it from the People card.
PRESENCE_SECONDS = 50
#: Settings a workload row keeps that are the lab's, not the document's.
RUNTIME_SETTINGS = ("load", "routing_key_weights")


class SandboxRefused(services.LabError):
    """A sandbox could not be made or joined; the message says why, for a person."""


# --- the sandbox's document ---------------------------------------------------------------


def _document(data: dict) -> str:
    """The document's YAML, checked by reading it back as any exercise is."""
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    parse_spec(text)
    return text


def _sandbox_data(spec: ExerciseSpec, *, name: str) -> dict:
    """The exercise as a sandbox runs it: its topology, workloads, users and alerts, under
    the sandbox's name, without steps, its topology always editable, on the shared broker."""
    data = spec.model_dump(mode="json")
    data.update(
        title={"en": name},
        order=None,
        steps=[],
        topology_edits=True,
        broker=SHARED,
    )
    return data


def sandbox_source_empty(*, name: str) -> str:
    """An empty vhost: nothing declared, nothing running."""
    return _document(
        {
            "version": 1,
            "slug": "sandbox",
            "title": {"en": name},
            "summary": {"en": "A team's sandbox."},
            "description": {"en": "A team's sandbox: a topology built together."},
            "level": "beginner",
            "minutes": 60,
            "topology": {"exchanges": [], "queues": [], "bindings": [], "policies": []},
            "steps": [],
        }
    )


def sandbox_source_from_exercise(*, exercise: Exercise, name: str) -> str:
    """A catalogue exercise's topology and workloads, without its steps."""
    return _document(_sandbox_data(exercise.spec, name=name))


def sandbox_source_from_yaml(*, raw: bytes, name: str, filename: str) -> str:
    """An exercise document (an export of a sandbox, or any exercise) without its steps.
    Raises SpecError naming the file and where in it."""
    return _document(_sandbox_data(parse_spec(raw, source=filename), name=name))


@dataclass
class FromDefinitions:
    source: str
    skipped: list[Skipped] = field(default_factory=list)


def sandbox_source_from_definitions(
    *, raw: bytes, name: str, filename: str, vhost: str | None = None
) -> FromDefinitions:
    """A RabbitMQ definitions file's topology (of `vhost`, for a file of several), and
    what it held that a sandbox does not (as the admin's import reports it). Raises
    DefinitionsError."""
    imported = topology_from_definitions(definitions_read(raw, source=filename), vhost=vhost)
    data = yaml.safe_load(sandbox_source_empty(name=name))
    data["topology"] = imported.topology
    if imported.plugins:
        data["plugins"] = imported.plugins
    try:
        return FromDefinitions(_document(data), imported.skipped)
    except SpecError as exc:
        raise DefinitionsError(list(exc.errors)) from None


# --- creating and ending ------------------------------------------------------------------


def sandbox_teams(*, user) -> list[Group]:
    """The groups a sandbox of `user` may belong to: their own."""
    return list(user.groups.order_by("name"))


def sandbox_create(*, owner, name: str, source: str, team: Group | None = None) -> LabSession:
    """Starts a sandbox of `owner` (`team` one of their groups, or none) running `source`
    (one of the sandbox_source_* documents). Its limits are the SANDBOX_* settings; it
    counts against the owner's labs like any lab. Raises LabError (LimitReached)."""
    name = name.strip()
    if not name:
        raise SandboxRefused(_("name: give the sandbox a name"))
    if len(name) > NAME_MAX:
        raise SandboxRefused(
            _("name: at most {limit} characters (this one has {length})").format(
                limit=NAME_MAX, length=len(name)
            )
        )
    if team is not None and not owner.groups.filter(pk=team.pk).exists():
        raise SandboxRefused(_("team: you are not in the group '{team}'").format(team=team.name))
    return services.lab_session_start(
        exercise=services.exercise_hidden_draft(
            user=owner, source=source, prefix=SANDBOX_DRAFT_PREFIX
        )[0],
        owner=owner,
        source=source,
        sandbox=True,
        team=team,
    )


def sandbox_end(*, session: LabSession, user) -> LabSession:
    """Ends the sandbox: its owner's to do, and staff's."""
    if not can_end_sandbox(user, session):
        raise SandboxRefused(_("only the sandbox's owner ends it"))
    return services.lab_session_stop(session=session)


# --- invitations --------------------------------------------------------------------------


def sandbox_invite_create(*, session: LabSession, user) -> SandboxInvite:
    """A new link into the sandbox (anyone of the team makes one)."""
    if not session.is_active:
        raise SandboxRefused(_("this sandbox has ended"))
    return SandboxInvite.objects.create(
        session=session, token=secrets.token_urlsafe(32), created_by=user
    )


def sandbox_invite_revoke(*, invite: SandboxInvite) -> int:
    """Revokes the link: nobody joins through it any more, and whoever did loses access
    (their page's socket is refused at its next connection, every request at once).
    Returns how many people lost it."""
    with transaction.atomic():
        SandboxInvite.objects.filter(pk=invite.pk, revoked_at=None).update(
            revoked_at=timezone.now()
        )
        lost, _by_kind = SandboxMember.objects.filter(invite=invite).delete()
    invite.refresh_from_db()
    return lost


def sandbox_join(*, token: str, user) -> LabSession:
    """Lets `user` into the sandbox the invitation is for (once; its team needs none)."""
    invite = (
        SandboxInvite.objects.select_related("session").filter(token=token).first()
        if token
        else None
    )
    if invite is None:
        raise SandboxRefused(_("This invitation link is not known: ask for a new one."))
    if invite.revoked_at is not None:
        raise SandboxRefused(
            _("This invitation was revoked: ask the sandbox's team for a new one.")
        )
    session = invite.session
    if not session.is_active:
        raise SandboxRefused(_("This sandbox has ended."))
    if session.owner_id != user.pk:
        SandboxMember.objects.get_or_create(session=session, user=user, defaults={"invite": invite})
    return session


# --- export -------------------------------------------------------------------------------


def _producer_document(workload: Workload) -> dict:
    """A producer's current settings as a document writes it (the inverse of
    services._workload_settings)."""
    s = workload.settings
    data = {k: v for k, v in s.items() if k in Producer.model_fields and k != "routing_keys"}
    keys, weights = s.get("routing_keys") or [], s.get("routing_key_weights") or []
    data["routing_keys"] = [
        {"key": key, "weight": weight} for key, weight in zip(keys, weights, strict=False)
    ]
    return {"name": workload.name, **data, "autostart": workload.running}


def _consumer_document(workload: Workload) -> dict:
    s = workload.settings
    own = {k: v for k, v in s.items() if k in Consumer.model_fields}
    behaviour = {k: v for k, v in s.items() if k in Behaviour.model_fields}
    return {"name": workload.name, **own, "behaviour": behaviour, "autostart": workload.running}


def sandbox_export_yaml(*, session: LabSession) -> tuple[str, str]:
    """The sandbox as it is now, as an exercise document: its current topology (as edited)
    and workloads (with their current settings, running ones starting by themselves), no
    steps. A sandbox made from it is the same sandbox. Returns the file's name and text."""
    data = _sandbox_data(session.spec, name=localized(session.spec.title))
    data["workloads"] = {
        "producers": [
            _producer_document(w)
            for w in session.workloads.filter(kind=Workload.Kind.PRODUCER).order_by("id")
        ],
        "consumers": [
            _consumer_document(w)
            for w in session.workloads.filter(kind=Workload.Kind.CONSUMER).order_by("id")
        ],
    }
    return f"sandbox-{session.id}.yaml", _document(data)


def sandbox_export_definitions(*, session: LabSession) -> tuple[str, dict]:
    """The sandbox's current topology as a RabbitMQ definitions file of its vhost."""
    return f"sandbox-{session.id}.json", exercise_definitions(
        session.spec.topology, vhost=session.vhost
    )


# --- reads --------------------------------------------------------------------------------


def _user_name(user) -> str:
    return user.get_full_name() or user.get_username()


def sandboxes_of(*, user) -> list[dict]:
    """The sandboxes `user` is in (their own, their teams', those they joined), running
    first, newest first."""
    joined = SandboxMember.objects.filter(
        user=user, invite__isnull=False, invite__revoked_at__isnull=True
    ).values("session_id")
    rows = (
        LabSession.objects.filter(sandbox=True)
        .filter(Q(owner=user) | Q(team__in=user.groups.all()) | Q(pk__in=joined))
        .select_related("owner", "team")
        .distinct()
        .order_by("-created_at")
    )
    active = [s for s in rows if s.is_active]
    ended = [s for s in rows if not s.is_active][:10]
    here = sandbox_people_here(sessions=active)
    return [
        {
            "here": here.get(s.id, []),
            "id": s.id,
            "name": localized(s.spec.title),
            "url": s.get_absolute_url(),
            "owner": _user_name(s.owner),
            "team": s.team.name if s.team else "",
            "active": s.is_active,
            "created_at": s.created_at,
            "mine": s.owner_id == user.pk,
        }
        for s in active + ended
    ]


def sandbox_view(*, session: LabSession, user) -> dict:
    """The sandbox's bits of the lab page: its name and team, its invitations (each
    with how many joined through it), its limits, the choices of its Add a consumer
    form, and what its owner may do."""
    invites = [
        {
            "id": i.pk,
            "url": reverse("sandbox-join", args=[i.token]),
            "created_by": _user_name(i.created_by),
            "created_at": i.created_at,
            "revoked": i.revoked_at is not None,
            "members": [_user_name(m.user) for m in i.members.select_related("user")],
            "revoke_url": reverse("sandbox-invite-revoke", args=[session.id, i.pk]),
        }
        for i in session.invites.select_related("created_by").order_by("-created_at")
    ]
    return {
        "name": localized(session.spec.title),
        "team": session.team.name if session.team else "",
        "owner": _user_name(session.owner),
        "me": _user_name(user),
        "presence_seconds": PRESENCE_SECONDS,
        "invites": invites,
        "invite_url": reverse("sandbox-invites", args=[session.id]),
        "export_yaml_url": reverse("sandbox-export", args=[session.id, "yaml"]),
        "export_definitions_url": reverse("sandbox-export", args=[session.id, "definitions"]),
        "may_end": can_end_sandbox(user, session),
        "limits_url": reverse("sandbox-limits", args=[session.id]),
        # The Replay card (docs/sandboxes.md "Replay"): none when no history is kept.
        "replay_url": reverse("lab-replay", args=[session.id])
        if settings.SANDBOX_REPLAY_SECONDS > 0
        else "",
        "limits": {
            "queues": settings.SANDBOX_MAX_QUEUES,
            "connections": settings.SANDBOX_MAX_CONNECTIONS,
            "channels": settings.SANDBOX_MAX_CHANNELS,
            "queue_length": settings.SANDBOX_QUEUE_MAX_LENGTH,
            "queue_bytes": settings.SANDBOX_QUEUE_MAX_BYTES,
            "rate": settings.SANDBOX_MAX_RATE,
        },
        "acks": AddConsumerForm.base_fields["ack"].choices,
        "on_fails": AddConsumerForm.base_fields["on_fail"].choices,
    }


def _cap(queue: dict, policy_key: str, argument: str) -> int | None:
    """The lowest of a queue's own argument and its effective policy's value (the
    operator policy and the team's own, merged by the broker)."""
    given = [
        v
        for v in (
            (queue.get("effective_policy_definition") or {}).get(policy_key),
            (queue.get("arguments") or {}).get(argument),
        )
        if isinstance(v, int) and not isinstance(v, bool)
    ]
    return min(given, default=None)


def sandbox_full_queues(*, session: LabSession) -> list[dict]:
    """The sandbox's queues at the length or the bytes their cap allows (the broker drops
    their oldest messages, or refuses new ones, from there), as the management API last
    counted their ready messages: `by` says which cap, `limit` what it is. A queue is full
    by bytes when one more message of its average size would not fit."""
    try:
        queues = session.broker.api().queue_fill(session.vhost)
    except BrokerError:
        return []
    full = []
    for q in queues or []:
        if q["name"] == amqp.firehose_queue():
            continue
        ready = q.get("messages_ready") or 0
        size = q.get("message_bytes_ready") or 0
        length_cap = _cap(q, "max-length", "x-max-length")
        bytes_cap = _cap(q, "max-length-bytes", "x-max-length-bytes")
        row = {"name": q["name"], "messages": ready, "bytes": size}
        if length_cap is not None and ready >= length_cap:
            full.append({**row, "by": "length", "limit": length_cap})
        elif bytes_cap is not None and ready and size + size / ready > bytes_cap:
            full.append({**row, "by": "bytes", "limit": bytes_cap})
    return full


# --- presence (docs/sandboxes.md) ---------------------------------------------------------


class Presence(BaseModel):
    """One open page of a sandbox saying it is there (`hello` on connecting, then `here`
    with every ping and in answer to another page's hello or goodbye) or gone (`left`).
    Sent on the lab's flow stream, `lab.<id>.presence`, to every page of the sandbox in
    every web process."""

    type: Literal["presence"] = "presence"
    event: Literal["hello", "here", "left"]
    socket: str
    user: int
    name: str


def sandbox_presence_send(*, session: LabSession, presence: Presence) -> None:
    """Tells every open page of the sandbox, and keeps it for the list of sandboxes
    (SandboxViewer): a page that says hello or here is there now, one that left is not."""
    try:
        if presence.event == "left":
            SandboxViewer.objects.filter(socket=presence.socket).delete()
        else:
            SandboxViewer.objects.update_or_create(
                socket=presence.socket,
                defaults={
                    "session": session,
                    "user_id": presence.user,
                    "name": presence.name,
                    "seen_at": timezone.now(),
                },
            )
    except DatabaseError:
        # The list of sandboxes misses this page a while; the page itself goes on.
        log.warning("sandbox %s: presence not stored", session.id, exc_info=True)
    services.send_quietly(
        amqp.lab_key(session.id, "presence"),
        presence.model_dump(),
        exchange=amqp.flow_exchange(),
    )


def sandbox_people_here(*, sessions: list[LabSession]) -> dict[str, list[str]]:
    """Who has a page of each of `sessions` open now (heard from in the last
    PRESENCE_SECONDS), by lab id: each person once, by name."""
    since = timezone.now() - timedelta(seconds=PRESENCE_SECONDS)
    here: dict[str, set[str]] = {}
    for lab, name in SandboxViewer.objects.filter(
        session__in=sessions, seen_at__gte=since
    ).values_list("session_id", "name"):
        here.setdefault(lab, set()).add(name)
    return {lab: sorted(names, key=str.casefold) for lab, names in here.items()}


def sandbox_viewers_sweep() -> int:
    """Deletes the pages not heard from for PRESENCE_SECONDS (their sockets never said
    goodbye: a web process that died). Returns how many."""
    since = timezone.now() - timedelta(seconds=PRESENCE_SECONDS)
    return SandboxViewer.objects.filter(seen_at__lt=since).delete()[0]


def presence_answer_needed(text: str, *, socket: str) -> bool:
    """Whether a message forwarded to the page with `socket` is another page's hello or
    goodbye, which that page answers with its own `here` (so a new page learns who is
    there, and a goodbye of one of several tabs of a person does not hide them)."""
    if '"presence"' not in text:
        return False
    try:
        message: dict[str, Any] = json.loads(text)
    except ValueError:
        return False
    return message.get("event") in ("hello", "left") and message.get("socket") != socket
