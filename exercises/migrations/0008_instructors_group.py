"""The Instructors group: people who write exercises and run classes in the admin, and see
nothing else there (`python manage.py instructor <username>` puts someone in it)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Instructors"
# model -> the admin's actions an instructor may take on it.
PERMISSIONS = {
    "exercise": ("view", "add", "change", "delete"),
    "exerciseversion": ("view", "add", "change"),
    "classroom": ("view", "add", "change", "delete"),
    "classmember": ("view", "add", "change"),
}


def instructors_group(apps, schema_editor):
    # On a new database the permissions are made after the last migration: make them now.
    exercises = apps.get_app_config("exercises")
    models_module = getattr(exercises, "models_module", None)
    exercises.models_module = True
    create_permissions(exercises, apps=apps, verbosity=0)
    exercises.models_module = models_module
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=GROUP)
    codenames = [
        f"{action}_{model}" for model, actions in PERMISSIONS.items() for action in actions
    ]
    permissions = Permission.objects.filter(
        content_type__app_label="exercises", codename__in=codenames
    )
    assert permissions.count() == len(codenames), "a permission of the exercises app is missing"
    group.permissions.set(permissions)


def no_instructors_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("exercises", "0007_classes_versions"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(instructors_group, no_instructors_group)]
