from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from . import selectors, services
from .forms import ConsumerForm, ProducerForm, PublishForm, form_errors
from .models import Exercise, LabSession, Workload


def _redirect(request: HttpRequest, url: str) -> HttpResponse:
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


def _own_lab(request: HttpRequest, lab_id: str) -> LabSession:
    session = get_object_or_404(LabSession.objects.select_related("exercise"), pk=lab_id)
    if not selectors.can_view_lab(request.user, session):
        raise PermissionDenied("this lab belongs to someone else")
    return session


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
    }
    template = "exercises/catalogue.html#cards" if request.htmx else "exercises/catalogue.html"
    return render(request, template, context)


@require_GET
@login_required
def exercise(request: HttpRequest, slug: str) -> HttpResponse:
    ex = get_object_or_404(Exercise, slug=slug, published=True)
    active = (
        LabSession.objects.filter(owner=request.user, exercise=ex)
        .exclude(state=LabSession.State.ENDED)
        .first()
    )
    return render(
        request,
        "exercises/exercise.html",
        {
            "exercise": selectors.exercise_detail(ex),
            "active_lab": {"id": active.id, "url": active.get_absolute_url()} if active else None,
        },
    )


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
    return selectors.lab_workload_view(workload, url, error)


@require_GET
@login_required
def lab(request: HttpRequest, lab_id: str) -> HttpResponse:
    session = _own_lab(request, lab_id)
    services.lab_session_touch(session=session)
    passed = set(session.results.values_list("checkpoint", flat=True))
    state = selectors.lab_state(session)
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
            },
            "steps": selectors.lab_steps(session, passed),
            "workloads": [_workload_context(session, w) for w in session.workloads.all()],
            "exchanges": selectors.lab_exchanges(session),
            "lab_config": {
                "ws_url": f"/ws/labs/{session.id}/",
                "lab_id": session.id,
                "graph": state["graph"],
            },
        },
    )


@require_POST
@login_required
def lab_workload(request: HttpRequest, lab_id: str, name: str) -> HttpResponse:
    session = _own_lab(request, lab_id)
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
        else:
            error = _("unknown action '{action}' (expected start, stop or update)").format(
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


@require_POST
@login_required
def lab_publish(request: HttpRequest, lab_id: str) -> HttpResponse:
    session = _own_lab(request, lab_id)
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


@require_POST
@login_required
def lab_reset(request: HttpRequest, lab_id: str) -> HttpResponse:
    session = _own_lab(request, lab_id)
    try:
        services.lab_session_reset(session=session)
    except services.LabBusy:
        # Another tab or process is resetting it: its page shows the lab as that leaves it.
        return _redirect(request, session.get_absolute_url())
    except services.LabError:
        # Ended already, or it could not be made again: the exercise page starts a new one.
        return _redirect(request, reverse("exercise", args=[session.exercise.slug]))
    return _redirect(request, session.get_absolute_url())


@require_POST
@login_required
def lab_end(request: HttpRequest, lab_id: str) -> HttpResponse:
    session = _own_lab(request, lab_id)
    services.lab_session_stop(session=session)
    return _redirect(request, reverse("exercise", args=[session.exercise.slug]))
