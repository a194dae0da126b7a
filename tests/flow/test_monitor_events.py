"""The lab monitor's log events against the real broker and worker: what a learner opens
in the event log of the two built-in exercises."""

import contextlib
import json
import time

import pika
import pytest

from exercises.services import lab_publish, lab_session_start
from labconsole.broker import amqp, control

pytestmark = pytest.mark.django_db(transaction=True)


class Frames:
    """A lab's frames, read from a queue of our own bound to the console's frames exchange,
    while telling the monitor that somebody watches (frames at full rate)."""

    def __init__(self, session_id: str):
        self.session_id = session_id
        self.connection = amqp.connect(amqp.console_parameters(name="test frames"))
        self.channel = self.connection.channel()
        amqp.declare_console_exchanges(self.channel)
        self.queue = self.channel.queue_declare("", exclusive=True).method.queue
        amqp.bind_frames(self.channel, self.queue, session_id)
        self.frames: list[dict] = []
        self.next_watch = 0.0

    def events(self) -> list[dict]:
        return [e for f in self.frames for e in f.get("events", [])]

    def wait(self, predicate, *, timeout: float, message: str):
        deadline = time.monotonic() + timeout
        while True:
            if time.monotonic() >= self.next_watch:
                control.send(control.monitor_key(self.session_id), {"op": "watch"})
                self.next_watch = time.monotonic() + 3
            method, props, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is not None:
                mine = amqp.lab_frames(self.session_id, props.headers, body)
                self.frames.extend(json.loads(frame) for frame in mine)
                if mine and (result := predicate(self)):
                    return result
                continue
            assert time.monotonic() < deadline, f"timed out after {timeout} s: {message}"
            self.connection.process_data_events(time_limit=0.05)

    def close(self) -> None:
        with contextlib.suppress(pika.exceptions.AMQPError):
            self.connection.close()


@pytest.fixture
def frames():
    opened: list[Frames] = []

    def open_frames(session_id: str) -> Frames:
        opened.append(Frames(session_id))
        return opened[-1]

    yield open_frames
    for f in opened:
        f.close()


def first(kind, **match):
    def find(frames: Frames):
        return next(
            (
                e
                for e in frames.events()
                if e["kind"] == kind and all(e.get(k) == v for k, v in match.items())
            ),
            None,
        )

    return find


def test_the_retry_loop_logs_dead_letters_expiries_and_the_parked_message(
    worker, catalogue, learner, labs, frames
):
    """Rejected orders are dead-lettered to the retry queue, expire back to `orders`, and
    are parked at last: each step is an event, and the parked one carries the message."""
    session = lab_session_start(exercise=catalogue["dlq-retries"], owner=learner, run=True)
    watch = frames(session.id)
    dead = watch.wait(first("dead-lettered"), timeout=30, message="a dead-lettered event")
    assert dead["queue"] == "orders"
    assert dead["exchange"] == "orders.retry"
    assert dead["routed_queues"] == ["orders.retry"]
    expired = watch.wait(first("expired"), timeout=30, message="an expired event")
    assert expired["queue"] == "orders.retry"
    assert expired["routed_queues"] == ["orders"]
    assert expired["x_death"][0]["reason"] == "expired"

    parked = watch.wait(first("parked"), timeout=60, message="a parked event")
    assert parked["queue"] == "orders.parking"
    assert json.loads(parked["body"])["order"] >= 1
    reasons = {(d["queue"], d["reason"]) for d in parked["headers"]["x-death"]}
    assert reasons == {("orders", "rejected"), ("orders.retry", "expired")}
    assert parked["x_death"] == parked["headers"]["x-death"]


def test_dead_lettered_messages_count_in_the_rates_of_where_they_went(
    worker, catalogue, learner, labs, frames
):
    """The broker's dead-lettering never reaches the firehose: the retry exchange and queue
    show messages coming in all the same, from what the monitor knows of the rejects."""
    session = lab_session_start(exercise=catalogue["dlq-retries"], owner=learner, run=True)
    watch = frames(session.id)
    # Alive: the orders queue gets the producer's publishes through the firehose.
    watch.wait(
        lambda f: f.frames[-1].get("queues", {}).get("orders", {}).get("rate_in", 0) > 0,
        timeout=30,
        message="orders coming in",
    )
    # The queue's and the exchange's rates are each smoothed from their own first
    # message: one may show in a frame before the other.
    watch.wait(
        lambda f: f.frames[-1].get("queues", {}).get("orders.retry", {}).get("rate_in", 0) > 0,
        timeout=30,
        message="the retry queue's rate in",
    )
    watch.wait(
        lambda f: f.frames[-1].get("exchanges", {}).get("orders.retry", {}).get("rate_in", 0) > 0,
        timeout=30,
        message="the retry exchange's rate in",
    )


