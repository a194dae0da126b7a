import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

# Earlier versions of the console gave the demo login this password on every start, and
# printed it in the README: a demo login still holding it gets a random one.
WELL_KNOWN_PASSWORD = "demo-rabbit"


class Command(BaseCommand):
    help = (
        "On a database with no user yet, create the demo login (a superuser) with a random "
        "password and print it, once. It is never reset afterwards: "
        "`manage.py changepassword demo` sets another."
    )

    def add_arguments(self, parser):
        parser.add_argument("--username", default="demo")

    def handle(self, *args, username, **options):
        users = get_user_model().objects
        demo = users.filter(username=username).first()
        if demo is None and users.exists():
            return  # people have logins of their own
        password = secrets.token_urlsafe(12)
        if demo is None:
            users.create_superuser(username=username, email="", password=password)
            what = "Created the demo login (a superuser)"
        elif demo.check_password(WELL_KNOWN_PASSWORD):
            demo.set_password(password)
            demo.save(update_fields=["password"])
            what = "The demo login had a well-known password; it has a new one"
        else:
            self.stdout.write(
                f"Demo login: {username} (its password was printed when it was created; "
                f"`python manage.py changepassword {username}` sets another)"
            )
            return
        self.stdout.write(
            f"{what}. It is shown this once; `python manage.py changepassword {username}` "
            f"sets another.\n\n    {username} / {password}\n"
        )
