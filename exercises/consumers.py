"""The lab's WebSocket: a snapshot on connect, then the monitor's frames (docs/live-protocol.md).

The frames come from the lab's hub in labconsole/flow/stream.py: one subscription per lab
in this process, whose messages are forwarded to each socket as text, never decoded here."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from types import SimpleNamespace

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.utils import translation
from django.utils.translation import gettext as _

from labconsole.flow import stream

from . import sandboxes, selectors, services
from .models import LabSession

ACCEPTED = ("ack", "ping", "snapshot")
# Close codes (docs/live-protocol.md). Refusals are sent after accepting the socket: a close
# before it is a handshake 403, which a browser reports as 1006 and retries.
NOT_YOURS = 4403
NOT_FOUND = 4404
TOO_MANY_FRAMES = 4429
TOO_BIG = 1009
# A lab's last_seen_at is written at most this often per process: it only has to beat
# LAB_IDLE_MINUTES, and many sockets of one lab connecting at once (a server restart) wait
# in line for the database otherwise.
TOUCH_EVERY = 10.0
_touched: dict[str, float] = {}


@database_sync_to_async
def _load(lab_id: str, user) -> tuple[LabSession | None, bool]:
    session = LabSession.objects.select_related("exercise", "classroom").filter(pk=lab_id).first()
    return session, bool(session and selectors.can_view_lab(user, session))


def _touch_due(lab_id: str) -> bool:
    return time.monotonic() - _touched.get(lab_id, -TOUCH_EVERY) >= TOUCH_EVERY


def _touch_now(session: LabSession) -> None:
    now = time.monotonic()
    if not _touch_due(session.pk):
        return
    if len(_touched) > 1000:
        for pk, at in list(_touched.items()):
            if now - at >= TOUCH_EVERY:
                del _touched[pk]
    _touched[session.pk] = now
    services.lab_session_touch(session=session)


_touch = database_sync_to_async(_touch_now)


def _language(scope: dict) -> str:
    """The language of the page that opened the socket, chosen as LocaleMiddleware chose it
    for the page: the cookie set_language writes, else the browser's Accept-Language."""
    accept = dict(scope.get("headers") or []).get(b"accept-language", b"")
    request = SimpleNamespace(
        COOKIES=scope.get("cookies") or {},
        META={"HTTP_ACCEPT_LANGUAGE": accept.decode("latin-1")},
    )
    return translation.get_language_from_request(request)


@database_sync_to_async
def _read_state(session: LabSession) -> dict:
    session.refresh_from_db()
    _touch_now(session)
    return selectors.lab_state(session)


_reading: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Future] = {}


async def _state(session: LabSession) -> dict:
    """The lab's state from the database. The sockets of one lab that ask while a read is
    under way share it: the database calls of this process wait in one line, and a few
    hundred sockets connecting at once would otherwise each wait for all the others."""
    key = (asyncio.get_running_loop(), session.pk)
    reading = _reading.get(key)
    if reading is None:
        reading = _reading[key] = asyncio.ensure_future(_read_state(session))
        reading.add_done_callback(lambda _: _reading.pop(key, None))
    return await asyncio.shield(reading)


