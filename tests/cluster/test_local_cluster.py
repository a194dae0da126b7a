"""Clusters of local RabbitMQ nodes of the tests' own (labconsole/cluster/local.py). The
leader of a quorum queue is killed while a publisher with confirms is mid-stream; a new
leader takes over, the publisher moves to the next node, no confirmed message is lost, and
the killed node comes back and catches up. Then the cluster exercises are played from the
page's Brokers panel, each lab on a cluster of its own from the pool (exercises/
cluster_pool.py): four boots in all, one at a time."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from io import StringIO

import pika
import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.test import override_settings
from django.urls import reverse

from exercises.cluster_pool import pool_fill
from exercises.models import LabCluster, LabSession
from labconsole.broker.management import BrokerError
from labconsole.cluster.local import LocalCluster
from tests.exercises.test_step_texts import LANGUAGES, assert_steps_name_the_controls
from tests.support import wait_for

# Every test here, so that pytest-django keeps them together and in this order (it runs
# the tests that use the database apart from the others).
pytestmark = pytest.mark.django_db(transaction=True)

QUEUE = "failover-orders"
COUNT = 2000


@pytest.fixture(scope="module")
def cluster(django_db_setup, django_db_blocker):
    """The warm pool of one cluster, as `manage.py labcluster up` boots it, for the tests
    that use its nodes directly. tests/settings.py gives this run a directory, node names
    and ports of its own, which the worker and web processes the fixtures start inherit;
    tests/cluster/conftest.py removes what is left at the end of the module."""
    out = StringIO()
    with override_settings(LAB_CLUSTER_WARM=1), django_db_blocker.unblock():
        call_command("labcluster", "up", stdout=out)
    local = LocalCluster.slot(1)
    local.up_output = out.getvalue()
    return local


@pytest.fixture
def warm(settings) -> None:
    """One warm cluster in the pool, for the test's cluster lab to take (the pool then
    boots no other: LAB_CLUSTER_WARM is 0 again)."""
    settings.LAB_CLUSTER_WARM = 1
    pool_fill(wait=True)
    settings.LAB_CLUSTER_WARM = 0


def _steps_name_the_controls(client, session) -> None:
    """tests/exercises/test_step_texts.py for a lab on a cluster: its steps name the Brokers
    panel's title and buttons as the page shows them, in every language (English after)."""
    for language in LANGUAGES:
        assert_steps_name_the_controls(client, session, language)
    del client.cookies[django_settings.LANGUAGE_COOKIE_NAME]


def _nodes(session) -> LocalCluster:
    return LocalCluster.slot(session.cluster.slot)


def _queue(cluster) -> dict:
    """The queue as the management API shows it; empty while no node answers."""
    try:
        return cluster.queue(QUEUE)
    except BrokerError:
        return {}


def _connect(node) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(node.amqp_url + "%2F?connection_attempts=1"))


def test_up_boots_the_warm_pool_as_one_cluster_of_three(cluster, settings):
    """`labcluster up` boots the pool's cluster: its three nodes see one another running,
    `status` says so, and `up` again boots nothing more."""
    assert "cluster 1: warm, for the pool" in cluster.up_output
    assert cluster.up_output.count(" running ") == 3, cluster.up_output
    expected = sorted(n.node for n in cluster.nodes)
    for node in cluster.nodes:  # every node sees all three running
        assert cluster.running_nodes(node) == expected
    out = StringIO()
    call_command("labcluster", "status", stdout=out)
    assert out.getvalue().count(" running ") == 3, out.getvalue()
    # up again is nothing: the nodes keep their pids
    settings.LAB_CLUSTER_WARM = 1
    pids = [s.pid for s in cluster.status()]
    call_command("labcluster", "up", stdout=StringIO())
    assert [s.pid for s in cluster.status()] == pids


class Publisher(threading.Thread):
    """Publishes numbered persistent messages with confirms, one at a time, to the quorum
    queue. On a lost connection it moves to the next node; on a nack (the 3.10 client's trap:
    a publish in the window of the election can be nacked for ever on that channel) it
    opens a new channel and publishes the same message again."""

    def __init__(self, nodes, count: int):
        super().__init__(daemon=True)
        self.nodes = nodes
        self.count = count
        self.confirmed: set[int] = set()
        self.reconnects = 0
        self.nacks = 0
        self.error: BaseException | None = None

    def run(self):
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def _run(self):
        n, i, channel, deadline = 0, 0, None, time.monotonic() + 120
        while n < self.count and time.monotonic() < deadline:
            try:
                if channel is None or channel.is_closed:
                    try:
                        connection = _connect(self.nodes[i % len(self.nodes)])
                    except pika.exceptions.AMQPConnectionError:
                        i += 1
                        self.reconnects += 1
                        time.sleep(0.05)
                        continue
                    channel = connection.channel()
                    channel.confirm_delivery()
                channel.basic_publish(
                    "",
                    QUEUE,
                    str(n).encode(),
                    pika.BasicProperties(delivery_mode=2),
                    mandatory=True,
                )
                self.confirmed.add(n)
                n += 1
            except (pika.exceptions.NackError, pika.exceptions.UnroutableError):
                self.nacks += 1
                with contextlib.suppress(Exception):
                    channel.connection.close()
                channel = None
            except (pika.exceptions.AMQPError, OSError):
                i += 1
                self.reconnects += 1
                channel = None


