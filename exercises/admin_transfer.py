"""Import and export of exercises in the admin: YAML files, and RabbitMQ definitions."""


class ExerciseTransferMixin:
    def get_urls(self):
        return super().get_urls()
