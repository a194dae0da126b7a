"""A sandbox's replay (docs/sandboxes.md "Replay"): the history its monitor keeps
(`labconsole.flow.monitor.Replay`), asked for over the monitor's request/reply and served
to the page's scrubber in chunks."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, JsonResponse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET
from pydantic import BaseModel

from labconsole.broker import control

from . import selectors
from .models import LabSession
from .views import _viewed_lab

#: Seconds the endpoint waits for the lab's monitor to answer.
REPLAY_TIMEOUT = 3.0


class ReplaySecond(BaseModel):
    """One second of the lab as its last frame of that second showed it, with at most
    50 of its events (without their messages) and how many more there were."""

    t: int
    counters: dict[str, dict]
    queues: dict[str, dict]
    exchanges: dict[str, dict]
    events: list[dict]
    left_out: int = 0


class ReplayChunk(BaseModel):
    """The monitor's answer: the seconds after the one asked for, oldest first; `more`
    when there are more after them; `keep`, the seconds the monitor keeps at most."""

    keep: int
    more: bool
    seconds: list[ReplaySecond]


class ReplayUnavailable(Exception):
    pass


def sandbox_replay_read(*, session: LabSession, after: int) -> ReplayChunk:
    """The lab's history after the second `after` (a Unix time); none for a lab that
    is not running."""
    if session.state != LabSession.State.RUNNING:
        return ReplayChunk(keep=0, more=False, seconds=[])
    answer = control.ask(
        control.monitor_key(session.id), {"op": "replay", "after": after}, timeout=REPLAY_TIMEOUT
    )
    if answer is None:
        raise ReplayUnavailable(_("the lab's monitor did not answer; try again in a moment"))
    return ReplayChunk.model_validate(answer)


@login_required
@require_GET
def lab_sandbox_replay(request: HttpRequest, lab_id: str) -> JsonResponse:
    """GET `?after=<unix second>`: the next chunk of the sandbox's history."""
    session = _viewed_lab(request, lab_id)
    if not selectors.lab_allows_sandbox_controls(session):
        raise Http404("this lab is not a sandbox: it keeps no history")
    raw = request.GET.get("after", "0")
    try:
        after = int(raw)
    except ValueError:
        message = _("after: %(value)r is not a whole number of seconds") % {"value": raw}
        return JsonResponse({"error": message}, status=400)
    try:
        chunk = sandbox_replay_read(session=session, after=after)
    except ReplayUnavailable as exc:
        return JsonResponse({"error": str(exc)}, status=503)
    return JsonResponse(chunk.model_dump())
