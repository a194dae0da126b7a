"""What a lab socket may do and what it costs: the origin it may come from, the size and
rate of its frames, the database writes of its pings, what it leaves behind when closed, and
a flood of frames on one real daphne while another lab's socket keeps its frame rate."""

import asyncio
import json
import threading
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
from tests.exercises.test_stream import connect, headers_for, hub_queues, receive, run
from tests.support import Daphne, wait_for

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


# --- a flood on one daphne ------------------------------------------------------------------


class QuietViewer(threading.Thread):
    """A page's socket: acknowledges as the page does and notes when each frame came."""

    def __init__(self, url: str, cookie: str, origin: str):
        super().__init__(daemon=True)
        self.url, self.cookie, self.origin = url, cookie, origin
        self.frame_times: list[float] = []
        self.closed_with: int | None = None
        self.stop = threading.Event()

    def run(self):
        headers = {"Cookie": f"sessionid={self.cookie}", "Origin": self.origin}
        with ws_connect(self.url, additional_headers=headers) as ws:
            try:
                while not self.stop.is_set():
                    message = json.loads(ws.recv(timeout=10))
                    if message["type"] == "frame":
                        self.frame_times.append(time.monotonic())
                    if "d" in message and message["d"] % 10 == 0:
                        ws.send(json.dumps({"type": "ack", "d": message["d"]}))
            except ConnectionClosed as exc:
                self.closed_with = exc.rcvd.code if exc.rcvd else None

    def frames_between(self, start: float, end: float) -> int:
        return sum(start <= t < end for t in self.frame_times)


FLOOD_FRAMES = 5000


def flood_once(url: str, cookie: str, origin: str) -> tuple[int, int | None, list[str]]:
    """Sends FLOOD_FRAMES pings as fast as the socket takes them (or until the server closes
    it), then reads to the close: how many were sent, the close code, the errors sent."""
    headers = {"Cookie": f"sessionid={cookie}", "Origin": origin}
    sent, errors, code = 0, [], None
    with ws_connect(url, additional_headers=headers, max_queue=None) as ws:
        try:
            for _ in range(FLOOD_FRAMES):
                ws.send('{"type": "ping"}')
                sent += 1
        except ConnectionClosed:
            pass  # closed while sending: what it said before is still to be read
        try:
            while True:  # what the server sent, up to its close
                message = json.loads(ws.recv(timeout=5))
                if message["type"] == "error":
                    errors.append(message["message"])
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
    return sent, code, errors


def test_a_flooding_socket_is_cut_off_and_another_labs_viewer_keeps_its_frame_rate(
    daphne, catalogue, learner, labs, django_user_model, api
):
    """Two labs of two users on one daphne. One user's client floods its socket with frames,
    reconnecting each time it is closed, for as long as the other's viewer was watched
    before: every flooding socket is closed with 4429 after an error saying which limit;
    the quiet viewer gets at least 0.7 of the frames it got before; daphne's memory hardly
    grows; and once both leave, the hubs' queues are gone."""
    other = django_user_model.objects.create_user("flooder", password="flooder-pass-1")
    quiet_lab = lab_session_start(exercise=catalogue["direct-routing"], owner=learner)
    flood_lab = lab_session_start(exercise=catalogue["direct-routing"], owner=other)
    quiet = QuietViewer(ws_url(daphne, quiet_lab.id), cookie_of(learner), daphne.url)
    quiet.start()
    flood_cookie = cookie_of(other)
    # The quiet lab's frames flow at their full rate.
    wait_for(lambda: len(quiet.frame_times) >= 20, timeout=30, message="the quiet lab's frames")
    rss_before = rss_kib(daphne.proc.pid)

    window = 4.0
    before_start = time.monotonic()
    time.sleep(window)
    flood_start = time.monotonic()
    codes, errors, sent = [], [], 0
    while time.monotonic() - flood_start < window:
        n, code, said = flood_once(ws_url(daphne, flood_lab.id), flood_cookie, daphne.url)
        sent += n
        codes.append(code)
        errors += said
    flood_end = time.monotonic()
    time.sleep(0.5)
    rss_after = rss_kib(daphne.proc.pid)
    quiet.stop.set()
    quiet.join(15)

    before = quiet.frames_between(before_start, flood_start)
    during = quiet.frames_between(flood_start, flood_end)
    rate_before = before / (flood_start - before_start)
    rate_during = during / (flood_end - flood_start)
    print(
        f"flood: {sent} frames sent on {len(codes)} sockets in {flood_end - flood_start:.1f} s;"
        f" quiet viewer {rate_before:.1f} frames/s before, {rate_during:.1f} during;"
        f" daphne RSS {rss_before} -> {rss_after} KiB"
    )
    assert before >= 20, "the quiet viewer got frames before the flood"
    assert codes and set(codes) == {consumers.TOO_MANY_FRAMES}, codes
    assert len(errors) == len(codes) and all("too many frames" in e for e in errors)
    assert sent > len(codes) * settings.LAB_SOCKET_FRAME_BURST, "the client did flood"
    assert quiet.closed_with is None
    assert rate_during >= 0.7 * rate_before
    assert rss_after - rss_before < 64 * 1024, "daphne grew by more than 64 MiB"
    for lab_id in (quiet_lab.id, flood_lab.id):
        wait_for(lambda: not hub_queues(api, lab_id), message="hub queues gone")  # noqa: B023


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
