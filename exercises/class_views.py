"""The class pages: an instructor's classes, a class for the projector, its live dashboard,
joining with a code, and a learner's page of the class (docs/classes.md)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta

import segno
from django import forms
from django.contrib.auth import login
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from labconsole.broker.brokers import CLUSTER

from . import classes, cluster, cluster_pool, selectors, services
from .forms import form_errors
from .models import ClassMember, Classroom, Exercise

LOCAL_INPUT = "%Y-%m-%dT%H:%M"  # what <input type="datetime-local"> sends


class _LocalDateTimeInput(forms.DateTimeInput):
    input_type = "datetime-local"

    def __init__(self):
        super().__init__(format=LOCAL_INPUT)


class ClassroomForm(forms.ModelForm):
    """A new class. Its bounds are here and nowhere else."""

    exercises = forms.ModelMultipleChoiceField(
        queryset=Exercise.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        label=gettext_lazy("Exercises"),
        error_messages={"required": gettext_lazy("choose at least one exercise")},
    )
    starts_at = forms.DateTimeField(
        label=gettext_lazy("Starts at"), widget=_LocalDateTimeInput(), input_formats=[LOCAL_INPUT]
    )
    ends_at = forms.DateTimeField(
        label=gettext_lazy("Ends at"), widget=_LocalDateTimeInput(), input_formats=[LOCAL_INPUT]
    )
    capacity = forms.IntegerField(
        label=gettext_lazy("Capacity"),
        required=False,
        min_value=1,
        max_value=500,
        help_text=gettext_lazy("At most this many learners; empty for no limit."),
    )

    class Meta:
        model = Classroom
        fields = ["name", "exercises", "starts_at", "ends_at", "capacity"]
        labels = {"name": gettext_lazy("Name")}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # The published exercises, in the catalogue's order, by their title.
        listed = selectors.exercises_in_catalogue()
        field = self.fields["exercises"]
        field.queryset = Exercise.objects.filter(pk__in=[e.pk for e in listed])
        field.choices = [(e.pk, selectors.localized(e.spec.title)) for e in listed]

    def clean(self):
        data = super().clean()
        starts, ends = data.get("starts_at"), data.get("ends_at")
        if starts and ends:
            if ends <= starts:
                self.add_error("ends_at", _("the class must end after it starts"))
            elif ends - starts > timedelta(days=14):
                self.add_error("ends_at", _("a class lasts at most 14 days"))
            elif ends <= timezone.now():
                self.add_error("ends_at", _("this end is in the past"))
        return data


class JoinForm(forms.Form):
    code = forms.CharField(
        label=gettext_lazy("Class code"),
        max_length=8,
        widget=forms.TextInput(attrs={"autocomplete": "off", "autocapitalize": "characters"}),
    )
    display_name = forms.CharField(
        label=gettext_lazy("Your name in the class"),
        max_length=ClassMember._meta.get_field("display_name").max_length,
        required=False,
    )


class MessageForm(forms.Form):
    message = forms.CharField(
        label=gettext_lazy("Message to the class"), max_length=500, widget=forms.Textarea
    )


def _instructor_only(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A page or endpoint of one class, for the class's instructor (classes.can_instruct)."""

    @login_required
    @functools.wraps(view)
    def wrapper(request: HttpRequest, class_id: int, **kwargs) -> HttpResponse:
        classroom = get_object_or_404(Classroom, pk=class_id)
        if not classes.can_instruct(request.user, classroom):
            raise PermissionDenied("this class is another instructor's")
        return view(request, classroom, **kwargs)

    return wrapper


def _instructors_only(request: HttpRequest) -> None:
    if not selectors.user_is_instructor(request.user):
        raise PermissionDenied("only instructors run classes")


@require_GET
@login_required
def class_list(request: HttpRequest) -> HttpResponse:
    _instructors_only(request)
    return render(
        request,
        "exercises/class-list.html",
        {"classes": classes.classrooms_taught(user=request.user)},
    )


