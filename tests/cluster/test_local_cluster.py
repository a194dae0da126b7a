"""The local cluster of brokers a lab may break (labconsole/cluster/local.py): three real
RabbitMQ nodes of the tests' own, booted once for this module. The leader of a quorum queue
is killed while a publisher with confirms is mid-stream; a new leader takes over, the
publisher moves to the next node, no confirmed message is lost, and the killed node comes
back and catches up. At the end `labcluster down` leaves no process, port or directory."""

from __future__ import annotations

import contextlib
import random
import shutil
import threading
import time
from io import StringIO

import pika
import pytest
from django.core.management import call_command

from labconsole.cluster.local import LocalCluster, port_open
from tests.support import ARTIFACTS, wait_for

QUEUE = "failover-orders"
COUNT = 3000


def _free_base() -> int:
    """An AMQP port p with p, p+1, p+2 and the management and distribution ports 10000 and
    20000 above them all free, below the kernel's ephemeral range."""
    for _ in range(200):
        base = random.randrange(11_000, 12_000)
        ports = [base + off + i for off in (0, 10_000, 20_000) for i in range(3)]
        if not any(port_open(p) for p in ports):
            return base
    raise RuntimeError("no free ports for a cluster")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, settings_module):
    """The cluster as `manage.py labcluster` sees it, through the settings."""
    base = tmp_path_factory.mktemp("cluster") / "nodes"
    prefix = f"labt{random.randrange(10**4)}n"
    port = _free_base()
    settings_module(
        LAB_CLUSTER_DIR=str(base),
        LAB_CLUSTER_PORT=port,
        LAB_CLUSTER_SIZE=3,
        LAB_CLUSTER_PREFIX=prefix,
    )
    c = LocalCluster(base, size=3, port=port, prefix=prefix)
    try:
        out = StringIO()
        call_command("labcluster", "up", stdout=out)
        c.up_output = out.getvalue()
        yield c
    finally:
        for node in c.nodes:
            if node.log_dir.exists():
                shutil.copytree(node.log_dir, ARTIFACTS / "cluster" / node.name, dirs_exist_ok=True)
        c.down()


@pytest.fixture(scope="module")
def settings_module():
    """override_settings for the whole module, undone at its end."""
    from django.test import override_settings

    overrides = []

    def apply(**values):
        o = override_settings(**values)
        o.enable()
        overrides.append(o)

    yield apply
    for o in reversed(overrides):
        o.disable()


def _queue(cluster) -> dict:
    """The queue as the management API shows it; empty while no node answers."""
    try:
        return cluster.queue(QUEUE)
    except RuntimeError:
        return {}


def _connect(node) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.URLParameters(node.amqp_url + "%2F?connection_attempts=1"))


def test_up_forms_one_cluster_of_three(cluster):
    assert "3 nodes running in one cluster" in cluster.up_output
    expected = sorted(n.node for n in cluster.nodes)
    for node in cluster.nodes:  # every node sees all three running
        assert cluster.running_nodes(node) == expected
    out = StringIO()
    call_command("labcluster", "status", stdout=out)
    assert out.getvalue().count(" running ") == 3, out.getvalue()
    # up again is nothing: the nodes keep their pids
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


def test_down_leaves_no_process_port_or_directory(cluster):
    assert all(s.running for s in cluster.status())  # alive before, as the test watches it
    assert cluster.base.exists()
    out = StringIO()
    call_command("labcluster", "down", stdout=out)
    assert "removed" in out.getvalue()
    assert cluster.leftovers() == []
    for node in cluster.nodes:
        assert not any(port_open(p) for p in (node.port, node.mgmt_port, node.dist_port))
    assert not cluster.base.exists()
