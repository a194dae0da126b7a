"""`manage.py demo_login`, which `make run` and the compose file run on every start: a demo
superuser with a random password on a database without users, printed once, never reset."""

import re

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command

pytestmark = pytest.mark.django_db

User = get_user_model()


def demo_login(capsys) -> str:
    call_command("demo_login")
    return capsys.readouterr().out


def printed_password(out: str) -> str:
    match = re.search(r"^    demo / (\S+)$", out, re.M)
    assert match, out
    return match[1]


def test_created_once_with_a_random_password_and_never_reset(capsys):
    out = demo_login(capsys)
    password = printed_password(out)
    demo = User.objects.get(username="demo")
    assert demo.is_superuser and demo.is_staff
    assert demo.check_password(password) and len(password) >= 16
    assert "changepassword demo" in out

    # The next start changes nothing and prints no password.
    out = demo_login(capsys)
    assert "Demo login: demo" in out and password not in out
    assert not re.search(r"^    demo / ", out, re.M)
    demo.refresh_from_db()
    assert demo.check_password(password)

    # A password the person chose is kept too.
    demo.set_password("chosen-by-me")
    demo.save()
    demo_login(capsys)
    demo.refresh_from_db()
    assert demo.check_password("chosen-by-me")


def test_two_databases_get_different_passwords(capsys):
    first = printed_password(demo_login(capsys))
    User.objects.all().delete()
    assert printed_password(demo_login(capsys)) != first


def test_not_created_where_people_have_logins_of_their_own(capsys):
    User.objects.create_superuser("teacher", "", "teacher-password")
    assert demo_login(capsys) == ""
    assert not User.objects.filter(username="demo").exists()


def test_the_well_known_password_of_earlier_versions_is_replaced(capsys):
    demo = User.objects.create_superuser("demo", "", "demo-rabbit")
    password = printed_password(demo_login(capsys))
    demo.refresh_from_db()
    assert not demo.check_password("demo-rabbit")
    assert demo.check_password(password)
