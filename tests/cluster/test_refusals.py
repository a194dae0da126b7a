"""What `manage.py labcluster` and the pool of clusters refuse, without booting a node: a
directory that is not one of its clusters, ports that something else holds, a node it
does not have, a cluster lab with no cluster free or with every cluster in use. Each
refusal says what is wrong and leaves what it found as it was."""

from __future__ import annotations

import fcntl
import html
import re
import socket
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from exercises.models import Classroom, LabCluster
from labconsole.cluster.local import MARKER, LocalCluster
from tests.support import free_port


@pytest.mark.django_db(transaction=True)
def test_a_directory_not_made_by_labcluster_is_left_alone(tmp_path, settings):
    """A slot's directory that `labcluster` did not make: `up` refuses it, `down` leaves it."""
    settings.LAB_CLUSTER_DIR = str(tmp_path / "clusters")
    settings.LAB_CLUSTER_PORT = free_port()
    settings.LAB_CLUSTER_WARM = 1
    foreign = tmp_path / "clusters" / "c1"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(CommandError, match="not a cluster directory of ours"):
        call_command("labcluster", "up", stdout=StringIO())
    out = StringIO()
    call_command("labcluster", "down", stdout=out)
    assert "no cluster in" in out.getvalue()
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    assert not LabCluster.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_ports_in_use_are_named_and_nothing_is_started(tmp_path, settings):
    """Something else on the first slot's first port: named, and nothing started or kept."""
    settings.LAB_CLUSTER_DIR = str(tmp_path / "clusters")
    settings.LAB_CLUSTER_PORT = base = free_port()
    settings.LAB_CLUSTER_PREFIX = "labrefused"
    settings.LAB_CLUSTER_WARM = 1
    port = LocalCluster.slot(1).nodes[0].port
    with socket.socket() as holder:  # something else listens on the first node's port
        holder.bind(("127.0.0.1", port))
        holder.listen()
        with pytest.raises(CommandError, match=f"ports in use by something else: {port}/"):
            call_command("labcluster", "up", stdout=StringIO())
    assert port == base + 10
    assert not (tmp_path / "clusters" / "c1").exists()
    assert LocalCluster.slot(1).leftovers() == []
    assert not LabCluster.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_an_unknown_node_is_named_with_how_nodes_are_named(tmp_path, settings):
    """A node in no cluster of the pool: the command says how cluster k's nodes are named."""
    settings.LAB_CLUSTER_DIR = str(tmp_path / "clusters")
    settings.LAB_CLUSTER_PREFIX = "lab"
    for action in ("stop", "kill", "start"):
        with pytest.raises(CommandError, match=r"no node 'lab9' in any cluster \(cluster k's"):
            call_command("labcluster", action, "lab9", stdout=StringIO())


def test_slots_have_names_ports_and_directories_of_their_own(settings):
    """Two slots of the pool share no node name, port or directory."""
    settings.LAB_CLUSTER_DIR = "/nonexistent/clusters"
    settings.LAB_CLUSTER_PORT = 5701
    settings.LAB_CLUSTER_PREFIX = "lab"
    one, two = LocalCluster.slot(1), LocalCluster.slot(2)
    assert [n.node for n in one.nodes] == [
        "labc1n1@localhost",
        "labc1n2@localhost",
        "labc1n3@localhost",
    ]
    assert [n.port for n in one.nodes] == [5711, 5712, 5713]
    assert [n.port for n in two.nodes] == [5721, 5722, 5723]
    assert str(two.base) == "/nonexistent/clusters/c2"
    ports = lambda c: {p for n in c.nodes for p in (n.port, n.mgmt_port, n.dist_port)}  # noqa: E731
    assert not ports(one) & ports(two)


def test_a_cluster_of_ten_is_refused():
    with pytest.raises(ValueError, match="1 to 9 nodes, not 10"):
        LocalCluster("/nonexistent", size=10)


