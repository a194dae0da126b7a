"""Settings for the test suite: the console's own settings, with names of its own on the
broker (so a console running beside the tests is not disturbed) and a file database that
the Celery worker and daphne processes started by the fixtures share with the tests."""

import os
import tempfile
from pathlib import Path

_root = Path(__file__).resolve().parent.parent
os.environ.setdefault("LABCONSOLE_PREFIX", f"labconsole-test-{os.getpid()}")
os.environ.setdefault("TEST_DATABASE_NAME", str(_root / "test-db.sqlite3"))
os.environ.setdefault("LAB_IDLE_MINUTES", "30")
# Tests start many labs for one learner in quick succession; the tests of the limits
# themselves set the limits they reach.
os.environ.setdefault("LAB_MAX_PER_USER", "50")
os.environ.setdefault("LAB_STARTS_PER_MINUTE", "1000")
os.environ.setdefault("LAB_PUBLISHES_PER_MINUTE", "10000")
# The local cluster of the tests (tests/cluster): a directory, node names and ports of
# this run's own, passed on to the processes the fixtures start.
os.environ.setdefault(
    "LAB_CLUSTER_DIR", str(Path(tempfile.gettempdir()) / f"labconsole-test-cluster-{os.getpid()}")
)
os.environ.setdefault("LAB_CLUSTER_PREFIX", f"labt{os.getpid()}n")
os.environ.setdefault("LAB_CLUSTER_PORT", str(10_000 + os.getpid() % 50 * 40))
# No cluster booted ahead unless a test asks for one: each boot takes a core for 20 s.
os.environ.setdefault("LAB_CLUSTER_WARM", "0")
os.environ.setdefault("LAB_CLUSTER_MAX", "3")
# A key of their own, so that the tests run on a checkout without `.env`.
os.environ.setdefault("SECRET_KEY", "tests-only-" + "k" * 50)

from labconsole.settings import *  # noqa: E402,F403

if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":  # noqa: F405
    # A database of this run's own (pytest-django makes and drops it): two runs against
    # one server do not collide. The worker and daphne processes the fixtures start are
    # given its name in DATABASE_URL (tests/conftest.py).
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": "test_" + os.environ["LABCONSOLE_PREFIX"].replace("-", "_").lower()
    }

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# DEBUG is off here as in production, but the pages the tests' daphne serves use the static
# files of the checkout as they are, not the copies `collectstatic` made last.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