def test_killing_the_quorum_leader_loses_no_confirmed_message(cluster):
    first = cluster.nodes[0]
    connection = _connect(first)
    channel = connection.channel()
    channel.queue_declare(
        QUEUE, durable=True, arguments={"x-queue-type": "quorum", "x-quorum-initial-group-size": 3}
    )
    connection.close()
    info = wait_for(
        lambda: (q := _queue(cluster)).get("leader") and len(q.get("online", [])) == 3 and q,
        timeout=30,
        message="a quorum queue with three members online",
    )
    leader = cluster.node(info["leader"])
    # the publisher starts on the leader's node, and moves on to the next when it dies
    others = [n for n in cluster.nodes if n is not leader]
    publisher = Publisher([leader, *others], count=COUNT)
    publisher.start()
    wait_for(
        lambda: len(publisher.confirmed) >= COUNT // 3, timeout=60, message="a third confirmed"
    )
    leader.kill()
    killed_at = len(publisher.confirmed)
    assert not leader.vm_running()
    new = wait_for(
        lambda: (q := _queue(cluster)).get("leader") not in (None, leader.node) and q,
        timeout=30,
        message="a new leader",
    )
    assert new["leader"] in {n.node for n in others}
    assert leader.node not in new["online"]
    publisher.join(150)
    assert publisher.error is None, repr(publisher.error)
    assert len(publisher.confirmed) == COUNT and killed_at < COUNT
    assert publisher.reconnects >= 1  # its connection died with the node

    leader.start()  # the killed node comes back on its data directory and catches up
    wait_for(
        lambda: sorted(_queue(cluster).get("online", [])) == sorted(n.node for n in cluster.nodes),
        timeout=60,
        message="the restarted node back among the queue's members",
    )
    assert sorted(cluster.running_nodes(leader)) == sorted(n.node for n in cluster.nodes)

    received: set[int] = set()
    duplicates = 0
    connection = _connect(leader)  # read from the node that was killed: it caught up
    channel = connection.channel()
    while True:
        method, _, body = channel.basic_get(QUEUE, auto_ack=True)
        if method is None:
            break
        duplicates += int(body) in received
        received.add(int(body))
    channel.queue_delete(QUEUE)
    connection.close()
    lost = publisher.confirmed - received
    assert not lost, f"{len(lost)} confirmed messages lost, e.g. {sorted(lost)[:5]}"


