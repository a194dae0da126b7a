"""The pool's one cluster as the three RabbitMQ containers of docker-compose.yml's `cluster`
profile (services lab-node1, lab-node2, lab-node3), which form their cluster at boot
(docker/lab-cluster.conf). The console controls them through the Docker Engine API on its
unix socket (LAB_DOCKER_SOCKET), with the standard library only, and finds them by the
labels compose puts on its containers: project LAB_COMPOSE_PROJECT, and service.

A node's faults are its container's: the gentle stop is the container's stop (SIGTERM:
RabbitMQ closes its connections and stops in order; the container, and so the Erlang VM,
stops with it), the kill the container's kill (SIGKILL), the start its start. The
containers are compose's: `down` takes away what labs made on the nodes (every vhost but
"/", every user but the one the compose file sets) and leaves the containers running.

https://docs.docker.com/reference/api/engine/
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from django.conf import settings

from labconsole.broker.management import BrokerError, ManagementClient

from . import lock
from .local import NodeState
from .provider import NodesByName

log = logging.getLogger(__name__)

SERVICES = ("lab-node1", "lab-node2", "lab-node3")
USER = PASSWORD = "guest"  # the nodes' one user (docker/lab-cluster.conf)
PLUGINS = ("rabbitmq_management",)  # the image's
AMQP_PORT = 5672
API_PORT = 15672
BOOT_TIMEOUT = 120.0
STOP_SECONDS = 30  # a gentle stop's grace before the Engine kills the container
ENGINE_TIMEOUT = 10.0
START_HINT = "start the cluster profile: docker compose --profile cluster up -d console-cluster"


class ComposeError(RuntimeError):
    """The Docker Engine API cannot be reached, or has no such container, or refused;
    the message says what to do."""


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket (the Engine API's)."""

    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Engine:
    """The few calls of the Engine API the provider makes, on the containers of compose
    project `project`."""

    def __init__(self, socket_path: str, project: str):
        self.socket_path = socket_path
        self.project = project

    def request(self, method: str, path: str, *, timeout: float = ENGINE_TIMEOUT) -> Any:
        connection = _UnixConnection(self.socket_path, timeout)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            body = response.read()
        except (FileNotFoundError, ConnectionRefusedError, PermissionError) as exc:
            raise ComposeError(
                f"no Docker Engine API at {self.socket_path} (LAB_DOCKER_SOCKET): "
                f"{exc.strerror or exc}; {START_HINT}"
            ) from exc
        except OSError as exc:
            raise ComposeError(
                f"the Docker Engine API at {self.socket_path} did not answer {method} {path}: {exc}"
            ) from exc
        finally:
            connection.close()
        if response.status in (204, 304):  # done, or nothing to do (started or stopped)
            return None
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        if response.status >= 400:
            message = (
                data.get("message") if isinstance(data, dict) else body.decode(errors="replace")
            )
            raise ComposeError(f"the Docker Engine API refused {method} {path}: {message}")
        return data

    def container(self, service: str) -> dict:
        """The container of `service` in the project (running or not), as the Engine's
        list shows it: Id, State ("running", "exited"...)."""
        if not self.project:
            raise ComposeError(
                "LAB_COMPOSE_PROJECT is not set: it names the compose project of the "
                f"lab-node services; {START_HINT}"
            )
        filters = {
            "label": [
                f"com.docker.compose.project={self.project}",
                f"com.docker.compose.service={service}",
                "com.docker.compose.oneoff=False",  # not a `docker compose run` of it
            ]
        }
        found = self.request(
            "GET", "/containers/json?" + urlencode({"all": "1", "filters": json.dumps(filters)})
        )
        if not found:
            raise ComposeError(
                f"no container of service {service} in compose project {self.project}; {START_HINT}"
            )
        return found[0]

    def act(self, service: str, action: str, query: str = "", timeout: float = ENGINE_TIMEOUT):
        """POST /containers/<id>/<action>: start, stop or kill."""
        container = self.container(service)
        self.request(
            "POST", f"/containers/{quote(container['Id'])}/{action}{query}", timeout=timeout
        )


