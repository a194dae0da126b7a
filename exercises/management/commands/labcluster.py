"""`python manage.py labcluster up|down|status|stop|kill|start`: the pool of clusters of
brokers of a lab's own (exercises/cluster_pool.py), from the provider of
LAB_CLUSTER_PROVIDER (labconsole/cluster/provider.py, docs/cluster.md)."""

import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from exercises import cluster_pool
from exercises.models import LabCluster
from labconsole.cluster.provider import Node, cluster_provider, cluster_slot, provider_slots


class Command(BaseCommand):
    help = "Start, stop and show the pool of local RabbitMQ clusters that labs may break."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser(
            "up", help="boot the warm pool (up to LAB_CLUSTER_WARM clusters) and wait for it"
        )
        sub.add_parser("down", help="stop every cluster's nodes and remove their files")
        status = sub.add_parser("status", help="each cluster, its nodes and their state")
        status.add_argument("--json", action="store_true", dest="as_json")
        for action, what in (
            ("stop", "stop RabbitMQ on a node gently (stop_app); its Erlang VM stays"),
            ("kill", "kill a node's Erlang VM with SIGKILL"),
            ("start", "start a stopped or killed node again"),
        ):
            sub.add_parser(action, help=what).add_argument("node", help="e.g. labc1n2")

    def handle(self, *args, action, **options):
        if not cluster_pool.pool_enabled():
            self.stdout.write("no lab clusters: LAB_CLUSTER_SIZE or LAB_CLUSTER_MAX is 0")
            return
        try:
            getattr(self, f"handle_{action}")(**options)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CommandError(str(exc).strip("'\"")) from exc

    def handle_up(self, **_):
        if settings.LAB_CLUSTER_WARM <= 0:
            self.stdout.write("no warm pool: LAB_CLUSTER_WARM is 0 (each lab boots its cluster)")
        for cluster in cluster_pool.pool_fill(wait=True):
            if cluster.state == LabCluster.State.FAILED:
                cluster.delete()  # its nodes went with the failed boot; nothing else was ours
                raise CommandError(f"cluster {cluster.slot}: {cluster.error}")
        for cluster in LabCluster.objects.all():
            self._describe(cluster)

    def handle_down(self, **_):
        slots = sorted(
            set(LabCluster.objects.values_list("slot", flat=True)) | set(provider_slots())
        )
        # The one cluster of the console before the pool (local nodes <prefix>1,
        # <prefix>2... with their files in LAB_CLUSTER_DIR itself), if it is there.
        provider = cluster_provider()
        before = provider.before_pool()
        if not slots and before is None:
            self.stdout.write(f"no cluster in {provider.where}")
            return
        cluster_pool.pool_empty()
        gone = [f"cluster {k}" for k in slots]
        if before is not None:
            before.down()
            gone.append(f"the cluster of {before.names()}")
        left = [line for k in slots for line in cluster_slot(k).leftovers()]
        if left:
            before_left = before.leftovers() if before is not None else []
            raise CommandError("still there: " + "; ".join(left + before_left))
        self.stdout.write(f"{', '.join(gone)} down; {provider.removed}")

    def handle_status(self, *, as_json: bool = False, **_):
        clusters = list(LabCluster.objects.select_related("classroom", "reserved_for"))
        if as_json:
            self.stdout.write(
                json.dumps(
                    [
                        {
                            "slot": c.slot,
                            "state": c.state,
                            "nodes": [s.__dict__ for s in cluster_pool.local_cluster(c).status()],
                        }
                        for c in clusters
                    ],
                    indent=2,
                )
            )
            return
        if not clusters:
            self.stdout.write("no clusters")
        for cluster in clusters:
            self._describe(cluster)

    def _describe(self, cluster: LabCluster) -> None:
        serves = (
            f"class {cluster.classroom}"
            if cluster.classroom_id
            else f"{cluster.reserved_for}"
            if cluster.reserved_for_id
            else "the pool"
        )
        self.stdout.write(f"cluster {cluster.slot}: {cluster.state}, for {serves}")
        for s in cluster_pool.local_cluster(cluster).status():
            state = "running" if s.running else ("app stopped" if s.vm else "down")
            self.stdout.write(f"  {s.name:<24} {state:<12} amqp {s.port}  http {s.mgmt_port}")

    def _node(self, name: str) -> Node:
        for k in LabCluster.objects.values_list("slot", flat=True):
            local = cluster_slot(k)
            if any(name in (n.name, n.node) for n in local.nodes):
                return local.node(name)
        raise KeyError(
            f"no node {name!r} in any cluster ({cluster_provider().naming}; "
            f"`labcluster status` lists them)"
        )

    def handle_stop(self, *, node, **_):
        target = self._node(node)
        target.stop_app()
        self.stdout.write(f"{target.node}: {target.stopped}")

    def handle_kill(self, *, node, **_):
        self._node(node).kill()
        self.stdout.write(f"{self._node(node).node}: killed")

    def handle_start(self, *, node, **_):
        target = self._node(node)
        if target.vm_running():
            target.start_app()
        else:
            target.start()
        self.stdout.write(f"{target.node}: running")
