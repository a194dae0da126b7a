"""Where the pool's clusters come from (labconsole/cluster/provider.py): LAB_CLUSTER_PROVIDER
chooses `local` or `compose`, and refuses anything else; the compose provider drives its
three containers through the Docker Engine API and keeps to one cluster; the compose file
defines them under the `cluster` profile.

No Docker Engine runs here: the compose provider is tested against a small Engine API of
the test's own on a unix socket (and a small management API standing in for the nodes').
Those tests check the console's side of the Engine API only (the requests it sends and what
it makes of the answers), not that a real Engine or real RabbitMQ containers behave so."""

from __future__ import annotations

import json
import re
import shutil
import socketserver
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import StringIO
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command

from exercises import cluster_pool
from exercises.models import LabCluster
from labconsole.cluster import compose
from labconsole.cluster.compose import ComposeCluster, ComposeError, ComposeProvider
from labconsole.cluster.local import LocalCluster, LocalProvider
from labconsole.cluster.provider import cluster_provider, cluster_slot, provider_max_slots

ROOT = Path(__file__).resolve().parent.parent.parent
PROJECT = "labtest"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # the client address of a unix socket is empty
        pass

    def do_GET(self):
        self._answer("GET")

    def do_POST(self):
        self._answer("POST")

    def do_DELETE(self):
        self._answer("DELETE")

    def _answer(self, method: str):
        url = urlsplit(self.path)
        self.server.owner.requests.append((method, url.path, parse_qs(url.query)))
        self._reply(*self.server.owner.answer(method, unquote(url.path), parse_qs(url.query)))

    def _reply(self, status: int, body) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


class FakeEngine:
    """The few Engine API calls the provider makes, on containers labelled as compose
    labels them: the list (with label filters), start, stop and kill. Keeps every request."""

    def __init__(self, socket_path: str):
        self.requests: list[tuple[str, str, dict]] = []
        self.containers: dict[str, dict] = {}
        self.server = _UnixServer(socket_path, _Handler)
        self.server.owner = self
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, cid: str, service: str, state: str = "running", project: str = PROJECT):
        self.containers[cid] = {
            "Id": cid,
            "State": state,
            "Labels": {
                "com.docker.compose.project": project,
                "com.docker.compose.service": service,
                "com.docker.compose.oneoff": "False",
            },
        }

    def answer(self, method: str, path: str, query: dict):
        if method == "GET" and path == "/containers/json":
            labels = json.loads(query["filters"][0]).get("label", [])
            found = [
                c
                for c in self.containers.values()
                if all(c["Labels"].get(k) == v for k, v in (f.split("=", 1) for f in labels))
            ]
            return 200, found if query.get("all") == ["1"] else [
                c for c in found if c["State"] == "running"
            ]
        match = re.fullmatch(r"/containers/([^/]+)/(start|stop|kill)", path)
        if method != "POST" or not match:
            return 404, {"message": "page not found"}
        container = self.containers.get(match[1])
        if container is None:
            return 404, {"message": f"No such container: {match[1]}"}
        running = container["State"] == "running"
        if match[2] == "start":
            container["State"] = "running"
            return (304 if running else 204), None
        if match[2] == "kill" and not running:
            return 409, {"message": f"Container {match[1]} is not running"}
        container["State"] = "exited"
        return (204 if running else 304), None

    def posts(self) -> list[str]:
        return [path for method, path, _ in self.requests if method == "POST"]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class FakeManagement:
    """The nodes' management API as far as the provider asks it: which nodes run (those
    whose container runs in `engine`), the vhosts and users, and their deletion."""

    def __init__(self, engine: FakeEngine):
        self.engine = engine
        self.vhosts = ["/"]
        self.users = ["guest"]
        self.requests: list[tuple[str, str]] = []
        owner = self

        class Handler(_Handler):
            def _answer(self, method):
                url = urlsplit(self.path)
                owner.requests.append((method, unquote(url.path)))
                self._reply(*owner.answer(method, unquote(url.path)))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/"

    def running(self) -> list[dict]:
        return [
            {
                "name": f"{c['Labels']['com.docker.compose.service']}@"
                f"{c['Labels']['com.docker.compose.service']}",
                "running": c["State"] == "running",
            }
            for c in self.engine.containers.values()
        ]

    def answer(self, method: str, path: str):
        if method == "GET" and path == "/api/nodes":
            return 200, self.running()
        if method == "GET" and path.startswith("/api/nodes/"):
            node = path.removeprefix("/api/nodes/")
            return 200, next(n for n in self.running() if n["name"] == node)
        if method == "GET" and path == "/api/vhosts":
            return 200, [{"name": v} for v in self.vhosts]
        if method == "GET" and path == "/api/users":
            return 200, [{"name": u, "tags": []} for u in self.users]
        if method == "DELETE" and path.startswith("/api/vhosts/"):
            self.vhosts.remove(path.removeprefix("/api/vhosts/"))
            return 204, None
        if method == "DELETE" and path.startswith("/api/users/"):
            self.users.remove(path.removeprefix("/api/users/"))
            return 204, None
        return 404, {"error": "Object Not Found", "reason": "Not Found"}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def engine(settings, tmp_path):
    """An Engine API on a unix socket (in a short directory of its own: a socket's path has
    at most 107 bytes), and the settings of the compose provider pointing at it."""
    where = Path(tempfile.mkdtemp(prefix="engine-", dir="/tmp"))
    fake = FakeEngine(str(where / "docker.sock"))
    settings.LAB_CLUSTER_PROVIDER = "compose"
    settings.LAB_DOCKER_SOCKET = str(where / "docker.sock")
    settings.LAB_COMPOSE_PROJECT = PROJECT
    settings.LAB_CLUSTER_DIR = str(tmp_path / "clusters")
    yield fake
    fake.close()
    shutil.rmtree(where)


