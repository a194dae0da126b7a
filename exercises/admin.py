from django import forms
from django.contrib import admin

from .admin_preview import ExercisePreviewMixin
from .admin_transfer import ExerciseTransferMixin
from .models import CheckpointResult, Exercise, LabSession, Workload
from .services import exercise_apply_source, lab_session_stop
from .spec import SpecError


class ExerciseForm(forms.ModelForm):
    class Meta:
        model = Exercise
        fields = ["source", "published"]
        widgets = {
            "source": forms.Textarea(
                attrs={"rows": 40, "cols": 110, "spellcheck": "false", "class": "vLargeTextField"}
            )
        }

    def clean_source(self):
        source = self.cleaned_data["source"]
        try:
            exercise_apply_source(exercise=self.instance, source=source)
        except SpecError as exc:
            raise forms.ValidationError(exc.errors) from exc
        return source


@admin.register(Exercise)
class ExerciseAdmin(ExercisePreviewMixin, ExerciseTransferMixin, admin.ModelAdmin):
    form = ExerciseForm
    list_display = ["title", "slug", "level", "minutes", "version", "builtin", "published"]
    list_filter = ["level", "builtin", "published"]
    search_fields = ["title", "slug"]
    readonly_fields = ["slug", "title", "level", "minutes", "tags", "version", "builtin"]
    fields = ["source", "published", *readonly_fields]


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
