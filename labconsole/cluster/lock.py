"""A cluster's lock file: one process at a time brings a cluster up or takes it down, and
the pool's sweep tells a boot under way from one whose process died (docs/cluster.md)."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def held(path: Path) -> Iterator[None]:
    """Holds the lock at `path`, waiting for a process that holds it now."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def is_held(path: Path) -> bool:
    """Whether a process (this one too) holds the lock at `path` now."""
    try:
        lock = open(path)  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return False
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        return False  # the lock goes with the file's close
