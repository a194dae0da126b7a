"""The pool of clusters (exercises/cluster_pool.py) on real local nodes: a cluster lab takes
a warm cluster of its own and the pool boots the next; two labs' nodes are apart; at
LAB_CLUSTER_MAX a lab is refused; a lab's cluster goes with it. A class runs its labs on
one cluster whose nodes only its instructor faults, and the cluster goes with the class.
Three clusters boot in all (each takes a core for about 20 s)."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone

from exercises.cluster_pool import pool_sweep
from exercises.models import LabCluster, LabSession
from labconsole.broker.brokers import lab_broker
from labconsole.cluster.local import LocalCluster
from tests.exercises.test_classes import make_class, make_instructor
from tests.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def _gone(cluster: LabCluster) -> bool:
    """The cluster's row, processes, ports and directory are all gone."""
    return (
        not LabCluster.objects.filter(pk=cluster.pk).exists()
        and LocalCluster.slot(cluster.slot).leftovers() == []
    )


def test_cluster_labs_take_warm_clusters_of_their_own(
    settings, catalogue, learner, labs, client, django_user_model
):
    """`labcluster up` boots the warm pool; a cluster lab takes the warm cluster at once and
    the pool boots the next, which the next learner's lab takes: their nodes are apart (a
    node killed in one lab's cluster leaves the other's running). At LAB_CLUSTER_MAX a
    third lab is refused, saying so, and nothing is made. An ended lab's cluster goes."""
    from exercises.services import LabError, lab_session_start, lab_session_stop

    settings.LAB_CLUSTER_WARM = 1
    settings.LAB_CLUSTER_MAX = 2
    call_command("labcluster", "up", stdout=StringIO())
    warm = LabCluster.objects.get()
    assert warm.state == LabCluster.State.WARM and warm.slot == 1
    client.force_login(learner)
    page = html.unescape(client.get(reverse("exercise", args=["durability"])).content.decode())
    assert 'data-brokers="ready"' in page and "A cluster of 3 nodes is ready for your lab." in page

    mine = lab_session_start(exercise=catalogue["durability"], owner=learner, run=False)
    assert mine.cluster.pk == warm.pk
    assert LabCluster.objects.get(pk=warm.pk).state == LabCluster.State.IN_USE
    following = wait_for(
        lambda: LabCluster.objects.exclude(pk=warm.pk).filter(state="warm").first(),
        timeout=150,
        message="the next warm cluster booted by the pool",
    )
    other = django_user_model.objects.create_user("other")
    theirs = lab_session_start(exercise=catalogue["durability"], owner=other, run=False)
    assert theirs.cluster.pk == following.pk and following.slot != warm.slot
    for lab, apart in ((mine, theirs), (theirs, mine)):
        assert lab.broker.api().vhost_exists(lab.vhost)
        assert not apart.broker.api().vhost_exists(lab.vhost)
        assert not lab_broker().api().vhost_exists(lab.vhost)

    # Both clusters in use, at LAB_CLUSTER_MAX: the pool boots none, a third lab is refused.
    full = "All 2 of the console's clusters are in use (2 labs, 0 classes)."
    with pytest.raises(LabError, match=re.escape(full)):
        lab_session_start(exercise=catalogue["durability"], owner=learner, run=False)
    assert LabSession.objects.count() == 2 and LabCluster.objects.count() == 2

    # A node of my cluster killed from my panel: theirs keeps all three running.
    panel = client.get(reverse("lab-brokers", args=[mine.id])).content.decode()
    assert "broker-shared" not in panel  # nobody else's lab is on these nodes
    node = LocalCluster.slot(warm.slot).nodes[0]
    killed = client.post(
        reverse("lab-broker-node", args=[mine.id, node.name]), {"action": "kill"}
    ).content.decode()
    assert "Killing" in killed
    wait_for(lambda: not node.vm_running(), timeout=30, message=f"{node.node} killed")
    assert all(s.running for s in LocalCluster.slot(following.slot).status())

    lab_session_stop(session=mine)
    wait_for(lambda: _gone(warm), timeout=60, message="the ended lab's cluster gone")
    assert not Path(django_settings.LAB_CLUSTER_DIR, f"c{warm.slot}").exists()
    assert LabCluster.objects.get(pk=following.pk).state == LabCluster.State.IN_USE

    # A lab that ended without taking its cluster along (its process died): the sweep does.
    settings.LAB_CLUSTER_WARM = 0
    LabSession.objects.filter(pk=theirs.pk).update(state=LabSession.State.ENDED)
    a_minute_ago = timezone.now() - timedelta(minutes=1)
    LabCluster.objects.filter(pk=following.pk).update(changed_at=a_minute_ago)
    assert pool_sweep(idle_minutes=15) == [following.slot]
    assert _gone(following)


