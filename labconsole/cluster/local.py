"""RabbitMQ nodes run from the installed RabbitMQ, without Docker, each with every file of
its own: config, enabled plugins (management), data, logs and pid file, so that nothing of
/etc/rabbitmq or of the shared node leaks in. The nodes of one cluster share an Erlang
cookie kept in the cluster's directory (their HOME), and form the cluster at boot from the
list of their peers (`classic_config` peer discovery).

A cluster touches only what it made: node names with its prefix, its ports, and its
directory, which carries a marker file; `down()` removes a directory only with the marker.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from . import lock
from .provider import NodesByName

BIN = Path("/usr/lib/rabbitmq/bin")
BOOT_TIMEOUT = 120.0
MARKER = ".labconsole-cluster"
PLUGINS = ("rabbitmq_management",)  # enabled on every node


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class LocalNode:
    """One node: `base` holds its files; `home` holds the Erlang cookie it shares with its
    peers (its own directory when it has none)."""

    host = "127.0.0.1"  # every port of the node listens here only
    stopped = "RabbitMQ stopped, the VM runs"  # after stop_app

    def __init__(
        self,
        name: str,
        base: Path,
        *,
        port: int,
        mgmt_port: int,
        dist_port: int,
        home: Path | None = None,
        peers: tuple[str, ...] = (),
    ):
        self.name = name
        self.node = f"{name}@localhost"
        self.base = Path(base)
        self.home = Path(home) if home is not None else self.base
        self.port = port
        self.mgmt_port = mgmt_port
        self.dist_port = dist_port
        self.peers = peers
        self.pid_file = self.base / "node.pid"
        self.log_dir = self.base / "log"
        self.proc: subprocess.Popen | None = None
        self._out = None

    # --- addresses ----------------------------------------------------------------------------
    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.mgmt_port}/"

    # --- files and environment ----------------------------------------------------------------
    def write_files(self) -> None:
        (self.base / "mnesia").mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        conf = [
            f"listeners.tcp.default = 127.0.0.1:{self.port}",
            f"management.tcp.port = {self.mgmt_port}",
            "management.tcp.ip = 127.0.0.1",
            "collect_statistics_interval = 1000",
            "loopback_users.guest = true",
            "log.console = false",
            "log.file.level = info",
        ]
        if self.peers:
            conf.append("cluster_formation.peer_discovery_backend = classic_config")
            conf += [
                f"cluster_formation.classic_config.nodes.{i} = {peer}"
                for i, peer in enumerate(self.peers, 1)
            ]
        (self.base / "rabbitmq.conf").write_text("\n".join(conf) + "\n")
        (self.base / "enabled_plugins").write_text(f"[{','.join(PLUGINS)}].\n")
        (self.base / "advanced.config").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(os.urandom(16).hex().upper())
            cookie.chmod(0o600)

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_", "DJANGO_")) and k != "HOME"
        }
        env.update(
            HOME=str(self.home),  # the Erlang cookie, for the node and rabbitmqctl alike
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.log_dir),
            RABBITMQ_PID_FILE=str(self.pid_file),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_PLUGINS_EXPAND_DIR=str(self.base / "plugins-expand"),
            RABBITMQ_FEATURE_FLAGS_FILE=str(self.base / "feature_flags"),
            RABBITMQ_QUORUM_DIR=str(self.base / "quorum"),
            RABBITMQ_STREAM_DIR=str(self.base / "stream"),
        )
        return env

    # --- the node -----------------------------------------------------------------------------
    def launch(self) -> None:
        """Starts the Erlang VM (on the node's data directory, if it ran before) in a
        session of its own, so that it outlives the command that started it."""
        self.pid_file.unlink(missing_ok=True)
        self._out = open(self.log_dir / "server.out", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(BIN / "rabbitmq-server")],
            cwd=self.base,
            env=self.env(),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of the caller goes to the caller only
        )

    def wait_booted(self, deadline: float) -> None:
        """Until the node has booted, takes AMQP connections and its management API answers."""
        while not self.pid_file.exists():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server {self.node} exited; see {self.log_dir}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.node}: no pid file in time; see {self.log_dir}")
            time.sleep(0.1)
        left = max(1, int(deadline - time.monotonic()))
        self.ctl("wait", str(self.pid_file), "--timeout", str(left), timeout=left + 10)
        self.wait_ready(deadline)

    def start(self, timeout: float = BOOT_TIMEOUT) -> None:
        started = time.monotonic()
        self.launch()
        self.wait_booted(started + timeout)
        self.boot_seconds = time.monotonic() - started

    def wait_ready(self, deadline: float) -> None:
        """Until the node takes AMQP connections and the management API answers."""
        import pika

        params = pika.URLParameters(self.amqp_url + "%2F?connection_attempts=1&socket_timeout=2")
        while True:
            try:
                connection = pika.BlockingConnection(params)
                connection.close()
                response = requests.get(
                    f"{self.api_url}api/overview", auth=("guest", "guest"), timeout=2
                )
                if response.status_code == 200:
                    return
            except Exception:  # noqa: BLE001, S110 - not up yet
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {self.node} not ready; see {self.log_dir}")
            time.sleep(0.1)

    def ctl(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            [str(BIN / "rabbitmqctl"), "-n", self.node, *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl {' '.join(args)}: {result.returncode}\n{result.stdout}{result.stderr}"
            )
        return result.stdout

    def beam_pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def vm_running(self) -> bool:
        return self.beam_pid() is not None

    def app_running(self) -> bool:
        return port_open(self.port)

    # --- faults -------------------------------------------------------------------------------
    def stop_app(self) -> None:
        """The gentle stop: RabbitMQ stops in the running Erlang VM, closing every
        connection; `start_app` brings it back."""
        self.ctl("stop_app")

    def start_app(self, timeout: float = BOOT_TIMEOUT) -> None:
        self.ctl("start_app", timeout=timeout)
        self.wait_ready(time.monotonic() + timeout)

    def kill(self) -> None:
        """SIGKILL to the Erlang VM: no clean close of anything, as in a power cut."""
        pid = self.beam_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self.wait_gone(pid)

    # --- the end ------------------------------------------------------------------------------
    def terminate(self) -> int | None:
        """SIGTERM to the Erlang VM: it stops in order, as `rabbitmqctl stop` would, without
        the seconds the CLI's own VM takes to start. Returns the VM's pid."""
        pid = self.beam_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        return pid

    def wait_gone(self, pid: int | None, grace: float = 30.0) -> None:
        """Waits for the VM `pid` to go, SIGKILLs it after `grace` seconds, and waits for
        every process of the node (the VM's helpers too) to go."""
        deadline = time.monotonic() + grace
        while pid is not None and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid is not None and _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._close_out()
        deadline = time.monotonic() + 15
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.1)
        for line in self.leftovers():  # a helper of the VM, wedged
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(line.split()[0]), signal.SIGKILL)

    def stop(self, grace: float = 30.0) -> None:
        """Stops the node in order, the hard way after `grace` seconds, and waits for its
        processes to go."""
        self.wait_gone(self.terminate(), grace)

    def _close_out(self) -> None:
        if self._out is not None:
            with contextlib.suppress(Exception):
                self._out.close()
            self._out = None

    def leftovers(self) -> list[str]:
        """Processes of this node still running (none, once it has stopped)."""
        result = subprocess.run(
            ["pgrep", "-af", f"{self.node}( |$)"], capture_output=True, text=True, check=False
        )
        return [
            line for line in result.stdout.splitlines() if line and "pgrep" not in line.split()[1]
        ]

    def remove(self, keep_logs_in: Path | None = None) -> None:
        if keep_logs_in is not None:
            keep_logs_in.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(Exception):
                shutil.copytree(self.log_dir, keep_logs_in / f"{self.name}-log", dirs_exist_ok=True)
        shutil.rmtree(self.base, ignore_errors=True)


