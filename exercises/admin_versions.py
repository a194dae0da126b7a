"""An exercise's kept versions in the admin (history, one text, a comparison, a restore), its
copies, and "Try it": a throwaway lab of the text in the editor (docs/authoring.md)."""

from __future__ import annotations

import difflib

from django.contrib import messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods, require_POST

from . import services
from .models import Exercise, ExerciseVersion
from .spec import SpecError

TEMPLATES = "admin/exercises/exercise/"


def version_diff(older: ExerciseVersion, newer: ExerciseVersion) -> SafeString:
    """The two texts side by side, changed lines marked, with three lines of context around
    each change (the page's style wraps long lines). difflib escapes the texts."""
    table = difflib.HtmlDiff(tabsize=2).make_table(
        older.source.splitlines(),
        newer.source.splitlines(),
        fromdesc=_("version {number}").format(number=older.number),
        todesc=_("version {number}").format(number=newer.number),
        context=True,
        numlines=3,
    )
    return mark_safe(table)  # noqa: S308 - difflib escapes the texts it puts in the table


class ExerciseVersionsMixin:
    """Pages of one exercise's versions, its copy and its trial, on the admin's URLs."""

    def get_urls(self):
        info = f"{self.opts.app_label}_{self.opts.model_name}"
        wrap = self.admin_site.admin_view
        return [
            path("try/", wrap(self.try_view), name=f"{info}_try_new"),
            path("<path:object_id>/try/", wrap(self.try_view), name=f"{info}_try"),
            path(
                "<path:object_id>/duplicate/", wrap(self.duplicate_view), name=f"{info}_duplicate"
            ),
            path("<path:object_id>/versions/", wrap(self.versions_view), name=f"{info}_versions"),
            path(
                "<path:object_id>/versions/compare/",
                wrap(self.version_compare_view),
                name=f"{info}_version_compare",
            ),
            path(
                "<path:object_id>/versions/<int:number>/",
                wrap(self.version_view),
                name=f"{info}_version",
            ),
            path(
                "<path:object_id>/versions/<int:number>/restore/",
                wrap(self.version_restore_view),
                name=f"{info}_version_restore",
            ),
            *super().get_urls(),
        ]

    # --- helpers ---------------------------------------------------------------------------

    def _exercise(self, request: HttpRequest, object_id: str) -> Exercise:
        exercise = self.get_object(request, unquote(object_id))
        if exercise is None:
            raise Http404(_("There is no exercise with the id {id}.").format(id=object_id))
        if not self.has_view_permission(request, exercise):
            raise PermissionDenied
        return exercise

    def _page(self, request: HttpRequest, template: str, exercise: Exercise, **context):
        return TemplateResponse(
            request,
            TEMPLATES + template,
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "original": exercise,
                "change_url": reverse(
                    f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                    args=[exercise.pk],
                ),
                "versions_url": self._url("versions", exercise),
                **context,
            },
        )

    def _url(self, name: str, exercise: Exercise, *args) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_{name}",
            args=[exercise.pk, *args],
        )

    # --- versions --------------------------------------------------------------------------

    def versions_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        exercise = self._exercise(request, object_id)
        versions = list(exercise.versions.select_related("author").order_by("-number"))
        rows = [
            {
                "version": v,
                "size": len(v.source.encode()),
                "url": self._url("version", exercise, v.number),
                "current": v.number == exercise.version,
            }
            for v in versions
        ]
        older = request.GET.get("a") or (versions[1].number if len(versions) > 1 else "")
        newer = request.GET.get("b") or (versions[0].number if versions else "")
        return self._page(
            request,
            "versions.html",
            exercise,
            title=_("History of versions: {title}").format(title=exercise.title),
            rows=rows,
            older=str(older),
            newer=str(newer),
            compare_url=self._url("version_compare", exercise),
        )

    def _version(self, exercise: Exercise, number: int | str) -> ExerciseVersion:
        try:
            return exercise.versions.get(number=int(number))
        except (ValueError, ExerciseVersion.DoesNotExist):
            raise Http404(
                _("{exercise} has no version {number}.").format(
                    exercise=exercise.title, number=number
                )
            ) from None

    def version_view(self, request: HttpRequest, object_id: str, number: int) -> HttpResponse:
        exercise = self._exercise(request, object_id)
        version = self._version(exercise, number)
        return self._page(
            request,
            "version.html",
            exercise,
            title=_("{title}, version {number}").format(title=exercise.title, number=number),
            version=version,
            restore_url=self._url("version_restore", exercise, number),
            can_restore=self._can_restore(request, exercise, version),
        )

    def version_compare_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        exercise = self._exercise(request, object_id)
        a, b = request.GET.get("a", ""), request.GET.get("b", "")
        if not a or not b:
            messages.error(request, _("Choose two versions to compare."))
            return HttpResponseRedirect(self._url("versions", exercise))
        older, newer = sorted(
            (self._version(exercise, a), self._version(exercise, b)), key=lambda v: v.number
        )
        return self._page(
            request,
            "version_diff.html",
            exercise,
            title=_("{title}: version {older} against version {newer}").format(
                title=exercise.title, older=older.number, newer=newer.number
            ),
            older=older,
            newer=newer,
            same=older.source == newer.source,
            diff=version_diff(older, newer),
        )

    def _can_restore(self, request, exercise: Exercise, version: ExerciseVersion) -> bool:
        return (
            not exercise.builtin
            and version.number != exercise.version
            and self.has_change_permission(request, exercise)
        )

    @method_decorator(require_http_methods(["GET", "POST"]))
    def version_restore_view(
        self, request: HttpRequest, object_id: str, number: int
    ) -> HttpResponse:
        """GET asks to confirm; POST makes the version's text the newest, as a new version."""
        exercise = self._exercise(request, object_id)
        version = self._version(exercise, number)
        if not self.has_change_permission(request, exercise):
            raise PermissionDenied
        errors: list[str] = []
        if request.method == "POST":
            try:
                exercise = services.exercise_version_restore(version=version, author=request.user)
            except services.ExerciseReadOnly as exc:
                errors = [str(exc)]
            except SpecError as exc:
                errors = exc.errors
            else:
                messages.success(
                    request,
                    _("Version {number} is restored as version {new}.").format(
                        number=number, new=exercise.version
                    ),
                )
                return HttpResponseRedirect(self._url("versions", exercise))
        return self._page(
            request,
            "version_restore.html",
            exercise,
            title=_("Restore version {number} of {title}?").format(
                number=number, title=exercise.title
            ),
            version=version,
            errors=errors,
        )

    # --- copies ----------------------------------------------------------------------------

    @method_decorator(require_http_methods(["GET", "POST"]))
    def duplicate_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET asks to confirm; POST makes the copy and opens it."""
        exercise = self._exercise(request, object_id)
        if not self.has_add_permission(request):
            raise PermissionDenied
        errors: list[str] = []
        if request.method == "POST":
            try:
                copy = services.exercise_duplicate(exercise=exercise, author=request.user)
            except SpecError as exc:
                errors = exc.errors
            else:
                messages.success(request, duplicated_message(exercise, copy))
                return HttpResponseRedirect(
                    reverse(
                        f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
                        args=[copy.pk],
                    )
                )
        return self._page(
            request,
            "duplicate.html",
            exercise,
            title=_("Duplicate {title}?").format(title=exercise.title),
            errors=errors,
        )

    # --- Try it ----------------------------------------------------------------------------

    @method_decorator(require_POST)
    def try_view(self, request: HttpRequest, object_id: str | None = None) -> HttpResponse:
        """Starts a trial lab of the text posted from the exercise's form (saved or not) and
        opens its page; a text that is not valid, or a lab that cannot start, is an error
        page that says why."""
        if object_id is None:
            exercise = None
            if not self.has_add_permission(request):
                raise PermissionDenied
        else:
            exercise = self._exercise(request, object_id)
            if not self.has_change_permission(request, exercise):
                raise PermissionDenied
        source = request.POST.get("source", "").replace("\r\n", "\n")  # as the form saves it
        if exercise is not None and "source" not in request.POST:
            source = exercise.source  # a built-in's form shows its text, not a field
        errors: list[str] = []
        try:
            session = services.lab_session_try(source=source, user=request.user, exercise=exercise)
        except SpecError as exc:
            errors = exc.errors
        except services.LabError as exc:
            errors = [str(exc)]
        else:
            return HttpResponseRedirect(session.get_absolute_url())
        return TemplateResponse(
            request,
            TEMPLATES + "try_error.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "original": exercise,
                "title": _("The text could not be tried"),
                "errors": errors,
            },
            status=400,
        )


def duplicated_message(exercise: Exercise, copy: Exercise) -> SafeString:
    return format_html(
        _("{copy} is a copy of {original}, unpublished: edit it, then publish it."),
        copy=copy.slug,
        original=exercise.slug,
    )
