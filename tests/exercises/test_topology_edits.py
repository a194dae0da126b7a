"""The learner changes the lab's topology from the page: declares and deletes exchanges
and queues, binds and unbinds, on the real broker. Each edit is checked by the exercise
format's rules; a refused one leaves the broker and the database as they were; exercises
and their steps may forbid edits; only the owner may edit."""

import json

import pytest
import yaml
from django.db import DatabaseError
from django.urls import reverse

from exercises import services
from exercises.models import LabSession
from exercises.services import (
    LabError,
    TopologyRefused,
    lab_publish,
    lab_session_reset,
    lab_session_start,
    lab_topology_change,
)
from exercises.topology import lab_graph
from labconsole.broker import amqp, control
from tests.support import text_of, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

HUMIDITY = {"name": "humidity", "type": "classic", "durable": True, "auto_delete": False}


def queue(name="humidity", arguments=None, **fields):
    return {**HUMIDITY, "name": name, "arguments": arguments or {}, **fields}


def binding(source="sensors", destination="humidity", key="humidity", arguments=None, **kw):
    return {
        "source": source,
        "destination": destination,
        "destination_type": kw.get("destination_type", "queue"),
        "routing_key": key,
        "arguments": arguments or {},
    }


def broker_state(api, vhost) -> dict:
    """What the broker has in the lab's vhost: queues with their arguments, exchanges,
    bindings (without the firehose's)."""
    queues = {q["name"]: q["arguments"] for q in api.queues(vhost)}
    exchanges = {
        x["name"]: (x["type"], x["arguments"])
        for x in api.request("GET", f"exchanges/{vhost}")
        if x["name"] and not x["name"].startswith("amq.")
    }
    bindings = sorted(
        (b["source"], b["destination"], b["destination_type"], b["routing_key"])
        for b in api.bindings(vhost)
        if b["source"] and b["source"] != "amq.rabbitmq.trace"
    )
    return {"queues": queues, "exchanges": exchanges, "bindings": bindings}


def fresh(session) -> LabSession:
    return LabSession.objects.get(pk=session.pk)


def _with_edits(source: str, *, exercise: bool, steps: dict[int, bool]) -> str:
    data = yaml.safe_load(source)
    data["topology_edits"] = exercise
    for index, allowed in steps.items():
        data["steps"][index]["topology_edits"] = allowed
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False)


@pytest.fixture
def lab(catalogue, learner, labs):
    """Direct routing, with edits allowed at every step (the catalogue's allows them only
    in its last step)."""
    exercise = catalogue["direct-routing"]
    source = _with_edits(exercise.source, exercise=True, steps={})
    return lab_session_start(exercise=exercise, owner=learner, run=False, source=source)


def test_declare_bind_unbind_delete_on_the_broker_and_in_the_lab(lab, api):
    """Each edit reaches the lab's vhost and the lab's topology, which the graph, a
    reload (a new row) and the checks' broker reads all see."""
    lab_topology_change(
        session=lab,
        kind="queue",
        action="declare",
        item=queue(arguments={"x-message-ttl": 60000, "x-max-length": 10}),
    )
    lab_topology_change(session=lab, kind="binding", action="declare", item=binding())
    lab_topology_change(
        session=lab,
        kind="exchange",
        action="declare",
        item={"name": "by-header", "type": "headers", "durable": True, "arguments": {}},
    )
    lab_topology_change(
        session=lab,
        kind="binding",
        action="declare",
        item=binding("by-header", key="", arguments={"x-match": "any", "kind": "humidity"}),
    )
    state = broker_state(api, lab.vhost)
    assert state["queues"]["humidity"] == {
        "x-message-ttl": 60000,
        "x-max-length": 10,
        "x-queue-type": "classic",
    }
    assert state["exchanges"]["by-header"] == ("headers", {})
    assert ("sensors", "humidity", "queue", "humidity") in state["bindings"]
    headers = [b for b in api.bindings(lab.vhost) if b["source"] == "by-header"]
    assert headers[0]["arguments"] == {"x-match": "any", "kind": "humidity"}

    reloaded = fresh(lab)
    assert [q.name for q in reloaded.spec.topology.queues] == [
        "temperature",
        "pressure",
        "humidity",
    ]
    edges = {(e["source"], e["target"], e["label"]) for e in lab_graph(reloaded.spec)["edges"]}
    assert ("x:sensors", "q:humidity", "humidity") in edges
    assert ("x:by-header", "q:humidity", "x-match=any, kind=humidity") in edges

    lab_topology_change(session=lab, kind="binding", action="delete", item=binding())
    assert ("sensors", "humidity", "queue", "humidity") not in broker_state(api, lab.vhost)[
        "bindings"
    ]
    # Deleting the queue takes its bindings with it, on the broker and in the lab.
    lab_topology_change(session=lab, kind="queue", action="delete", item={"name": "humidity"})
    lab_topology_change(session=lab, kind="exchange", action="delete", item={"name": "by-header"})
    state = broker_state(api, lab.vhost)
    assert "humidity" not in state["queues"] and "by-header" not in state["exchanges"]
    reloaded = fresh(lab)
    assert reloaded.spec.topology.bindings == lab.spec.topology.bindings
    assert len(reloaded.spec.topology.bindings) == 2


