"""What a lab socket may do and what it costs: the origin it may come from, the size and
rate of its frames, the database writes of its pings, what it leaves behind when closed, and
a flood of frames on one real daphne while another lab's socket keeps its frame rate."""

import asyncio
import json
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from exercises import consumers
from exercises.models import LabSession
from exercises.services import lab_session_start
from labconsole.flow import stream as stream_module
from tests.conftest import subprocess_env
from tests.exercises.test_stream import connect, headers_for, receive, run
from tests.support import Daphne

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def lab(worker, catalogue, learner, labs):
    return lab_session_start(exercise=catalogue["direct-routing"], owner=learner)


@pytest.fixture(scope="module")
def daphne(worker):
    web = Daphne("daphne-socket-limits", env=subprocess_env())
    web.start()
    yield web
    web.stop()


def cookie_of(user) -> str:
    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def ws_url(web: Daphne, lab_id: str) -> str:
    return web.url.replace("http://", "ws://") + f"/ws/labs/{lab_id}/"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# --- origin ---------------------------------------------------------------------------------


def test_only_the_sockets_own_origin_is_accepted(daphne, lab, learner):
    """Served at http://127.0.0.1:<port>: a page of that origin opens the socket; the same
    host on another port or scheme, or another host, is refused at the handshake."""
    cookie = cookie_of(learner)
    url = ws_url(daphne, lab.id)

    def opens(origin: str) -> bool:
        headers = {"Cookie": f"sessionid={cookie}", "Origin": origin}
        try:
            with ws_connect(url, additional_headers=headers, open_timeout=5) as ws:
                return json.loads(ws.recv(timeout=10))["type"] == "snapshot"
        except InvalidStatus as exc:
            assert exc.response.status_code == 403
            return False

    assert opens(daphne.url)
    port = daphne.url.rsplit(":", 1)[1]
    for origin in (
        "http://127.0.0.1:9999",
        "https://127.0.0.1",
        f"https://127.0.0.1:{port}",
        "http://127.0.0.1",
        f"http://localhost.evil.example:{port}",
        "null",
    ):
        assert not opens(origin), origin


@pytest.mark.parametrize(
    ("scheme", "host", "origin", "allowed"),
    [
        ("ws", "127.0.0.1:8000", "http://127.0.0.1:8000", True),
        ("ws", "127.0.0.1", "http://127.0.0.1:80", True),
        ("ws", "LOCALHOST:8000", "http://localhost:8000", True),
        ("wss", "localhost", "https://localhost", True),
        ("ws", "127.0.0.1:8000", "http://127.0.0.1:9999", False),
        ("ws", "127.0.0.1:8000", "https://127.0.0.1:8000", False),
        ("wss", "localhost", "http://localhost", False),
        # DNS rebinding: the Origin matches the Host, which is no allowed host.
        ("ws", "evil.example:8000", "http://evil.example:8000", False),
        ("ws", "127.0.0.1:8000", "", False),
        ("ws", "127.0.0.1:8000", "http://127.0.0.1:8000/path", False),
    ],
)
def test_origin_rules(scheme, host, origin, allowed):
    from labconsole.origin import origin_allowed

    scope = {"type": "websocket", "scheme": scheme,
             "headers": [(b"host", host.encode()), (b"origin", origin.encode())]}  # fmt: skip
    assert origin_allowed(scope) is allowed


def test_trusted_origins_and_the_proxys_https(settings):
    """Behind a proxy: an origin listed in CSRF_TRUSTED_ORIGINS, or the Host's own origin
    over HTTPS when the proxy says so with SECURE_PROXY_SSL_HEADER."""
    from labconsole.origin import origin_allowed

    def scope(origin, host="console.example.com", proto=None):
        headers = [(b"host", host.encode()), (b"origin", origin.encode())]
        if proto:
            headers.append((b"x-forwarded-proto", proto.encode()))
        return {"type": "websocket", "scheme": "ws", "headers": headers}

    settings.ALLOWED_HOSTS = ["console.example.com"]
    assert not origin_allowed(scope("https://console.example.com"))
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    assert origin_allowed(scope("https://console.example.com", proto="https"))
    assert not origin_allowed(scope("http://console.example.com", proto="https"))
    assert not origin_allowed(scope("https://labs.example.com", host="internal:8000"))
    settings.CSRF_TRUSTED_ORIGINS = ["https://labs.example.com", "https://*.example.org"]
    assert origin_allowed(scope("https://labs.example.com", host="internal:8000"))
    assert origin_allowed(scope("https://a.example.org", host="internal:8000"))
    assert not origin_allowed(scope("https://labs.example.com:8443", host="internal:8000"))
    assert not origin_allowed(scope("http://a.example.org", host="internal:8000"))


# --- size and rate --------------------------------------------------------------------------


