"""The exercise editor's live preview: the diagram and steps of the text being edited.

The change and add forms post the unsaved YAML here (the body is the text itself, UTF-8)
while the instructor types, and draw the answer beside the editor: the lab page's graph
(`lab_graph`) and the steps in every language of settings.LANGUAGES, or the problems with
their lines. The text is read as any document is (`parse_spec`, within
`exercises.limits`), so a preview costs no more than a save; a body over the document
limit is refused by its size, having read one byte past the limit.
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, JsonResponse
from django.urls import path, reverse_lazy
from django.utils import translation
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_POST
from pydantic import BaseModel

from .limits import LIMITS
from .selectors import localized, markdown_html, markdown_inline
from .spec import ExerciseSpec, SpecError, language_codes, parse_spec
from .topology import lab_graph


class PreviewProblem(BaseModel):
    line: int | None
    column: int | None
    path: str
    message: str
    text: str  # the whole message as the form's error list says it


class PreviewStep(BaseModel):
    id: str
    title: str
    instructions_html: str
    hints: list[str]
    checkpoints: list[str]


class Preview(BaseModel):
    """The answer: `problems`, or the graph and each language's title and steps."""

    problems: list[PreviewProblem] = []
    graph: dict | None = None
    title: dict[str, str] = {}
    steps: dict[str, list[PreviewStep]] = {}


def _steps(spec: ExerciseSpec) -> list[PreviewStep]:
    """The steps as the lab page renders them, in the active language."""
    return [
        PreviewStep(
            id=step.id,
            title=localized(step.title),
            instructions_html=markdown_html(localized(step.instructions)),
            hints=[markdown_html(localized(h)) for h in step.hints],
            checkpoints=[markdown_inline(localized(cp.description)) for cp in step.checkpoints],
        )
        for step in spec.steps
    ]


def exercise_preview(*, text: bytes) -> Preview:
    """What the editor shows for `text`: its problems, or its diagram and steps."""
    try:
        spec = parse_spec(text)
    except SpecError as exc:
        problems = [
            PreviewProblem(
                line=p.line, column=p.column, path=p.path, message=p.message, text=str(p)
            )
            for p in exc.problems
        ]
        return Preview(problems=problems)
    title, steps = {}, {}
    for code in language_codes():
        with translation.override(code):
            title[code] = localized(spec.title)
            steps[code] = _steps(spec)
    return Preview(graph=lab_graph(spec), title=title, steps=steps)


class ExercisePreviewMixin:
    """Mixed into ExerciseAdmin: `preview/`, for the change and add forms' editor."""

    def get_urls(self):
        info = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view(self.preview_view)  # staff only, CSRF checked
        return [path("preview/", view, name="{}_{}_preview".format(*info)), *super().get_urls()]

    @method_decorator(require_POST)
    def preview_view(self, request: HttpRequest) -> JsonResponse:
        if not (self.has_change_permission(request) or self.has_add_permission(request)):
            raise PermissionDenied
        # One byte past the limit is enough for the reader to refuse the text by its size.
        text = request.read(LIMITS.document_bytes + 1)
        preview = exercise_preview(text=text)
        status = 200
        if len(text) > LIMITS.document_bytes:
            status = 413
        elif preview.problems:
            status = 422
        return JsonResponse(preview.model_dump(), status=status)


_CODEMIRROR = "vendor/codemirror"


class YamlEditor(forms.Textarea):
    """The exercise's YAML, edited in CodeMirror beside its preview
    (static/labconsole/admin/editor.js). The textarea stays the form's field."""

    class Media:
        css = {
            "all": [
                f"{_CODEMIRROR}/lib/codemirror.css",
                f"{_CODEMIRROR}/addon/fold/foldgutter.css",
                "labconsole/admin/editor.css",
            ]
        }
        js = [
            f"{_CODEMIRROR}/lib/codemirror.js",
            f"{_CODEMIRROR}/mode/yaml/yaml.js",
            f"{_CODEMIRROR}/addon/fold/foldcode.js",
            f"{_CODEMIRROR}/addon/fold/foldgutter.js",
            f"{_CODEMIRROR}/addon/fold/indent-fold.js",
            f"{_CODEMIRROR}/addon/edit/matchbrackets.js",
            "vendor/elkjs/elk.bundled.js",
            forms.Script("labconsole/admin/editor.js", type="module"),
        ]

    def __init__(self, attrs: dict | None = None):
        super().__init__(
            {
                "rows": 40,
                "cols": 110,
                "spellcheck": "false",
                "class": "vLargeTextField",
                "data-editor": "yaml",
                "data-preview-url": reverse_lazy("admin:exercises_exercise_preview"),
                **(attrs or {}),
            }
        )