REFUSALS = [
    pytest.param(
        "queue", "declare", queue("amq.mine"), "name", "reserved by the broker", id="bad-name"
    ),
    pytest.param(
        "queue",
        "declare",
        queue(arguments={"x-max-priority": 300}),
        "arguments.x-max-priority",
        "must be an integer from 1 to 255",
        id="argument-out-of-bounds",
    ),
    pytest.param(
        "queue",
        "declare",
        queue(type="quorum", arguments={"x-max-priority": 5}),
        "arguments.x-max-priority",
        "only classic queues",
        id="argument-for-another-type",
    ),
    pytest.param(
        "queue", "declare", queue("temperature"), "name", "duplicate queue name", id="duplicate"
    ),
    pytest.param(
        "queue",
        "declare",
        queue("{prefix}.firehose"),
        "name",
        "the console's own",
        id="the-consoles-own-name",
    ),
    pytest.param(
        "binding",
        "declare",
        binding("nowhere", "temperature"),
        "source",
        "'nowhere' is not a declared exchange",
        id="unknown-exchange",
    ),
    pytest.param(
        "binding",
        "declare",
        binding("sensors", "nothing"),
        "destination",
        "'nothing' is not a declared queue",
        id="unknown-queue",
    ),
    pytest.param(
        "binding",
        "declare",
        binding("sensors", "temperature", "temperature"),
        "",
        "the same binding is already declared",
        id="duplicate-binding",
    ),
    pytest.param(
        "binding",
        "declare",
        binding("amq.headers", "temperature", "", {"x-match": "some"}),
        "arguments.x-match",
        "must be one of: all, any",
        id="bad-x-match",
    ),
    pytest.param(
        "binding",
        "delete",
        binding("sensors", "temperature", "humidity"),
        "",
        "no such binding",
        id="unbind-what-is-not-there",
    ),
    pytest.param(
        "queue",
        "delete",
        {"name": "temperature"},
        "",
        "still used: workloads.consumers[0].queue",
        id="delete-a-consumers-queue",
    ),
    pytest.param(
        "exchange",
        "delete",
        {"name": "sensors"},
        "",
        "still used: workloads.producers[0].exchange",
        id="delete-a-producers-exchange",
    ),
    pytest.param(
        "exchange",
        "delete",
        {"name": "amq.topic"},
        "name",
        "not an exchange of this lab",
        id="delete-a-builtin",
    ),
]


@pytest.mark.parametrize(("kind", "action", "item", "field", "message"), REFUSALS)
def test_a_refused_edit_names_the_field_and_changes_nothing(
    lab, api, kind, action, item, field, message, settings
):
    if "name" in item:
        item = {**item, "name": item["name"].format(prefix=settings.LABCONSOLE_PREFIX)}
    before = broker_state(api, lab.vhost), fresh(lab).topology
    with pytest.raises(TopologyRefused) as refused:
        lab_topology_change(session=lab, kind=kind, action=action, item=item)
    assert any(f == field and message in str(m) for f, m in refused.value.errors), (
        refused.value.errors
    )
    assert (broker_state(api, lab.vhost), fresh(lab).topology) == before


def test_a_lab_has_at_most_so_many_objects(lab, api, monkeypatch):
    """The cap is the one in exercises.limits; deleting is always allowed."""
    monkeypatch.setattr(services, "LIMITS", services.LIMITS.model_copy(update={"lab_objects": 6}))
    lab_topology_change(session=lab, kind="queue", action="declare", item=queue())
    before = broker_state(api, lab.vhost)
    with pytest.raises(TopologyRefused, match="at most 6 exchanges, queues and bindings"):
        lab_topology_change(session=lab, kind="binding", action="declare", item=binding())
    assert broker_state(api, lab.vhost) == before
    lab_topology_change(session=lab, kind="queue", action="delete", item={"name": "humidity"})