@dataclass(frozen=True)
class NodeState:
    name: str
    port: int
    mgmt_port: int
    vm: bool  # the Erlang VM runs
    running: bool  # RabbitMQ takes AMQP connections
    pid: int | None


class LocalCluster(NodesByName):
    """`size` nodes named `<prefix>1@localhost`..., with AMQP ports from `port`, management
    ports from `port + 10000` and distribution ports from `port + 20000`."""

    def __init__(self, base: Path, *, size: int = 3, port: int = 5701, prefix: str = "lab"):
        if not 1 <= size <= 9:
            raise ValueError(f"a cluster has 1 to 9 nodes, not {size}")
        self.base = Path(base)
        self.size = size
        names = [f"{prefix}{i}" for i in range(1, size + 1)]
        peers = tuple(f"{name}@localhost" for name in names)
        self.nodes = [
            LocalNode(
                name,
                self.base / name,
                port=port + i,
                mgmt_port=port + 10000 + i,
                dist_port=port + 20000 + i,
                home=self.base,
                peers=peers if size > 1 else (),
            )
            for i, name in enumerate(names)
        ]

    @classmethod
    def slot(cls, k: int) -> LocalCluster:
        """The cluster of slot `k` (1, 2, ...) of the settings' pool: nodes
        `<prefix>c<k>n1@localhost`..., AMQP ports from LAB_CLUSTER_PORT + 10 k, its files in
        LAB_CLUSTER_DIR/c<k>. Slots never share a name, a port or a directory."""
        from django.conf import settings

        if k < 1:
            raise ValueError(f"cluster slots count from 1, not {k}")
        return cls(
            Path(settings.LAB_CLUSTER_DIR) / f"c{k}",
            size=settings.LAB_CLUSTER_SIZE,
            port=settings.LAB_CLUSTER_PORT + 10 * k,
            prefix=f"{settings.LAB_CLUSTER_PREFIX}c{k}n",
        )

    @staticmethod
    def slots_on_disk() -> list[int]:
        """The slots whose directory of ours is under LAB_CLUSTER_DIR (running or left by a
        process that died)."""
        from django.conf import settings

        base = Path(settings.LAB_CLUSTER_DIR)
        found = base.glob("c*/" + MARKER) if base.is_dir() else []
        return sorted(int(m.parent.name[1:]) for m in found if m.parent.name[1:].isdigit())

    def ours(self) -> bool:
        return (self.base / MARKER).exists()

    # --- up and down --------------------------------------------------------------------------
    @property
    def _lock_path(self) -> Path:
        return self.base.parent / f".{self.base.name}.lock"

    def _one_at_a_time(self):
        """Another process bringing the same cluster up or down (two web processes asked
        for it at once, say) is waited for."""
        return lock.held(self._lock_path)

    def busy(self) -> bool:
        """Whether a process (this one too) is bringing the cluster up or down now."""
        return lock.is_held(self._lock_path)

    def up(self, timeout: float = BOOT_TIMEOUT) -> float:
        """Starts the nodes that are not running and returns once all of them run in one
        cluster; returns the seconds it took. The first node boots alone, so that the
        others find it and join it rather than each forming a cluster of one."""
        with self._one_at_a_time():
            return self._up(timeout)

    def _up(self, timeout: float) -> float:
        started = time.monotonic()
        deadline = started + timeout
        if self.base.exists() and any(self.base.iterdir()) and not self.ours():
            raise RuntimeError(f"{self.base} exists and is not a cluster directory of ours")
        busy = [
            n
            for n in self.nodes
            if not n.vm_running() and (port_open(n.port) or port_open(n.mgmt_port))
        ]
        if busy:
            raise RuntimeError(
                "ports in use by something else: "
                + ", ".join(f"{n.port}/{n.mgmt_port}" for n in busy)
            )
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / MARKER).write_text("made by labconsole; `labcluster down` removes it\n")
        for node in self.nodes:
            node.base.mkdir(exist_ok=True)
            node.write_files()
        first, rest = self.nodes[0], self.nodes[1:]
        if not first.vm_running():
            first.launch()
            first.wait_booted(deadline)
        launched = [n for n in rest if not n.vm_running()]
        for node in launched:
            node.launch()
        for node in rest:
            node.wait_booted(deadline)
        for node in self.nodes:
            if not node.app_running():
                node.start_app(timeout=max(1.0, deadline - time.monotonic()))
        self._join_strays()
        return time.monotonic() - started

    def _join_strays(self) -> None:
        """A node that booted into a cluster of its own joins the first node's."""
        first = self.nodes[0]
        for node in self.nodes[1:]:
            if first.node in self.running_nodes(node):
                continue
            node.stop_app()
            node.ctl("reset")
            node.ctl("join_cluster", first.node)
            node.start_app()

    def running_nodes(self, via: LocalNode | None = None) -> list[str]:
        """The cluster's running members, as a node sees them."""
        via = via or next(n for n in self.nodes if n.vm_running())
        status = json.loads(via.ctl("cluster_status", "--formatter", "json"))
        return sorted(status.get("running_nodes", []))

    def down(self) -> None:
        """Stops every node at once and removes the cluster's directory (only if it is
        ours). The data goes with it, so the nodes are not stopped one by one, each
        handing its queues to the next: each Erlang VM gets SIGTERM (its orderly stop),
        and SIGKILL if it is still there after `grace` seconds."""
        with self._one_at_a_time():
            self._down()

    def _down(self) -> None:
        if not self.base.exists():
            return
        if not self.ours():
            raise RuntimeError(f"{self.base} is not a cluster directory of ours; left alone")
        pids = [node.terminate() for node in self.nodes]
        for node, pid in zip(self.nodes, pids, strict=True):
            node.wait_gone(pid)
        shutil.rmtree(self.base, ignore_errors=True)

    def leftovers(self) -> list[str]:
        """What of ours is still there: node processes, listening ports, the directory."""
        found = [line for node in self.nodes for line in node.leftovers()]
        for node in self.nodes:
            found += [
                f"port {p}" for p in (node.port, node.mgmt_port, node.dist_port) if port_open(p)
            ]
        if self.base.exists():
            found.append(str(self.base))
        return found

    # --- state --------------------------------------------------------------------------------
    def status(self) -> list[NodeState]:
        return [
            NodeState(
                name=node.node,
                port=node.port,
                mgmt_port=node.mgmt_port,
                vm=node.vm_running(),
                running=node.app_running(),
                pid=node.beam_pid(),
            )
            for node in self.nodes
        ]

    def management(self):
        """A management API client that asks node after node (as guest, from this
        machine)."""
        from labconsole.broker.management import ManagementClient

        return ManagementClient(",".join(n.api_url for n in self.nodes), "guest", "guest")

    def queue(self, name: str, vhost: str = "/") -> dict:
        """A queue as the management API shows it: for a quorum queue `leader`, `members`
        and `online`."""
        from urllib.parse import quote

        return self.management().request(
            "GET", f"queues/{quote(vhost, safe='')}/{quote(name, safe='')}"
        )


