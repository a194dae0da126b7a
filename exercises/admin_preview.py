"""The exercise editor's live preview: the diagram and steps of the text being edited."""


class ExercisePreviewMixin:
    def get_urls(self):
        return super().get_urls()