@pytest.fixture
def management(engine):
    fake = FakeManagement(engine)
    yield fake
    fake.close()


def _nodes_at(cluster: ComposeCluster, management: FakeManagement) -> ComposeCluster:
    for node in cluster.nodes:
        node.api_url = management.url
    return cluster


def _three(engine: FakeEngine, *states: str) -> None:
    for service, state in zip(compose.SERVICES, states, strict=True):
        engine.add(f"id-{service}", service, state)


def test_the_setting_chooses_the_provider_and_refuses_others(settings):
    """LAB_CLUSTER_PROVIDER: local by default, as before (as many slots as LAB_CLUSTER_MAX),
    or compose (one); any other value is refused, naming the setting and the values."""
    settings.LAB_CLUSTER_MAX = 3
    assert settings.LAB_CLUSTER_PROVIDER == "local"
    assert isinstance(cluster_provider(), LocalProvider)
    assert isinstance(cluster_slot(2), LocalCluster)
    assert cluster_slot(2).base == LocalCluster.slot(2).base
    assert provider_max_slots() == 3
    settings.LAB_CLUSTER_PROVIDER = "compose"
    assert isinstance(cluster_provider(), ComposeProvider)
    assert isinstance(cluster_slot(1), ComposeCluster)
    assert provider_max_slots() == 1
    with pytest.raises(ValueError, match="one cluster, slot 1, not slot 2"):
        cluster_slot(2)
    settings.LAB_CLUSTER_PROVIDER = "docker"
    with pytest.raises(
        ImproperlyConfigured,
        match=r"^LAB_CLUSTER_PROVIDER is 'docker'; it must be one of: local, compose$",
    ):
        cluster_slot(1)