def test_the_broker_refusing_changes_nothing(lab, api):
    """A queue the broker already has with other arguments (made behind the lab's back):
    the broker's refusal is said, and the lab's topology stays as it was."""
    api.put_queue(lab.vhost, "humidity", {"durable": True, "arguments": {"x-max-length": 1}})
    with pytest.raises(LabError, match="the broker refused it"):
        lab_topology_change(session=lab, kind="queue", action="declare", item=queue())
    assert fresh(lab).topology == {}


def test_what_the_database_fails_to_record_is_taken_back_from_the_broker(lab, api, monkeypatch):
    real_save = LabSession.save

    def failing_save(self, *args, **kwargs):
        if kwargs.get("update_fields") == ["topology"]:
            raise DatabaseError("the database went away")
        return real_save(self, *args, **kwargs)

    before = broker_state(api, lab.vhost)
    monkeypatch.setattr(LabSession, "save", failing_save)
    with pytest.raises(DatabaseError):
        lab_topology_change(session=lab, kind="queue", action="declare", item=queue())
    assert broker_state(api, lab.vhost) == before and fresh(lab).topology == {}


def test_reset_goes_back_to_the_exercises_topology(lab, api):
    lab_topology_change(session=lab, kind="queue", action="declare", item=queue())
    lab_session_reset(session=fresh(lab))
    assert fresh(lab).topology == {}
    assert "humidity" not in broker_state(api, lab.vhost)["queues"]


def test_exercises_and_steps_allow_or_forbid_edits(catalogue, learner, labs, api, client_in):
    """Forbidden exercise-wide, allowed in step 2: refused on step 1 (the panel says so),
    allowed once the learner moved on to step 2."""
    exercise = catalogue["direct-routing"]
    source = _with_edits(exercise.source, exercise=False, steps={1: True})
    session = lab_session_start(exercise=exercise, owner=learner, run=False, source=source)
    before = broker_state(api, session.vhost)
    with pytest.raises(LabError, match="not part of this step"):
        lab_topology_change(session=session, kind="queue", action="declare", item=queue())
    assert broker_state(api, session.vhost) == before and fresh(session).topology == {}

    page = client_in.get(session.get_absolute_url())
    assert "Changing the topology is not part of this step." in text_of(page)
    refused = client_in.post(
        reverse("lab-topology", args=[session.id]),
        {"action": "declare-queue", "name": "humidity", "type": "classic", "durable": "true"},
    )
    assert refused.status_code == 400
    assert "not part of this step" in text_of(refused)

    first = session.spec.steps[0]
    for checkpoint in first.checkpoints:
        session.results.create(checkpoint=checkpoint.id)
    shown = client_in.post(reverse("lab-step", args=[session.id, session.spec.steps[1].id]))
    assert "not part of this step" not in text_of(shown)  # the panel came with the step
    lab_topology_change(session=fresh(session), kind="queue", action="declare", item=queue())
    assert "humidity" in broker_state(api, session.vhost)["queues"]


def test_the_page_edits_the_topology_and_refusals_name_the_field(client_in, lab, api):
    url = reverse("lab-topology", args=[lab.id])
    made = client_in.post(
        url,
        {
            "action": "declare-queue",
            "name": "humidity",
            "type": "classic",
            "durable": "true",
            "arguments": "x-message-ttl=60000\nx-dead-letter-exchange=",
        },
    )
    assert made.status_code == 200, text_of(made)
    assert 'hx-swap-oob="true"' in made.content.decode()  # the panel's lists, updated
    assert broker_state(api, lab.vhost)["queues"]["humidity"] == {
        "x-message-ttl": 60000,
        "x-dead-letter-exchange": "",
        "x-queue-type": "classic",
    }
    bound = client_in.post(
        url,
        {
            "action": "bind",
            "source": "sensors",
            "destination": "humidity",
            "destination_type": "queue",
            "routing_key": "humidity",
        },
    )
    assert bound.status_code == 200
    page = client_in.get(lab.get_absolute_url()).content.decode()
    config = json.loads(page.split('id="lab-config" type="application/json">')[1].split("<")[0])
    assert any(e["target"] == "q:humidity" for e in config["graph"]["edges"])

    bad = client_in.post(
        url,
        {
            "action": "declare-queue",
            "name": "q2",
            "type": "classic",
            "arguments": "x-max-length=-1",
        },
    )
    assert bad.status_code == 400
    assert "arguments.x-max-length: must be an integer from 0" in text_of(bad)
    nonsense = client_in.post(url, {"action": "declare-queue", "name": "q3", "type": "fifo"})
    assert nonsense.status_code == 400 and "type:" in text_of(nonsense)
    unbound = client_in.post(
        url,
        {
            "action": "unbind",
            "binding": json.dumps(["sensors", "humidity", "queue", "humidity", {}]),
        },
    )
    assert unbound.status_code == 200, text_of(unbound)
    deleted = client_in.post(url, {"action": "delete", "kind": "queue", "name": "humidity"})
    assert deleted.status_code == 200
    assert "humidity" not in broker_state(api, lab.vhost)["queues"]