def test_the_failover_lab_played_from_the_page(warm, worker, catalogue, learner, labs, client):
    """cluster-failover on a warm cluster of its own: its vhost is made there (not on the
    shared broker), its workloads run against the nodes, and the learner kills the leader's
    node and starts it again from the page's broker panel; every checkpoint passes. Its
    steps name the panel's title and buttons as the page shows them, in every language."""
    from exercises.services import lab_session_start, workload_stop
    from labconsole.broker.brokers import lab_broker
    from tests.exercises.test_catalogue_runs import (
        drive,
        every_checkpoint,
        passed,
        routed,
        show,
    )

    session = lab_session_start(exercise=catalogue["cluster-failover"], owner=learner)
    assert _nodes(session).management().vhost_exists(session.vhost)
    assert not lab_broker().api().vhost_exists(session.vhost)
    client.force_login(learner)
    _steps_name_the_controls(client, session)
    panel_url = reverse("lab-brokers", args=[session.id])
    seen: dict = {}

    def panel() -> str:
        response = client.get(panel_url)
        assert response.status_code == 200
        return response.content.decode()

    def leader() -> str | None:
        found = re.search(r'data-queue="orders" data-leader="([^"]*)" data-online="(\d)"', panel())
        return found and found.group(2) == "3" and found.group(1)

    def fault(node: str, action: str) -> str:
        url = reverse("lab-broker-node", args=[session.id, node])
        response = client.post(url, {"action": action}, HTTP_HX_REQUEST="true")
        assert response.status_code == 200, response.content.decode()
        return response.content.decode()

    def routed_orders() -> int:
        return sum(routed(session, "", "orders").values())

    def play():
        yield session, ("all-online", "orders-acked")
        seen["leader"] = wait_for(leader, timeout=20, message="orders led, 3 members online")
        show(session, "kill-the-leader")
        assert "Killing" in fault(seen["leader"], "kill")
        yield session, ("leader-moved", "one-member-down", "orders-go-on")
        # The live view goes on without the node: the firehose is a quorum queue too.
        seen["routed"] = routed_orders()
        wait_for(
            lambda: routed_orders() >= seen["routed"] + 40,
            timeout=30,
            message="publishes to orders seen by the firehose with the node down",
        )
        show(session, "bring-it-back")
        assert "Starting" in fault(seen["leader"], "start")
        yield session, ("back-online", "still-flowing")
        show(session, "count-them")
        workload_stop(workload=session.workloads.get(name="checkout"))
        yield session, ("none-lost",)

    drive(play(), timeout=150)
    assert passed(session) == every_checkpoint(session)

    def final_ledger() -> dict | None:
        session.refresh_from_db()  # the monitor saves its state every second
        ledger = session.monitor_state["record"]["ledger"]["checkout"]
        return ledger if ledger.get("final") and ledger["missing"] == 0 else None

    ledger = wait_for(final_ledger, message="checkout's final ledger, nothing missing, saved")
    assert ledger["received"] >= ledger["confirmed"] >= 100, ledger
    # The lab's timeline: the learner's kill, what the cluster did, the start, its return
    # (read every 5 s while nobody watches the lab, saved every second).
    killed = seen["leader"]
    expected = [
        {"node": killed, "action": "kill", "workload": "@you"},
        {"node": killed, "state": "down"},
        {"queue": "orders", "online": 2, "size": 3},
        {"node": killed, "action": "start", "workload": "@you"},
        {"node": killed, "state": "running"},
        {"queue": "orders", "online": 3, "size": 3},
    ]

    def timeline() -> list[dict]:
        session.refresh_from_db()
        return [
            {k: v for k, v in e.items() if k not in ("t", "kind", "seq", "n", "flow")}
            for e in session.monitor_state["timeline"]
        ]

    wait_for(
        lambda: [e for e in timeline() if e in expected] == expected,
        timeout=30,
        message=f"the kill and the start on the lab's timeline: {expected}",
    )
    timeline = timeline()
    assert any(e.get("was") == killed and e.get("queue") == "orders" for e in timeline), timeline
    moved = wait_for(leader, timeout=30, message="three members online again")
    assert moved != seen["leader"]  # the returning node did not take its place back
    # A node the cluster does not have is named, with the ones it has.
    refused = client.post(reverse("lab-broker-node", args=[session.id, "nine"]), {"action": "kill"})
    assert refused.status_code == 400 and "no node" in refused.content.decode()


class Panel:
    """A lab's broker panel through its views, as the page asks for it and posts to it."""

    def __init__(self, client, session):
        self.client, self.session = client, session

    def html(self) -> str:
        response = self.client.get(reverse("lab-brokers", args=[self.session.id]))
        assert response.status_code == 200
        return response.content.decode()

    def fault(self, node: str, action: str) -> str:
        url = reverse("lab-broker-node", args=[self.session.id, node])
        response = self.client.post(url, {"action": action}, HTTP_HX_REQUEST="true")
        assert response.status_code == 200, response.content.decode()
        return response.content.decode()

    def node_state(self, node: str) -> str | None:
        found = re.search(rf'data-node="{node}" data-state="(\w+)"(?! data-busy)', self.html())
        return found and found.group(1)

    def stop(self, node: str) -> None:
        assert "Stopping" in self.fault(node, "stop")
        wait_for(lambda: self.node_state(node) == "stopped", timeout=60, message=f"{node} stopped")

    def start(self, node: str) -> None:
        assert "Starting" in self.fault(node, "start")
        wait_for(lambda: self.node_state(node) == "running", timeout=60, message=f"{node} back")


def ledger(session, producer: str) -> dict:
    """A producer's delivery ledger as the lab's monitor last saved it (every second)."""
    session.refresh_from_db()
    return session.monitor_state.get("record", {}).get("ledger", {}).get(producer, {})


