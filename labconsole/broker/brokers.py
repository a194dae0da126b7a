"""The brokers a lab may run on: the shared one of RABBITMQ_URL, which every other lab
uses too, and the local clusters of brokers a lab may break (labconsole/cluster,
docs/cluster.md), one per slot of the pool. An exercise names its broker (`broker:`), and
a lab on a cluster is given a slot (its own, or its class's); everything that reaches a
lab's vhost (provisioning, workloads, the monitor, the page's publishes) asks for it here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pika
from django.conf import settings

from . import amqp
from .management import ManagementClient

SHARED = "shared"
CLUSTER = "cluster"


@dataclass(frozen=True)
class LabBroker:
    name: str
    nodes: tuple[tuple[str, int], ...]  # AMQP (host, port) of every node, tried in turn
    api_url: str  # every node's management API, comma-separated, tried in turn
    api_user: str
    api_password: str

    def api(self) -> ManagementClient:
        return ManagementClient(self.api_url, self.api_user, self.api_password)

    def parameters(self, **kwargs) -> list[pika.ConnectionParameters]:
        return amqp.parameters(nodes=self.nodes, **kwargs)

    @property
    def firehose_arguments(self) -> dict:
        return firehose_arguments(self.name)


def firehose_arguments(name: str) -> dict:
    """The arguments of a lab's firehose queue on broker `name`. On a cluster it is a quorum
    queue: a classic queue lives on one node, and while that node is down it answers 404,
    so the live view would stop with the node."""
    if name == CLUSTER:
        return {**amqp.FIREHOSE_ARGUMENTS, "x-queue-type": "quorum"}
    return amqp.FIREHOSE_ARGUMENTS


def lab_broker(name: str = SHARED, *, slot: int | None = None) -> LabBroker:
    """The shared broker, or for `name` CLUSTER the cluster of pool slot `slot`."""
    if name == CLUSTER:
        from labconsole.cluster.provider import cluster_slot

        if slot is None:
            raise ValueError("a lab on a cluster needs the cluster's slot")
        cluster = cluster_slot(slot)
        api = cluster.management()
        return LabBroker(
            name=CLUSTER,
            nodes=tuple((n.host, n.port) for n in cluster.nodes),
            api_url=",".join(api.urls),
            api_user=api.session.auth[0],
            api_password=api.session.auth[1],
        )
    return LabBroker(
        name=SHARED,
        nodes=tuple(amqp.console_nodes()),
        api_url=settings.RABBITMQ_API_URL,
        api_user=settings.RABBITMQ_API_USER,
        api_password=settings.RABBITMQ_API_PASSWORD,
    )
