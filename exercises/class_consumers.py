"""The class dashboard's WebSocket: the class's summary (classes.classroom_dashboard),
sent on connecting and again whenever it changes.

It reads the summary from the database every DASHBOARD_EVERY seconds and sends it only when
it differs from the last one sent. Polling a handful of queries is the robust choice here:
checkpoints are written by the labs' monitors in Celery workers, steps by any web process,
and a read of the database sees them all, whichever process wrote them, across a broker
restart, and with no subscription per lab to keep (docs/classes.md)."""

from __future__ import annotations

import asyncio
import json
import logging

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import DatabaseError
from django.utils import translation
from django.utils.translation import gettext as _

from . import classes
from .consumers import NOT_FOUND, NOT_YOURS, _language
from .models import Classroom

log = logging.getLogger(__name__)

DASHBOARD_EVERY = 0.5


@database_sync_to_async
def _load(class_id: int, user) -> tuple[Classroom | None, bool]:
    classroom = Classroom.objects.filter(pk=class_id).first()
    return classroom, bool(classroom and user and classes.can_instruct(user, classroom))


class ClassDashboardConsumer(AsyncWebsocketConsumer):
    poller: asyncio.Task | None = None

    async def connect(self) -> None:
        self.language = _language(self.scope)
        class_id = self.scope["url_route"]["kwargs"]["class_id"]
        self.classroom, allowed = await _load(class_id, self.scope.get("user"))
        # Accepted first, refused after: a close before accepting is a handshake 403,
        # which a browser reports as 1006 and retries (see consumers.py).
        await self.accept()
        if self.classroom is None or not allowed:
            with translation.override(self.language):
                message = (
                    _("no such class")
                    if self.classroom is None
                    else _("only the class's instructor sees its dashboard")
                )
            await self.send(text_data=json.dumps({"type": "error", "message": message}))
            await self.close(code=NOT_FOUND if self.classroom is None else NOT_YOURS)
            return
        self.poller = asyncio.create_task(self._poll())

    async def disconnect(self, code: int) -> None:
        if self.poller is not None:
            self.poller.cancel()
            self.poller = None

    def _summary(self) -> str:
        with translation.override(self.language):
            self.classroom.refresh_from_db()
            summary = classes.classroom_dashboard(classroom=self.classroom)
        return json.dumps({"type": "dashboard", **summary}, default=str)

    async def _poll(self) -> None:
        read = database_sync_to_async(self._summary)
        last = None
        while True:
            try:
                text = await read()
            except DatabaseError:
                # A busy or restarting database: the next round tries again.
                log.warning("class %s: dashboard not read", self.classroom.pk, exc_info=True)
            else:
                if text != last:
                    await self.send(text_data=text)
                    last = text
            await asyncio.sleep(DASHBOARD_EVERY)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The dashboard only listens: anything sent is answered with what it expects."""
        with translation.override(self.language):
            message = _("this socket only sends the class's state; send nothing")
        await self.send(text_data=json.dumps({"type": "error", "message": message}))