@require_http_methods(["GET", "POST"])
@login_required
def class_new(request: HttpRequest) -> HttpResponse:
    _instructors_only(request)
    if request.method == "POST":
        form = ClassroomForm(request.POST)
        if form.is_valid():
            classroom = classes.classroom_create(instructor=request.user, **form.cleaned_data)
            return redirect("class", classroom.pk)
    else:
        now = timezone.localtime().replace(second=0, microsecond=0)
        form = ClassroomForm(initial={"starts_at": now, "ends_at": now + timedelta(hours=2)})
    return render(
        request, "exercises/class-new.html", {"form": form}, status=400 if form.errors else 200
    )


def _qr_svg(url: str) -> str:
    """The join link as a QR code, an inline SVG drawn here (no script, no CDN)."""
    svg = segno.make(url, error="m").svg_inline(scale=10, border=2, dark="#000", light="#fff")
    return mark_safe(svg)  # noqa: S308 - segno's own markup of a URL we built


@require_GET
@_instructor_only
def class_detail(request: HttpRequest, classroom: Classroom) -> HttpResponse:
    """The class for the projector: its code, its link and the link's QR code."""
    join_url = request.build_absolute_uri(classes.classroom_join_url(classroom))
    return render(
        request,
        "exercises/class-detail.html",
        {
            "classroom": classroom,
            "state": classes.classroom_state(classroom),
            "join_url": join_url,
            "qr": _qr_svg(join_url),
            "learners": classroom.members.count(),
            "exercises": [
                selectors.localized(e.spec.title) for e in classes.classroom_exercises(classroom)
            ],
        },
    )


@require_POST
@_instructor_only
def class_end(request: HttpRequest, classroom: Classroom) -> HttpResponse:
    classes.classroom_end(classroom=classroom)
    url = reverse("class", args=[classroom.pk])
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)


@require_GET
@_instructor_only
def class_dashboard(request: HttpRequest, classroom: Classroom) -> HttpResponse:
    return render(
        request,
        "exercises/class-dashboard.html",
        {
            "classroom": classroom,
            "summary": classes.classroom_dashboard(classroom=classroom),
            "ws_url": f"/ws/classes/{classroom.pk}/",
            "form": MessageForm(initial={"message": classroom.message}),
            "brokers": _class_brokers(classroom),
        },
    )


# --- the class's brokers (a cluster for all its labs on a cluster exercise) -----------------


def _class_brokers(classroom: Classroom) -> dict | None:
    """The dashboard's Brokers panel, for a class with a cluster exercise."""
    if not cluster_pool.pool_enabled() or not any(
        e.spec.broker == CLUSTER for e in classes.classroom_exercises(classroom)
    ):
        return None
    return {**cluster.classroom_cluster_view(classroom), "active": not classroom.ended_at}


def _broker_panel(request, classroom: Classroom, message: str = "", ok: bool = True, status=200):
    brokers = _class_brokers(classroom)
    if brokers is None:
        raise Http404("this class has no cluster exercise")
    return render(
        request,
        "exercises/class-dashboard.html#broker-panel",
        {
            "classroom": classroom,
            "brokers": brokers,
            "broker_result": {"ok": ok, "message": message} if message else None,
        },
        status=status,
    )


@require_GET
@_instructor_only
def class_brokers(request: HttpRequest, classroom: Classroom) -> HttpResponse:
    """The Brokers panel as it is now (the dashboard asks for it every two seconds)."""
    return _broker_panel(request, classroom)


@require_POST
@_instructor_only
def class_brokers_start(request: HttpRequest, classroom: Classroom) -> HttpResponse:
    """Starts the class's cluster (a warm one at once, else booted); the panel shows it
    coming."""
    if classes.classroom_state(classroom) == "ended":
        return _broker_panel(request, classroom, _("this class has ended"), ok=False, status=400)
    try:
        cluster_pool.classroom_cluster_start(classroom=classroom)
    except cluster_pool.NoCluster as exc:
        return _broker_panel(request, classroom, str(exc), ok=False, status=409)
    return _broker_panel(request, classroom)


@require_POST
@_instructor_only
def class_broker_node(request: HttpRequest, classroom: Classroom, node: str) -> HttpResponse:
    """Stop, kill or start a node of the class's cluster, for every lab of the class."""
    try:
        message = cluster.classroom_node_fault(
            classroom=classroom, node=node, action=request.POST.get("action", "")
        )
    except services.LabError as exc:
        return _broker_panel(request, classroom, str(exc), ok=False, status=400)
    return _broker_panel(request, classroom, str(message))


