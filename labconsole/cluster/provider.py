"""Where the pool's clusters come from (docs/cluster.md, "Providers"): LAB_CLUSTER_PROVIDER
chooses one, and everything outside this package asks for a cluster here, by its slot.

- `local` (labconsole/cluster/local.py): the console starts its own nodes from the
  installed RabbitMQ, as many clusters as LAB_CLUSTER_MAX allows.
- `compose` (labconsole/cluster/compose.py): the three RabbitMQ containers of
  docker-compose.yml's `cluster` profile, controlled through the Docker Engine API; one
  cluster only.

The protocols below are what the pool (exercises/cluster_pool.py), the Brokers panel
(exercises/cluster.py), the brokers of a lab (labconsole/broker/brokers.py) and
`manage.py labcluster` use of a cluster and of its nodes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from labconsole.broker.management import ManagementClient

    from .local import NodeState

PROVIDERS = ("local", "compose")


class Node(Protocol):
    name: str  # short, as the page and `labcluster stop <name>` say it: labc1n2, lab-node2
    node: str  # the Erlang node name: labc1n2@localhost, lab-node2@lab-node2
    host: str  # where its AMQP port is reached
    port: int  # AMQP
    api_url: str  # its management API
    stopped: str  # what `labcluster stop` says it did

    def stop_app(self) -> None:
        """The gentle stop: RabbitMQ closes its connections and stops in order."""

    def kill(self) -> None:
        """No clean close of anything, as in a power cut."""

    def start(self) -> None:
        """Starts a node that is down, and returns once it runs."""

    def start_app(self) -> None:
        """Starts a node whose VM runs, and returns once it runs."""

    def vm_running(self) -> bool: ...


class NodesByName:
    """`node` and `names` of a cluster whose `nodes` each have a short and an Erlang name:
    the same for every provider."""

    nodes: list

    def node(self, name: str):
        for node in self.nodes:
            if name in (node.name, node.node):
                return node
        raise KeyError(f"no node {name!r} in this cluster (its nodes: {self.names()})")

    def names(self) -> str:
        return ", ".join(node.name for node in self.nodes)


class Cluster(Protocol):
    nodes: list  # of Node

    def up(self) -> float:
        """Starts what is not running; returns once every node runs, in one cluster."""

    def down(self) -> None:
        """Takes away what the cluster's labs made (and, for local nodes, the nodes)."""

    def ours(self) -> bool:
        """Whether something of an earlier boot is there, for `down` to take away first."""

    def busy(self) -> bool:
        """Whether a process is bringing the cluster up or down now."""

    def status(self) -> list[NodeState]: ...

    def leftovers(self) -> list[str]:
        """What `down` should have taken away and did not (empty once it did)."""

    def node(self, name: str) -> Node:
        """The node of that short or Erlang name; KeyError naming the cluster's nodes."""

    def names(self) -> str: ...

    def management(self) -> ManagementClient: ...

    def queue(self, name: str, vhost: str = "/") -> dict: ...


class Provider(Protocol):
    name: str
    max_slots: int | None  # None: as many as LAB_CLUSTER_MAX
    plugins: tuple[str, ...]  # enabled on every node
    where: str  # where its clusters are, for `labcluster down` to say it found none
    removed: str  # what `labcluster down` says it removed besides the nodes' labs
    naming: str  # how its nodes are named, for `labcluster` to say of an unknown name

    def slot(self, k: int) -> Cluster: ...

    def slots_found(self) -> list[int]:
        """Slots with something of ours there and perhaps no row (a process that died)."""

    def before_pool(self) -> Cluster | None:
        """A cluster of an older console for `labcluster down` to take down too."""


def cluster_provider() -> Provider:
    """The provider LAB_CLUSTER_PROVIDER names."""
    name = settings.LAB_CLUSTER_PROVIDER
    if name == "local":
        from .local import LocalProvider

        return LocalProvider()
    if name == "compose":
        from .compose import ComposeProvider

        return ComposeProvider()
    raise ImproperlyConfigured(
        f"LAB_CLUSTER_PROVIDER is {name!r}; it must be one of: {', '.join(PROVIDERS)}"
    )


def cluster_slot(k: int) -> Cluster:
    """The cluster of the pool's slot `k` (1, 2, ...)."""
    return cluster_provider().slot(k)


def provider_slots() -> list[int]:
    """The slots the provider finds something of ours in, row or no row."""
    return cluster_provider().slots_found()


def provider_max_slots() -> int:
    """How many clusters the pool may have at once: LAB_CLUSTER_MAX, or fewer if the
    provider has fewer (compose has one)."""
    limit = cluster_provider().max_slots
    return settings.LAB_CLUSTER_MAX if limit is None else min(limit, settings.LAB_CLUSTER_MAX)
