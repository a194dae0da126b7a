"""A team's sandboxes on the real broker: who may open and change one on every path (the
page, its partials, its endpoints, its socket), invitations and their revocation, the
SANDBOX_* limits and what the page says when one is hit, presence over the lab's stream,
and the export that makes the same sandbox again."""

import json
import re
import time

import pytest
import yaml
from channels.db import database_sync_to_async
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from exercises import sandboxes, services
from exercises.models import LabSession, SandboxMember, Workload
from exercises.selectors import can_act_on_lab, can_view_lab, exercises_in_catalogue
from tests.exercises.test_stream import Reader, connect, headers_for, receive, run
from tests.support import lab_vhosts_of_this_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def people(django_user_model):
    team = Group.objects.create(name="payments")
    owner = django_user_model.objects.create_user("owner", password="owner-pass-1")
    mate = django_user_model.objects.create_user("mate", password="mate-pass-1")
    guest = django_user_model.objects.create_user("guest", password="guest-pass-1")
    stranger = django_user_model.objects.create_user("stranger", password="stranger-pass-1")
    owner.groups.add(team)
    mate.groups.add(team)
    return {"team": team, "owner": owner, "mate": mate, "guest": guest, "stranger": stranger}


@pytest.fixture
def sandbox(people, labs):
    source = sandboxes.sandbox_source_empty(name="DLQ filling up")
    return sandboxes.sandbox_create(
        owner=people["owner"], name="DLQ filling up", source=source, team=people["team"]
    )