def test_a_class_runs_its_labs_on_one_cluster_whose_nodes_are_the_instructors(
    settings, worker, catalogue, learner, labs, client, django_user_model
):
    """The instructor starts the class's brokers from the dashboard; two learners' labs run
    on that one cluster. A learner's fault is refused and does nothing; the instructor's
    stops the node, and both labs' timelines show it as the instructor's. The class's end
    takes the cluster with it."""
    from exercises import classes

    settings.LAB_CLUSTER_WARM = 0
    instructor = make_instructor(django_user_model)
    classroom = make_class(instructor, [catalogue["durability"]])
    client.force_login(instructor)
    panel_url = reverse("class-brokers", args=[classroom.pk])
    dashboard = client.get(reverse("class-dashboard", args=[classroom.pk])).content.decode()
    assert 'id="start-class-brokers"' in dashboard
    started = client.post(
        reverse("class-brokers-start", args=[classroom.pk]), HTTP_HX_REQUEST="true"
    )
    assert 'data-cluster="booting"' in started.content.decode()
    wait_for(
        lambda: 'data-cluster="running"' in client.get(panel_url).content.decode(),
        timeout=150,
        message="the class's brokers running, as the dashboard says",
    )
    cluster = LabCluster.objects.get(classroom=classroom)

    other = django_user_model.objects.create_user("other")
    for user, name in ((learner, "Ann"), (other, "Bob")):
        classes.classroom_join(code=classroom.join_code, user=user, display_name=name)
    ann, bob = (
        classes.class_lab_start(classroom=classroom, user=u, exercise=catalogue["durability"])
        for u in (learner, other)
    )
    assert ann.cluster.pk == bob.cluster.pk == cluster.pk
    api = lab_broker("cluster", slot=cluster.slot).api()
    assert api.vhost_exists(ann.vhost) and api.vhost_exists(bob.vhost)
    node = LocalCluster.slot(cluster.slot).nodes[1]

    client.force_login(learner)
    panel = html.unescape(client.get(reverse("lab-brokers", args=[ann.id])).content.decode())
    assert "In this class, your instructor stops and starts the nodes." in panel
    assert 'name="action"' not in panel
    refused = client.post(reverse("lab-broker-node", args=[ann.id, node.name]), {"action": "stop"})
    assert refused.status_code == 403
    assert "your instructor stops and starts the nodes" in refused.content.decode()
    assert node.app_running()

    client.force_login(instructor)
    stopped = client.post(
        reverse("class-broker-node", args=[classroom.pk, node.name]), {"action": "stop"}
    )
    assert stopped.status_code == 200 and "Stopping RabbitMQ on" in stopped.content.decode()
    wait_for(
        lambda: re.search(
            rf'data-node="{node.name}" data-state="stopped"(?! data-busy)',
            client.get(panel_url).content.decode(),
        ),
        timeout=60,
        message=f"{node.name} stopped, as the dashboard says",
    )
    fault = {"node": node.name, "action": "stop", "workload": "@instructor"}

    def on_timeline(session) -> bool:
        session.refresh_from_db()  # the monitor saves its state every second
        return any(
            {k: e.get(k) for k in fault} == fault for e in session.monitor_state.get("timeline", [])
        )

    for session in (ann, bob):
        wait_for(
            lambda s=session: on_timeline(s),
            timeout=30,
            message=f"the instructor's stop on {session.id}'s timeline",
        )

    ended = client.post(reverse("class-end", args=[classroom.pk]))
    assert ended.status_code in (200, 302)
    assert not LabSession.objects.exclude(state=LabSession.State.ENDED).exists()
    wait_for(lambda: _gone(cluster), timeout=60, message="the class's cluster gone with it")