class ComposeNode:
    port = AMQP_PORT
    mgmt_port = API_PORT
    stopped = "its container stopped, RabbitMQ in order"  # after stop_app

    def __init__(self, service: str, engine: Engine):
        self.name = service
        self.node = f"{service}@{service}"  # RABBITMQ_NODENAME in docker-compose.yml
        self.host = service
        self.api_url = f"http://{service}:{API_PORT}/"
        self.engine = engine

    def container_state(self) -> str:
        return self.engine.container(self.name).get("State", "")

    def vm_running(self) -> bool:
        return self.container_state() == "running"

    def stop_app(self) -> None:
        """The container's stop: SIGTERM, and RabbitMQ stops in order; the Engine kills the
        container after STOP_SECONDS if it has not stopped by then."""
        self.engine.act(self.name, "stop", f"?t={STOP_SECONDS}", timeout=STOP_SECONDS + 15)

    def kill(self) -> None:
        """The container's kill: SIGKILL to RabbitMQ, as in a power cut. Nothing if the
        container is not running."""
        if self.vm_running():
            self.engine.act(self.name, "kill")

    def start(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Starts the container and returns once the node's management API says it runs."""
        self.engine.act(self.name, "start")
        self.wait_running(time.monotonic() + timeout)

    start_app = start  # a stopped node's container is stopped too: its start is the same

    def wait_running(self, deadline: float) -> None:
        api = ManagementClient(self.api_url, USER, PASSWORD)
        while True:
            try:
                if api.request("GET", f"nodes/{quote(self.node, safe='')}").get("running"):
                    return
            except BrokerError:
                pass  # not up yet
            if time.monotonic() > deadline:
                raise ComposeError(
                    f"{self.node} not running in time; see `docker compose logs {self.name}`"
                )
            time.sleep(0.5)


class ComposeCluster(NodesByName):
    def __init__(self, engine: Engine, lock_path: Path):
        self.engine = engine
        self.nodes = [ComposeNode(service, engine) for service in SERVICES]
        self._lock_path = lock_path

    def ours(self) -> bool:
        """Always False: `up` itself takes away what an earlier cluster's labs left."""
        return False

    def busy(self) -> bool:
        return lock.is_held(self._lock_path)

    def up(self, timeout: float = BOOT_TIMEOUT) -> float:
        """Starts the containers that are not running, waits until the management API
        says all three nodes run, and takes away what labs of an earlier boot left (a
        process that died before its `down`). Returns the seconds it took."""
        started = time.monotonic()
        with lock.held(self._lock_path):
            for node in self.nodes:
                if not node.vm_running():
                    self.engine.act(node.name, "start")
            want = {node.node for node in self.nodes}
            while not want <= self.running_nodes():
                if time.monotonic() > started + timeout:
                    running = ", ".join(sorted(self.running_nodes())) or "none"
                    raise ComposeError(
                        f"the lab nodes not all running in {timeout:.0f} s (running: {running}); "
                        "see `docker compose --profile cluster logs lab-node1 lab-node2 lab-node3`"
                    )
                time.sleep(0.5)
            self._clear()
        return time.monotonic() - started

    def down(self) -> None:
        """Takes away what labs made on the nodes; the containers stay as they are. Nothing
        to do when none runs (what labs left is taken away at the next `up`)."""
        with lock.held(self._lock_path):
            if any(node.vm_running() for node in self.nodes):
                self._clear()

    def _clear(self) -> None:
        api = self.management()
        for vhost in api.vhost_names():
            if vhost != "/":
                api.delete_vhost(vhost)
        for user in api.users():
            if user["name"] != USER:
                api.delete_user(user["name"])

    def leftovers(self) -> list[str]:
        """The vhosts and users labs made that are still there (none when no node runs)."""
        if not any(node.vm_running() for node in self.nodes):
            return []
        api = self.management()
        return [f"vhost {v}" for v in api.vhost_names() if v != "/"] + [
            f"user {u['name']}" for u in api.users() if u["name"] != USER
        ]

    def running_nodes(self) -> set[str]:
        """The nodes the management API says run; none when no node's API answers."""
        try:
            nodes = self.management().listing("nodes?columns=name,running")
        except BrokerError:
            return set()
        return {n["name"] for n in nodes if n.get("running")}

    def status(self) -> list[NodeState]:
        """Each node: its container running (`vm`) and RabbitMQ running on it, as the
        management API says. An Engine that cannot be asked shows every node down."""
        try:
            up = {node.name: node.vm_running() for node in self.nodes}
        except ComposeError as exc:
            log.warning("lab nodes' state unknown: %s", exc)
            up = {}
        running = self.running_nodes() if any(up.values()) else set()
        return [
            NodeState(
                name=node.node,
                port=node.port,
                mgmt_port=node.mgmt_port,
                vm=up.get(node.name, False),
                running=up.get(node.name, False) and node.node in running,
                pid=None,
            )
            for node in self.nodes
        ]

    def management(self) -> ManagementClient:
        """A management API client that asks node after node."""
        return ManagementClient(",".join(n.api_url for n in self.nodes), USER, PASSWORD)

    def queue(self, name: str, vhost: str = "/") -> dict:
        return self.management().request(
            "GET", f"queues/{quote(vhost, safe='')}/{quote(name, safe='')}"
        )


class ComposeProvider:
    """One cluster (slot 1): the compose file defines one."""

    name = "compose"
    max_slots: int | None = 1
    plugins = PLUGINS
    removed = "what labs made on its nodes removed; the containers are compose's"
    naming = f"the nodes are {', '.join(SERVICES)}"

    @property
    def where(self) -> str:
        return f"compose project {settings.LAB_COMPOSE_PROJECT!r} (no lab node runs)"

    def slot(self, k: int) -> ComposeCluster:
        if k != 1:
            raise ValueError(f"the compose provider has one cluster, slot 1, not slot {k}")
        return ComposeCluster(
            Engine(settings.LAB_DOCKER_SOCKET, settings.LAB_COMPOSE_PROJECT),
            Path(settings.LAB_CLUSTER_DIR) / ".compose.lock",
        )

    def slots_found(self) -> list[int]:
        """Slot 1 when a lab node runs (what labs made there may have no row)."""
        return [1] if any(node.vm_running() for node in self.slot(1).nodes) else []

    def before_pool(self) -> None:
        return None
