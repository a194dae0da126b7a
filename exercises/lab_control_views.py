"""A sandbox's controls on the lab page (exercises/lab_controls.py): policies, adding and
removing workloads, purging and peeking at queues. Every section comes back as an htmx
partial of templates/exercises/_sandbox-*.html; the diagram and the workload cards of
every page learn the change by the lab's socket."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from . import lab_controls, selectors, services
from .forms import (
    AddConsumerForm,
    AddProducerForm,
    NameForm,
    PolicyForm,
    QueueActionForm,
    form_errors,
)
from .models import LabSession, Workload
from .views import _lab_action, _viewed_lab, _workload_context

POLICIES = "exercises/_sandbox-policies.html"
CONTROLS = "exercises/_sandbox-controls.html"


def _sandbox(session: LabSession) -> LabSession:
    if not selectors.lab_allows_sandbox_controls(session):
        raise Http404("this lab is not a sandbox")
    return session


def _context(request: HttpRequest, session: LabSession, **more) -> dict:
    spec = session.spec
    return {
        "lab": {"id": session.id, "state": session.state},
        "read_only": not selectors.can_act_on_lab(request.user, session),
        "queues": [{"name": q.name, "type": q.type} for q in spec.topology.queues],
        "exchanges": [x.name for x in spec.topology.exchanges],
        "workload_names": list(session.workloads.values_list("name", flat=True)),
        "apply_to": PolicyForm.base_fields["apply_to"].choices,
        **more,
    }


# --- policies ---------------------------------------------------------------------------------


def _policies(request, session, result=None, status=200) -> HttpResponse:
    context = _context(
        request,
        session,
        policies=lab_controls.lab_policies_applied(session=session),
        policy_result=result,
    )
    return render(request, POLICIES, context, status=status)


@require_GET
@login_required
def lab_sandbox_policies(request: HttpRequest, lab_id: str) -> HttpResponse:
    """The Policies section as it is now, with what each policy applies to."""
    return _policies(request, _sandbox(_viewed_lab(request, lab_id)))


@_lab_action
def lab_sandbox_policy(request: HttpRequest, session: LabSession) -> HttpResponse:
    """Declares (`action` declare) or deletes (delete) a policy of a sandbox."""
    _sandbox(session)
    action = request.POST.get("action", "")
    form = PolicyForm(request.POST) if action == "declare" else NameForm(request.POST)
    if action not in ("declare", "delete"):
        message = _("unknown action '{action}' (expected declare or delete)").format(action=action)
        return _policies(request, session, {"ok": False, "message": message}, 400)
    if not form.is_valid():
        return _policies(request, session, {"ok": False, "message": form_errors(form)}, 400)
    try:
        if action == "declare":
            changed = lab_controls.lab_policy_declare(session=session, item=form.item())
        else:
            changed = lab_controls.lab_policy_delete(
                session=session, name=form.cleaned_data["name"]
            )
    except services.LabError as exc:
        return _policies(request, session, {"ok": False, "message": str(exc)}, 400)
    return _policies(request, session, {"ok": True, "message": str(changed.message)})


# --- workloads and queues ---------------------------------------------------------------------


def _controls(request, session, part: str, status=200, **more) -> HttpResponse:
    return render(request, f"{CONTROLS}#{part}", _context(request, session, **more), status=status)


@require_GET
@login_required
def lab_sandbox_controls(request: HttpRequest, lab_id: str) -> HttpResponse:
    """The names the Sandbox section offers (queues, exchanges, workloads) as they are now."""
    return _controls(request, _sandbox(_viewed_lab(request, lab_id)), "sandbox-lists")


@_lab_action
def lab_sandbox_workload(request: HttpRequest, session: LabSession) -> HttpResponse:
    """Adds a producer or a consumer (`action` producer, consumer), or removes one
    (remove). The card appears, or goes, on every page of the lab by its socket."""
    _sandbox(session)
    action = request.POST.get("action", "")
    forms = {"producer": AddProducerForm, "consumer": AddConsumerForm, "remove": NameForm}
    if action not in forms:
        message = _("unknown action '{action}' (expected producer, consumer or remove)").format(
            action=action
        )
        return _workload_result(request, session, False, message)
    form = forms[action](request.POST)
    if not form.is_valid():
        return _workload_result(request, session, False, form_errors(form))
    name = form.cleaned_data["name"]
    try:
        if action == "remove":
            lab_controls.lab_workload_remove(session=session, name=name)
            message = _("Removed {name}.").format(name=name)
        else:
            workload = lab_controls.lab_workload_add(
                session=session, kind=action, item=form.item(), start=form.cleaned_data["start"]
            )
            message = (
                _("Added {name}; it runs.") if workload.running else _("Added {name}, stopped.")
            ).format(name=name)
    except services.LabError as exc:
        return _workload_result(request, session, False, str(exc))
    return _workload_result(request, session, True, message)


def _workload_result(request, session, ok: bool, message: str) -> HttpResponse:
    return _controls(
        request,
        session,
        "workload-result",
        status=200 if ok else 400,
        workload_result={"ok": ok, "message": message},
    )


@require_GET
@login_required
def lab_sandbox_workload_card(request: HttpRequest, lab_id: str, name: str) -> HttpResponse:
    """One workload's card, for a page that learned by its socket that it was added."""
    session = _sandbox(_viewed_lab(request, lab_id))
    workload = get_object_or_404(Workload, session=session, name=name)
    return render(
        request,
        "exercises/lab.html#workload-card",
        {
            "w": _workload_context(session, workload),
            "lab": {"state": session.state},
            "read_only": not selectors.can_act_on_lab(request.user, session),
        },
    )


@_lab_action
def lab_sandbox_queue(request: HttpRequest, session: LabSession) -> HttpResponse:
    """Purges a queue (`action` purge) or peeks at its messages (peek)."""
    _sandbox(session)
    form = QueueActionForm(request.POST)
    if not form.is_valid():
        return _queue_result(request, session, {"ok": False, "message": form_errors(form)})
    queue, action = form.cleaned_data["queue"], form.cleaned_data["action"]
    try:
        if action == "purge":
            purged = lab_controls.lab_queue_purge(session=session, queue=queue)
            return _queue_result(
                request, session, {"ok": True, "purged": purged, "queue": queue}, status=200
            )
        peek = lab_controls.lab_queue_peek(session=session, queue=queue)
    except services.LabError as exc:
        return _queue_result(request, session, {"ok": False, "message": str(exc)})
    return _queue_result(request, session, {"ok": True, "peek": peek, "queue": queue}, status=200)


def _queue_result(request, session, result: dict, status: int = 400) -> HttpResponse:
    return render(request, f"{CONTROLS}#queue-result", {"queue_result": result}, status=status)
