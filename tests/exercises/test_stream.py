"""The lab's WebSocket through the real ASGI application: access, snapshot, frames, acks,
bad frames, one subscription per lab however many sockets, slow sockets, a lost broker."""

import asyncio
import contextlib
import json
import re
import time
from urllib.parse import quote

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.test import Client

from exercises.services import lab_session_start
from labconsole.asgi import application
from labconsole.broker import amqp
from labconsole.flow import stream as stream_module
from labconsole.flow.stream import close_shared_connections

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


async def until(predicate, *, timeout=20.0, message=""):
    """Polls a blocking predicate (say, the management API) without blocking the loop."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s: {message or predicate}")
        await asyncio.sleep(0.2)


def hub_queues(api, lab_id):
    vhost = quote(amqp.console_vhost(), safe="")
    queues = api.request("GET", f"queues/{vhost}?columns=name,arguments,consumers")
    return [q for q in queues if q["name"].startswith(stream_module.queue_prefix(lab_id))]


class Reader:
    """Reads one socket in the background, acknowledging as the page does (or not)."""

    def __init__(self, communicator, *, ack=True):
        self.ws = communicator
        self.ack = ack
        self.messages = []
        self.raw = []
        self.task = asyncio.get_running_loop().create_task(self.run())

    async def run(self):
        while True:
            text = await self.ws.receive_from(timeout=30)
            message = json.loads(text)
            self.messages.append(message)
            self.raw.append(text)
            if self.ack and "d" in message:
                await self.ws.send_to(text_data=json.dumps({"type": "ack", "d": message["d"]}))

    def of(self, kind, **match):
        return [
            m
            for m in self.messages
            if m["type"] == kind and all(m.get(k) == v for k, v in match.items())
        ]

    async def wait(self, kind, count=1, timeout=15.0, **match):
        deadline = time.monotonic() + timeout
        while len(self.of(kind, **match)) < count:
            if self.task.done():
                self.task.result()  # raises what stopped the reader
            assert time.monotonic() < deadline, f"no {count} {kind} {match} in {timeout} s"
            await asyncio.sleep(0.02)
        return self.of(kind, **match)

    async def stop(self):
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


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


async def watch_until_published(lab, headers, n: int) -> None:
    """Watches the lab until a frame counts `n` messages of its temperature sensor."""
    ws, _, _ = await connect(f"/ws/labs/{lab.id}/", headers)
    await receive(ws, "snapshot")
    while (await receive(ws, "frame"))["counters"].get("temperature-sensor", {}).get(
        "published", 0
    ) < n:
        pass
    await ws.disconnect()


def test_reconnect_gets_the_current_numbers_at_once(lab, learner):
    owner = headers_for(learner)

    async def scenario():
        await watch_until_published(lab, owner, 2)
        ws, _, _ = await connect(f"/ws/labs/{lab.id}/", owner)
        snapshot = await receive(ws, "snapshot")
        assert snapshot["counters"]["temperature-sensor"]["published"] >= 2
        assert any(e["kind"] == "published" for e in snapshot["events"])
        await ws.disconnect()

    run(scenario)


def test_other_users_and_anonymous_are_refused(lab, learner, django_user_model):
    other = headers_for(django_user_model.objects.create_user("other", password="other-pass-1"))
    owner_headers = headers_for(learner)

    async def closed_with(path, headers):
        # Accepted, then closed with the code: a close before accepting would be a handshake
        # 403, which a browser sees as 1006 and retries.
        ws, connected, _ = await connect(path, headers)
        assert connected
        return await ws.receive_output(timeout=5)

    async def scenario():
        owner, _, _ = await connect(f"/ws/labs/{lab.id}/", owner_headers)
        assert (await receive(owner, "snapshot"))["lab"]["id"] == lab.id
        await owner.disconnect()
        for headers in (other, headers_for(None)):
            closed = await closed_with(f"/ws/labs/{lab.id}/", headers)
            assert closed == {"type": "websocket.close", "code": 4403}
        closed = await closed_with("/ws/labs/no-such-lab/", other)
        assert closed == {"type": "websocket.close", "code": 4404}

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


def test_a_slow_socket_loses_its_oldest_frames_and_never_slows_the_others(lab, learner, api):
    """A socket that stops acknowledging gets FLOW_VIEWER_IN_FLIGHT messages and then
    nothing, while another socket of the same lab keeps getting every frame; when the
    slow one acknowledges again, it gets the few newest frames it kept and is told how
    many it lost."""
    owner = headers_for(learner)
    limit = settings.FLOW_VIEWER_IN_FLIGHT

    async def scenario():
        fast_ws, _, _ = await connect(f"/ws/labs/{lab.id}/", owner)
        slow_ws, _, _ = await connect(f"/ws/labs/{lab.id}/", owner)
        fast, slow = Reader(fast_ws), Reader(slow_ws, ack=False)
        await slow.wait("snapshot")
        deadline = time.monotonic() + 20
        while max((m.get("d", 0) for m in slow.messages), default=0) < limit:
            assert time.monotonic() < deadline, "the slow socket never reached its limit"
            await asyncio.sleep(0.05)
        stuck_at = len(slow.messages)
        frames_before = len(fast.of("frame"))
        await asyncio.sleep(2.0)
        during = fast.of("frame")[frames_before:]
        assert len(slow.messages) == stuck_at, "the server sent past the in-flight limit"
        assert max(m.get("d", 0) for m in slow.messages) == limit
        assert len(during) >= 10, f"the fast socket got only {len(during)} frames in 2 s"
        seqs = [m["seq"] for m in during]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        assert all(m["dropped"] == 0 for m in during)

        # The slow socket acknowledges: it gets the frames it kept (at most a few), the
        # count of those it lost, and then live frames again.
        await slow_ws.send_to(text_data=json.dumps({"type": "ack", "d": limit}))
        await asyncio.sleep(0.3)
        after = [m for m in slow.of("frame") if m["d"] > limit]
        kept = [m for m in after if m["seq"] <= during[-1]["seq"]]
        assert len(kept) <= stream_module.viewer_frames()
        assert after and after[0]["d"] == limit + 1
        assert after[0]["dropped"] >= len(during) - stream_module.viewer_frames()

        # One queue for the lab in this process, short and dropping its oldest.
        (queue,) = hub_queues(api, lab.id)
        assert queue["arguments"] == {
            "x-max-length": stream_module.hub_queue_length(),
            "x-overflow": "drop-head",
            "x-expires": 60_000,
        }
        await fast.stop()
        await slow.stop()
        await fast_ws.disconnect()
        await slow_ws.disconnect()

    run(scenario)


def test_one_queue_per_lab_however_many_sockets_gone_after_the_last_leaves(
    lab, learner, api, settings
):
    settings.FLOW_HUB_GRACE_SECONDS = 1.0
    owner = headers_for(learner)

    async def scenario():
        sockets = []
        for _ in range(6):
            ws, connected, _ = await connect(f"/ws/labs/{lab.id}/", owner)
            assert connected
            sockets.append(ws)
            await receive(ws, "snapshot")
        queues = await until(lambda: hub_queues(api, lab.id), message="the hub's queue")
        assert len(queues) == 1 and queues[0]["name"].startswith(stream_module.queue_prefix(lab.id))
        assert list(stream_module.hubs()) == [lab.id]
        # The monitor has numbers to give (the lab's first reports are in).
        frame = await receive(sockets[0], "frame", timeout=10)
        while "temperature-sensor" not in frame["counters"]:
            frame = await receive(sockets[0], "frame", timeout=10)
        # Each socket asked the monitor for its snapshot through the one queue, and got
        # its own answer (routed by correlation id): every socket has the numbers.
        readers = [Reader(ws) for ws in sockets]
        for ws in sockets[:3]:
            await ws.send_to(text_data='{"type": "snapshot"}')
        for reader in readers[:3]:
            (snapshot,) = await reader.wait("snapshot")
            assert "temperature-sensor" in snapshot["counters"]
        await asyncio.sleep(1.0)
        assert [len(r.of("snapshot")) for r in readers] == [1, 1, 1, 0, 0, 0]
        assert all(r.of("frame") for r in readers)
        for reader in readers:
            await reader.stop()
            await reader.ws.disconnect()
        # Within the grace a reload finds the same subscription...
        ws, _, _ = await connect(f"/ws/labs/{lab.id}/", owner)
        await receive(ws, "snapshot")
        assert [q["name"] for q in hub_queues(api, lab.id)] == [queues[0]["name"]]
        await ws.disconnect()
        # ...and after it the queue is gone.
        await asyncio.sleep(1.5)
        assert stream_module.hubs() == {}
        await until(lambda: not hub_queues(api, lab.id), message="the hub's queue deleted")

    run(scenario)


def test_every_socket_gets_the_same_frame_text(lab, learner):
    """Frames are forwarded as they came: apart from `d` and `dropped`, two sockets get
    the very same text."""
    owner = headers_for(learner)
    prefix = re.compile(r'^\{"d":(\d+),"dropped":(\d+),')

    async def scenario():
        a_ws, _, _ = await connect(f"/ws/labs/{lab.id}/", owner)
        b_ws, _, _ = await connect(f"/ws/labs/{lab.id}/", owner)
        a, b = Reader(a_ws), Reader(b_ws)
        await a.wait("frame", 10)
        await b.wait("frame", 10)

        def frames(reader):
            out = {}
            for text, message in zip(reader.raw, reader.messages, strict=True):
                if message["type"] == "frame":
                    match = prefix.match(text)
                    assert match, text[:80]
                    assert (int(match[1]), int(match[2])) == (message["d"], message["dropped"])
                    out[message["seq"]] = text[match.end() :]
            return out

        fa, fb = frames(a), frames(b)
        common = set(fa) & set(fb)
        assert len(common) >= 5
        for seq in common:
            assert fa[seq] == fb[seq]
            assert json.loads("{" + fa[seq])["type"] == "frame"
        await a.stop()
        await b.stop()
        await a_ws.disconnect()
        await b_ws.disconnect()

    run(scenario)


def test_losing_the_broker_keeps_the_socket_open_and_comes_back(lab, learner, api):
    """The hub's connection is closed by the broker (what a broker restart does to it):
    the socket stays open, is told so, and once the hub is subscribed again it is told the
    broker is back, gets a fresh snapshot, and frames flow again."""
    owner = headers_for(learner)
    name = stream_module.connection_name()

    def ours():
        connections = api.listing("connections?columns=name,client_properties")
        return [c["name"] for c in connections if
                c["client_properties"].get("connection_name") == name]  # fmt: skip

    async def scenario():
        ws, _, _ = await connect(f"/ws/labs/{lab.id}/", owner)
        reader = Reader(ws)
        await reader.wait("snapshot")
        await reader.wait("frame", 3)
        (old_queue,) = hub_queues(api, lab.id)
        for connection in await until(ours, message="the stream connection listed"):
            await asyncio.to_thread(
                api.request, "DELETE", f"connections/{quote(connection, safe='')}"
            )
        (lost,) = await reader.wait("status", state="broker-unavailable")
        assert lost["message"] and "d" in lost
        (back,) = await reader.wait("status", state="broker-back", timeout=20)
        index = reader.messages.index(back)
        assert index > reader.messages.index(lost)
        await reader.wait("snapshot", 2)
        frames = len(reader.of("frame"))
        await reader.wait("frame", frames + 5)
        # The monitor's numbers are back: in the snapshot, or (if the monitor was slow to
        # answer it) in the frames that follow.
        await until(
            lambda: any("temperature-sensor" in f["counters"] for f in reader.of("frame")[frames:]),
            message="the monitor's numbers after the broker came back",
        )
        # The socket was never closed, and the queue was declared anew.
        assert not reader.task.done()
        (new_queue,) = await until(lambda: hub_queues(api, lab.id) or None)
        assert new_queue["name"] != old_queue["name"]
        assert stream_module.hubs()[lab.id].opened == 2
        await reader.stop()
        await ws.disconnect()

    run(scenario)


def test_a_socket_opened_while_the_broker_is_unreachable_waits_for_it(lab, learner, settings):
    """The broker cannot be reached when the socket opens: the socket is accepted, gets a
    snapshot from the database and `broker-unavailable`; once the broker can be reached,
    `broker-back`, a snapshot with the monitor's numbers, and frames."""
    owner = headers_for(learner)
    reachable = settings.RABBITMQ_URL
    settings.RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens there

    async def scenario():
        ws, connected, _ = await connect(f"/ws/labs/{lab.id}/", owner)
        assert connected
        reader = Reader(ws)
        (first,) = await reader.wait("snapshot")
        assert first["lab"]["id"] == lab.id and first["counters"] == {}
        await reader.wait("status", state="broker-unavailable")
        await asyncio.sleep(1.0)  # a few attempts fail meanwhile
        assert not reader.of("frame")
        settings.RABBITMQ_URL = reachable
        await reader.wait("status", state="broker-back", timeout=10)
        await reader.wait("snapshot", 2)
        await reader.wait("frame", 3)
        await until(
            lambda: any("temperature-sensor" in f["counters"] for f in reader.of("frame")),
            message="the monitor's numbers once the broker can be reached",
        )
        await reader.stop()
        await ws.disconnect()

    run(scenario)


