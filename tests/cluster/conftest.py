"""What every module of tests/cluster shares: the boots and removals a test set off are
waited for, whatever cluster a module booted goes at its end (the logs kept among the test
artifacts), and nothing of ours is left behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from django.conf import settings

from labconsole.cluster.local import LocalCluster
from tests.support import ARTIFACTS, wait_for


@pytest.fixture(autouse=True)
def boots_and_removals_done(request):
    """A boot or removal a test set off (the lab it ended, the pool it refilled) runs on a
    thread of the test process: it is waited for while the test's database is there."""
    yield
    if not request.node.get_closest_marker("django_db"):
        return
    from exercises.models import LabCluster

    wait_for(
        lambda: not LabCluster.objects.filter(state__in=["booting", "stopping"]).exists(),
        timeout=150,
        message="the clusters' boots and removals done",
    )


@pytest.fixture(scope="module", autouse=True)
def no_cluster_left():
    yield
    for k in LocalCluster.slots_on_disk():
        local = LocalCluster.slot(k)
        for node in local.nodes:
            if node.log_dir.exists():
                shutil.copytree(node.log_dir, ARTIFACTS / "cluster" / node.name, dirs_exist_ok=True)
        local.down()
    slots = range(1, settings.LAB_CLUSTER_MAX + 1)
    assert [line for k in slots for line in LocalCluster.slot(k).leftovers()] == []
    shutil.rmtree(Path(settings.LAB_CLUSTER_DIR), ignore_errors=True)  # the slots' lock files
