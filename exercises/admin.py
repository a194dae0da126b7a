import re

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.utils.html import format_html
from django.utils.translation import gettext, gettext_lazy

from . import services
from .admin_preview import ExercisePreviewMixin, YamlEditor
from .admin_transfer import ExerciseTransferMixin
from .admin_versions import ExerciseVersionsMixin, duplicated_message
from .models import CheckpointResult, ClassMember, Classroom, Exercise, LabSession, Workload
from .safe_yaml import Problem
from .services import exercise_apply_source, lab_session_stop
from .spec import SpecError


class ExerciseForm(forms.ModelForm):
    class Meta:
        model = Exercise
        fields = ["source", "published"]
        widgets = {"source": YamlEditor()}

    def clean_source(self):
        # A browser submits a textarea's lines ending in CR LF: kept as the file's own LF, so
        # that a save without a change is no new version and a diff compares lines.
        source = self.cleaned_data["source"].replace("\r\n", "\n")
        try:
            exercise_apply_source(exercise=self.instance, source=source)
        except SpecError as exc:
            raise forms.ValidationError(exc.errors) from exc
        if Exercise.objects.filter(slug=self.instance.slug).exclude(pk=self.instance.pk).exists():
            raise forms.ValidationError(str(_slug_taken(source, self.instance.slug)))
        return source


def _slug_taken(source: str, slug: str) -> Problem:
    """The slug is the exercise's address and unique: said at its line, as a spec problem."""
    message = gettext("another exercise is called '{slug}'; choose another slug").format(slug=slug)
    found = re.search(r"^slug:[ \t]*", source, re.MULTILINE)
    if found is None:  # a slug written in flow style: no line to point at
        return Problem("slug", message)
    line = source.count("\n", 0, found.start()) + 1
    return Problem("slug", message, line, found.end() - found.start() + 1)


@admin.action(description=gettext_lazy("Duplicate the selected exercises (unpublished copies)"))
def duplicate_exercises(modeladmin, request, queryset):
    for exercise in queryset:
        try:
            copy = services.exercise_duplicate(exercise=exercise, author=request.user)
        except SpecError as exc:
            modeladmin.message_user(request, f"{exercise.slug}: {exc}", messages.ERROR)
        else:
            modeladmin.message_user(request, duplicated_message(exercise, copy), messages.SUCCESS)


@admin.register(Exercise)
class ExerciseAdmin(
    ExerciseVersionsMixin, ExercisePreviewMixin, ExerciseTransferMixin, admin.ModelAdmin
):
    form = ExerciseForm
    list_display = ["title", "slug", "level", "minutes", "version", "builtin", "published"]
    list_filter = ["level", "builtin", "published"]
    search_fields = ["title", "slug"]
    readonly_fields = ["slug", "title", "level", "minutes", "tags", "version", "builtin"]
    fields = ["source", "published", *readonly_fields]
    actions = [duplicate_exercises, *ExerciseTransferMixin.transfer_actions]

    def get_queryset(self, request):
        # The drafts that trials of new exercises run as are no exercise of anyone's.
        drafts = services.TRIAL_DRAFT_PREFIX
        return super().get_queryset(request).exclude(slug__startswith=drafts)

    # A built-in exercise's text is the catalogue's: it is shown, not edited; its copy is.
    def get_fields(self, request, obj=None):
        if obj is not None and obj.builtin:
            return ["builtin_source", *(f for f in self.fields if f != "source")]
        return self.fields

    def get_readonly_fields(self, request, obj=None):
        if obj is not None and obj.builtin:
            return ["builtin_source", *self.readonly_fields]
        return self.readonly_fields

    @admin.display(description=gettext_lazy("Source"))
    def builtin_source(self, obj):
        return format_html(
            '<p class="help">{}</p><pre class="exercise-source">{}</pre>',
            gettext("built-in: duplicate it to edit"),
            obj.source,
        )

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.builtin:
            return False
        return super().has_delete_permission(request, obj)

    def save_model(self, request, obj, form, change):
        # A built-in's form has no text field: a text posted all the same is refused.
        posted = request.POST.get("source")
        if obj.builtin and posted is not None and posted != obj.source:
            raise PermissionDenied(gettext("built-in: duplicate it to edit"))
        try:
            services.exercise_edit(exercise=obj, author=request.user)
        except services.ExerciseReadOnly as exc:
            raise PermissionDenied(str(exc)) from exc


class WorkloadInline(admin.TabularInline):
    model = Workload
    extra = 0
    fields = ["name", "kind", "running", "settings"]
    readonly_fields = fields
    can_delete = False


@admin.action(description="End the selected labs (stop workloads, delete vhost and user)")
def end_labs(modeladmin, request, queryset):
    for session in queryset:
        lab_session_stop(session=session)


@admin.register(LabSession)
class LabSessionAdmin(admin.ModelAdmin):
    list_display = ["id", "exercise", "owner", "state", "exercise_version", "created_at"]
    list_filter = ["state", "exercise"]
    readonly_fields = [
        "id",
        "owner",
        "exercise",
        "exercise_version",
        "state",
        "generation",
        "created_at",
        "ended_at",
        "last_seen_at",
        "source",
    ]
    exclude = ["rabbit_password"]
    inlines = [WorkloadInline]
    actions = [end_labs]


@admin.register(CheckpointResult)
class CheckpointResultAdmin(admin.ModelAdmin):
    list_display = ["session", "checkpoint", "passed_at"]


class ClassMemberInline(admin.TabularInline):
    model = ClassMember
    extra = 0
    fields = ["display_name", "user", "joined_at"]
    readonly_fields = ["joined_at"]


@admin.register(Classroom)
class ClassroomAdmin(admin.ModelAdmin):
    list_display = ["name", "instructor", "join_code", "starts_at", "ends_at", "ended_at"]
    search_fields = ["name", "join_code", "instructor__username"]
    list_filter = ["starts_at"]
    filter_horizontal = ["exercises"]
    inlines = [ClassMemberInline]

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "exercises":  # the exercises a class can do: no trial drafts
            kwargs["queryset"] = Exercise.objects.filter(published=True)
        return super().formfield_for_manytomany(db_field, request, **kwargs)