@pytest.mark.django_db(transaction=True)
def test_a_cluster_lab_with_no_cluster_warm_says_so_and_leaves_nothing(
    tmp_path, settings, catalogue, learner, labs, client
):
    """No warm cluster: the lab is refused with what to do, its page offers to start one."""
    from exercises.models import LabSession
    from exercises.services import LabError, lab_session_start

    settings.LAB_CLUSTER_DIR = str(tmp_path / "clusters")
    settings.LAB_CLUSTER_PORT = free_port()
    assert lab_session_start(exercise=catalogue["hello-world"], owner=learner).is_active
    with pytest.raises(LabError, match="No cluster is free for this exercise right now: start"):
        lab_session_start(exercise=catalogue["cluster-failover"], owner=learner)
    assert list(LabSession.objects.values_list("exercise__slug", flat=True)) == ["hello-world"]
    assert not LabCluster.objects.exists() and not (tmp_path / "clusters").exists()
    client.force_login(learner)
    page = client.get(reverse("exercise", args=["cluster-failover"])).content.decode()
    assert 'data-brokers="stopped"' in page and 'id="start-brokers"' in page


@pytest.mark.django_db(transaction=True)
def test_with_every_cluster_in_use_a_lab_is_refused_saying_how_many_and_when(
    tmp_path, settings, catalogue, learner, labs, client, django_user_model
):
    """At LAB_CLUSTER_MAX, with no cluster free: the page and the start say that all the
    console's clusters are in use, how many, and when to try again; nothing is made."""
    from exercises.models import LabSession
    from exercises.services import LabError, lab_session_start

    settings.LAB_CLUSTER_DIR = str(tmp_path / "clusters")
    settings.LAB_CLUSTER_MAX = 2
    other = django_user_model.objects.create_user("other")
    soon = timezone.now() + timedelta(minutes=4, seconds=10)
    now = timezone.now()
    classroom = Classroom.objects.create(
        name="c", instructor=other, starts_at=now, ends_at=now + timedelta(minutes=30)
    )
    LabCluster.objects.create(slot=1, state=LabCluster.State.IN_USE, classroom=classroom)
    LabCluster.objects.create(
        slot=2, state=LabCluster.State.WARM, reserved_for=other, reserved_until=soon
    )
    full = (
        r"All 2 of the console's clusters are in use \(0 labs, 1 class\)\. "
        r"One may be free in about 5 minutes: try again then\."
    )
    with pytest.raises(LabError, match=full):
        lab_session_start(exercise=catalogue["durability"], owner=learner)
    client.force_login(learner)
    page = html.unescape(client.get(reverse("exercise", args=["durability"])).content.decode())
    assert 'data-brokers="full"' in page and re.search(full, page)
    assert 'id="start-lab"' not in page and 'id="start-brokers"' not in page
    started = client.post(reverse("exercise-brokers-start", args=["durability"]))
    assert re.search(full, html.unescape(started.content.decode()))
    assert not LabSession.objects.exists()
    assert sorted(LabCluster.objects.values_list("slot", flat=True)) == [1, 2]
    assert not (tmp_path / "clusters").exists()


@pytest.mark.django_db(transaction=True)
def test_a_console_without_clusters_refuses_their_labs_and_sweeps_the_shared_broker(
    settings, catalogue, learner, labs
):
    """LAB_CLUSTER_SIZE 0: cluster labs are refused, saying so; `labcluster up` does nothing."""
    from exercises.services import LabError, lab_session_start
    from exercises.sweep import labs_sweep

    settings.LAB_CLUSTER_SIZE = 0
    with pytest.raises(LabError, match=r"this console runs none \(LAB_CLUSTER_SIZE or"):
        lab_session_start(exercise=catalogue["durability"], owner=learner)
    assert labs_sweep(grace_seconds=300).ended == []
    out = StringIO()
    call_command("labcluster", "up", stdout=out)
    assert out.getvalue() == "no lab clusters: LAB_CLUSTER_SIZE or LAB_CLUSTER_MAX is 0\n"


