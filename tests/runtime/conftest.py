import pytest

from tests.conftest import subprocess_env
from tests.support import Worker


@pytest.fixture
def second_worker(worker):
    """A second worker process beside the session's one, stopped after the test."""
    w = Worker("worker-b", env=subprocess_env())
    w.start()
    yield w
    w.stop()
