"""A RabbitMQ node of the tests' own, for faults that must not touch the shared broker:
restarts (soft: `stop_app`/`start_app`; hard: the Erlang VM killed with SIGKILL and started
again on the same data directory) and a memory alarm.

The node runs from the installed RabbitMQ (no Docker) with every file of its own in a
temporary directory: its config, enabled plugins (management), data, logs, pid file and
Erlang cookie, so that nothing of /etc/rabbitmq or the shared node's state leaks in. Its
name carries this process's id, and its ports are free ones picked at start. The node
itself is labconsole/cluster/local.py's, as the console runs the nodes a lab may break.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import requests

from labconsole.cluster.local import BOOT_TIMEOUT, LocalNode
from tests.support import free_port


class BrokerNode(LocalNode):
    def __init__(self, name: str | None = None):
        name = name or f"labtest{os.getpid()}"
        super().__init__(
            name,
            Path(tempfile.mkdtemp(prefix=f"{name}-")),
            port=free_port(),
            mgmt_port=free_port(),
            dist_port=free_port(),
        )
        self.events: list[tuple[str, float]] = []  # (what, monotonic time) of each fault
        self.write_files()

    def start(self, timeout: float = BOOT_TIMEOUT) -> None:
        """Starts the node (on its data directory, if it ran before) and returns once it
        takes AMQP connections and its management API answers."""
        super().start(timeout)
        self.events.append(("started", time.monotonic()))

    # --- faults -------------------------------------------------------------------------------
    def soft_restart(self, while_down=None) -> float:
        """`stop_app` then `start_app`: the Erlang VM stays, RabbitMQ stops (closing every
        connection) and starts again; `while_down()` is called in between. Returns the
        monotonic time the node was back."""
        self.events.append(("stop_app", time.monotonic()))
        self.stop_app()
        self.events.append(("stopped", time.monotonic()))
        if while_down is not None:
            while_down()
        self.start_app()
        back = time.monotonic()
        self.events.append(("back", back))
        return back

    def kill(self) -> None:
        """SIGKILL to the Erlang VM: no clean close of anything, as in a power cut."""
        self.events.append(("kill -9", time.monotonic()))
        super().kill()

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