def test_durability_restarted_on_the_queues_node_and_on_another(
    worker, catalogue, learner, labs, client
):
    """durability played right: the node that holds the lab's classic queues stopped from
    the panel, the transient queue gone; then started: the transient messages are gone
    too, the persistent orders came back (and not before: the checks of the step stay
    pending while the node is down); the readers started, each producer's ledger says
    what it lost: none of the persistent orders, all of the transient messages. The
    mistake, played first: another node restarted, which leaves the queues as they were,
    on their node, full, and the readers then find every message: nothing lost. Each lab
    on a cluster of its own: right's booted from the exercise's page, which offers to start
    the brokers, says how many nodes run as they come up, then offers the lab."""
    from exercises.cluster_pool import cluster_boot
    from exercises.services import lab_session_start, workload_start
    from tests.exercises.test_catalogue_runs import drive, every_checkpoint, passed, show
    from tests.exercises.test_exercise_runs import stays_pending

    # right's cluster booted from the exercise's page, kept for the learner; wrong's booted
    # for the pool meanwhile: the two boots share the cores.
    client.force_login(learner)

    def state(html: str) -> str:
        return re.search(r'id="start-area" data-brokers="(\w+)"', html)[1]

    page = client.get(reverse("exercise", args=["durability"])).content.decode()
    assert state(page) == "stopped"
    assert 'id="start-brokers"' in page and 'id="start-lab"' not in page
    start = reverse("exercise-brokers-start", args=["durability"])
    started = client.post(start, HTTP_HX_REQUEST="true").content.decode()
    assert state(started) == "starting" and "of 3 nodes running" in started
    cluster_boot()
    seen: set[str] = set()

    def ready() -> str | None:
        html = client.get(reverse("exercise-brokers", args=["durability"])).content.decode()
        seen.update(re.findall(r"(\d) of 3 nodes running", html))
        return html if state(html) == "ready" else None

    html = wait_for(ready, timeout=150, message="the brokers up, as the page says")
    assert 'id="start-lab"' in html and "Your cluster of 3 nodes is ready, kept for you" in html
    assert {"0", "1"} & seen, seen  # it said how far it was on the way
    # A learner on the shared broker's exercises has no such thing to start.
    assert client.post(reverse("exercise-brokers-start", args=["hello-world"])).status_code == 404
    client.post(reverse("lab-start", args=["durability"]))
    right = LabSession.objects.get()
    _steps_name_the_controls(client, right)
    wait_for(
        lambda: LabCluster.objects.filter(state="warm").exists(),
        timeout=150,
        message="the pool's cluster warm",
    )
    wrong = lab_session_start(exercise=catalogue["durability"], owner=learner)
    assert wrong.cluster.pk != right.cluster.pk
    drive(*(iter([(s, ("orders-full", "clicks-full", "sessions-full"))]) for s in (right, wrong)))
    home = re.search(r'data-queue="sessions" data-node="(\w+)"', Panel(client, right).html())[1]
    home_of_wrong = re.search(
        r'data-queue="sessions" data-node="(\w+)"', Panel(client, wrong).html()
    )[1]
    other = next(n.name for n in _nodes(wrong).nodes if n.name != home_of_wrong)
    for s in (right, wrong):
        show(s, "stop")

    panel = Panel(client, wrong)
    assert "broker-shared" not in panel.html()  # the nodes are this lab's alone
    panel.stop(other)
    panel.start(other)
    after = panel.html()

    def timeline(session) -> list[dict]:
        session.refresh_from_db()  # the monitor saves its state every second
        return [
            {k: e.get(k) for k in ("node", "action", "workload")}
            for e in session.monitor_state.get("timeline", [])
            if e.get("action")
        ]

    # On wrong's timeline as its learner's; right's cluster is another: nothing on its own.
    wait_for(
        lambda: (
            timeline(wrong)
            == [
                {"node": other, "action": "stop", "workload": "@you"},
                {"node": other, "action": "start", "workload": "@you"},
            ]
        ),
        timeout=15,
        message=f"the stop and start of {other} on the lab's timeline as the learner's",
    )
    assert timeline(right) == []
    assert all(s.running for s in _nodes(right).status())
    for queue in ("orders", "clicks", "sessions"):
        placed = rf'data-queue="{queue}" data-node="{home_of_wrong}" data-durable="\w+">'
        assert re.search(placed, after)
        wait_for(
            lambda q=queue: _nodes(wrong).queue(q, wrong.vhost).get("messages") == 30,
            timeout=15,
            message=f"{queue} still holds its 30 messages",
        )
    assert stays_pending(wrong, "sessions-gone", seconds=3)
    for name in ("orders-reader", "clicks-reader"):
        workload_start(workload=wrong.workloads.get(name=name))
    wrong_clicks = wait_for(
        lambda: (x := ledger(wrong, "clicks-app")).get("received") == 30 and x,
        message="the wrong lab's readers received every click",
    )
    assert wrong_clicks["missing"] == 0 and wrong_clicks["confirmed"] == 30, wrong_clicks

    panel = Panel(client, right)
    panel.stop(home)
    drive(iter([(right, ("sessions-gone",))]), timeout=30)
    show(right, "start")
    assert stays_pending((right, "clicks-empty"), (right, "orders-kept"), seconds=2)
    panel.start(home)
    drive(iter([(right, ("clicks-empty", "orders-kept"))]), timeout=60)
    # Before the readers empty it; the management API's statistics of a restarted queue
    # come a few seconds behind.
    wait_for(
        lambda: _nodes(right).queue("orders", right.vhost).get("messages") == 30,
        timeout=30,
        message="orders holds its 30 persistent orders",
    )
    assert stays_pending((right, "orders-none-lost"), (right, "clicks-lost"), seconds=1)
    show(right, "count")
    for name in ("orders-reader", "clicks-reader"):
        workload_start(workload=right.workloads.get(name=name))
    drive(iter([(right, ("orders-none-lost", "clicks-lost", "sessions-lost"))]), timeout=60)
    assert passed(right) == every_checkpoint(right)

    # Each producer's ledger: what the broker confirmed to it, and what the restart lost
    # (saved a second or two after the checks saw it).
    def counts(producer: str) -> tuple:
        x = ledger(right, producer)
        return x.get("confirmed"), x.get("received"), x.get("missing")

    wait_for(lambda: counts("orders-app") == (30, 30, 0), message="orders-app lost none")
    for producer in ("clicks-app", "sessions-app"):
        wait_for(lambda p=producer: counts(p) == (30, 0, 30), message=f"{producer} lost 30")
    back = Panel(client, right).html()
    assert 'data-queue="sessions"' not in back
    assert re.search(rf'data-queue="orders" data-node="{home}" data-durable="true">', back)


