from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

GROUP = "Instructors"


class Command(BaseCommand):
    help = (
        "Make a user an instructor: staff, in the Instructors group, so that the admin shows "
        "them exercises and classes and nothing else. --remove undoes it; --create makes a "
        "new user (with --password)."
    )

    def add_arguments(self, parser):
        parser.add_argument("username")
        what = parser.add_mutually_exclusive_group()
        what.add_argument("--remove", action="store_true", help="no longer an instructor")
        what.add_argument("--create", action="store_true", help="create the user first")
        parser.add_argument("--password", help="the new user's password (with --create)")

    @transaction.atomic
    def handle(self, *args, username, remove, create, password, **options):
        group = Group.objects.filter(name=GROUP).first()
        if group is None:
            raise CommandError(
                f"there is no group {GROUP!r}: the migration exercises.0008 makes it "
                "(python manage.py migrate exercises 0007 && python manage.py migrate)"
            )
        users = get_user_model().objects
        if password and not create:
            raise CommandError("--password is only for a new user, with --create")
        if create:
            if not password:
                raise CommandError("--create needs --password for the new user")
            if users.filter(username=username).exists():
                raise CommandError(f"a user {username!r} exists already; leave out --create")
            user = users.create_user(username=username, password=password)
        else:
            user = users.filter(username=username).first()
            if user is None:
                raise CommandError(
                    f"there is no user {username!r}; make one with --create --password"
                )
        if remove:
            user.groups.remove(group)
            if not user.is_superuser:
                user.is_staff = False
                user.save(update_fields=["is_staff"])
            self.stdout.write(f"{username} is no longer an instructor")
            return
        user.is_staff = True
        user.save(update_fields=["is_staff"])
        user.groups.add(group)
        made = "created as" if create else "is now"
        self.stdout.write(f"{username} {made} an instructor: the admin is at /admin/")
