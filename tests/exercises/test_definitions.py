"""Import and export of exercises: definitions files and topologies both ways (pure), YAML
uploads and zips, and the admin's pages and actions."""

import copy
import html
import io
import json
import zipfile
from pathlib import Path

import pytest
from django.urls import reverse

from exercises.definitions import (
    DEFINITIONS_BYTES,
    DefinitionsError,
    definitions_read,
    definitions_vhosts,
    document_with_topology,
    exercise_definitions,
    exercise_document,
    topology_from_definitions,
)
from exercises.models import Exercise
from exercises.spec import SpecError, Topology, load_spec_file, parse_spec
from exercises.transfer import ZIP_EXPANDED_BYTES, ZIP_FILES

CATALOGUE = Path(__file__).resolve().parents[2] / "exercises" / "catalogue"

# A whole broker's file, as 3.10's GET /api/definitions writes one, with one of each thing
# an exercise cannot hold.
BROKER = {
    "rabbit_version": "3.10.8",
    "rabbitmq_version": "3.10.8",
    "product_name": "RabbitMQ",
    "product_version": "3.10.8",
    "users": [{"name": "alice", "password_hash": "x", "hashing_algorithm": "sha256", "tags": []}],
    "vhosts": [{"name": "shop"}, {"name": "other"}],
    "permissions": [
        {"user": "alice", "vhost": "shop", "configure": ".*", "write": ".*", "read": ".*"}
    ],
    "topic_permissions": [
        {"user": "alice", "vhost": "shop", "exchange": "amq.topic", "write": "^a", "read": "^a"}
    ],
    "parameters": [
        {
            "vhost": "shop",
            "component": "vhost-limits",
            "name": "limits",
            "value": {"max-queues": 9},
        },
        {
            "vhost": "shop",
            "component": "federation-upstream",
            "name": "upstream-eu",
            "value": {"uri": "amqp://eu"},
        },
    ],
    "global_parameters": [{"name": "cluster_name", "value": "rabbit@here"}],
    "policies": [
        {
            "vhost": "shop",
            "name": "cap",
            "pattern": "^orders$",
            "apply-to": "queues",
            "priority": 1,
            "definition": {"max-length": 100, "message-ttl": "soon"},
        },
        {
            "vhost": "shop",
            "name": "mirror",
            "pattern": ".*",
            "apply-to": "classic_queues",
            "priority": 0,
            "definition": {"max-length": 5},
        },
    ],
    "exchanges": [
        {
            "vhost": "shop",
            "name": "events",
            "type": "topic",
            "durable": True,
            "auto_delete": False,
            "internal": False,
            "arguments": {"alternate-exchange": "lost"},
        },
        {
            "vhost": "shop",
            "name": "lost",
            "type": "fanout",
            "durable": True,
            "auto_delete": False,
            "internal": False,
            "arguments": {},
        },
        {
            "vhost": "shop",
            "name": "delayed",
            "type": "x-delayed-message",
            "durable": True,
            "auto_delete": False,
            "internal": False,
            "arguments": {"x-delayed-type": "direct"},
        },
        {
            "vhost": "shop",
            "name": "amq.direct",
            "type": "direct",
            "durable": True,
            "auto_delete": False,
            "internal": False,
            "arguments": {},
        },
        {
            "vhost": "other",
            "name": "elsewhere",
            "type": "direct",
            "durable": True,
            "auto_delete": False,
            "internal": False,
            "arguments": {},
        },
    ],
    "queues": [
        {
            "vhost": "shop",
            "name": "orders",
            "durable": True,
            "auto_delete": False,
            "arguments": {"x-queue-type": "quorum", "x-delivery-limit": 3, "x-quorum-x": 1},
        },
        {
            "vhost": "shop",
            "name": "late",
            "durable": True,
            "auto_delete": False,
            "arguments": {"x-queue-type": "classic", "x-message-ttl": 5000},
        },
    ],
    "bindings": [
        {
            "vhost": "shop",
            "source": "events",
            "destination": "orders",
            "destination_type": "queue",
            "routing_key": "order.*",
            "arguments": {},
        },
        {
            "vhost": "shop",
            "source": "events",
            "destination": "lost",
            "destination_type": "exchange",
            "routing_key": "#",
            "arguments": {},
        },
        {
            "vhost": "shop",
            "source": "delayed",
            "destination": "late",
            "destination_type": "queue",
            "routing_key": "",
            "arguments": {},
        },
        {
            "vhost": "shop",
            "source": "amq.direct",
            "destination": "late",
            "destination_type": "queue",
            "routing_key": "late",
            "arguments": {},
        },
    ],
}