RUSSIAN_REFUSALS = [
    pytest.param(
        {"action": "declare-queue", "name": "amq.q", "type": "classic"},
        "name: имена, начинающиеся с 'amq.', зарезервированы брокером",
        id="reserved-name",
    ),
    pytest.param(
        {
            "action": "declare-queue",
            "name": "q1",
            "type": "classic",
            "arguments": "x-message-ttl=-5",
        },
        "arguments.x-message-ttl: должно быть целым числом миллисекунд от 0 до",
        id="negative-ttl",
    ),
    pytest.param(
        {
            "action": "declare-queue",
            "name": "q1",
            "type": "quorum",
            "arguments": "x-max-priority=5",
        },
        "этот аргумент поддерживают только классические очереди (у этой тип quorum)",
        id="priority-on-quorum",
    ),
    pytest.param(
        {"action": "declare-exchange", "name": "x1", "type": "direct", "arguments": "colour=red"},
        "arguments.colour: неизвестный аргумент обменника (допустимы: alternate-exchange",
        id="unknown-exchange-argument",
    ),
    pytest.param(
        {
            "action": "bind",
            "source": "sensors",
            "destination": "nothing",
            "destination_type": "queue",
            "routing_key": "k",
        },
        "destination: привязка от 'sensors' к 'nothing': очередь 'nothing' не объявлена "
        "(объявлены: ",
        id="unknown-queue",
    ),
    pytest.param(
        {"action": "delete", "kind": "queue", "name": "temperature"},
        "still used",  # replaced below: the Russian of "it is still used"
        id="delete-a-used-queue",
    ),
]


@pytest.mark.parametrize(("form", "expected"), RUSSIAN_REFUSALS)
def test_a_refusal_is_in_the_pages_language(client_in, lab, api, form, expected):
    """The rules are the exercise format's, and so are the messages: in Russian on a Russian
    page, the names of fields and objects as they are. The same edit in English says it in
    English."""
    url = reverse("lab-topology", args=[lab.id])
    if expected == "still used":
        expected = "используется: workloads.consumers[0].queue: очередь 'temperature' не объявлена"
    before = broker_state(api, lab.vhost)
    russian = client_in.post(url, form, HTTP_ACCEPT_LANGUAGE="ru")
    assert russian.status_code == 400
    assert expected in text_of(russian), text_of(russian)
    english = client_in.post(url, form, HTTP_ACCEPT_LANGUAGE="en")
    assert english.status_code == 400
    assert expected not in text_of(english)
    assert broker_state(api, lab.vhost) == before


def test_only_the_owner_may_edit(client, lab, api, django_user_model):
    other = django_user_model.objects.create_user("other", password="other-pass-1")
    client.force_login(other)
    before = broker_state(api, lab.vhost)
    url = reverse("lab-topology", args=[lab.id])
    refused = client.post(url, {"action": "declare-queue", "name": "humidity", "type": "classic"})
    assert refused.status_code == 403
    assert client.get(reverse("lab-topology-panel", args=[lab.id])).status_code == 403
    assert broker_state(api, lab.vhost) == before and fresh(lab).topology == {}


