"""The lab's WebSocket through the real ASGI application: access, snapshot, frames, acks,
bad frames."""

import asyncio
import json

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from exercises.services import lab_session_start
from labconsole.asgi import application
from labconsole.flow import stream as stream_module
from labconsole.flow.stream import close_shared_connections
from tests.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def headers_for(user=None) -> list[tuple[bytes, bytes]]:
    headers = [(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")]
    if user is not None:
        client = Client()
        client.force_login(user)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    return headers


def run(scenario):
    async def wrapped():
        try:
            return await scenario()
        finally:
            await close_shared_connections()

    return async_to_sync(wrapped)()


async def connect(path, headers):
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await communicator.connect(timeout=5)
    return communicator, connected, code


async def receive(communicator, kind, timeout=5.0, ack=True):
    """The next message of `kind`, acknowledging everything received on the way."""
    while True:
        message = json.loads(await communicator.receive_from(timeout=timeout))
        if ack and "d" in message:
            await communicator.send_to(text_data=json.dumps({"type": "ack", "d": message["d"]}))
        if message["type"] == kind:
            return message


@pytest.fixture
def lab(worker, catalogue, learner, labs):
    return lab_session_start(exercise=catalogue["direct-routing"], owner=learner)


def test_owner_gets_a_snapshot_then_live_frames(lab, learner):
    owner = headers_for(learner)

    async def scenario():
        ws, connected, _ = await connect(f"/ws/labs/{lab.id}/", owner)
        assert connected
        snapshot = await receive(ws, "snapshot")
        node_ids = {n["id"] for n in snapshot["graph"]["nodes"]}
        assert {"x:sensors", "q:temperature", "p:temperature-sensor"} <= node_ids
        assert snapshot["workloads"]["temperature-sensor"]["kind"] == "producer"
        published = 0
        for _ in range(60):
            frame = await receive(ws, "frame")
            published = frame["counters"].get("temperature-sensor", {}).get("published", 0)
            if published >= 3 and frame["queues"]["temperature"]["consumers"] == 1:
                break
        assert published >= 3
        await ws.disconnect()

    run(scenario)


def test_reconnect_gets_the_current_numbers_at_once(lab, learner):
    owner = headers_for(learner)

    async def scenario():
        ws, _, _ = await connect(f"/ws/labs/{lab.id}/", owner)
        await receive(ws, "snapshot")
        while (await receive(ws, "frame"))["counters"].get("temperature-sensor", {}).get(
            "published", 0
        ) < 2:
            pass
        await ws.disconnect()
        ws, _, _ = await connect(f"/ws/labs/{lab.id}/", owner)
        snapshot = await receive(ws, "snapshot")
        assert snapshot["counters"]["temperature-sensor"]["published"] >= 2
        assert any(e["kind"] == "published" for e in snapshot["events"])
        await ws.disconnect()

    run(scenario)


def test_other_users_and_anonymous_are_refused(lab, django_user_model):
    other = headers_for(django_user_model.objects.create_user("other", password="other-pass-1"))

    async def scenario():
        for headers in (other, headers_for(None)):
            _, connected, code = await connect(f"/ws/labs/{lab.id}/", headers)
            assert (connected, code) == (False, 4403)
        _, connected, code = await connect("/ws/labs/no-such-lab/", other)
        assert (connected, code) == (False, 4404)

    run(scenario)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("not json", "frame is not valid JSON"),
        ("[1, 2]", 'must be a JSON object with a "type"'),
        ('{"type": "explode"}', "unknown type 'explode'; expected one of: ack, ping, snapshot"),
        ('{"type": "ack", "d": "x"}', '"ack" needs "d"'),
    ],
)
def test_bad_frames_get_a_clear_error_and_the_socket_stays(lab, learner, frame, message):
    owner = headers_for(learner)

    async def scenario():
        ws, _, _ = await connect(f"/ws/labs/{lab.id}/", owner)
        await receive(ws, "snapshot")
        await ws.send_to(text_data=frame)
        error = await receive(ws, "error")
        assert message in error["message"]
        await ws.send_to(text_data='{"type": "ping"}')
        assert (await receive(ws, "pong"))["type"] == "pong"
        await ws.disconnect()

    run(scenario)


def test_a_viewer_that_stops_acknowledging_is_bounded_by_the_broker(lab, learner, api):
    """Without acks the server stops sending after FLOW_VIEWER_IN_FLIGHT; the viewer's
    queue then holds at most FLOW_VIEWER_QUEUE_LENGTH and drops the oldest."""

    owner = headers_for(learner)

    async def scenario():
        ws, _, _ = await connect(f"/ws/labs/{lab.id}/", owner)
        last = 0
        while not await ws.receive_nothing(timeout=1.5, interval=0.05):
            last = json.loads(await ws.receive_from()).get("d", last)
        assert last == settings.FLOW_VIEWER_IN_FLIGHT

        def viewer_queue():
            queues = api.request("GET", "queues/%2F?columns=name,messages,arguments")
            mine = [q for q in queues if q["arguments"].get("x-overflow") == "drop-head"]
            return mine[0] if mine and mine[0].get("messages") else None

        queue = wait_for(viewer_queue, timeout=15, message="viewer queue statistics")
        assert queue["arguments"]["x-max-length"] == settings.FLOW_VIEWER_QUEUE_LENGTH
        await ws.disconnect()

    run(scenario)


def test_losing_the_broker_closes_the_socket_so_the_browser_reconnects(lab, learner, api):
    owner = headers_for(learner)

    async def scenario():
        ws, _, _ = await connect(f"/ws/labs/{lab.id}/", owner)
        await receive(ws, "snapshot")
        connection = stream_module._connections[asyncio.get_running_loop()]
        await connection.close()  # what a broker restart does to it
        while (output := await ws.receive_output(timeout=5))["type"] != "websocket.close":
            pass
        assert output["code"] == 4500
        ws, connected, _ = await connect(f"/ws/labs/{lab.id}/", owner)
        assert connected and (await receive(ws, "snapshot"))["lab"]["id"] == lab.id
        await ws.disconnect()

    run(scenario)
