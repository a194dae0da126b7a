"""A lab's firehose on the shared broker: RabbitMQ keeps the vhosts a node traces as one
setting that each request turning tracing on or off reads and writes back, deleting a
traced vhost included. A vhost made while other traced vhosts are deleted can be left
untraced; the console reads its tracing back and turns it on until it holds."""

from __future__ import annotations

import concurrent.futures
import secrets
import time

import pika
import pytest

from labconsole.broker import amqp
from labconsole.broker.management import ManagementClient
from tests.support import wait_for


@pytest.fixture
def vhosts(api):
    """Makes marked vhosts with a name of this test; every one is deleted after."""
    made: list[str] = []

    def name(kind: str) -> str:
        made.append(amqp.lab_vhost(f"trace{kind}" + secrets.token_hex(4)))
        return made[-1]

    yield name
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(ManagementClient().delete_vhost, made))


def test_a_vhost_whose_firehose_went_off_is_traced_again(api, vhosts):
    """The read-back follows the firehose itself: what `traces` says is what the trace
    exchange delivers."""
    vhost = vhosts("off")
    api.put_vhost(vhost, tracing=True, tags=amqp.lab_tags(time.time()))
    api.request(
        "PUT", f"permissions/{vhost}/guest", {"configure": ".*", "write": ".*", "read": ".*"}
    )
    assert api.traces(vhost) is True
    assert traced_publish(vhost), "a traced vhost's publish reaches amq.rabbitmq.trace"

    api.request(
        "PUT", f"vhosts/{vhost}", {"tracing": False, "tags": ",".join(amqp.lab_tags(time.time()))}
    )
    assert api.traces(vhost) is False
    assert not traced_publish(vhost), "nothing is traced once tracing is off"

    assert api.confirm_tracing(vhost) is True
    assert api.traces(vhost) is True
    assert traced_publish(vhost)
    # Tags and description stay what they were.
    assert amqp.lab_mark() in api.request("GET", f"vhosts/{vhost}")["tags"]


def test_a_vhost_that_is_gone_is_not_made_again(api, vhosts):
    vhost = vhosts("gone")
    assert api.traces(vhost) is None
    assert api.confirm_tracing(vhost) is False
    assert not api.vhost_exists(vhost)


def test_vhosts_made_beside_deletions_of_traced_vhosts_all_trace_once_confirmed(api, vhosts):
    """Forty vhosts are made with tracing on side by side, from eight threads (each its own
    client); then they are deleted while forty others are made. Read right after its PUT, a
    vhost may not trace (the broker's lost update: counted and printed); once confirmed,
    every one does."""
    old = [vhosts("old") for _ in range(40)]
    new = [vhosts("new") for _ in range(40)]
    tags = amqp.lab_tags(time.time())

    def make(vhost: str) -> tuple[bool, bool]:
        client = ManagementClient()
        client.put_vhost(vhost, tracing=True, tags=tags)
        return client.traces(vhost) is True, client.confirm_tracing(vhost)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        made = list(pool.map(make, old))
    print(f"made side by side, untraced right after the PUT: {count_lost(made)} of 40")
    assert all(confirmed for _, confirmed in made)
    assert all(api.traces(v) for v in old)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        deletions = [pool.submit(ManagementClient().delete_vhost, v) for v in old]
        made = list(pool.map(make, new))
        for deletion in deletions:
            deletion.result()
    print(f"made beside deletions, untraced right after the PUT: {count_lost(made)} of 40")
    assert all(confirmed for _, confirmed in made)
    assert [v for v in new if api.traces(v) is not True] == []


def count_lost(made: list[tuple[bool, bool]]) -> int:
    return sum(not at_once for at_once, _ in made)


def traced_publish(vhost: str) -> bool:
    """Publishes one message in `vhost` and says whether its trace came out of the
    vhost's amq.rabbitmq.trace (waiting 3 s for it)."""
    from django.conf import settings

    params = pika.URLParameters(settings.RABBITMQ_URL)
    params.virtual_host = vhost
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        queue = channel.queue_declare("", exclusive=True).method.queue
        channel.queue_bind(queue, "amq.rabbitmq.trace", "publish.#")
        channel.basic_publish("", "nowhere", b"probe")
        try:
            wait_for(
                lambda: channel.basic_get(queue, auto_ack=True)[0] is not None,
                timeout=3.0,
                interval=0.1,
            )
        except AssertionError:
            return False
        return True
    finally:
        connection.close()


def test_with_several_nodes_apis_every_node_that_answers_is_asked(api, vhosts):
    """A lab broker of several nodes: the vhost traces when every node that answers says
    so; one that does not answer (here a port nothing listens on) is passed over."""
    vhost = vhosts("nodes")
    nodes = ManagementClient(f"{api.url},http://127.0.0.1:9")
    assert nodes.traces(vhost) is None
    api.put_vhost(vhost, tracing=False, tags=amqp.lab_tags(time.time()))
    assert nodes.traces(vhost) is False
    assert nodes.confirm_tracing(vhost) is True
    assert api.traces(vhost) is True
