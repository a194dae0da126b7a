from __future__ import annotations

import functools
from collections.abc import Callable

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from labconsole.broker.brokers import CLUSTER

from . import classes, cluster, cluster_pool, sandboxes, selectors, services
from .forms import (
    BindingForm,
    ConsumerForm,
    DeleteForm,
    ExchangeForm,
    LoadForm,
    ProducerForm,
    PublishForm,
    QueueForm,
    UnbindForm,
    form_errors,
)
from .models import Exercise, LabSession, Workload


def _redirect(request: HttpRequest, url: str) -> HttpResponse:
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _viewed_lab(request: HttpRequest, lab_id: str) -> LabSession:
    """A lab the user may watch (selectors.can_view_lab), else the site's 403 or 404."""
    session = get_object_or_404(
        LabSession.objects.select_related("exercise", "classroom"), pk=lab_id
    )
    if not selectors.can_view_lab(request.user, session):
        raise PermissionDenied("this lab belongs to someone else")
    return session


def _own_lab(request: HttpRequest, lab_id: str) -> LabSession:
    """A lab the user may change (selectors.can_act_on_lab): a watcher gets 403."""
    session = _viewed_lab(request, lab_id)
    if not selectors.can_act_on_lab(request.user, session):
        raise PermissionDenied("this lab is someone else's: it can be watched, not changed")
    return session