def feed_bindings(api) -> dict[str, set[str]]:
    """Per queue of a web process's frames feed, the labs it is bound to."""
    found: dict[str, set[str]] = {}
    for b in api.bindings(amqp.console_vhost()):
        if b["source"] == amqp.frames_exchange() and ".view.frames." in b["destination"]:
            labs = {k.removeprefix("lab.") for k in b["arguments"] if k.startswith("lab.")}
            found.setdefault(b["destination"], set()).update(labs)
    return found


def test_one_frames_queue_per_process_for_every_lab_watched_there(
    lab, catalogue, learner, api, settings
):
    """Two labs watched in one web process: their frames come through one queue of the
    process, bound once per lab, in messages that hold both labs' frames (their monitors
    share the worker). A lab nobody watches any more is unbound and the other goes on; the
    feed's channel closed under it opens again and frames flow again."""
    settings.FLOW_HUB_GRACE_SECONDS = 1.0
    other = lab_session_start(
        exercise=catalogue["direct-routing"], owner=learner, enforce_quotas=False
    )
    owner = headers_for(learner)
    probe = amqp.connect(amqp.console_parameters(name="test frames probe"))
    channel = probe.channel()
    amqp.declare_console_exchanges(channel)
    queue = channel.queue_declare("", exclusive=True).method.queue
    for session in (lab, other):
        amqp.bind_frames(channel, queue, session.id)

    async def scenario():
        a_ws, _, _ = await connect(f"/ws/labs/{lab.id}/", owner)
        b_ws, _, _ = await connect(f"/ws/labs/{other.id}/", owner)
        a, b = Reader(a_ws), Reader(b_ws)
        await a.wait("frame", 5)
        await b.wait("frame", 5)
        feed = stream_module._broker().feed
        bound = await until(lambda: feed_bindings(api) or None, message="the feed's bindings")
        assert bound == {feed.queue.name: {lab.id, other.id}}, bound
        assert not [q for q in hub_queues(api, lab.id) if "frames" in q["name"]]

        # The workers' side: one message carries the frames of both labs.
        def both_in_one() -> bool:
            while True:
                method, props, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    return False
                labs = {lab_id for lab_id, _ in amqp.unpack_frames(props.headers, body)}
                if {lab.id, other.id} <= labs:
                    return True

        await until(both_in_one, message="a message holding both labs' frames")

        # The first lab's page closes: after the grace its binding goes, the other stays.
        await a.stop()
        await a_ws.disconnect()
        await until(
            lambda: feed_bindings(api) == {feed.queue.name: {other.id}},
            message="only the second lab bound",
        )
        seen = len(b.of("frame"))
        await b.wait("frame", seen + 5)

        # A channel error on the feed: it opens again on its own, bound to the lab.
        opened = feed.opened
        await feed.channel.close()
        await until(lambda: feed.opened > opened, message="the feed opened again")
        seen = len(b.of("frame"))
        await b.wait("frame", seen + 5)
        assert feed_bindings(api) == {feed.queue.name: {other.id}}
        await b.stop()
        await b_ws.disconnect()

    try:
        run(scenario)
    finally:
        amqp.close_quietly(probe)
