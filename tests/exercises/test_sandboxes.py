"""A team's sandboxes on the real broker: who may open and change one on every path (the
page, its partials, its endpoints, its socket), invitations and their revocation, the
SANDBOX_* limits and what the page says when one is hit, presence over the lab's stream,
and the export that makes the same sandbox again."""

import json

import pytest
import yaml
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse

from exercises import sandboxes, services
from exercises.models import LabSession, SandboxMember, Workload
from exercises.selectors import can_act_on_lab, can_view_lab, exercises_in_catalogue
from tests.exercises.test_stream import Reader, connect, headers_for, receive, run

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

    async def scenario():
        path = f"/ws/labs/{sandbox.id}/"
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
        await guest_reader.stop()
        await guest.disconnect()
        await owner_reader.wait("presence", event="left", name="guest")
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