def read(data: dict):
    return definitions_read(json.dumps(data).encode())


def report(imported) -> str:
    return "\n".join(str(s) for s in imported.skipped)


@pytest.mark.parametrize("path", sorted(CATALOGUE.glob("*.yaml")), ids=lambda p: p.stem)
def test_catalogue_topology_round_trip(path):
    """Importing the definitions an exercise exports gives its topology back, with nothing
    left out."""
    spec = load_spec_file(path)
    exported = json.dumps(exercise_definitions(spec.topology, vhost="placeholder"))
    imported = topology_from_definitions(definitions_read(exported.encode()), vhost=None)
    assert imported.skipped == []
    assert Topology.model_validate(imported.topology) == spec.topology
    document = exercise_document(imported, slug="round-trip", title="Round trip")
    assert parse_spec(document).topology == spec.topology


def test_whole_broker_file_imports_one_vhost_and_names_the_rest():
    """From a whole broker's file the chosen vhost's topology is taken; users, permissions,
    parameters, other vhosts, amq.* exchanges and each refused object, argument and policy
    key are reported by name."""
    definitions = read(BROKER)
    assert definitions_vhosts(definitions) == ["shop", "other"]
    imported = topology_from_definitions(definitions, vhost="shop")
    topology = Topology.model_validate(imported.topology)
    assert [x.name for x in topology.exchanges] == ["events", "lost"]
    assert topology.exchanges[0].arguments == {"alternate-exchange": "lost"}
    assert [(q.name, q.type, q.arguments) for q in topology.queues] == [
        ("orders", "quorum", {"x-delivery-limit": 3}),
        ("late", "classic", {"x-message-ttl": 5000}),
    ]
    assert [(b.source, b.destination, b.destination_type) for b in topology.bindings] == [
        ("events", "orders", "queue"),
        ("events", "lost", "exchange"),
        ("amq.direct", "late", "queue"),
    ]
    assert [(p.name, p.definition) for p in topology.policies] == [("cap", {"max-length": 100})]
    text = report(imported)
    for name in (
        "'alice'",
        "alice on shop",
        "alice on shop, exchange amq.topic",
        "'cluster_name'",
        "vhost-limits 'limits'",
        "federation-upstream 'upstream-eu'",
        "other with 1 objects",
        "'amq.direct'",
        "exchange 'delayed'",
        "binding from 'delayed' to queue 'late'",
        "queue 'orders', argument x-quorum-x",
        "policy 'cap', policy key message-ttl",
        "policy 'mirror'",
    ):
        assert name in text, f"{name} not in:\n{text}"


def test_several_vhosts_need_a_choice():
    """A file of several vhosts is refused without one of them named, listing them."""
    with pytest.raises(DefinitionsError) as raised:
        topology_from_definitions(read(BROKER), vhost=None)
    assert "'shop', 'other'" in raised.value.errors[0]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"{not json", "not JSON: Expecting property name"),
        (b"[1, 2]", "a definitions file is a JSON object"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nests too deep"),
        (
            json.dumps({"queues": [{"name": "q", "durable": "maybe"}]}).encode(),
            "queues[0].durable: Input should be a valid boolean",
        ),
        (b" " * (DEFINITIONS_BYTES + 1), "larger than the limit of 8 MiB"),
    ],
    ids=["not-json", "a-list", "not-utf8", "deep", "bad-field", "too-large"],
)
def test_bad_definitions_files_say_what_and_where(raw, expected):
    """A file that is not a definitions file is refused with a message saying what and
    where, not an exception from the parser."""
    with pytest.raises(DefinitionsError) as raised:
        definitions_read(raw, source="broker.json")
    assert raised.value.errors[0].startswith("broker.json: ")
    assert expected in raised.value.errors[0], raised.value.errors