def test_a_lab_whose_tracing_goes_off_is_traced_again_by_its_monitor(
    api, worker, catalogue, learner, labs, frames
):
    """Tracing turned off behind the lab's back (as RabbitMQ's lost update does, or an
    operator): the queues stop showing publishes, the monitor sees producers publishing with
    a silent firehose, and turns tracing on again; the publishes show again."""
    session = lab_session_start(exercise=catalogue["dlq-retries"], owner=learner, run=True)
    watch = frames(session.id)
    last_publish = [0.0]

    def published(f) -> bool:
        """Whether the newest frame shows a publish (these come from the firehose only)."""
        if any(e["kind"] == "published" for e in f.frames[-1].get("events", [])):
            last_publish[0] = time.monotonic()
            return True
        return False

    watch.wait(published, timeout=30, message="publishes seen")
    vhost = api.request("GET", f"vhosts/{session.vhost}")
    api.request(
        "PUT",
        f"vhosts/{session.vhost}",
        {"tracing": False, "description": vhost["description"], "tags": ",".join(vhost["tags"])},
    )
    assert api.traces(session.vhost) is False
    watch.wait(
        lambda f: not published(f) and time.monotonic() - last_publish[0] > 2,
        timeout=30,
        message="two seconds without a publish seen",
    )
    watch.wait(published, timeout=30, message="publishes seen again")
    assert api.traces(session.vhost) is True
    # The log says why nothing was drawn meanwhile.
    said = watch.wait(first("broker"), timeout=10, message="the log says tracing was off")
    assert said["tracing"] == "restored"


def test_the_learners_publishes_count_and_a_mandatory_one_that_comes_back_is_returned(
    worker, catalogue, learner, labs, frames
):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=True)
    watch = frames(session.id)
    watch.wait(lambda f: f.frames, timeout=20, message="a first frame")
    lab_publish(session=session, exchange="sensors", routing_key="temperature", body="{}")
    back = lab_publish(
        session=session, exchange="sensors", routing_key="humidity", body="{}", mandatory=True
    )
    assert not back.routed
    returned = watch.wait(first("returned", workload="@you"), timeout=20, message="returned")
    assert returned["routing_key"] == "humidity"
    assert returned["reply"] == "312 NO_ROUTE"
    assert returned["body"] == "{}"
    counted = watch.wait(
        lambda f: (
            f.frames[-1]["counters"].get("@you", {}).get("published") == 2
            and f.frames[-1]["exchanges"]["sensors"].get("from_you") == 2
            and f.frames[-1]
        ),
        timeout=20,
        message="two publishes from the page counted",
    )
    assert counted["counters"]["@you"]["returned"] == 1
    assert not any(
        e["kind"] == "unroutable" and e.get("workload") == "@you" for e in watch.events()
    )


def test_a_return_the_page_reports_before_the_firehose_shows_the_publish_is_logged_once(
    worker, catalogue, learner, labs, frames
):
    """The page's word that a publish came back and the firehose's record of that publish
    reach the monitor by different queues, in either order."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=True)
    watch = frames(session.id)
    watch.wait(lambda f: f.frames, timeout=20, message="a first frame")
    control.send(
        control.monitor_key(session.id),
        {
            "op": "returned",
            "message_id": "early-return",
            "exchange": "sensors",
            "routing_key": "humidity",
            "reply": "312 NO_ROUTE",
        },
    )
    time.sleep(0.3)  # the page's word is there first
    connection = amqp.connect(
        amqp.parameters(
            vhost=session.vhost, user=session.rabbit_user, password=session.rabbit_password
        )
    )
    try:
        connection.channel().basic_publish(
            "sensors",
            "humidity",
            b'{"early": true}',
            pika.BasicProperties(app_id="@you", message_id="early-return"),
        )
    finally:
        connection.close()
    returned = watch.wait(
        first("returned", message_id="early-return"), timeout=20, message="returned"
    )
    assert returned["body"] == '{"early": true}'
    assert returned["reply"] == "312 NO_ROUTE"
    # Past the wait, nothing more is logged of it: not a second return, not unroutable.
    later = time.monotonic() + 2.5
    watch.wait(lambda f: time.monotonic() > later, timeout=10, message="time passing")
    logged = [e for e in watch.events() if e.get("message_id") == "early-return"]
    assert [e["kind"] for e in logged] == ["returned"]


def test_an_exchange_bound_from_another_and_a_streams_readers_are_counted(
    worker, catalogue, learner, labs, frames
):
    """Messages published to `events` and routed on through `orders` (an exchange-to-
    exchange binding) count in `orders`' rate too; a stream's readers count as its
    consumers, which a passive declare of a stream does not say."""
    from exercises.services import workload_start

    chain = lab_session_start(exercise=catalogue["exchange-to-exchange"], owner=learner)
    stream = lab_session_start(exercise=catalogue["streams"], owner=learner)
    seen = frames(chain.id)
    seen.wait(
        lambda f: (
            f.frames[-1].get("exchanges", {}).get("events", {}).get("rate_in", 0) > 0
            and f.frames[-1]["exchanges"].get("orders", {}).get("rate_in", 0) > 0
        ),
        timeout=30,
        message="events and orders both with a rate",
    )
    assert "audit" not in seen.frames[-1]["exchanges"]  # bound from nothing: nothing passed

    readers = frames(stream.id)
    readers.wait(
        lambda f: f.frames[-1]["queues"].get("readings", {}).get("consumers") == 1,
        timeout=30,
        message="the dashboard counted as the stream's consumer",
    )
    workload_start(workload=stream.workloads.get(name="auditor"))
    readers.wait(
        lambda f: f.frames[-1]["queues"]["readings"]["consumers"] == 2,
        timeout=30,
        message="the auditor counted too",
    )