class _FrameBucket:
    """A token bucket: `rate` frames a second on average, `burst` at once."""

    def __init__(self, rate: float, burst: int):
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class LabConsumer(AsyncWebsocketConsumer):
    viewer: stream.Viewer | None = None
    closing = False

    async def dispatch(self, message: dict) -> None:
        """As Channels' own, without closing old database connections before every
        message: that is a call into the one thread that runs this process's database work,
        made for every acknowledgement of every socket, which touch no database. Every
        database call here goes through database_sync_to_async, which closes old
        connections itself."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.language = _language(self.scope)
        lab_id = self.scope["url_route"]["kwargs"]["lab_id"]
        self.session, allowed = await _load(lab_id, self.scope.get("user"))
        await self.accept()
        if self.session is None or not allowed:
            await self.refuse(NOT_FOUND if self.session is None else NOT_YOURS)
            return
        # Which page a sandbox's presence messages come from (its own are not answered).
        self.socket_id = uuid.uuid4().hex
        self.bucket = _FrameBucket(
            settings.LAB_SOCKET_FRAMES_PER_SECOND, settings.LAB_SOCKET_FRAME_BURST
        )
        # A lost broker does not close the socket: the hub says `broker-unavailable`,
        # comes back by itself, says `broker-back` and calls send_snapshot again.
        self.viewer = await stream.join(
            self.session.id, self.send_text, self.send_snapshot, self.language
        )
        await self.send_snapshot()
        await self.viewer.release()
        if self.session.sandbox:
            await self.presence("hello")

    async def disconnect(self, code: int) -> None:
        self.closing = True
        if self.viewer is not None:
            self.viewer.leave()
            self.viewer = None
            if self.session.sandbox:
                await self.presence("left")
            if self.session.trial:
                # A trial ends a grace after its last page closed: from now (exercises/sweep.py).
                await database_sync_to_async(services.lab_session_touch)(session=self.session)

    async def refuse(self, code: int, message: str | None = None) -> None:
        """Says why (if there is more to say than the code), then closes with `code`. The
        frames that arrive until the socket is gone are ignored."""
        self.closing = True
        if message:
            await self.error(message)
        if self.viewer is not None:
            self.viewer.leave()
            self.viewer = None
        await self.close(code=code)

    async def send_text(self, text: str) -> None:
        await self.send(text_data=text)
        if self.session.sandbox and sandboxes.presence_answer_needed(text, socket=self.socket_id):
            await self.presence("here")

    async def presence(self, event: str) -> None:
        """Tells every page of the sandbox that this one is there, or gone
        (sandboxes.Presence)."""
        await database_sync_to_async(self._send_presence)(event)

    def _send_presence(self, event: str) -> None:
        user = self.scope["user"]
        message = sandboxes.Presence(
            event=event,
            socket=self.socket_id,
            user=user.pk,
            name=user.get_full_name() or user.get_username(),
        )
        sandboxes.sandbox_presence_send(session=self.session, presence=message)

    async def send_json(self, data: dict) -> None:
        await self.send(text_data=json.dumps(data, default=str))

    async def send_snapshot(self) -> None:
        if self.viewer is None:  # the socket is gone (a hub's broker-back came late)
            return
        state = await _state(self.session)
        numbers = {}
        if state["lab"]["state"] == LabSession.State.RUNNING:
            numbers = await self.viewer.monitor_snapshot() or {}
            numbers["checks"] = {**numbers.get("checks", {}), **state["checks"]}
            numbers.pop("type", None)
        # An ended lab's state has the numbers it last reported (selectors.lab_state).
        empty = {"counters": {}, "queues": {}, "exchanges": {}, "events": []}
        await self.send_json({"type": "snapshot", **empty, **state, **numbers})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return
        # What the page is told goes into its language.
        with translation.override(self.language):
            await self._receive(text_data, bytes_data)

    async def _receive(self, text_data: str | None, bytes_data: bytes | None) -> None:
        if not self.bucket.take():
            await self.refuse(
                TOO_MANY_FRAMES,
                _(
                    "too many frames: at most {rate} a second (bursts of {burst}); the socket "
                    "is closed"
                ).format(
                    rate=f"{settings.LAB_SOCKET_FRAMES_PER_SECOND:g}",
                    burst=settings.LAB_SOCKET_FRAME_BURST,
                ),
            )
            return
        limit = settings.LAB_SOCKET_MAX_FRAME_BYTES
        if text_data is None:
            size = len(bytes_data or b"")
        else:  # a character is 1 to 4 bytes: count them only where it matters
            size = len(text_data)
            if size * 4 > limit:
                size = len(text_data.encode())
        if size > limit:
            await self.refuse(
                TOO_BIG,
                _(
                    "frame of {size} bytes is over the limit of {limit}; the socket is closed"
                ).format(size=size, limit=limit),
            )
            return
        if text_data is None:
            await self.error(_("binary frames are not accepted; send JSON text"))
            return
        try:
            message = json.loads(text_data)
        except ValueError as exc:
            await self.error(_("frame is not valid JSON: {error}").format(error=exc))
            return
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            await self.error(
                _('frame must be a JSON object with a "type", e.g. {example}').format(
                    example='{"type": "ping"}'
                )
            )
            return
        kind = message["type"]
        if kind == "ack":
            delivered = message.get("d")
            if not isinstance(delivered, int) or isinstance(delivered, bool) or delivered < 0:
                await self.error(_('"ack" needs "d": the number of the last message received'))
                return
            await self.viewer.ack(delivered)
        elif kind == "ping":
            # The database hears of pings at most every TOUCH_EVERY per lab and process.
            if _touch_due(self.session.pk):
                await _touch(self.session)
            await self.send_json({"type": "pong"})
            if self.session.sandbox:
                await self.presence("here")
        elif kind == "snapshot":
            await self.send_snapshot()
        else:
            await self.error(
                _("unknown type {kind}; expected one of: {accepted}").format(
                    kind=repr(kind), accepted=", ".join(ACCEPTED)
                )
            )

    async def error(self, message: str) -> None:
        await self.send_json({"type": "error", "message": message})
