"""A team's sandboxes: the list, a new one, joining through an invitation, invitations,
export and ending (docs/sandboxes.md). The sandbox's page is the lab page (views.lab)."""

from __future__ import annotations

import json

from django import forms
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_POST

from . import sandboxes, selectors, services
from .definitions import DefinitionsError
from .limits import LIMITS
from .models import SandboxInvite
from .selectors import exercises_in_catalogue
from .spec import SpecError
from .views import _own_lab, _viewed_lab

START_CHOICES = [
    ("empty", gettext_lazy("An empty vhost")),
    ("exercise", gettext_lazy("A catalogue exercise (its topology and workloads)")),
    ("yaml", gettext_lazy("An exercise YAML file (an exported sandbox, too)")),
    ("definitions", gettext_lazy("A RabbitMQ definitions file (JSON)")),
]


class SandboxForm(forms.Form):
    name = forms.CharField(label=gettext_lazy("Name"), max_length=sandboxes.NAME_MAX)
    team = forms.ChoiceField(label=gettext_lazy("Team"), required=False)
    start = forms.ChoiceField(
        label=gettext_lazy("Start from"), choices=START_CHOICES, widget=forms.RadioSelect
    )
    exercise = forms.ChoiceField(label=gettext_lazy("Exercise"), required=False)
    file = forms.FileField(label=gettext_lazy("File"), required=False)
    vhost = forms.CharField(
        label=gettext_lazy("Virtual host in the file"),
        required=False,
        help_text=gettext_lazy("Only for a definitions file of several virtual hosts."),
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.teams = {str(g.pk): g for g in sandboxes.sandbox_teams(user=user)}
        self.fields["team"].choices = [("", _("No team: invitations only"))] + [
            (pk, g.name) for pk, g in self.teams.items()
        ]
        self.exercises = {e.slug: e for e in exercises_in_catalogue()}
        self.fields["exercise"].choices = [("", "—")] + [
            (slug, selectors.localized(e.spec.title)) for slug, e in self.exercises.items()
        ]

    def clean(self):
        data = super().clean()
        start = data.get("start")
        if start == "exercise" and not data.get("exercise"):
            self.add_error("exercise", _("choose the exercise to start from"))
        if start in ("yaml", "definitions") and not data.get("file"):
            self.add_error("file", _("choose the file to start from"))
        return data

    def source(self) -> tuple[str, list]:
        """The sandbox's document and what the file held that it leaves out. Raises
        SpecError or DefinitionsError naming the file and where in it."""
        d = self.cleaned_data
        name, start = d["name"], d["start"]
        if start == "exercise":
            exercise = self.exercises[d["exercise"]]
            return sandboxes.sandbox_source_from_exercise(exercise=exercise, name=name), []
        if start == "yaml":
            upload = d["file"]
            raw = upload.read(LIMITS.document_bytes + 1)
            return sandboxes.sandbox_source_from_yaml(raw=raw, name=name, filename=upload.name), []
        if start == "definitions":
            upload = d["file"]
            made = sandboxes.sandbox_source_from_definitions(
                raw=upload.read(), name=name, filename=upload.name, vhost=d["vhost"] or None
            )
            return made.source, made.skipped
        return sandboxes.sandbox_source_empty(name=name), []


@require_GET
@login_required
def sandbox_list(request: HttpRequest) -> HttpResponse:
    return render(
        request,
        "exercises/sandbox-list.html",
        {"sandboxes": sandboxes.sandboxes_of(user=request.user)},
    )


@login_required
def sandbox_new(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        form = SandboxForm(user=request.user, initial={"start": "empty"})
        return render(request, "exercises/sandbox-new.html", {"form": form})
    form = SandboxForm(request.POST, request.FILES, user=request.user)
    context: dict = {"form": form}
    status = 400
    if form.is_valid():
        try:
            source, skipped = form.source()
            session = sandboxes.sandbox_create(
                owner=request.user,
                name=form.cleaned_data["name"],
                source=source,
                team=form.teams.get(form.cleaned_data["team"] or ""),
            )
        except (SpecError, DefinitionsError) as exc:
            context["errors"] = list(exc.errors)
        except services.LabError as exc:
            context["errors"] = [str(exc)]
            if isinstance(exc, services.LimitReached):
                status = 429
        else:
            if not skipped:
                return redirect(session.get_absolute_url())
            # Made: what the file held that it left out is said before going on.
            context.update(created=session, skipped=skipped)
            status = 200
    return render(request, "exercises/sandbox-new.html", context, status=status)


@require_GET
@login_required
def sandbox_join(request: HttpRequest, token: str) -> HttpResponse:
    try:
        session = sandboxes.sandbox_join(token=token, user=request.user)
    except sandboxes.SandboxRefused as exc:
        return render(request, "exercises/sandbox-join.html", {"error": str(exc)}, status=404)
    return redirect(session.get_absolute_url())


def _sandbox(request: HttpRequest, lab_id: str, *, act: bool):
    session = (_own_lab if act else _viewed_lab)(request, lab_id)
    if not session.sandbox:
        raise PermissionDenied("this lab is not a sandbox")
    return session


def _invites(request: HttpRequest, session, message: str = "", status: int = 200):
    return render(
        request,
        "exercises/sandbox-panel.html#invites",
        {
            "sandbox": sandboxes.sandbox_view(session=session, user=request.user),
            "invite_message": message,
            "lab": {"state": session.state},
        },
        status=status,
    )


@require_POST
@login_required
def sandbox_invites(request: HttpRequest, lab_id: str) -> HttpResponse:
    """A new invitation link: the box comes back with it on top."""
    session = _sandbox(request, lab_id, act=True)
    try:
        sandboxes.sandbox_invite_create(session=session, user=request.user)
    except sandboxes.SandboxRefused as exc:
        return _invites(request, session, str(exc), status=400)
    return _invites(request, session, _("A new link: send it to whoever should join."))


@require_POST
@login_required
def sandbox_invite_revoke(request: HttpRequest, lab_id: str, invite_id: int) -> HttpResponse:
    session = _sandbox(request, lab_id, act=True)
    invite = get_object_or_404(SandboxInvite, pk=invite_id, session=session)
    lost = sandboxes.sandbox_invite_revoke(invite=invite)
    message = _(
        "Revoked: nobody joins through that link any more, and the {count} who joined "
        "through it can no longer open this sandbox."
    ).format(count=lost)
    return _invites(request, session, message)


@require_GET
@login_required
def sandbox_export(request: HttpRequest, lab_id: str, kind: str) -> HttpResponse:
    session = _sandbox(request, lab_id, act=False)
    if kind == "yaml":
        name, text = sandboxes.sandbox_export_yaml(session=session)
        response = HttpResponse(text, content_type="application/yaml; charset=utf-8")
    elif kind == "definitions":
        name, data = sandboxes.sandbox_export_definitions(session=session)
        response = HttpResponse(json.dumps(data, indent=2), content_type="application/json")
    else:
        return HttpResponse(
            _("unknown export '{kind}' (expected yaml or definitions)").format(kind=kind),
            status=404,
        )
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


@require_GET
@login_required
def sandbox_limits(request: HttpRequest, lab_id: str) -> HttpResponse:
    """The sandbox's limits and its queues at their cap (the page asks every few seconds)."""
    session = _sandbox(request, lab_id, act=False)
    return render(
        request,
        "exercises/sandbox-panel.html#limits",
        {
            "sandbox": sandboxes.sandbox_view(session=session, user=request.user),
            "full_queues": sandboxes.sandbox_full_queues(session=session)
            if session.is_active
            else [],
        },
    )
