"""A RabbitMQ node of the tests' own, for faults that must not touch the shared broker:
restarts (soft: `stop_app`/`start_app`; hard: the Erlang VM killed with SIGKILL and started
again on the same data directory) and a memory alarm.

The node runs from the installed RabbitMQ (no Docker) with every file of its own in a
temporary directory: its config, enabled plugins (management), data, logs, pid file and
Erlang cookie, so that nothing of /etc/rabbitmq or the shared node's state leaks in. Its
name carries this process's id, and its ports are free ones picked at start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from tests.support import free_port

BIN = Path("/usr/lib/rabbitmq/bin")
BOOT_TIMEOUT = 90.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class BrokerNode:
    def __init__(self, name: str | None = None):
        self.name = name or f"labtest{os.getpid()}"
        self.node = f"{self.name}@localhost"
        self.base = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.port = free_port()
        self.mgmt_port = free_port()
        self.dist_port = free_port()
        self.pid_file = self.base / "node.pid"
        self.log_dir = self.base / "log"
        self.proc: subprocess.Popen | None = None
        self.events: list[tuple[str, float]] = []  # (what, monotonic time) of each fault
        self._write_files()

    # --- addresses ------------------------------------------------------------------------
    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.mgmt_port}/"

    # --- files and environment ----------------------------------------------------------------
    def _write_files(self) -> None:
        (self.base / "mnesia").mkdir()
        self.log_dir.mkdir()
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            f"management.tcp.port = {self.mgmt_port}\n"
            "management.tcp.ip = 127.0.0.1\n"
            "collect_statistics_interval = 1000\n"
            "loopback_users.guest = true\n"
            "log.console = false\n"
            "log.file.level = info\n"
        )
        (self.base / "enabled_plugins").write_text("[rabbitmq_management].\n")
        (self.base / "advanced.config").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        cookie = self.base / ".erlang.cookie"
        cookie.write_text(os.urandom(16).hex().upper())
        cookie.chmod(0o600)

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_", "DJANGO_")) and k != "HOME"
        }
        env.update(
            HOME=str(self.base),  # the Erlang cookie, for the node and rabbitmqctl alike
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

    # --- the node -------------------------------------------------------------------------
    def start(self) -> None:
        """Starts the node (on its data directory, if it ran before) and returns once it
        takes AMQP connections and its management API answers."""
        started = time.monotonic()
        self.pid_file.unlink(missing_ok=True)
        self._out = open(self.log_dir / "server.out", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(BIN / "rabbitmq-server")],
            cwd=self.base,
            env=self.env(),
            stdout=self._out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C of the test run goes to the tests only
        )
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not self.pid_file.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"rabbitmq-server exited; see {self.log_dir}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no pid file after {BOOT_TIMEOUT} s; see {self.log_dir}")
            time.sleep(0.1)
        self.ctl("wait", str(self.pid_file), "--timeout", str(int(BOOT_TIMEOUT)))
        self.wait_ready(deadline)
        self.events.append(("started", time.monotonic()))
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
            except Exception:  # noqa: BLE001 - not up yet
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

    def beam_pid(self) -> int:
        return int(self.pid_file.read_text().strip())

    # --- faults -------------------------------------------------------------------------------
    def soft_restart(self, while_down=None) -> float:
        """`stop_app` then `start_app`: the Erlang VM stays, RabbitMQ stops (closing every
        connection) and starts again; `while_down()` is called in between. Returns the
        monotonic time the node was back."""
        self.events.append(("stop_app", time.monotonic()))
        self.ctl("stop_app")
        self.events.append(("stopped", time.monotonic()))
        if while_down is not None:
            while_down()
        self.ctl("start_app")
        self.wait_ready(time.monotonic() + BOOT_TIMEOUT)
        back = time.monotonic()
        self.events.append(("back", back))
        return back

    def kill(self) -> None:
        """SIGKILL to the Erlang VM: no clean close of anything, as in a power cut."""
        pid = self.beam_pid()
        self.events.append(("kill -9", time.monotonic()))
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        self._out.close()

    def hard_restart(self, while_down=None) -> float:
        """Kills the node with SIGKILL and starts it again on the same data directory;
        `while_down()` is called in between. Returns the monotonic time the node was back."""
        self.kill()
        if while_down is not None:
            while_down()
        self.start()
        back = time.monotonic()
        self.events.append(("back", back))
        return back

    def last_outage(self) -> float:
        """Seconds from the last fault (`stop_app` or the kill) to the node being back."""
        start = next(t for what, t in reversed(self.events) if what in ("stop_app", "kill -9"))
        back = next(t for what, t in reversed(self.events) if what == "back")
        return round(back - start, 2)

    def set_memory_alarm(self) -> None:
        self.ctl("set_vm_memory_high_watermark", "0.000001")

    def clear_memory_alarm(self) -> None:
        self.ctl("set_vm_memory_high_watermark", "0.4")

    def alarms(self) -> list:
        response = requests.get(
            f"{self.api_url}api/health/checks/alarms", auth=("guest", "guest"), timeout=5
        )
        return [] if response.status_code == 200 else response.json().get("alarms", ["?"])

    # --- the end ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stops the node, waits for its processes to go, and removes its directories."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.ctl("stop", str(self.pid_file), timeout=60)
            except Exception:  # noqa: BLE001 - then the hard way
                with contextlib.suppress(Exception):
                    os.kill(self.beam_pid(), signal.SIGKILL)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        with contextlib.suppress(Exception):
            self._out.close()
        deadline = time.monotonic() + 15
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.1)

    def leftovers(self) -> list[str]:
        """Processes of this node still running (none, once it has stopped)."""
        result = subprocess.run(
            ["pgrep", "-af", self.node], capture_output=True, text=True, check=False
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
