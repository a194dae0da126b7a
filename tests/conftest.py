"""Fixtures: the real RabbitMQ, a real Celery worker in its own process, and cleanup that
leaves no lab vhost, user or console queue behind."""

from __future__ import annotations

import contextlib
import os
from urllib.parse import quote

import pytest
from django.conf import settings
from django.utils import translation

from labconsole.broker import amqp
from labconsole.broker.management import ManagementClient
from tests.support import Worker


def database_url() -> str:
    """The URL of the test database (SQLite's file or PostgreSQL's test database), once
    pytest-django has made it and named it in the settings."""
    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3":
        return f"sqlite:///{db['NAME']}"
    credentials = quote(db["USER"], safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{credentials}@{db['HOST']}:{db['PORT'] or 5432}/{db['NAME']}"


def subprocess_env() -> dict[str, str]:
    """The environment for processes that must share this test run's database and names."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="tests.settings",
        LABCONSOLE_PREFIX=settings.LABCONSOLE_PREFIX,
        DATABASE_URL=database_url(),
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(autouse=True)
def default_language():
    """Each test starts in the default language: a request in Russian leaves Russian active
    in the test's thread (LocaleMiddleware activates it; nothing there deactivates it)."""
    translation.deactivate()
    yield
    translation.deactivate()


DATABASE_FIXTURES = {"db", "transactional_db", "django_db_setup"}


def pytest_collection_modifyitems(config, items):
    """Marks `database` every test that uses the database (a `django_db` mark, or a
    fixture that needs one, the worker's included): `make test` runs those again on
    PostgreSQL (`-m database`); the others behave the same whatever the database."""
    for item in items:
        if item.get_closest_marker("django_db") or DATABASE_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.database)


@pytest.fixture(scope="session")
def api() -> ManagementClient:
    client = ManagementClient()
    try:
        client.request("GET", "overview")
    except Exception as exc:  # noqa: BLE001
        pytest.exit(f"RabbitMQ's management API does not answer ({exc}); run `make test`.")
    return client


@pytest.fixture(scope="session", autouse=True)
def console_names_removed():
    """Whatever this run declared under its own names on the broker's console vhost (its
    exchanges and queues, `LABCONSOLE_PREFIX.*`) is deleted when the run ends, whichever
    tests ran: a run of tests that sent a control message but started no worker, too."""
    yield
    with contextlib.suppress(Exception):
        ManagementClient().delete_named(amqp.console_vhost(), settings.LABCONSOLE_PREFIX + ".")


@pytest.fixture(scope="session")
def worker(django_db_setup, django_db_blocker, api):
    """One real Celery worker for the session; a test that kills it starts it again.
    Tasks that earlier tests sent with no worker running belong to labs that are gone:
    they are purged, so that the first lab of a test does not wait behind them."""
    from labconsole.celery import app

    app.control.purge()
    w = Worker("worker", env=subprocess_env())
    w.start()
    yield w
    w.stop()
    api.delete_named(amqp.console_vhost(), settings.LABCONSOLE_PREFIX + ".")


@pytest.fixture
def labs(api):
    """Every lab a test starts is stopped afterwards, and its vhost and user must be gone."""
    from exercises.models import LabSession
    from exercises.services import lab_session_stop

    yield
    leftovers = []
    for session in LabSession.objects.all():
        lab_session_stop(session=session)
        leftovers.append(session.vhost)
    names = set(api.vhost_names())
    assert not names & set(leftovers), f"lab vhosts left on the broker: {names & set(leftovers)}"


_CATALOGUE_ROWS: list[dict] = []


@pytest.fixture
def catalogue(db):
    """The built-in catalogue in the database. The first test loads it the way `make run`
    does (every file parsed and validated); the others insert the same rows at once."""
    from exercises.models import Exercise
    from exercises.services import exercise_load_builtin

    if not _CATALOGUE_ROWS:
        loaded = [e for e, _ in exercise_load_builtin()]
        skip = {"id", "updated_at"}
        _CATALOGUE_ROWS.extend(
            {f.attname: getattr(e, f.attname) for f in Exercise._meta.concrete_fields}
            for e in loaded
        )
        for row in _CATALOGUE_ROWS:
            for name in skip:
                row.pop(name)
        return {e.slug: e for e in loaded}
    made = Exercise.objects.bulk_create(Exercise(**row) for row in _CATALOGUE_ROWS)
    return {e.slug: e for e in made}


@pytest.fixture
def client_in(client, learner):
    """Django's test client, logged in as the learner."""
    client.force_login(learner)
    return client


@pytest.fixture
def learner(django_user_model):
    return django_user_model.objects.create_user("learner", password="learner-pass-1")