def test_node_faults_are_container_calls_found_by_compose_labels(engine, management):
    """Stop, kill and start of a node: the container of that service in that project (by
    compose's labels, not a `run` of it, and never another project's), with the Engine's
    stop, kill and start; the start returns once the node's API says it runs."""
    _three(engine, "running", "running", "running")
    engine.add("id-other-project", "lab-node2", project="someone-else")
    cluster = _nodes_at(cluster_slot(1), management)

    cluster.node("lab-node2").stop_app()
    (method, path, query), post = engine.requests[0], engine.requests[-1]
    assert (method, path, query["all"]) == ("GET", "/containers/json", ["1"])
    assert json.loads(query["filters"][0]) == {
        "label": [
            f"com.docker.compose.project={PROJECT}",
            "com.docker.compose.service=lab-node2",
            "com.docker.compose.oneoff=False",
        ]
    }
    assert post == ("POST", "/containers/id-lab-node2/stop", {"t": ["30"]})
    assert engine.containers["id-other-project"]["State"] == "running"

    cluster.node("lab-node3@lab-node3").kill()
    cluster.node("lab-node3").kill()  # down already: nothing sent
    assert engine.posts() == ["/containers/id-lab-node2/stop", "/containers/id-lab-node3/kill"]

    cluster.node("lab-node2").start()
    assert engine.posts()[-1] == "/containers/id-lab-node2/start"
    assert management.requests[-1] == ("GET", "/api/nodes/lab-node2@lab-node2")
    assert [(s.name, s.vm, s.running) for s in cluster.status()] == [
        ("lab-node1@lab-node1", True, True),
        ("lab-node2@lab-node2", True, True),
        ("lab-node3@lab-node3", False, False),
    ]
    with pytest.raises(KeyError, match="its nodes: lab-node1, lab-node2, lab-node3"):
        cluster.node("labc1n1")
    assert "id-other-project" not in " ".join(engine.posts())


def test_up_starts_what_is_stopped_and_down_leaves_the_containers(engine, management):
    """`up` starts the stopped containers only, returns once the API says all three run,
    and takes away what labs of before left; `down` takes away every vhost but "/" and
    every user but the compose file's, and stops no container."""
    _three(engine, "running", "exited", "exited")
    management.vhosts += ["lab-old"]
    management.users += ["lab-old"]
    cluster = _nodes_at(cluster_slot(1), management)

    cluster.up(timeout=10)
    assert engine.posts() == ["/containers/id-lab-node2/start", "/containers/id-lab-node3/start"]
    assert (management.vhosts, management.users) == (["/"], ["guest"])
    assert all(s.running for s in cluster.status())

    management.vhosts += ["lab-7", "sandbox-2"]
    management.users += ["lab-7"]
    assert cluster.leftovers() == ["vhost lab-7", "vhost sandbox-2", "user lab-7"]
    cluster.down()
    assert (management.vhosts, management.users) == (["/"], ["guest"])
    assert cluster.leftovers() == []
    assert len(engine.posts()) == 2  # the two starts: nothing stopped, killed or removed
    assert {c["State"] for c in engine.containers.values()} == {"running"}
    assert not cluster.busy()


def test_engine_errors_say_what_to_do(engine, settings):
    """No socket, no container, a refusal: one error class, saying what to do; the state
    of the nodes shows them down rather than failing the page."""
    cluster = cluster_slot(1)
    with pytest.raises(
        ComposeError,
        match=r"no container of service lab-node1 in compose project labtest; "
        r"start the cluster profile: docker compose --profile cluster up -d console-cluster",
    ):
        cluster.up(timeout=1)
    engine.add("id-lab-node1", "lab-node1", "exited")
    engine.containers["id-lab-node1"]["Id"] = "id-gone"  # listed, then gone
    with pytest.raises(ComposeError, match="refused POST /containers/id-gone/start: No such"):
        cluster.node("lab-node1").start()

    settings.LAB_DOCKER_SOCKET = "/nonexistent/docker.sock"
    cluster = cluster_slot(1)
    with pytest.raises(
        ComposeError,
        match=r"no Docker Engine API at /nonexistent/docker.sock \(LAB_DOCKER_SOCKET\): .*"
        r"docker compose --profile cluster up -d console-cluster",
    ):
        cluster.node("lab-node1").kill()
    assert isinstance(ComposeError("x"), RuntimeError)  # `labcluster` says it, no traceback
    assert [(s.vm, s.running) for s in cluster.status()] == [(False, False)] * 3

    settings.LAB_COMPOSE_PROJECT = ""
    with pytest.raises(ComposeError, match="LAB_COMPOSE_PROJECT is not set"):
        cluster_slot(1).node("lab-node1").vm_running()