def test_a_classic_queue_whose_node_is_down_loses_what_was_confirmed(
    warm, worker, catalogue, learner, labs, client
):
    """classic-queue-node-down: with the node of `invoices` stopped, billing's publishes
    are confirmed and dropped, the ledger counts them missing, and they stay missing once
    the node is back and the queue drained; a mandatory publish comes back; the quorum
    queue beside it loses nothing. The mistake first: another node stopped, and
    `invoices` stays up."""
    from exercises.services import lab_publish, lab_session_start, workload_stop
    from tests.exercises.test_catalogue_runs import drive, every_checkpoint, passed, show
    from tests.exercises.test_exercise_runs import stays_pending

    session = lab_session_start(exercise=catalogue["classic-queue-node-down"], owner=learner)
    client.force_login(learner)
    _steps_name_the_controls(client, session)
    panel = Panel(client, session)
    drive(iter([(session, ("invoices-read", "payments-read"))]))
    home = re.search(r'data-queue="invoices" data-node="(\w+)"', panel.html())[1]
    other = next(n.name for n in _nodes(session).nodes if n.name != home)
    show(session, "stop-its-node")
    panel.stop(other)
    assert stays_pending(session, "invoices-down", seconds=2)
    panel.start(other)

    panel.stop(home)
    assert re.search(
        r'data-queue="invoices" data-node="\w+" data-durable="true" data-down', panel.html()
    )
    published = lab_publish(
        session=session, exchange="", routing_key="invoices", body="{}", mandatory=True
    )
    assert not published.routed and "no queue took it" in str(published.message)
    drive(iter([(session, ("invoices-down", "payments-go-on", "mandatory-returned"))]), timeout=60)

    def ledger(producer: str) -> dict:
        session.refresh_from_db()
        return session.monitor_state["record"]["ledger"].get(producer, {})

    wait_for(lambda: ledger("billing").get("missing", 0) >= 20, message="invoices dropped")
    show(session, "count-the-loss")
    panel.start(home)
    for name in ("billing", "payer"):
        workload_stop(workload=session.workloads.get(name=name))
    drive(iter([(session, ("invoices-lost", "payments-none-lost"))]), timeout=60)
    assert passed(session) == every_checkpoint(session)
    # The monitor saves its state every second: the checks may have seen it first.
    billing = wait_for(lambda: (b := ledger("billing")).get("final") and b, message="billing")
    payer = wait_for(
        lambda: (p := ledger("payer")).get("final") and p["missing"] == 0 and p, message="payer"
    )
    assert billing["missing"] >= 20 and billing["received"] > 0, billing
    assert payer["missing"] == 0 and payer["confirmed"] >= 100, payer