def _lab_action(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A POST endpoint of one lab. Whose lab it is is checked before the method, so that a
    browser that lands on it (the address bar, a link) gets the site's 403 or 404 page, or,
    whoever may watch the lab, the lab's page; not a bare 405."""

    @login_required
    @functools.wraps(view)
    def wrapper(request: HttpRequest, lab_id: str, **kwargs) -> HttpResponse:
        if request.method != "POST":
            return redirect(_viewed_lab(request, lab_id).get_absolute_url())
        return view(request, _own_lab(request, lab_id), **kwargs)

    return wrapper


@require_GET
@login_required
def catalogue(request: HttpRequest) -> HttpResponse:
    tag, level = request.GET.get("tag", ""), request.GET.get("level", "")
    cards, tags = selectors.exercise_cards(tag=tag, level=level)
    context = {
        "cards": cards,
        "tags": tags,
        "levels": selectors.level_choices(),
        "selected_tag": tag,
        "selected_level": level,
        "membership": classes.membership_current(user=request.user),
        "instructor": selectors.user_is_instructor(request.user),
    }
    template = "exercises/catalogue.html#cards" if request.htmx else "exercises/catalogue.html"
    return render(request, template, context)


def _exercise_context(request: HttpRequest, ex: Exercise) -> dict:
    active = (
        LabSession.objects.filter(owner=request.user, exercise=ex)
        .exclude(state=LabSession.State.ENDED)
        .first()
    )
    brokers = None
    if ex.spec.broker == CLUSTER and cluster_pool.pool_enabled():
        # A cluster of the lab's own: a warm one at once, else booted for this learner.
        brokers = {
            **cluster_pool.cluster_offer(user=request.user),
            "start_url": reverse("exercise-brokers-start", args=[ex.slug]),
            "status_url": reverse("exercise-brokers", args=[ex.slug]),
        }
    return {
        "exercise": selectors.exercise_detail(ex),
        "active_lab": {"id": active.id, "url": active.get_absolute_url()} if active else None,
        "brokers": brokers,
    }


def _cluster_exercise(slug: str) -> Exercise:
    ex = get_object_or_404(Exercise, slug=slug, published=True)
    if ex.spec.broker != CLUSTER or not cluster_pool.pool_enabled():
        raise Http404("this exercise runs on the shared broker")
    return ex


@require_GET
@login_required
def exercise(request: HttpRequest, slug: str) -> HttpResponse:
    ex = get_object_or_404(Exercise, slug=slug, published=True)
    return render(request, "exercises/exercise.html", _exercise_context(request, ex))


@require_GET
@login_required
def exercise_brokers(request: HttpRequest, slug: str) -> HttpResponse:
    """The start of a cluster exercise's page as its brokers are now (asked for every
    second while they come up)."""
    ex = _cluster_exercise(slug)
    return render(request, "exercises/exercise.html#start-area", _exercise_context(request, ex))


@require_POST
@login_required
def exercise_brokers_start(request: HttpRequest, slug: str) -> HttpResponse:
    """Boots a cluster for a learner who found none warm; the page shows it coming (or
    that the console's clusters are all in use)."""
    ex = _cluster_exercise(slug)
    cluster_pool.cluster_request(user=request.user)
    return render(request, "exercises/exercise.html#start-area", _exercise_context(request, ex))


@require_POST
@login_required
def lab_start(request: HttpRequest, slug: str) -> HttpResponse:
    ex = get_object_or_404(Exercise, slug=slug, published=True)
    try:
        session = services.lab_session_start(exercise=ex, owner=request.user)
    except services.LabError as exc:
        return render(
            request,
            "exercises/exercise.html#start-error",
            {"error": str(exc)},
            status=429 if isinstance(exc, services.LimitReached) else 200,
        )
    return _redirect(request, session.get_absolute_url())


def _workload_context(session: LabSession, workload: Workload, error: str = "") -> dict:
    url = reverse("lab-workload", args=[session.id, workload.name])
    # The bounds and help of the prefetch and commit fields, as the forms check them.
    return {
        **selectors.lab_workload_view(workload, url, error),
        "prefetch": ConsumerForm.base_fields["prefetch"],
        "tx_batch": ProducerForm.base_fields["tx_batch"],
        "load_presets": LoadForm().fields["preset"].choices,
    }


@require_GET
@login_required
def lab(request: HttpRequest, lab_id: str) -> HttpResponse:
    session = _viewed_lab(request, lab_id)
    # Anyone else watches it read-only, and does not keep it from ending when idle.
    read_only = not selectors.can_act_on_lab(request.user, session)
    if not read_only:
        services.lab_session_touch(session=session)
    passed = set(session.results.values_list("checkpoint", flat=True))
    state = selectors.lab_state(session)
    config = {
        "ws_url": f"/ws/labs/{session.id}/",
        "lab_id": session.id,
        "steps_url": reverse("lab-steps", args=[session.id]),
        "graph": state["graph"],
    }
    if session.state == LabSession.State.ENDED:  # shown as it last reported, with no socket
        config["snapshot"] = {k: v for k, v in state.items() if k != "graph"}
    return render(
        request,
        "exercises/lab.html",
        {
            "lab": {
                "id": session.id,
                "vhost": session.vhost,
                "state": session.state,
                "exercise_title": selectors.localized(session.spec.title),
                "exercise_slug": session.exercise.slug,
                "started_at": session.created_at,
                "end_url": reverse("lab-end", args=[session.id]),
                "reset_url": reverse("lab-reset", args=[session.id]),
                "publish_url": reverse("lab-publish", args=[session.id]),
                "kept": state.get("kept", True),
                # Ended by the idle sweep: after how many minutes nobody had it open.
                "idle_minutes": (
                    settings.SANDBOX_IDLE_MINUTES if session.sandbox else settings.LAB_IDLE_MINUTES
                )
                if session.end_reason == "idle"
                else None,
                "trial": session.trial,
                "sandbox": selectors.lab_allows_sandbox_controls(session),
            },
            "steps": selectors.lab_steps(session, passed),
            "alerts": selectors.lab_alerts(session),
            "workloads": [_workload_context(session, w) for w in session.workloads.all()],
            "exchanges": selectors.lab_exchanges(session),
            "topology": selectors.lab_topology_view(session),
            "brokers": cluster.lab_cluster_view(session),
            "lab_config": config,
            "read_only": read_only,
            "owner_name": classes.lab_owner_name(session=session) if read_only else "",
            "class_message": classes.lab_class_message(session=session),
            "sandbox": (
                sandboxes.sandbox_view(session=session, user=request.user)
                if session.sandbox
                else None
            ),
        },
    )


@_lab_action
def lab_workload(request: HttpRequest, session: LabSession, name: str) -> HttpResponse:
    workload = get_object_or_404(Workload, session=session, name=name)
    action = request.POST.get("action", "update")
    error = ""
    try:
        if action == "start":
            services.workload_start(workload=workload)
        elif action == "stop":
            services.workload_stop(workload=workload)
        elif action == "update":
            form_class = ProducerForm if workload.kind == Workload.Kind.PRODUCER else ConsumerForm
            form = form_class(request.POST)
            if form.is_valid():
                services.workload_update(workload=workload, changes=form.cleaned_data)
            else:
                error = form_errors(form)
        elif action == "load":
            form = LoadForm(request.POST)
            if form.is_valid():
                services.workload_load(workload=workload, preset=form.cleaned_data["preset"])
            else:
                error = form_errors(form)
        else:
            error = _("unknown action '{action}' (expected start, stop, update or load)").format(
                action=action
            )
    except services.LabError as exc:
        error = str(exc)
    workload.refresh_from_db()
    return render(
        request,
        "exercises/lab.html#workload-card",
        {
            "w": _workload_context(session, workload, error),
            "lab": {"state": session.state},
        },
        status=400 if error else 200,
    )


@_lab_action
def lab_step(request: HttpRequest, session: LabSession, step: str) -> HttpResponse:
    """The learner moves on to `step`: the steps column comes back with it open."""
    error = ""
    try:
        services.lab_step_show(session=session, step=step)
    except services.LabError as exc:
        error = str(exc)
    return HttpResponse(_steps(request, session, error), status=400 if error else 200)


@require_GET
@login_required
def lab_steps(request: HttpRequest, lab_id: str) -> HttpResponse:
    """The steps column as it is now: a page of the lab asks for it when a step was opened
    in another one."""
    return HttpResponse(_steps(request, _viewed_lab(request, lab_id)))


def _steps(request: HttpRequest, session: LabSession, error: str = "") -> str:
    passed = set(session.results.values_list("checkpoint", flat=True))
    read_only = not selectors.can_act_on_lab(request.user, session)
    steps = render_to_string(
        "exercises/lab.html#steps",
        {
            "steps": selectors.lab_steps(session, passed),
            "step_error": error,
            "read_only": read_only,
        },
        request=request,
    )
    # The new step may allow or forbid changing the topology: its panel comes along (a
    # watcher's page has none).
    panel = (
        _topology_panel(request, session, oob=True) if session.is_active and not read_only else ""
    )
    return steps + panel


@_lab_action
def lab_publish(request: HttpRequest, session: LabSession) -> HttpResponse:
    form = PublishForm(request.POST, exchanges=selectors.lab_exchanges(session))
    status = 200
    if not form.is_valid():
        result, status = {"ok": False, "message": form_errors(form)}, 400
    else:
        d = form.cleaned_data
        try:
            published = services.lab_publish(session=session, **d)
            result = {"ok": published.routed, "message": published.message}
        except services.LabError as exc:
            result = {"ok": False, "message": str(exc)}
            status = 429 if isinstance(exc, services.LimitReached) else 400
    return render(
        request,
        "exercises/lab.html#publish-result",
        {"result": result},
        status=status,
    )


TOPOLOGY_ACTIONS = {
    "declare-exchange": ("exchange", "declare", ExchangeForm),
    "declare-queue": ("queue", "declare", QueueForm),
    "delete": (None, "delete", DeleteForm),
    "bind": ("binding", "declare", BindingForm),
    "unbind": ("binding", "delete", UnbindForm),
}


def _topology_panel(request: HttpRequest, session: LabSession, *, oob: bool = False) -> str:
    return render_to_string(
        "exercises/lab.html#topology-panel",
        {"topology": selectors.lab_topology_view(session), "oob": oob},
        request=request,
    )


def _topology_result(request: HttpRequest, session: LabSession, ok: bool, message: str):
    """The result beside the form; after a change, the panel with it (its lists), out of
    band. A refusal leaves the forms as the learner filled them in."""
    html = render_to_string(
        "exercises/lab.html#topology-result",
        {"topology_result": {"ok": ok, "message": message}},
        request=request,
    )
    if ok:
        html += _topology_panel(request, session, oob=True)
    return HttpResponse(html, status=200 if ok else 400)


@_lab_action
def lab_topology(request: HttpRequest, session: LabSession) -> HttpResponse:
    """The learner declares or deletes an exchange or a queue, binds or unbinds: the
    Topology panel comes back with what happened (the diagram learns it by the socket)."""
    action = request.POST.get("action", "")
    if action not in TOPOLOGY_ACTIONS:
        message = _("unknown action '{action}' (expected one of: {actions})").format(
            action=action, actions=", ".join(TOPOLOGY_ACTIONS)
        )
        return _topology_result(request, session, False, message)
    kind, verb, form_class = TOPOLOGY_ACTIONS[action]
    form = form_class(request.POST)
    if not form.is_valid():
        return _topology_result(request, session, False, form_errors(form))
    try:
        changed = services.lab_topology_change(
            session=session,
            kind=kind or form.cleaned_data["kind"],
            action=verb,
            item=form.item(),
        )
    except services.LabError as exc:
        return _topology_result(request, session, False, str(exc))
    return _topology_result(request, session, True, str(changed.message))


@require_GET
@login_required
def lab_topology_panel(request: HttpRequest, lab_id: str) -> HttpResponse:
    """The Topology panel as it is now (a viewer's page asks for it when the topology
    changed elsewhere)."""
    return HttpResponse(_topology_panel(request, _viewed_lab(request, lab_id)))


def _broker_panel(request: HttpRequest, session: LabSession, message: str = "", ok=True) -> str:
    return render_to_string(
        "exercises/lab.html#broker-panel",
        {
            "brokers": cluster.lab_cluster_view(session),
            "broker_result": {"ok": ok, "message": message} if message else None,
            "read_only": not selectors.can_act_on_lab(request.user, session),
        },
        request=request,
    )


@require_GET
@login_required
def lab_brokers(request: HttpRequest, lab_id: str) -> HttpResponse:
    """The broker panel of a lab on the local cluster, as it is now (the page asks for it
    every two seconds)."""
    session = _viewed_lab(request, lab_id)
    if cluster.lab_local_cluster(session) is None:
        raise Http404("this lab runs on the shared broker, or its cluster is gone")
    return HttpResponse(_broker_panel(request, session))


@_lab_action
def lab_broker_node(request: HttpRequest, session: LabSession, node: str) -> HttpResponse:
    """Stop, kill or start a node of the cluster the lab runs on; the panel comes back
    with what is under way."""
    try:
        message = cluster.lab_node_fault(
            session=session, node=node, action=request.POST.get("action", "")
        )
    except services.LabError as exc:
        status = 403 if isinstance(exc, cluster.NodesNotYours) else 400
        return HttpResponse(_broker_panel(request, session, str(exc), ok=False), status=status)
    return HttpResponse(_broker_panel(request, session, str(message)))


@_lab_action
def lab_reset(request: HttpRequest, session: LabSession) -> HttpResponse:
    try:
        services.lab_session_reset(session=session)
    except services.LabBusy:
        # Another tab or process is resetting it: its page shows the lab as that leaves it.
        return _redirect(request, session.get_absolute_url())
    except services.LabError:
        # Ended already, or it could not be made again: the exercise page starts a new one.
        return _redirect(request, reverse("exercise", args=[session.exercise.slug]))
    return _redirect(request, session.get_absolute_url())


@_lab_action
def lab_end(request: HttpRequest, session: LabSession) -> HttpResponse:
    if session.sandbox:  # its owner's to end, not the whole team's
        try:
            sandboxes.sandbox_end(session=session, user=request.user)
        except sandboxes.SandboxRefused as exc:
            raise PermissionDenied(str(exc)) from exc
        return _redirect(request, reverse("sandboxes"))
    services.lab_session_stop(session=session)
    if session.trial:  # its exercise may be unpublished, or a draft: the ended lab stays
        return _redirect(request, session.get_absolute_url())
    return _redirect(request, reverse("exercise", args=[session.exercise.slug]))
