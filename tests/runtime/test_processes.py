"""Any number of web and worker processes against one RabbitMQ and one database: two
daphnes serve live viewers of one lab whose units run in two worker processes."""

import json

import pytest
from django.test import Client
from websockets.sync.client import connect

from exercises.services import lab_session_start
from tests.conftest import subprocess_env
from tests.support import Daphne, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def two_webs(worker):
    webs = [Daphne(f"web-{i}", env=subprocess_env()) for i in (1, 2)]
    for web in webs:
        web.start()
    yield webs
    for web in webs:
        web.stop()


def frames(url: str, lab_id: str, cookie: str, count: int) -> list[dict]:
    """`count` frames of the lab as a browser gets them, acknowledging as the page does."""
    ws_url = url.replace("http://", "ws://") + f"/ws/labs/{lab_id}/"
    got = []
    with connect(ws_url, additional_headers={"Cookie": f"sessionid={cookie}", "Origin": url}) as ws:
        while len(got) < count:
            message = json.loads(ws.recv(timeout=10))
            if "d" in message:
                ws.send(json.dumps({"type": "ack", "d": message["d"]}))
            if message["type"] == "frame":
                got.append(message)
    return got


def test_two_web_and_two_worker_processes_serve_one_lab(
    catalogue, learner, labs, worker, second_worker, two_webs
):
    # A lab's units run together, in the worker that took its monitor; labs spread over
    # the workers by their monitors' tasks, which the broker hands out in turn.
    sessions = [
        lab_session_start(exercise=catalogue["direct-routing"], owner=learner) for _ in range(4)
    ]
    session = sessions[0]
    client = Client()
    client.force_login(learner)
    cookie = client.cookies["sessionid"].value

    def owners(lab) -> set[str]:
        lab.refresh_from_db()
        rows = set(lab.workloads.filter(running=True).values_list("owner", flat=True))
        return rows | {lab.monitor_owner}

    wait_for(lambda: all("" not in owners(s) for s in sessions), message="every unit claimed")
    pids = {int(o.split(":")[1]) for s in sessions for o in owners(s)}
    assert pids == {worker.proc.pid, second_worker.proc.pid}, "units in both worker processes"

    for web in two_webs:
        got = frames(web.url, session.id, cookie, 15)
        published = [f["counters"].get("temperature-sensor", {}).get("published", 0) for f in got]
        assert published[-1] > published[0], f"{web.name}: counters move"
