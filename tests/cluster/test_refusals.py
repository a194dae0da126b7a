"""What `manage.py labcluster` refuses, without booting a node: a directory that is not
one of its clusters, ports that something else holds, and a node it does not have. Each
refusal says what is wrong and leaves what it found as it was."""

from __future__ import annotations

import socket
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from labconsole.cluster.local import LocalCluster
from tests.support import free_port


def test_a_directory_not_made_by_labcluster_is_left_alone(tmp_path, settings):
    foreign = tmp_path / "cluster"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    settings.LAB_CLUSTER_DIR = str(foreign)
    settings.LAB_CLUSTER_PORT = free_port()
    for action in ("up", "down"):
        with pytest.raises(CommandError, match="not a cluster directory of ours"):
            call_command("labcluster", action, stdout=StringIO())
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_ports_in_use_are_named_and_nothing_is_started(tmp_path, settings):
    settings.LAB_CLUSTER_DIR = str(tmp_path / "cluster")
    settings.LAB_CLUSTER_PORT = port = free_port()
    settings.LAB_CLUSTER_PREFIX = "labrefused"
    with socket.socket() as holder:  # something else listens on the first node's port
        holder.bind(("127.0.0.1", port))
        holder.listen()
        with pytest.raises(CommandError, match=f"ports in use by something else: {port}/"):
            call_command("labcluster", "up", stdout=StringIO())
    assert not (tmp_path / "cluster").exists()
    assert LocalCluster.from_settings().leftovers() == []


def test_an_unknown_node_is_named_with_the_ones_there_are(tmp_path, settings):
    settings.LAB_CLUSTER_DIR = str(tmp_path / "cluster")
    settings.LAB_CLUSTER_PREFIX = "lab"
    for action in ("stop", "kill", "start"):
        with pytest.raises(CommandError, match=r"no node 'lab9' in this cluster \(its nodes: lab1"):
            call_command("labcluster", action, "lab9", stdout=StringIO())


def test_a_cluster_of_ten_is_refused():
    with pytest.raises(ValueError, match="1 to 9 nodes, not 10"):
        LocalCluster("/nonexistent", size=10)


@pytest.mark.django_db(transaction=True)
def test_a_lab_on_a_cluster_that_is_not_running_says_so_and_leaves_nothing(
    tmp_path, settings, catalogue, learner, labs
):
    from exercises.models import LabSession
    from exercises.services import LabError, lab_session_start

    settings.LAB_CLUSTER_DIR = str(tmp_path / "cluster")
    settings.LAB_CLUSTER_PORT = free_port()
    assert lab_session_start(exercise=catalogue["hello-world"], owner=learner).is_active
    with pytest.raises(LabError, match="runs on the lab cluster, which is not running yet"):
        lab_session_start(exercise=catalogue["cluster-failover"], owner=learner)
    assert list(LabSession.objects.values_list("exercise__slug", flat=True)) == ["hello-world"]


@pytest.mark.django_db(transaction=True)
def test_a_console_without_a_cluster_refuses_its_labs_and_sweeps_the_shared_broker(
    settings, catalogue, learner, labs
):
    from exercises.services import LabError, lab_session_start
    from exercises.sweep import labs_sweep

    settings.LAB_CLUSTER_SIZE = 0
    with pytest.raises(LabError, match=r"this console runs none \(LAB_CLUSTER_SIZE=0\)"):
        lab_session_start(exercise=catalogue["durability"], owner=learner)
    assert labs_sweep(grace_seconds=300).ended == []
    out = StringIO()
    call_command("labcluster", "up", stdout=out)
    assert out.getvalue() == "no lab cluster: LAB_CLUSTER_SIZE is 0\n"


@pytest.mark.django_db(transaction=True)
def test_a_lab_on_the_shared_broker_has_no_broker_panel(client, catalogue, learner, labs):
    from django.urls import reverse

    from exercises.services import lab_session_start

    session = lab_session_start(exercise=catalogue["hello-world"], owner=learner, run=False)
    client.force_login(learner)
    page = client.get(session.get_absolute_url()).content.decode()
    assert 'id="lab-config"' in page and 'id="broker-panel"' not in page
    assert client.get(reverse("lab-brokers", args=[session.id])).status_code == 404
    refused = client.post(reverse("lab-broker-node", args=[session.id, "lab1"]), {"action": "kill"})
    assert refused.status_code == 400
    assert "runs on the shared broker: its nodes are not yours to stop" in refused.content.decode()