def test_imported_document_is_readable_and_editable():
    """The new exercise's document is valid, commented, with the steps to be written."""
    imported = topology_from_definitions(read(BROKER), vhost="shop")
    text = exercise_document(imported, slug="shop", title="Shop", version="3.10.8")
    spec = parse_spec(text)
    assert spec.slug == "shop" and spec.steps == []
    assert 'virtual host "shop", RabbitMQ 3.10.8' in text
    assert "The steps are to be written" in text
    assert "  exchanges:\n    - name: events\n      type: topic\n" in text


def test_topology_replaced_in_a_document_keeps_the_rest():
    """Replacing a document's topology keeps its other lines and comments; a topology its
    workloads cannot run on is refused with the paths that break."""
    source = (CATALOGUE / "exchange-to-exchange.yaml").read_text()
    spec = parse_spec(source)
    topology = spec.topology.model_dump(mode="json")
    topology["queues"].append({"name": "extra"})
    replaced = document_with_topology(source, topology)
    assert "# The topology is the exercise's, except in the steps" in replaced
    assert replaced.split("\ntopology:")[0] == source.split("\ntopology:")[0]
    assert replaced.split("\nworkloads:")[1] == source.split("\nworkloads:")[1]
    assert [q.name for q in parse_spec(replaced).topology.queues][-1] == "extra"
    topology["queues"] = [q for q in topology["queues"] if q["name"] != "users"]
    topology["bindings"] = [b for b in topology["bindings"] if b["destination"] != "users"]
    with pytest.raises(SpecError) as raised:
        document_with_topology(source, topology)
    assert any("'users' is not a declared queue" in e for e in raised.value.errors)


# --------------------------------------------------------------------------------------
# The admin


def document(slug: str, *, title: str = "Imported") -> str:
    return (
        f"version: 1\nslug: {slug}\ntitle: {title}\nsummary: S\ndescription: D\n"
        "level: beginner\nminutes: 5\ntopology:\n  queues:\n    - name: q\n"
    )


