"""The end of a lab over its WebSocket: said once, in the viewer's language, and a socket
that connects afterwards gets the numbers the lab last reported."""

import asyncio

import pytest

from exercises.models import LabSession
from exercises.services import lab_session_start, lab_session_stop
from tests.exercises.test_stream import (
    Reader,
    connect,
    headers_for,
    receive,
    run,
    until,
    watch_until_published,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def lab(worker, catalogue, learner, labs):
    return lab_session_start(exercise=catalogue["direct-routing"], owner=learner)


def test_the_end_is_said_once_in_the_viewers_language(lab, learner):
    russian = [*headers_for(learner), (b"accept-language", b"ru")]

    async def scenario():
        ws, connected, _ = await connect(f"/ws/labs/{lab.id}/", russian)
        assert connected
        reader = Reader(ws)
        await reader.wait("snapshot")
        await reader.wait("frame")  # the monitor runs
        await asyncio.to_thread(lab_session_stop, session=lab)
        (ended,) = await reader.wait("status", state="ended")
        assert ended["message"] == "Лаборатория завершена."
        # The monitor stopped and saved its record: nobody says it again.
        await until(
            lambda: LabSession.objects.filter(pk=lab.pk, monitor_owner="").exists(),
            message="the monitor stopped",
        )
        await asyncio.sleep(1.5)
        assert len(reader.of("status", state="ended")) == 1
        await reader.stop()
        await ws.disconnect()

    run(scenario)


def test_a_socket_of_an_ended_lab_gets_its_last_numbers(lab, learner):
    owner = headers_for(learner)

    async def scenario():
        await watch_until_published(lab, owner, 2)
        await asyncio.to_thread(lab_session_stop, session=lab)
        await until(
            lambda: LabSession.objects.filter(pk=lab.pk, monitor_owner="").exists(),
            message="the monitor stopped and saved its last record",
        )
        ws, _, _ = await connect(f"/ws/labs/{lab.id}/", owner)
        snapshot = await receive(ws, "snapshot")
        assert snapshot["lab"]["state"] == "ended"
        assert snapshot["kept"] is True
        assert snapshot["counters"]["temperature-sensor"]["published"] >= 2
        assert not any(w["running"] for w in snapshot["workloads"].values())
        await ws.disconnect()

    run(scenario)
