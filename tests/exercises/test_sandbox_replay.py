"""A sandbox's replay endpoint on the real broker and worker: members get the history
its monitor keeps, others 403, a lab that is not a sandbox 404."""

import orjson
import pytest
from django.test import Client
from django.urls import reverse

from exercises import sandboxes
from exercises.services import lab_session_start
from labconsole.broker import control
from tests.support import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def client_of(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def busy(worker, catalogue, learner, labs):
    """A sandbox of the direct-routing exercise, its producers running."""
    source = sandboxes.sandbox_source_from_exercise(
        exercise=catalogue["direct-routing"], name="replay"
    )
    return sandboxes.sandbox_create(owner=learner, name="replay", source=source)


def history(client, lab_id: str, after: int = 0):
    return client.get(reverse("lab-replay", args=[lab_id]), {"after": after})


def kept_seconds(client, lab_id: str) -> list[dict] | None:
    """The seconds the monitor keeps, or None while the monitor of a lab just started does
    not answer yet (503)."""
    response = history(client, lab_id)
    return None if response.status_code == 503 else response.json()["seconds"]


def test_members_get_the_seconds_kept_with_growing_counters(busy, client_in):
    """The owner reads seconds of history whose publish counters grow, in chunks."""

    def two_seconds():
        seconds = kept_seconds(client_in, busy.id)
        if seconds is None:
            return False
        published = [sum(c.get("published", 0) for c in s["counters"].values()) for s in seconds]
        return len(seconds) >= 3 and published[-1] > published[0] and seconds

    seconds = wait_for(two_seconds, timeout=30, message="three seconds of history")
    assert [s["t"] for s in seconds] == sorted({s["t"] for s in seconds})
    assert any(s["events"] for s in seconds)
    later = history(client_in, busy.id, after=seconds[-2]["t"]).json()
    assert later["keep"] == 600
    assert later["seconds"][0]["t"] > seconds[-2]["t"]


def test_others_are_refused_and_bad_input_named(busy, client_in, django_user_model):
    """A stranger gets 403; an `after` that is not a number is a 400 that says so."""
    stranger = django_user_model.objects.create_user("stranger", password="stranger-pass-1")
    assert history(client_of(stranger), busy.id).status_code == 403
    response = client_in.get(reverse("lab-replay", args=[busy.id]), {"after": "soon"})
    assert response.status_code == 400 and "after" in response.json()["error"]


def test_a_lab_that_is_not_a_sandbox_has_no_history(catalogue, learner, labs, client_in):
    """An exercise's lab keeps no history: its replay is a 404."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    assert history(client_in, session.id).status_code == 404


def test_memory_of_a_busy_sandbox(busy, client_in, capsys):
    """What a second of history costs for the direct-routing exercise at its default
    rates (docs/sandboxes.md "Replay"): printed with -s, the JSON the monitor keeps."""

    def ten_seconds():
        # As a page does: while somebody watches, frames (and seconds) go at full rate.
        control.send(control.monitor_key(busy.id), {"op": "watch"})
        seconds = kept_seconds(client_in, busy.id) or []
        return len(seconds) >= 11 and seconds[1:-1]  # whole seconds only

    seconds = wait_for(ten_seconds, timeout=60, interval=1.0, message="ten seconds of history")
    per_second = sum(len(orjson.dumps(s)) for s in seconds) / len(seconds)
    with capsys.disabled():
        print(
            f"\nreplay: {per_second:,.0f} bytes a second of history, "
            f"{per_second * 600 / 1024:,.0f} KiB for 600 s"
        )
    assert per_second > 0