def zipped(files: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def upload(name: str, content: bytes | str) -> io.BytesIO:
    file = io.BytesIO(content.encode() if isinstance(content, str) else content)
    file.name = name
    return file


@pytest.fixture
def staff(db, client, django_user_model):
    client.force_login(django_user_model.objects.create_superuser("teacher", password="t-12345"))
    return client


def import_yaml(client, name, content):
    url = reverse("admin:exercises_exercise_import_yaml")
    return client.post(url, {"file": upload(name, content)})


def test_changelist_offers_the_imports(staff):
    """The exercise list has the Import YAML and Import definitions buttons."""
    page = staff.get(reverse("admin:exercises_exercise_changelist")).content.decode()
    assert reverse("admin:exercises_exercise_import_yaml") in page
    assert reverse("admin:exercises_exercise_import_definitions") in page


def test_one_yaml_file_makes_an_exercise_and_again_a_version(staff):
    """A new slug makes an exercise; the same slug again is its next version, each kept
    with the instructor who imported it."""
    response = import_yaml(staff, "mine.yaml", document("mine"))
    assert response.status_code == 200 and response.context["saved"]
    exercise = Exercise.objects.get(slug="mine")
    assert exercise.version == 1 and exercise.source == document("mine")
    import_yaml(staff, "mine.yaml", document("mine", title="Mine again"))
    exercise.refresh_from_db()
    assert exercise.version == 2 and exercise.title == "Mine again"
    versions = exercise.versions.values_list("number", "author__username")
    assert list(versions) == [(2, "teacher"), (1, "teacher")]


def test_zip_with_a_bad_file_saves_nothing_and_names_each_problem(staff, catalogue):
    """A zip is saved all or none: a bad document and a built-in's slug are reported by
    file with their problems, and the good ones are not saved either."""
    content = zipped(
        {
            "good/one.yaml": document("one"),
            "two.yml": document("two"),
            "bad.yaml": document("bad").replace("minutes: 5", "minutes: 0"),
            "hello.yaml": document("hello-world"),
            "README.md": "not read",
        }
    )
    response = import_yaml(staff, "set.zip", content)
    assert response.status_code == 200 and not response.context["saved"]
    text = html.unescape(response.content.decode())
    assert "bad.yaml" in text and "minutes: must be" in text
    assert "hello-world is a built-in exercise" in text
    assert "README.md" in text
    assert not Exercise.objects.filter(slug__in=["one", "two", "bad"]).exists()
    response = import_yaml(
        staff, "set.zip", zipped({"good/one.yaml": document("one"), "two.yml": document("two")})
    )
    assert response.context["saved"]
    assert set(Exercise.objects.filter(slug__in=["one", "two"]).values_list("slug", flat=True))


def bomb() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bomb.yaml", b"\0" * (ZIP_EXPANDED_BYTES + 1))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (bomb, "the zip expands to 32 MiB; at most 32 MiB are read"),
        (
            lambda: zipped({f"e{i}.yaml": "x" for i in range(ZIP_FILES + 1)}),
            f"the zip holds {ZIP_FILES + 1} files; at most {ZIP_FILES} are read",
        ),
        (
            lambda: zipped({"ok.yaml": document("ok"), "../evil.yaml": document("evil")}),
            "../evil.yaml: a name inside the zip must stay inside it",
        ),
        (
            lambda: zipped({"/etc/evil.yaml": document("evil")}),
            "/etc/evil.yaml: a name inside the zip must stay inside it",
        ),
        (lambda: b"PK not a zip", "set.zip: not a zip file"),
        (lambda: zipped({"notes.txt": "x"}), "the zip holds no .yaml file"),
    ],
    ids=["bomb", "too-many", "traversal", "absolute", "not-zip", "no-yaml"],
)
def test_hostile_zips_are_refused_with_a_clear_message(staff, make, expected):
    """A zip bomb, too many files, a name leaving the zip: the upload is refused, saying so."""
    response = import_yaml(staff, "set.zip", make())
    assert response.status_code == 200
    errors = response.context["form"].errors["file"]
    assert any(expected in e for e in errors), errors
    assert not Exercise.objects.filter(slug__in=["ok", "evil"]).exists()


def test_oversized_yaml_upload_is_refused_by_its_size(staff):
    """A single file over the document limit is refused before it is read."""
    response = import_yaml(staff, "big.yaml", document("big") + "#" * (200 * 1024))
    assert response.context["form"].errors["file"] == [
        "big.yaml: the file is larger than the limit of 128 KiB"
    ]


def action(client, name, exercises, follow=False, **extra):
    url = reverse("admin:exercises_exercise_changelist")
    data = {"action": name, "_selected_action": [e.pk for e in exercises], **extra}
    return client.post(url, data, follow=follow)