@require_POST
@_instructor_only
def class_message(request: HttpRequest, classroom: Classroom) -> HttpResponse:
    form = MessageForm(request.POST)
    sent = False
    if form.is_valid():
        classes.classroom_message_send(classroom=classroom, message=form.cleaned_data["message"])
        sent = True
    return render(
        request,
        "exercises/class-dashboard.html#message-form",
        {"classroom": classroom, "form": form, "sent": sent, "error": form_errors(form)},
        status=200 if sent else 400,
    )


def _class_lab(classroom: Classroom, lab_id: str):
    session = classes.class_lab(classroom=classroom, lab_id=lab_id)
    if session is None:
        raise PermissionDenied("this lab was not started in this class")
    return session


@require_POST
@_instructor_only
def class_lab_reset(request: HttpRequest, classroom: Classroom, lab_id: str) -> HttpResponse:
    session = _class_lab(classroom, lab_id)
    try:
        services.lab_session_reset(session=session)
    except services.LabError as exc:
        return HttpResponse(str(exc), status=409, content_type="text/plain; charset=utf-8")
    return HttpResponse(status=204)


@require_POST
@_instructor_only
def class_lab_end(request: HttpRequest, classroom: Classroom, lab_id: str) -> HttpResponse:
    services.lab_session_stop(session=_class_lab(classroom, lab_id))
    return HttpResponse(status=204)


# --- learners ------------------------------------------------------------------------------


@require_http_methods(["GET", "POST"])
def join(request: HttpRequest, code: str = "") -> HttpResponse:
    """Joining a class: with an account as that user, without one by a name only."""
    user = request.user if request.user.is_authenticated else None
    error = ""
    if request.method == "POST":
        form = JoinForm(request.POST)
        if form.is_valid():
            try:
                member = classes.classroom_join(
                    code=form.cleaned_data["code"],
                    user=user,
                    display_name=form.cleaned_data["display_name"],
                )
            except classes.ClassError as exc:
                error = str(exc)
            else:
                if user is None:
                    login(request, member.user, backend="django.contrib.auth.backends.ModelBackend")
                return redirect("class-learn", member.classroom_id)
        else:
            error = form_errors(form)
    else:
        form = JoinForm(
            initial={"code": code.upper(), "display_name": user.get_username() if user else ""}
        )
    return render(
        request,
        "exercises/join.html",
        {"form": form, "error": error},
        status=400 if error else 200,
    )


def _membership(request: HttpRequest, class_id: int) -> ClassMember:
    member = (
        ClassMember.objects.select_related("classroom")
        .filter(classroom_id=class_id, user=request.user)
        .first()
    )
    if member is None:
        get_object_or_404(Classroom, pk=class_id)
        raise PermissionDenied("you are not in this class")
    return member


@require_GET
@login_required
def class_learn(request: HttpRequest, class_id: int) -> HttpResponse:
    """A learner's page of the class: its exercises, how far they got, the latest
    message."""
    member = _membership(request, class_id)
    classroom = member.classroom
    context = {"member": member, "classroom": classroom}
    if request.htmx:  # the page asks for the latest message every few seconds
        return render(request, "exercises/class-learn.html#message", context)
    context["state"] = classes.classroom_state(classroom)
    context["exercises"] = classes.classroom_learner_view(classroom=classroom, user=request.user)
    return render(request, "exercises/class-learn.html", context)


@require_POST
@login_required
def class_lab_start(request: HttpRequest, class_id: int, slug: str) -> HttpResponse:
    member = _membership(request, class_id)
    exercise = get_object_or_404(Exercise, slug=slug)
    try:
        session = classes.class_lab_start(
            classroom=member.classroom, user=request.user, exercise=exercise
        )
    except classes.ClassError as exc:
        return render(
            request,
            "exercises/class-learn.html#start-error",
            {"error": str(exc)},
            status=400,
        )
    url = session.get_absolute_url()
    return HttpResponseClientRedirect(url) if request.htmx else redirect(url)