@pytest.mark.django_db(transaction=True)
def test_a_lab_on_the_shared_broker_has_no_broker_panel(client, catalogue, learner, labs):
    from exercises.services import lab_session_start

    session = lab_session_start(exercise=catalogue["hello-world"], owner=learner, run=False)
    client.force_login(learner)
    page = client.get(session.get_absolute_url()).content.decode()
    assert 'id="lab-config"' in page and 'id="broker-panel"' not in page
    assert client.get(reverse("lab-brokers", args=[session.id])).status_code == 404
    refused = client.post(
        reverse("lab-broker-node", args=[session.id, "labc1n1"]), {"action": "kill"}
    )
    assert refused.status_code == 400
    assert "runs on the shared broker: its nodes are not yours to stop" in refused.content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_cluster_booting_for_the_pool_is_taken_over_and_kept_once_up(
    tmp_path, settings, catalogue, learner, client
):
    """Start the brokers while a cluster boots for the pool: that one becomes the learner's
    (no second boot), and once up it is kept for them, their page offering the lab."""
    from exercises.cluster_pool import _booted, cluster_offer, cluster_request

    settings.LAB_CLUSTER_DIR = str(tmp_path / "clusters")
    settings.LAB_CLUSTER_WARM = 0
    booting = LabCluster.objects.create(slot=1)
    assert cluster_request(user=learner).pk == booting.pk
    assert LabCluster.objects.count() == 1
    assert cluster_offer(user=learner)["state"] == "starting"
    _booted(booting)  # as the boot that was under way ends
    booting.refresh_from_db()
    assert booting.state == LabCluster.State.WARM and booting.reserved_for == learner
    assert booting.reserved_until > timezone.now() + timedelta(minutes=4)
    offer = cluster_offer(user=learner)
    assert offer["state"] == "ready" and offer["until"] == booting.reserved_until
    client.force_login(learner)
    page = html.unescape(client.get(reverse("exercise", args=["durability"])).content.decode())
    assert "Your cluster of 3 nodes is ready, kept for you until" in page


@pytest.mark.django_db(transaction=True)
def test_the_sweep_removes_what_no_lab_class_or_process_holds(
    tmp_path, settings, catalogue, learner, django_user_model
):
    """The sweep removes a failed boot, a boot whose process died, the cluster of a lab that
    ended and of a class that ended; it leaves alone a removal another process is at (the
    slot's lock held) and a cluster whose lab runs."""
    from exercises.cluster_pool import pool_sweep
    from exercises.models import LabSession

    settings.LAB_CLUSTER_DIR = str(tmp_path / "clusters")
    settings.LAB_CLUSTER_MAX = 6
    settings.LAB_CLUSTER_WARM = 0
    long_ago = timezone.now() - timedelta(minutes=5)
    state = LabCluster.State
    instructor = django_user_model.objects.create_user("teacher")
    ended_class = Classroom.objects.create(
        name="c", instructor=instructor, starts_at=long_ago, ends_at=long_ago, ended_at=long_ago
    )

    def cluster(slot: int, **fields) -> LabCluster:
        made = LabCluster.objects.create(slot=slot, **fields)
        LabCluster.objects.filter(pk=made.pk).update(changed_at=long_ago)
        return made

    def lab(on: LabCluster, lab_state: str) -> None:
        LabSession.objects.create(
            owner=learner,
            exercise=catalogue["durability"],
            exercise_version=1,
            source=catalogue["durability"].source,
            cluster=on,
            state=lab_state,
        )

    cluster(1, state=state.FAILED, error="boom")
    cluster(2, state=state.BOOTING)
    lab(cluster(3, state=state.IN_USE, reserved_for=learner), LabSession.State.ENDED)
    cluster(4, state=state.IN_USE, classroom=ended_class)
    held = cluster(5, state=state.STOPPING)
    lab(cluster(6, state=state.IN_USE, reserved_for=learner), LabSession.State.RUNNING)
    lock = LocalCluster.slot(held.slot)._lock_path
    lock.parent.mkdir(parents=True)
    with open(lock, "w") as f:  # another process removing slot 5 holds its lock
        fcntl.flock(f, fcntl.LOCK_EX)
        assert sorted(pool_sweep(idle_minutes=15)) == [1, 2, 3, 4]
    assert sorted(LabCluster.objects.values_list("slot", flat=True)) == [5, 6]
    held.delete()  # the other process's removal, done


@pytest.mark.django_db(transaction=True)
def test_down_takes_the_one_cluster_of_before_the_pool_down_too(tmp_path, settings):
    """The cluster of the console before the pool (its files in LAB_CLUSTER_DIR itself,
    with the marker) goes with `labcluster down` as well."""
    settings.LAB_CLUSTER_DIR = str(tmp_path / "cluster")
    settings.LAB_CLUSTER_PREFIX = "lab"
    (tmp_path / "cluster" / "lab1").mkdir(parents=True)
    (tmp_path / "cluster" / MARKER).write_text("made by labconsole\n")
    out = StringIO()
    call_command("labcluster", "down", stdout=out)
    assert out.getvalue() == "the cluster of lab1, lab2, lab3 down; their files removed\n"
    assert not (tmp_path / "cluster").exists()