def client_of(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def invite_token(sandbox, user) -> str:
    return sandboxes.sandbox_invite_create(session=sandbox, user=user).token


def test_the_owner_and_the_team_view_and_act_and_a_stranger_neither(sandbox, people):
    """Owner and team members may watch and change a sandbox; someone else may do neither."""
    for who in ("owner", "mate"):
        assert can_view_lab(people[who], sandbox) and can_act_on_lab(people[who], sandbox)
    assert not can_view_lab(people["stranger"], sandbox)
    assert not can_act_on_lab(people["stranger"], sandbox)


@pytest.mark.parametrize(
    ("method", "name", "data"),
    [
        ("get", "lab", None),
        ("get", "lab-topology-panel", None),
        ("get", "sandbox-limits", None),
        ("post", "lab-publish", {"exchange": "", "routing_key": "x", "body": "{}"}),
        ("post", "lab-topology", {"action": "declare-queue", "name": "q1"}),
        ("post", "sandbox-invites", {}),
        ("post", "lab-end", {}),
    ],
)
def test_a_stranger_gets_403_on_every_path(sandbox, people, method, name, data):
    """Pages, partials and POST endpoints of a sandbox answer 403 to someone not in it."""
    url = reverse(name, args=[sandbox.id])
    response = getattr(client_of(people["stranger"]), method)(url, data or {})
    assert response.status_code == 403


def test_a_team_member_changes_the_topology_but_only_the_owner_ends_it(sandbox, people):
    """A member declares a queue from the page; ending is the owner's."""
    mate = client_of(people["mate"])
    page = mate.get(reverse("lab", args=[sandbox.id]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "DLQ filling up" in html and "payments" in html and "People here" in html
    assert 'id="lab-end"' not in html  # not the member's to end
    response = mate.post(
        reverse("lab-topology", args=[sandbox.id]),
        {"action": "declare-queue", "name": "orders", "type": "classic"},
    )
    assert response.status_code == 200, response.content.decode()
    sandbox = LabSession.objects.get(pk=sandbox.pk)
    assert [q.name for q in sandbox.spec.topology.queues] == ["orders"]
    assert mate.post(reverse("lab-end", args=[sandbox.id])).status_code == 403
    owner = client_of(people["owner"])
    assert owner.post(reverse("lab-end", args=[sandbox.id])).status_code == 302
    sandbox.refresh_from_db()
    assert sandbox.state == LabSession.State.ENDED


def test_an_invitation_lets_in_and_its_revocation_takes_access_away(sandbox, people):
    """Joining through a link gives access; revoking it removes it, and says so."""
    guest = client_of(people["guest"])
    token = invite_token(sandbox, people["owner"])
    assert guest.get(reverse("lab", args=[sandbox.id])).status_code == 403
    joined = guest.get(reverse("sandbox-join", args=[token]))
    assert joined.status_code == 302 and joined["Location"] == sandbox.get_absolute_url()
    assert guest.get(reverse("lab", args=[sandbox.id])).status_code == 200
    assert can_act_on_lab(people["guest"], sandbox)
    invite = sandbox.invites.get()
    revoked = client_of(people["owner"]).post(
        reverse("sandbox-invite-revoke", args=[sandbox.id, invite.pk])
    )
    assert "can no longer open this sandbox" in revoked.content.decode()
    assert guest.get(reverse("lab", args=[sandbox.id])).status_code == 403
    assert not SandboxMember.objects.filter(session=sandbox).exists()
    again = client_of(people["stranger"]).get(reverse("sandbox-join", args=[token]))
    assert again.status_code == 404 and "was revoked" in again.content.decode()
    unknown = guest.get(reverse("sandbox-join", args=["no-such-token"]))
    assert unknown.status_code == 404 and "not known" in unknown.content.decode()


def test_the_socket_is_open_to_members_closed_to_others_and_carries_presence(sandbox, people):
    """Members' sockets get the snapshot and each other's presence; a stranger's is closed
    with the lab's "not yours" code."""
    token = invite_token(sandbox, people["owner"])
    sandboxes.sandbox_join(token=token, user=people["guest"])
    headers = {who: headers_for(people[who]) for who in ("owner", "guest", "stranger")}

    @database_sync_to_async
    def here_now():
        listed = sandboxes.sandboxes_of(user=people["owner"])
        return next(s["here"] for s in listed if s["id"] == sandbox.id)

    async def scenario():
        path = f"/ws/labs/{sandbox.id}/"
        assert await here_now() == []
        owner, connected, _ = await connect(path, headers["owner"])
        assert connected
        await receive(owner, "snapshot")
        owner_reader = Reader(owner)
        guest, _, _ = await connect(path, headers["guest"])
        await receive(guest, "snapshot")
        guest_reader = Reader(guest)
        # The owner hears the guest arrive; the guest hears the owner answer.
        await owner_reader.wait("presence", event="hello", name="guest")
        await guest_reader.wait("presence", event="here", name="owner")
        # The list of sandboxes, which no socket feeds, shows both too.
        assert await here_now() == ["guest", "owner"]
        await guest_reader.stop()
        await guest.disconnect()
        await owner_reader.wait("presence", event="left", name="guest")
        assert await here_now() == ["owner"]
        await owner_reader.stop()
        await owner.disconnect()
        stranger, connected, _ = await connect(path, headers["stranger"])
        assert connected
        assert await stranger.receive_output(timeout=5) == {
            "type": "websocket.close",
            "code": 4403,
        }

    run(scenario)


def test_the_queue_limit_says_how_many_and_the_broker_holds_it_too(sandbox, people, settings, api):
    """The editor refuses a queue past SANDBOX_MAX_QUEUES in words; the vhost's own limit
    is there too, and the operator policy caps each queue's length and bytes."""
    limit = settings.SANDBOX_MAX_QUEUES
    limits = api.request("GET", f"vhost-limits/{sandbox.vhost}")[0]["value"]
    assert limits["max-queues"] == limit + 1  # and the console's firehose queue
    assert limits["max-connections"] == settings.SANDBOX_MAX_CONNECTIONS
    policies = api.request("GET", f"operator-policies/{sandbox.vhost}")
    assert policies[0]["definition"] == {
        "max-length": settings.SANDBOX_QUEUE_MAX_LENGTH,
        "max-length-bytes": settings.SANDBOX_QUEUE_MAX_BYTES,
    }
    member = client_of(people["mate"])
    url = reverse("lab-topology", args=[sandbox.id])
    for i in range(limit):
        made = member.post(url, {"action": "declare-queue", "name": f"q{i}", "type": "classic"})
        assert made.status_code == 200, made.content.decode()
    refused = member.post(
        url, {"action": "declare-queue", "name": "one-too-many", "type": "classic"}
    )
    assert refused.status_code == 400
    assert f"this sandbox may have at most {limit} queues" in refused.content.decode()


def test_the_total_rate_is_refused_where_rates_are_set_and_publishes_made(
    worker, catalogue, people, labs, settings
):
    """Producers' rates and the page's publishes together stay under SANDBOX_MAX_RATE."""
    settings.SANDBOX_MAX_RATE = 5
    source = sandboxes.sandbox_source_from_exercise(
        exercise=catalogue["direct-routing"], name="rates"
    )
    sandbox = sandboxes.sandbox_create(owner=people["owner"], name="rates", source=source)
    for running in sandbox.workloads.filter(kind=Workload.Kind.PRODUCER):
        services.workload_stop(workload=running)
    producer = sandbox.workloads.filter(kind=Workload.Kind.PRODUCER).first()
    with pytest.raises(services.LimitReached, match="at most 5 messages a second"):
        services.workload_update(workload=producer, changes={"rate": 50.0})
        services.workload_start(workload=producer)
    producer.refresh_from_db()
    services.workload_update(workload=producer, changes={"rate": 5.0})
    services.workload_start(workload=producer)
    response = client_of(people["owner"]).post(
        reverse("lab-publish", args=[sandbox.id]),
        {"exchange": "", "routing_key": "x", "body": "{}"},
    )
    assert response.status_code == 429
    assert "this sandbox may publish at most 5 messages a second" in response.content.decode()


def test_a_definitions_file_starts_a_sandbox_and_names_what_it_left_out(people, labs):
    """A definitions upload gives its topology; users and the like are named as left out."""
    definitions = {
        "users": [{"name": "ops"}],
        "queues": [{"name": "billing", "durable": True, "auto_delete": False, "arguments": {}}],
        "exchanges": [],
        "bindings": [],
    }
    made = sandboxes.sandbox_source_from_definitions(
        raw=json.dumps(definitions).encode(), name="from prod", filename="defs.json"
    )
    assert any("ops" in str(s) for s in made.skipped)
    assert [q["name"] for q in yaml.safe_load(made.source)["topology"]["queues"]] == ["billing"]


def test_every_catalogue_exercise_survives_export_and_reimport(catalogue, people, labs):
    """Start from each exercise, export the YAML, start from that: same topology and
    workloads (names, kinds, settings)."""

    def shape(session):
        return (
            session.spec.topology.model_dump(),
            sorted(
                (w.name, w.kind, {k: v for k, v in w.settings.items() if k != "load"})
                for w in session.workloads.all()
            ),
        )

    for exercise in exercises_in_catalogue():
        source = sandboxes.sandbox_source_from_exercise(exercise=exercise, name=exercise.slug)
        first = sandboxes.sandbox_create(owner=people["owner"], name=exercise.slug, source=source)
        try:
            _name, text = sandboxes.sandbox_export_yaml(session=first)
            again = sandboxes.sandbox_source_from_yaml(
                raw=text.encode(), name=exercise.slug, filename="export.yaml"
            )
            second = sandboxes.sandbox_create(
                owner=people["owner"], name=exercise.slug, source=again
            )
            assert shape(second) == shape(first), exercise.slug
            services.lab_session_stop(session=second)
        finally:
            services.lab_session_stop(session=first)


def declare_queue(client, sandbox, name: str) -> None:
    declared = client.post(
        reverse("lab-topology", args=[sandbox.id]),
        {"action": "declare-queue", "name": name, "type": "classic"},
    )
    assert declared.status_code == 200, declared.content.decode()


def add_workload(client, sandbox, **fields):
    return client.post(reverse("lab-sandbox-workload", args=[sandbox.id]), fields)


def add_producer(client, sandbox, name: str, queue: str):
    """A producer at 1 msg/s into `queue` through the default exchange, started at once."""
    return add_workload(
        client,
        sandbox,
        action="producer",
        name=name,
        exchange="",
        routing_keys=queue,
        rate=1,
        start="on",
    )


def test_a_workload_past_the_connections_is_refused_in_words_and_not_added(
    worker, sandbox, people, settings
):
    """SANDBOX_MAX_CONNECTIONS counts the console's two and one a workload: the page says
    so when one more would not fit, and that workload is neither added nor started."""
    settings.SANDBOX_MAX_CONNECTIONS = 3
    member = client_of(people["mate"])
    declare_queue(member, sandbox, "x")
    first = add_producer(member, sandbox, "p1", "x")
    assert first.status_code == 200, first.content.decode()
    assert "Added p1; it runs." in first.content.decode()
    second = add_producer(member, sandbox, "p2", "x")
    assert second.status_code == 400
    assert "this sandbox may have at most 3 connections" in second.content.decode()
    sandbox = LabSession.objects.get(pk=sandbox.pk)
    assert list(sandbox.workloads.values_list("name", flat=True)) == ["p1"]
    assert [p.name for p in sandbox.spec.workloads.producers] == ["p1"]
    # Stopped, p1 frees its connection: p2 may now be added and started.
    services.workload_stop(workload=sandbox.workloads.get(name="p1"))
    third = add_producer(member, sandbox, "p2", "x")
    assert third.status_code == 200, third.content.decode()


def test_a_workload_past_the_channels_is_refused_in_words_and_the_user_holds_it_too(
    worker, sandbox, people, settings, api
):
    """SANDBOX_MAX_CHANNELS counts the console's three, a producer's one and a consumer's
    two; the lab's user carries the limit on the broker too (vhosts have no channel limit)."""
    limits = api.request("GET", f"user-limits/{sandbox.rabbit_user}")[0]["value"]
    assert limits["max-channels"] == settings.SANDBOX_MAX_CHANNELS
    settings.SANDBOX_MAX_CHANNELS = 5
    member = client_of(people["mate"])
    declare_queue(member, sandbox, "orders")
    producer = add_producer(member, sandbox, "p1", "orders")
    assert producer.status_code == 200, producer.content.decode()
    consumer = add_workload(
        member, sandbox, action="consumer", name="c1", queue="orders", start="on"
    )
    assert consumer.status_code == 400
    assert "this sandbox may have at most 5 channels" in consumer.content.decode()
    assert not sandbox.workloads.filter(name="c1").exists()
    # Added stopped, it costs nothing until it starts, and its start says the same.
    stopped = add_workload(member, sandbox, action="consumer", name="c1", queue="orders")
    assert stopped.status_code == 200, stopped.content.decode()
    with pytest.raises(services.LimitReached, match="at most 5 channels"):
        services.workload_start(workload=sandbox.workloads.get(name="c1"))


def fill(sandbox, queue: str, *, count: int, size: int) -> None:
    """Publishes `count` messages of `size` bytes to `queue` as the lab's own user."""
    from labconsole.broker import amqp

    params = sandbox.broker.parameters(
        vhost=sandbox.vhost,
        user=sandbox.rabbit_user,
        password=sandbox.rabbit_password,
        name="test-fill",
    )
    connection = amqp.connect(params)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for _ in range(count):
            channel.basic_publish("", queue, b"x" * size)
    finally:
        connection.close()


def test_a_queue_full_by_length_or_by_bytes_is_named_on_the_limits_card(people, labs, settings):
    """The operator policy's caps hold on the broker, and the Limits card says which queue
    is at which cap: by its count, or when one more message of its size would not fit."""
    settings.SANDBOX_QUEUE_MAX_LENGTH = 5
    settings.SANDBOX_QUEUE_MAX_BYTES = 1000
    source = sandboxes.sandbox_source_empty(name="caps")
    sandbox = sandboxes.sandbox_create(owner=people["owner"], name="caps", source=source)
    member = client_of(people["owner"])
    for name in ("short", "heavy", "roomy"):
        declare_queue(member, sandbox, name)
    url = reverse("sandbox-limits", args=[sandbox.id])
    assert "data-full-queue" not in member.get(url).content.decode()
    fill(sandbox, "short", count=10, size=10)  # 5 kept: full by length
    fill(sandbox, "heavy", count=10, size=300)  # 3 kept (900 bytes): full by bytes
    fill(sandbox, "roomy", count=2, size=10)  # neither
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        html = member.get(url).content.decode()
        if 'data-full-queue="short"' in html and 'data-full-queue="heavy"' in html:
            break
        time.sleep(1)
    assert 'data-full-queue="short" data-full-by="length"' in html, html
    assert "Queue short is full: it holds at most 5 messages" in html
    assert 'data-full-queue="heavy" data-full-by="bytes"' in html, html
    assert "its 3 ready messages take 900" in html
    assert 'data-full-queue="roomy"' not in html


def test_a_reset_goes_back_to_the_workloads_the_sandbox_started_with(
    worker, catalogue, people, labs
):
    """Workloads added and removed on the page rewrite the lab's document; a reset starts
    from the one the sandbox began with, not from the last such change."""
    source = sandboxes.sandbox_source_from_exercise(
        exercise=catalogue["direct-routing"], name="reset"
    )
    sandbox = sandboxes.sandbox_create(owner=people["owner"], name="reset", source=source)
    began = sorted(sandbox.workloads.values_list("name", flat=True))
    member = client_of(people["owner"])
    queue = sandbox.spec.topology.queues[0].name
    added = add_workload(member, sandbox, action="consumer", name="extra", queue=queue)
    assert added.status_code == 200, added.content.decode()
    removed = add_workload(member, sandbox, action="remove", name=began[0])
    assert removed.status_code == 200, removed.content.decode()
    sandbox = LabSession.objects.get(pk=sandbox.pk)
    assert "extra" in {c.name for c in sandbox.spec.workloads.consumers}
    services.lab_session_reset(session=sandbox)
    sandbox = LabSession.objects.get(pk=sandbox.pk)
    assert sorted(sandbox.workloads.values_list("name", flat=True)) == began
    assert sandbox.source == source and sandbox.origin == ""


def test_the_page_publishes_count_against_their_own_sandbox_only(people, labs, settings):
    """SANDBOX_MAX_RATE counts a sandbox's own page publishes: the owner's other sandbox
    is not held back by them."""
    settings.SANDBOX_MAX_RATE = 0.05  # three publishes a minute
    owner = client_of(people["owner"])
    first, second = (
        sandboxes.sandbox_create(
            owner=people["owner"], name=name, source=sandboxes.sandbox_source_empty(name=name)
        )
        for name in ("first", "second")
    )

    def publish(sandbox):
        return owner.post(
            reverse("lab-publish", args=[sandbox.id]),
            {"exchange": "", "routing_key": "x", "body": "{}"},
        )

    assert [publish(first).status_code for _ in range(3)] == [200, 200, 200]
    refused = publish(first)
    assert refused.status_code == 429
    assert "this sandbox may publish at most 0.05 messages a second" in refused.content.decode()
    # In Russian, with Russian numbers (0,05, and the page's rate with a comma too).
    owner.cookies["django_language"] = "ru"
    refused = publish(first).content.decode()
    assert "не больше 0,05 сообщ./с" in refused, refused
    assert re.search(r"страница — 0,\d+:", refused), refused
    owner.cookies["django_language"] = "en"
    assert publish(second).status_code == 200


def test_a_sandbox_whose_workloads_need_more_than_its_limits_is_not_started(
    catalogue, people, labs, settings, api
):
    """Started from an exercise whose workloads need more connections than a sandbox has,
    the New sandbox page says so in a sandbox's words, and nothing is made."""
    settings.SANDBOX_MAX_CONNECTIONS = 3
    vhosts_before = lab_vhosts_of_this_run(api)
    response = client_of(people["owner"]).post(
        reverse("sandbox-new"),
        {
            "name": "too many",
            "start": "exercise",
            "exercise": "direct-routing",
            "team": people["team"].pk,
        },
    )
    html = response.content.decode()
    assert "This sandbox would need more than a sandbox may use: connections:" in html, html
    assert "(at most 3)" in html
    assert not LabSession.objects.filter(sandbox=True, owner=people["owner"]).exists()
    assert lab_vhosts_of_this_run(api) == vhosts_before


def test_a_sandbox_ended_for_idling_says_so_and_leads_back_to_the_sandboxes(people, labs, settings):
    """The idle sweep ends a sandbox nobody had open for SANDBOX_IDLE_MINUTES; its page then
    says why, where a sandbox its owner ended does not."""
    from django.utils import timezone

    idle, ended = (
        sandboxes.sandbox_create(
            owner=people["owner"], name=name, source=sandboxes.sandbox_source_empty(name=name)
        )
        for name in ("idle", "ended")
    )
    long_ago = timezone.now() - timezone.timedelta(minutes=settings.SANDBOX_IDLE_MINUTES + 1)
    LabSession.objects.filter(pk=idle.pk).update(last_seen_at=long_ago)
    assert services.lab_sessions_sweep_idle(
        idle_minutes=settings.SANDBOX_IDLE_MINUTES, sandbox=True
    ) == [idle.id]
    sandboxes.sandbox_end(session=ended, user=people["owner"])
    owner = client_of(people["owner"])
    html = owner.get(reverse("lab", args=[idle.id])).content.decode()
    minutes = settings.SANDBOX_IDLE_MINUTES
    assert f"Nobody had it open for {minutes} minutes, so the console ended it." in html
    assert f'href="{reverse("sandboxes")}"' in html
    # Nothing on it leads to the sandbox's hidden exercise, which has no page.
    assert reverse("exercise", args=[idle.exercise.slug]) not in html
    assert owner.get(reverse("exercise", args=[idle.exercise.slug])).status_code == 404
    html = owner.get(reverse("lab", args=[ended.id])).content.decode()
    assert "This lab has ended." in html and "Nobody had it open" not in html