@pytest.mark.django_db
def test_the_pool_has_one_compose_cluster(engine, settings):
    """With compose, the pool keeps to one cluster whatever LAB_CLUSTER_MAX says: the slot
    taken, no second boots and a learner is told all of them are in use; `labcluster`
    works on it, and says what to do when the containers are not there."""
    settings.LAB_CLUSTER_MAX = 3
    settings.LAB_CLUSTER_WARM = 3
    with pytest.raises(CommandError, match=r"cluster 1: no container of service lab-node1"):
        call_command("labcluster", "up", stdout=StringIO())
    assert not LabCluster.objects.exists()

    _three(engine, "running", "exited", "exited")
    LabCluster.objects.create(slot=1, state=LabCluster.State.IN_USE)
    assert cluster_pool.cluster_boot() is None
    assert cluster_pool.pool_full_message().startswith("All 1 of the console's clusters")
    out = StringIO()
    call_command("labcluster", "status", stdout=out)
    # lab-node1's container runs; its API, at a name only compose's network knows, does not
    # answer here.
    assert re.search(r"lab-node1@lab-node1 +app stopped +amqp 5672", out.getvalue())
    assert re.search(r"lab-node2@lab-node2 +down +amqp 5672  http 15672", out.getvalue())
    call_command("labcluster", "kill", "lab-node1", stdout=out)
    assert engine.posts() == ["/containers/id-lab-node1/kill"]
    with pytest.raises(CommandError, match="the nodes are lab-node1, lab-node2, lab-node3"):
        call_command("labcluster", "stop", "labc1n1", stdout=out)


def test_the_compose_file_defines_the_cluster_under_its_profile():
    """docker-compose.yml: lab-node1..3 only under the `cluster` profile, of the rabbitmq
    service's image, sharing one cookie, each named as the provider names it and listing all
    three in classic_config; the Engine API's socket goes to the profile's console only."""
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    nodes = {name: services[name] for name in compose.SERVICES}
    conf = (ROOT / "docker" / "lab-cluster.conf").read_text()
    assert "cluster_formation.peer_discovery_backend = classic_config" in conf
    listed = re.findall(r"^cluster_formation\.classic_config\.nodes\.\d+ = (\S+)$", conf, re.M)
    assert listed == [f"{name}@{name}" for name in compose.SERVICES]
    assert re.search(rf"^default_user = {compose.USER}$", conf, re.M)
    cookies = set()
    for name, node in nodes.items():
        assert node["profiles"] == ["cluster"]
        assert node["image"] == services["rabbitmq"]["image"]
        assert node["hostname"] == name
        assert node["environment"]["RABBITMQ_NODENAME"] == f"{name}@{name}"
        assert (
            "./docker/lab-cluster.conf:/etc/rabbitmq/conf.d/20-lab-cluster.conf:ro"
            in (node["volumes"])
        )
        assert '"$$LAB_CLUSTER_COOKIE" > /var/lib/rabbitmq/.erlang.cookie' in node["command"]
        assert "restart" not in node  # a killed node stays down until started
        cookies.add(node["environment"]["LAB_CLUSTER_COOKIE"])
    assert len(cookies) == 1
    for later in ("lab-node2", "lab-node3"):
        assert nodes[later]["depends_on"] == {"lab-node1": {"condition": "service_healthy"}}

    with_socket = {
        name
        for name, service in services.items()
        if any("docker.sock" in v for v in service.get("volumes", []))
    }
    assert with_socket == {"console-cluster"}
    console, cluster_console = services["console"], services["console-cluster"]
    assert "profiles" not in console and "volumes" not in console
    assert cluster_console["profiles"] == ["cluster"]
    assert cluster_console["volumes"] == ["/var/run/docker.sock:/var/run/docker.sock"]
    env = cluster_console["environment"]
    assert env["LAB_CLUSTER_PROVIDER"] == "compose"
    assert env["LAB_DOCKER_SOCKET"] == "/var/run/docker.sock"
    assert env["LAB_COMPOSE_PROJECT"] == "${COMPOSE_PROJECT_NAME}"
    assert {k: v for k, v in env.items() if not k.startswith("LAB_")} == console["environment"]
    assert cluster_console["command"] == console["command"]
    assert cluster_console["ports"] == console["ports"]
    assert set(cluster_console["depends_on"]) == {"rabbitmq", "postgres", *compose.SERVICES}
