"""Import and export of exercises in the admin: YAML files, and RabbitMQ definitions
(docs/import-export.md). The work is done by exercises/transfer.py and
exercises/definitions.py; here are the forms, the pages and the actions."""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core import signing
from django.core.exceptions import PermissionDenied
from django.http import HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods
from pydantic import ValidationError

from .definitions import (
    DEFINITIONS_BYTES,
    Definitions,
    DefinitionsError,
    definitions_read,
    definitions_vhosts,
    topology_from_definitions,
)
from .models import Exercise
from .services import TRIAL_DRAFT_PREFIX
from .spec import SLUG_PATTERN
from .transfer import (
    TopologyRefused,
    UploadRefused,
    exercise_export_definitions,
    exercise_import_documents,
    exercise_import_topology,
    exercises_export_yaml,
    uploaded_documents,
)

#: An uploaded definitions file carried from the page that asks for its vhost to the next
#: one, signed and compressed: below Django's limit on a form's fields
#: (DATA_UPLOAD_MAX_MEMORY_SIZE, 2.5 MB by default).
CARRIED_CHARS = 2 * 1024 * 1024
_CARRIED_SALT = "exercises.admin_transfer.definitions"
_CARRIED_MAX_AGE = 3600


class YamlImportForm(forms.Form):
    file = forms.FileField(
        label=gettext_lazy("YAML file or zip"),
        help_text=gettext_lazy(
            "One exercise document (.yaml), or a .zip of them. Every document is checked "
            "first: if any is wrong, none is saved."
        ),
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        try:
            self.documents, self.ignored = uploaded_documents(
                name=upload.name, file=upload, size=upload.size
            )
        except UploadRefused as exc:
            raise forms.ValidationError(exc.errors) from None
        return upload


class DefinitionsImportForm(forms.Form):
    file = forms.FileField(
        label=gettext_lazy("Definitions file (JSON)"),
        required=False,
        help_text=gettext_lazy(
            "As rabbitmqctl export_definitions or the management UI's Export definitions "
            "write it, for a whole broker or one virtual host."
        ),
    )
    carried = forms.CharField(widget=forms.HiddenInput, required=False)
    vhost = forms.CharField(
        label=gettext_lazy("Virtual host"),
        required=False,
        widget=forms.Select,
        help_text=gettext_lazy("The file holds several: its topology is imported from this one."),
    )
    exercise = forms.ModelChoiceField(
        queryset=Exercise.objects.filter(builtin=False).exclude(
            slug__startswith=TRIAL_DRAFT_PREFIX
        ),
        required=False,
        label=gettext_lazy("Replace the topology of"),
        help_text=gettext_lazy(
            "An exercise of yours (not a built-in one): its topology is replaced and saved as "
            "a new version. Leave empty to make a new exercise."
        ),
    )
    slug = forms.RegexField(
        regex=SLUG_PATTERN,
        required=False,
        label=gettext_lazy("Slug of the new exercise"),
        error_messages={
            "invalid": gettext_lazy(
                "2 to 63 characters of lowercase letters, digits and hyphens, starting with a "
                "letter or digit"
            )
        },
    )
    title = forms.CharField(
        required=False, max_length=200, label=gettext_lazy("Title of the new exercise")
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.definitions: Definitions | None = None
        self.vhosts: list[str] = []

    def _set_vhosts(self, vhosts: list[str]) -> None:
        self.vhosts = vhosts
        self.fields["vhost"].widget.choices = [("", "---------")] + [(v, v) for v in vhosts]

    def _read(self) -> Definitions | None:
        upload = self.cleaned_data.get("file")
        if upload:
            if upload.size > DEFINITIONS_BYTES:
                larger = _("{name}: the file is larger than the limit of {limit} MiB")
                self.add_error(
                    "file", larger.format(name=upload.name, limit=DEFINITIONS_BYTES >> 20)
                )
                return None
            try:
                return definitions_read(upload.read(DEFINITIONS_BYTES + 1), source=upload.name)
            except DefinitionsError as exc:
                self.add_error("file", exc.errors)
                return None
        if carried := self.cleaned_data.get("carried"):
            try:
                data = signing.loads(carried, salt=_CARRIED_SALT, max_age=_CARRIED_MAX_AGE)
                return Definitions.model_validate(data)
            except (signing.BadSignature, ValidationError):
                self.add_error("file", _("the file chosen earlier has expired: choose it again"))
                return None
        self.add_error("file", _("choose a definitions file"))
        return None

    def _carry(self, definitions: Definitions) -> None:
        """Keeps the file in the page, for the vhost to be chosen without uploading it
        again."""
        carried = signing.dumps(
            definitions.model_dump(mode="json", by_alias=True), salt=_CARRIED_SALT, compress=True
        )
        if len(carried) > CARRIED_CHARS:
            too_big = _(
                "the file is too large to choose among its virtual hosts here: export the one "
                "you want (GET /api/definitions/<vhost>, or rabbitmqctl export_definitions "
                "of that vhost) and import that"
            )
            self.add_error("file", too_big)
            return
        self.data = self.data.copy()
        self.data[self.add_prefix("carried")] = carried

    def clean(self):
        data = super().clean()
        if data.get("exercise") is None:
            for name in ("slug", "title"):
                if not data.get(name) and name not in self.errors:
                    self.add_error(
                        name, _("required for a new exercise (or choose one to replace)")
                    )
        definitions = self._read()
        if definitions is None:
            return data
        self.definitions = definitions
        vhosts = definitions_vhosts(definitions)
        if len(vhosts) > 1:
            self._set_vhosts(vhosts)
            if data.get("vhost") not in vhosts:
                several = _("the file holds {count} virtual hosts: choose one")
                self.add_error("vhost", several.format(count=len(vhosts)))
        if self.errors:
            self._carry(definitions)
        return data


class DefinitionsExportForm(forms.Form):
    vhost = forms.CharField(
        label=gettext_lazy("Virtual host"),
        max_length=255,
        help_text=gettext_lazy(
            "The vhost the file names. POST /api/definitions/<vhost> loads it into any "
            "vhost; rabbitmqctl import_definitions makes this one."
        ),
    )


class ExerciseTransferMixin:
    """Mixed into ExerciseAdmin: the changelist's Import YAML and Import definitions
    pages, and the export actions (`transfer_actions`)."""

    transfer_actions = ["export_yaml", "export_definitions"]

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name

        def view(page):
            return self.admin_site.admin_view(require_http_methods(["GET", "POST"])(page))

        return [
            path(
                "import-yaml/",
                view(self.import_yaml_view),
                name="{}_{}_import_yaml".format(*info),
            ),
            path(
                "import-definitions/",
                view(self.import_definitions_view),
                name="{}_{}_import_definitions".format(*info),
            ),
            *super().get_urls(),
        ]

    def _transfer_context(self, request, title: str, **context) -> dict:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            **context,
        }

    def _refuse_without_add(self, request) -> None:
        if not (self.has_add_permission(request) and self.has_change_permission(request)):
            raise PermissionDenied

    def import_yaml_view(self, request):
        self._refuse_without_add(request)
        results, saved, ignored = None, False, []
        if request.method == "POST":
            form = YamlImportForm(request.POST, request.FILES)
            if form.is_valid():
                results, saved = exercise_import_documents(
                    documents=form.documents, author=request.user
                )
                ignored = form.ignored
                if saved:
                    self.message_user(
                        request,
                        _("Imported {count} documents.").format(count=len(results)),
                        messages.SUCCESS,
                    )
        else:
            form = YamlImportForm()
        context = self._transfer_context(
            request,
            _("Import exercises from YAML"),
            form=form,
            results=results,
            saved=saved,
            ignored=ignored,
        )
        return TemplateResponse(request, "admin/exercises/exercise/import_yaml.html", context)

    def import_definitions_view(self, request):
        self._refuse_without_add(request)
        imported, exercise, problems = None, None, []
        if request.method == "POST":
            form = DefinitionsImportForm(request.POST, request.FILES)
            if form.is_valid():
                data = form.cleaned_data
                try:
                    imported = topology_from_definitions(
                        form.definitions, vhost=data.get("vhost") or None
                    )
                    exercise = exercise_import_topology(
                        imported=imported,
                        exercise=data.get("exercise"),
                        slug=data.get("slug", ""),
                        title=data.get("title", ""),
                        version=form.definitions.version,
                        author=request.user,
                    )
                except (DefinitionsError, TopologyRefused) as exc:
                    problems = exc.errors
        else:
            form = DefinitionsImportForm()
        context = self._transfer_context(
            request,
            _("Import a topology from RabbitMQ definitions"),
            form=form,
            imported=imported if exercise else None,
            exercise=exercise,
            problems=problems,
        )
        return TemplateResponse(
            request, "admin/exercises/exercise/import_definitions.html", context
        )

    @admin.action(description=gettext_lazy("Export the selected exercises as YAML"))
    def export_yaml(self, request, queryset):
        name, content = exercises_export_yaml(exercises=list(queryset.order_by("slug")))
        kind = "application/zip" if name.endswith(".zip") else "application/yaml"
        response = HttpResponse(content, content_type=kind)
        response["Content-Disposition"] = f'attachment; filename="{name}"'
        return response

    @admin.action(description=gettext_lazy("Export the topology as RabbitMQ definitions"))
    def export_definitions(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(
                request,
                _("Choose one exercise to export its topology as definitions."),
                messages.WARNING,
            )
            return None
        exercise = queryset.get()
        form = DefinitionsExportForm(
            request.POST if "vhost" in request.POST else None, initial={"vhost": exercise.slug}
        )
        if form.is_valid():
            definitions = exercise_export_definitions(
                exercise=exercise, vhost=form.cleaned_data["vhost"]
            )
            response = HttpResponse(
                json.dumps(definitions, indent=2, ensure_ascii=False),
                content_type="application/json",
            )
            filename = f"{exercise.slug}.definitions.json"
            response["Content-Disposition"] = f'attachment; filename="{filename}"'
            return response
        context = self._transfer_context(
            request,
            _("Export {title} as RabbitMQ definitions").format(title=exercise.title),
            form=form,
            exercise=exercise,
            action_checkbox_name=helpers.ACTION_CHECKBOX_NAME,
        )
        return TemplateResponse(
            request, "admin/exercises/exercise/export_definitions.html", context
        )