def test_export_yaml_gives_the_stored_texts(staff, catalogue):
    """One exercise exports as <slug>.yaml, several as a zip, each exactly its text."""
    one = catalogue["hello-world"]
    response = action(staff, "export_yaml", [one])
    assert response["Content-Disposition"] == 'attachment; filename="hello-world.yaml"'
    assert response.content.decode() == one.source
    two = [one, catalogue["rpc"]]
    response = action(staff, "export_yaml", two)
    assert response["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == ["hello-world.yaml", "rpc.yaml"]
        assert archive.read("rpc.yaml").decode() == catalogue["rpc"].source


def test_export_definitions_asks_the_vhost_then_downloads(staff, catalogue):
    """The definitions export names the vhost asked for (the slug by default)."""
    exercise = catalogue["exchange-to-exchange"]
    page = action(staff, "export_definitions", [exercise])
    assert page.status_code == 200 and page.context["form"]["vhost"].value() == exercise.slug
    response = action(staff, "export_definitions", [exercise], vhost="training")
    data = json.loads(response.content)
    assert data["vhosts"] == [{"name": "training"}]
    assert {b["vhost"] for b in data["bindings"]} == {"training"}
    assert "exchange" in {b["destination_type"] for b in data["bindings"]}
    two = action(staff, "export_definitions", [exercise, catalogue["rpc"]], follow=True)
    assert "Choose one exercise" in two.content.decode()


def import_definitions(client, **data):
    return client.post(reverse("admin:exercises_exercise_import_definitions"), data)


def test_definitions_import_asks_for_a_vhost_and_keeps_the_file(staff):
    """A file of several vhosts is kept in the page while the instructor picks one; the new
    exercise is saved unpublished and the page names what was left out."""
    first = import_definitions(
        staff, file=upload("broker.json", json.dumps(BROKER)), slug="shop", title="Shop"
    )
    form = first.context["form"]
    assert form.vhosts == ["shop", "other"] and "vhost" in form.errors
    carried = form["carried"].value()
    assert carried and not Exercise.objects.filter(slug="shop").exists()
    second = import_definitions(staff, carried=carried, vhost="shop", slug="shop", title="Shop")
    exercise = Exercise.objects.get(slug="shop")
    assert not exercise.published
    assert [q.name for q in exercise.spec.topology.queues] == ["orders", "late"]
    text = html.unescape(second.content.decode())
    assert "federation-upstream 'upstream-eu'" in text and "'alice'" in text
    assert "The steps are to be written" in text


def test_definitions_import_replaces_a_topology_as_a_new_version(staff, catalogue):
    """Into an exercise of one's own the topology is replaced, as its next version; a
    built-in one is not offered, and a slug taken is refused."""
    mine = Exercise.objects.create(
        slug="mine", title="Mine", level="beginner", source=document("mine")
    )
    one_vhost = {k: copy.deepcopy(BROKER[k]) for k in ("queues", "exchanges", "bindings")}
    for part in one_vhost.values():
        for item in part:
            item.pop("vhost", None)
    one_vhost["exchanges"] = [x for x in one_vhost["exchanges"] if x["name"] != "elsewhere"]
    response = import_definitions(
        staff, file=upload("shop.json", json.dumps(one_vhost)), exercise=mine.pk
    )
    assert response.context["exercise"] == mine
    mine.refresh_from_db()
    assert mine.version == 2 and [q.name for q in mine.spec.topology.queues] == ["orders", "late"]
    builtin = import_definitions(
        staff, file=upload("shop.json", json.dumps(one_vhost)), exercise=catalogue["rpc"].pk
    )
    assert "exercise" in builtin.context["form"].errors
    taken = import_definitions(
        staff, file=upload("shop.json", json.dumps(one_vhost)), slug="mine", title="Mine"
    )
    assert any("mine is taken" in p for p in taken.context["problems"])


def test_pages_need_staff_with_permissions(db, client, django_user_model):
    """Anonymous users go to the login page; staff without permission to add exercises get
    403."""
    urls = [
        reverse("admin:exercises_exercise_import_yaml"),
        reverse("admin:exercises_exercise_import_definitions"),
    ]
    for url in urls:
        assert client.get(url).status_code == 302
    learner = django_user_model.objects.create_user("learner", password="x-12345")
    client.force_login(learner)
    for url in urls:
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"]
    learner.is_staff = True
    learner.save()
    for url in urls:
        assert client.get(url).status_code == 403