class LocalProvider:
    """The pool's clusters as local nodes: any number of slots (LAB_CLUSTER_MAX bounds
    them), each with names, ports and a directory of its own."""

    name = "local"
    max_slots: int | None = None
    plugins = PLUGINS
    removed = "their files removed"

    @property
    def where(self) -> str:
        from django.conf import settings

        return settings.LAB_CLUSTER_DIR

    @property
    def naming(self) -> str:
        from django.conf import settings

        return (
            f"cluster k's nodes are {settings.LAB_CLUSTER_PREFIX}c<k>n1.."
            f"{settings.LAB_CLUSTER_SIZE}"
        )

    def slot(self, k: int) -> LocalCluster:
        return LocalCluster.slot(k)

    def slots_found(self) -> list[int]:
        return LocalCluster.slots_on_disk()

    def before_pool(self) -> LocalCluster | None:
        """The one cluster of the console before the pool, if its files are still there:
        nodes <prefix>1, <prefix>2... with their files in LAB_CLUSTER_DIR itself."""
        from django.conf import settings

        before = LocalCluster(
            Path(settings.LAB_CLUSTER_DIR),
            size=settings.LAB_CLUSTER_SIZE,
            port=settings.LAB_CLUSTER_PORT,
            prefix=settings.LAB_CLUSTER_PREFIX,
        )
        return before if before.ours() else None