class FlowTap:
    """What the lab's monitor and services publish for the lab's viewers (frames and
    topology changes), read from a queue of the test's own on the flow exchange; it keeps
    the monitor watched so that it sends frames."""

    def __init__(self, session_id: str):
        self.session_id = session_id
        self.connection = amqp.connect(amqp.console_parameters(name="test flow tap"))
        self.channel = self.connection.channel()
        self.queue = self.channel.queue_declare("", exclusive=True).method.queue
        amqp.declare_console_exchanges(self.channel)
        amqp.bind_frames(self.channel, self.queue, session_id)
        self.channel.queue_bind(
            self.queue, amqp.flow_exchange(), amqp.lab_key(session_id, "topology")
        )
        self.messages: list[dict] = []

    def read(self) -> list[dict]:
        control.send(control.monitor_key(self.session_id), {"op": "watch"})
        while True:
            method, props, body = self.channel.basic_get(self.queue, auto_ack=True)
            if method is None:
                return self.messages
            if amqp.is_frames(props.headers):
                frames = amqp.lab_frames(self.session_id, props.headers, body)
                self.messages.extend(json.loads(frame) for frame in frames)
            else:
                self.messages.append(json.loads(body))

    def close(self) -> None:
        amqp.close_quietly(self.connection)


def test_the_monitor_routes_and_polls_the_edited_topology(worker, lab):
    """A new queue behind a new exchange, bound to a new key: the monitor's frames show the
    learner's message going sensors -> alerts -> humidity (its predicted path) and the new
    queue's depth; every viewer was sent the new graph."""
    tap = FlowTap(lab.id)
    try:
        wait_for(lambda: any(m["type"] == "frame" for m in tap.read()), message="first frame")
        lab_topology_change(session=lab, kind="queue", action="declare", item=queue())
        lab_topology_change(
            session=lab,
            kind="exchange",
            action="declare",
            item={"name": "alerts", "type": "fanout", "durable": True, "arguments": {}},
        )
        lab_topology_change(
            session=lab,
            kind="binding",
            action="declare",
            item=binding("sensors", "alerts", destination_type="exchange"),
        )
        lab_topology_change(
            session=lab, kind="binding", action="declare", item=binding("alerts", key="")
        )
        changes = [m for m in tap.read() if m["type"] == "topology"]
        assert len(changes) == 4
        assert any(e["target"] == "q:humidity" for e in changes[-1]["graph"]["edges"])
        assert "alerts" in changes[-1]["exchanges"]

        def knows_humidity() -> bool:
            frames = [m for m in tap.read() if m["type"] == "frame"]
            return bool(frames) and "humidity" in frames[-1]["queues"]

        # The edits reach the monitor on its control queue, the publish on the firehose:
        # the message is sent once the monitor's frames show the new queue.
        wait_for(knows_humidity, timeout=20, message="the new queue in the monitor's frames")
        lab_publish(session=lab, exchange="sensors", routing_key="humidity", body="{}")

        def routed() -> bool:
            frames = [m for m in tap.read() if m["type"] == "frame"]
            paths = [s["path"] for f in frames for s in f["samples"] if s["kind"] == "routed"]
            depth = frames[-1]["queues"].get("humidity", {}).get("ready", 0) if frames else 0
            return ["p:@you", "x:sensors", "x:alerts", "q:humidity"] in paths and depth == 1

        wait_for(routed, timeout=20, message="the publish routed to humidity in the frames")
    finally:
        tap.close()


def test_a_monitor_that_missed_the_change_is_given_it_by_its_keeper(worker, lab, monkeypatch):
    """The control message to the monitor is lost (the broker was away a moment): the
    worker's keeper sees the lab's row hold another topology and gives it to the monitor,
    which then reads the new queue's depth."""
    real_send = services.send_quietly

    def lose_the_monitors(key, message, exchange=None):
        if message.get("op") != "topology":
            real_send(key, message, exchange=exchange)

    tap = FlowTap(lab.id)
    try:
        wait_for(lambda: any(m["type"] == "frame" for m in tap.read()), message="first frame")
        monkeypatch.setattr(services, "send_quietly", lose_the_monitors)
        lab_topology_change(session=lab, kind="queue", action="declare", item=queue())
        lab_topology_change(session=lab, kind="binding", action="declare", item=binding())
        lab_publish(session=lab, exchange="sensors", routing_key="humidity", body="{}")

        def polled() -> bool:
            frames = [m for m in tap.read() if m["type"] == "frame"]
            return bool(frames) and frames[-1]["queues"].get("humidity", {}).get("ready") == 1

        wait_for(polled, timeout=20, message="the monitor reading the new queue's depth")
    finally:
        tap.close()
