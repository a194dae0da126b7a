"""The runtime's connections after an outage: every outage starts its backoff from the
first step (a long-lived lab that survived one restart must not wait the longest delay
after the next), on the tests' own RabbitMQ node, whose connections are closed by force
through the management API."""

from __future__ import annotations

import logging
import re

import pika
import requests

from labconsole.runtime import bus as bus_module
from labconsole.runtime import unit as unit_module
from labconsole.runtime.bus import ConsoleBus
from labconsole.runtime.unit import Unit
from tests.support import wait_for

OUTAGES = 3


class Idle(Unit):
    kind = "idle"

    def connected(self) -> None:
        pass


def close_by_force(node, name: str) -> None:
    """Closes the connection named `name` from the broker's side (CONNECTION_FORCED)."""
    auth = ("guest", "guest")

    def named():
        listed = requests.get(f"{node.api_url}api/connections", auth=auth, timeout=5).json()
        return [c["name"] for c in listed if c.get("client_properties", {}).get(
            "connection_name") == name]  # fmt: skip

    # The management API lists a new connection within its statistics interval (1 s).
    found = wait_for(named, timeout=15, message=f"connection {name} listed")
    for c in found:
        requests.delete(
            f"{node.api_url}api/connections/{requests.utils.quote(c, safe='')}",
            auth=auth,
            timeout=5,
        ).raise_for_status()


def up(unit: Unit) -> bool:
    lab = unit.lab
    return lab is not None and lab.is_open


def delays(caplog, logger: str) -> list[float]:
    return [
        float(m.group(1))
        for r in caplog.records
        if r.name == logger and (m := re.search(r"again in ([0-9.]+) s", r.getMessage()))
    ]


def test_every_outage_starts_from_the_first_backoff_step(node, caplog):
    caplog.set_level(logging.INFO, logger="labconsole.runtime")

    def params(name: str) -> list[pika.ConnectionParameters]:
        return [
            pika.ConnectionParameters(
                host="127.0.0.1",
                port=node.port,
                credentials=pika.PlainCredentials("guest", "guest"),
                connection_attempts=1,
                client_properties={"connection_name": name},
            )
        ]

    bus = ConsoleBus(params=lambda: params("backoff bus"))
    unit = Idle(
        name="idle",
        bus=bus,
        control_key="backoff.idle",
        lab_params=params("backoff unit"),
        still_current=lambda: True,
    )
    bus.start()
    unit.start(on_exit=lambda _: None)
    try:
        for outage in range(OUTAGES):
            wait_for(lambda: bus.connected.is_set() and up(unit), message="connected")
            close_by_force(node, "backoff bus")
            close_by_force(node, "backoff unit")
            wait_for(
                lambda n=outage + 1: unit.reconnects == n and up(unit) and bus.connected.is_set(),
                timeout=15,
                message=f"connected again after outage {outage + 1}",
            )
    finally:
        unit.request_stop()
        assert unit.join(10)
        bus.stop()
        bus.join(10)
    first_bus = round(bus_module.BACKOFF[0], 1)
    assert delays(caplog, "labconsole.runtime.bus") == [first_bus] * OUTAGES
    assert delays(caplog, "labconsole.runtime.unit") == [unit_module.BACKOFF[0]] * OUTAGES
    assert unit.outcome == "stopped"