async def closed(ws, timeout=5.0) -> tuple[list[dict], int]:
    """Everything the socket is sent until it is closed, and the close code."""
    got = []
    while True:
        output = await ws.receive_output(timeout=timeout)
        if output["type"] == "websocket.close":
            return got, output["code"]
        got.append(json.loads(output["text"]))


def test_a_frame_over_the_size_limit_is_refused_and_the_socket_closed(lab, learner):
    owner = headers_for(learner)
    limit = settings.LAB_SOCKET_MAX_FRAME_BYTES

    async def scenario():
        ws, _, _ = await connect(f"/ws/labs/{lab.id}/", owner)
        await receive(ws, "snapshot")
        # Up to the limit, a frame is read (its extra member is ignored).
        padding = limit - len(json.dumps({"type": "ping", "pad": ""}))
        frame = json.dumps({"type": "ping", "pad": "ё" * (padding // 2)}, ensure_ascii=False)
        assert limit - 2 < len(frame.encode()) <= limit
        await ws.send_to(text_data=frame)
        await receive(ws, "pong")
        # One character more than the limit in bytes (not in characters) is not.
        frame = json.dumps({"type": "ping", "pad": "ё" * (limit // 2)}, ensure_ascii=False)
        assert len(frame) < limit < len(frame.encode())
        await ws.send_to(text_data=frame)
        got, code = await closed(ws)
        errors = [m for m in got if m["type"] == "error"]
        assert code == consumers.TOO_BIG
        assert len(errors) == 1
        assert (
            f"frame of {len(frame.encode())} bytes is over the limit of {limit}"
            in (errors[0]["message"])
        )

    run(scenario)


def test_too_many_frames_get_an_error_and_the_socket_closed(lab, learner, settings):
    settings.FLOW_HUB_GRACE_SECONDS = 0.5
    owner = headers_for(learner)
    burst = settings.LAB_SOCKET_FRAME_BURST

    async def scenario():
        ws, _, _ = await connect(f"/ws/labs/{lab.id}/", owner)
        await receive(ws, "snapshot")
        # At the rate the page sends, the socket stays.
        for _ in range(5):
            await ws.send_to(text_data='{"type": "ping"}')
            await receive(ws, "pong")
            await asyncio.sleep(0.1)
        (hub,) = stream_module.hubs().values()
        assert len(hub.viewers) == 1
        for _ in range(burst * 3):
            await ws.send_to(text_data='{"type": "ping"}')
        got, code = await closed(ws)
        assert code == consumers.TOO_MANY_FRAMES
        pongs = [m for m in got if m["type"] == "pong"]
        (error,) = [m for m in got if m["type"] == "error"]
        assert "too many frames: at most" in error["message"]
        assert burst - 5 <= len(pongs) <= burst + 5
        # Closed by the server: the socket left its hub at once, before the client went...
        assert not hub.viewers
        # ...and the hub's subscription ends after its grace.
        await asyncio.sleep(1.0)
        assert stream_module.hubs() == {}
        await ws.disconnect()

    run(scenario)


def test_pings_reach_the_database_at_most_every_touch_interval(lab, learner, monkeypatch):
    """Pings are answered at once; the lab's last-seen time is written once per interval,
    and the consumer does not even call into the database thread in between."""
    owner = headers_for(learner)
    monkeypatch.setattr(consumers, "TOUCH_EVERY", 0.5)
    hops = []
    touch = consumers._touch

    async def counted(session):
        hops.append(time.monotonic())
        await touch(session)

    monkeypatch.setattr(consumers, "_touch", counted)

    async def scenario():
        ws, _, _ = await connect(f"/ws/labs/{lab.id}/", owner)
        await receive(ws, "snapshot")
        seen = []
        started = time.monotonic()
        for _ in range(20):  # 2 s of pings, ten a second
            await ws.send_to(text_data='{"type": "ping"}')
            await receive(ws, "pong")
            seen.append(
                await asyncio.to_thread(
                    lambda: LabSession.objects.values_list("last_seen_at", flat=True).get(pk=lab.id)
                )
            )
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - started
        await ws.disconnect()
        return seen, elapsed

    seen, elapsed = run(scenario)
    assert len(set(seen)) >= 2, "the last-seen time is written (the throttle is alive)"
    assert 2 <= len(hops) <= elapsed / 0.5 + 1, f"{len(hops)} database calls for 20 pings"


def test_refused_sockets_over_daphne_get_the_documented_codes(daphne, lab, django_user_model):
    """A browser sees the close code only when the socket was accepted first."""
    other = django_user_model.objects.create_user("other", password="other-pass-1")
    headers = {"Cookie": f"sessionid={cookie_of(other)}", "Origin": daphne.url}

    def close_code(url):
        with (
            ws_connect(url, additional_headers=headers, open_timeout=5) as ws,
            pytest.raises(ConnectionClosed) as closed,
        ):
            ws.recv(timeout=5)
        return closed.value.rcvd.code

    assert close_code(ws_url(daphne, lab.id)) == 4403
    assert close_code(ws_url(daphne, "no-such-lab")) == 4404
