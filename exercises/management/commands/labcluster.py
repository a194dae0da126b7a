"""`python manage.py labcluster up|down|status|stop|kill|start`: the local cluster of brokers
of a lab's own (labconsole/cluster/local.py, docs/cluster.md)."""

import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from labconsole.cluster.local import LocalCluster


class Command(BaseCommand):
    help = "Start, stop and show the local RabbitMQ cluster that labs may break."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        sub.add_parser("up", help="start the nodes and form the cluster (nothing if it runs)")
        sub.add_parser("down", help="stop the nodes and remove their files")
        status = sub.add_parser("status", help="the nodes and their state")
        status.add_argument("--json", action="store_true", dest="as_json")
        for action, what in (
            ("stop", "stop RabbitMQ on a node gently (stop_app); its Erlang VM stays"),
            ("kill", "kill a node's Erlang VM with SIGKILL"),
            ("start", "start a stopped or killed node again"),
        ):
            sub.add_parser(action, help=what).add_argument("node", help="e.g. lab2")

    def handle(self, *args, action, **options):
        if settings.LAB_CLUSTER_SIZE == 0:
            self.stdout.write("no lab cluster: LAB_CLUSTER_SIZE is 0")
            return
        cluster = LocalCluster.from_settings()
        try:
            getattr(self, f"handle_{action}")(cluster, **options)
        except (RuntimeError, KeyError, ValueError) as exc:
            raise CommandError(str(exc).strip("'\"")) from exc

    def handle_up(self, cluster: LocalCluster, **_):
        seconds = cluster.up()
        self.stdout.write(
            f"{cluster.size} nodes running in one cluster ({seconds:.1f} s): "
            + ", ".join(f"{n.node} amqp {n.port} http {n.mgmt_port}" for n in cluster.nodes)
        )

    def handle_down(self, cluster: LocalCluster, **_):
        if not cluster.base.exists():
            self.stdout.write(f"no cluster in {cluster.base}")
            return
        cluster.down()
        left = cluster.leftovers()
        if left:
            raise CommandError("still there: " + "; ".join(left))
        self.stdout.write(f"cluster down; {cluster.base} removed")

    def handle_status(self, cluster: LocalCluster, *, as_json: bool = False, **_):
        states = cluster.status()
        if as_json:
            self.stdout.write(json.dumps([s.__dict__ for s in states], indent=2))
            return
        for s in states:
            state = "running" if s.running else ("app stopped" if s.vm else "down")
            self.stdout.write(f"{s.name:<20} {state:<12} amqp {s.port}  http {s.mgmt_port}")

    def handle_stop(self, cluster: LocalCluster, *, node, **_):
        cluster.node(node).stop_app()
        self.stdout.write(f"{cluster.node(node).node}: RabbitMQ stopped, the VM runs")

    def handle_kill(self, cluster: LocalCluster, *, node, **_):
        cluster.node(node).kill()
        self.stdout.write(f"{cluster.node(node).node}: killed")

    def handle_start(self, cluster: LocalCluster, *, node, **_):
        target = cluster.node(node)
        if target.vm_running():
            target.start_app()
        else:
            target.start()
        self.stdout.write(f"{target.node}: running")
