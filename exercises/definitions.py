"""RabbitMQ definitions files and exercise topologies, both ways.

A definitions file is what `rabbitmqctl export_definitions` or the management API's
`GET /api/definitions` (a whole broker) and `GET /api/definitions/<vhost>` (one vhost)
write: https://www.rabbitmq.com/docs/definitions. This module reads one within bounds
(`definitions_read`), turns one vhost's exchanges, queues, bindings and policies into an
exercise topology (`topology_from_definitions`), naming everything it leaves out, and
writes an exercise's topology as a definitions file (`topology_definitions`,
`exercise_definitions`). Nothing here talks to the broker or the database.

Everything an exercise's topology cannot hold is reported by name as `Skipped`: users,
permissions, topic permissions, other vhosts, parameters (vhost limits, federation
upstreams, shovels), global parameters, the broker's own `amq.*` exchanges, and each
object, argument or policy key the spec refuses, with the spec's own reason.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from django.utils.translation import gettext as _
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .limits import LIMITS, excerpt, format_path
from .spec import EXCHANGE_TYPE_PLUGINS, SpecError, Topology, parse_spec, validate_data

__all__ = [
    "DEFINITIONS_BYTES",
    "Definitions",
    "DefinitionsError",
    "ImportedTopology",
    "Skipped",
    "definitions_read",
    "definitions_vhosts",
    "document_with_topology",
    "exercise_definitions",
    "exercise_document",
    "topology_definitions",
    "topology_from_definitions",
]

#: A definitions file as uploaded: a whole broker's with a few hundred vhosts fits.
DEFINITIONS_BYTES = 8 * 1024 * 1024
#: Objects of one kind (users, queues, bindings, ...) in one file.
DEFINITIONS_ITEMS = 50_000
#: Names a report lists for one kind of thing before it counts the rest.
NAMES_SHOWN = 50
#: The keys of a file that say which broker wrote it, not what it defines.
_METADATA = ("rabbit_version", "rabbitmq_version", "product_name", "product_version")


class DefinitionsError(Exception):
    """A definitions file cannot be read; `errors` are messages, each starting with where."""

    def __init__(self, errors: list[str]):
        self.errors = errors[: LIMITS.errors]
        super().__init__("\n".join(self.errors))


# --------------------------------------------------------------------------------------
# The file's parts


class _Part(BaseModel):
    # Brokers of other versions add keys (a vhost's metadata, a queue's type); what an
    # object has beyond its model is reported by name, not refused.
    model_config = ConfigDict(extra="allow", str_max_length=LIMITS.text_chars)


def _items() -> Any:
    return Field(default_factory=list, max_length=DEFINITIONS_ITEMS)


class DefVhost(_Part):
    name: str


class DefUser(_Part):
    name: str


class DefPermission(_Part):
    user: str
    vhost: str


class DefTopicPermission(_Part):
    user: str
    vhost: str
    exchange: str = ""


class DefParameter(_Part):
    vhost: str | None = None
    component: str
    name: str
    value: Any = None


class DefGlobalParameter(_Part):
    name: str
    value: Any = None


class DefPolicy(_Part):
    model_config = ConfigDict(populate_by_name=True)

    vhost: str | None = None
    name: str
    pattern: str
    apply_to: str = Field(default="all", alias="apply-to")
    priority: int = 0
    definition: dict[str, Any] = Field(default_factory=dict)


class DefExchange(_Part):
    vhost: str | None = None
    name: str
    type: str
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = Field(default_factory=dict)


class DefQueue(_Part):
    vhost: str | None = None
    name: str
    durable: bool = True
    auto_delete: bool = False
    arguments: dict[str, Any] = Field(default_factory=dict)


class DefBinding(_Part):
    vhost: str | None = None
    source: str
    destination: str
    destination_type: Literal["queue", "exchange"]
    routing_key: str = ""
    arguments: dict[str, Any] = Field(default_factory=dict)


class Definitions(_Part):
    """A definitions file: a whole broker's (every object names its `vhost`) or one
    vhost's (no object does)."""

    rabbit_version: str | None = None
    rabbitmq_version: str | None = None
    users: list[DefUser] = _items()
    vhosts: list[DefVhost] = _items()
    permissions: list[DefPermission] = _items()
    topic_permissions: list[DefTopicPermission] = _items()
    parameters: list[DefParameter] = _items()
    global_parameters: list[DefGlobalParameter] = _items()
    policies: list[DefPolicy] = _items()
    exchanges: list[DefExchange] = _items()
    queues: list[DefQueue] = _items()
    bindings: list[DefBinding] = _items()

    @property
    def version(self) -> str | None:
        return self.rabbitmq_version or self.rabbit_version


def definitions_read(raw: bytes, *, source: str = "(file)") -> Definitions:
    """Reads a definitions file (JSON, UTF-8). Raises DefinitionsError naming where each
    problem is, like `queues[3].durable: ...`."""
    if len(raw) > DEFINITIONS_BYTES:
        larger = _("{source}: the file is larger than the limit of {limit} MiB")
        raise DefinitionsError([larger.format(source=source, limit=DEFINITIONS_BYTES >> 20)])
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        not_utf8 = _("{source}: the file is not UTF-8 text (byte {position})")
        raise DefinitionsError([not_utf8.format(source=source, position=exc.start)]) from None
    except json.JSONDecodeError as exc:
        bad = _("{source}: not JSON: {error} at line {line}, column {column}")
        raise DefinitionsError(
            [bad.format(source=source, error=exc.msg, line=exc.lineno, column=exc.colno)]
        ) from None
    except RecursionError:
        deep = _("{source}: the JSON nests too deep to be a definitions file")
        raise DefinitionsError([deep.format(source=source)]) from None
    if not isinstance(data, dict):
        not_mapping = _("{source}: a definitions file is a JSON object, like {example}")
        raise DefinitionsError(
            [not_mapping.format(source=source, example='{"queues": [...], "exchanges": [...]}')]
        )
    try:
        return Definitions.model_validate(data)
    except ValidationError as exc:
        raise DefinitionsError(
            [
                f"{source}: {format_path(e['loc']) or '(file)'}: {e['msg']}"
                for e in exc.errors(include_url=False)
            ]
        ) from None


def definitions_vhosts(definitions: Definitions) -> list[str]:
    """The vhosts a file holds, in the order it names them: none for a file of one vhost
    (its objects name no vhost)."""
    named = [v.name for v in definitions.vhosts]
    for kind in ("parameters", "policies", "exchanges", "queues", "bindings"):
        named += [item.vhost for item in getattr(definitions, kind) if item.vhost is not None]
    return list(dict.fromkeys(named))


# --------------------------------------------------------------------------------------
# Definitions to a topology


@dataclass(frozen=True)
class Skipped:
    """Something the file holds that the topology does not: `what` (a kind of thing, or
    one object), the `names` of the items (none when `what` names the one), and `why`."""

    what: str
    names: tuple[str, ...]
    why: str

    @property
    def names_shown(self) -> str:
        """The names, quoted, the first `NAMES_SHOWN` of them."""
        return _names(self.names)

    def __str__(self) -> str:
        names = self.names_shown
        return f"{self.what}: {names} ({self.why})" if names else f"{self.what}: {self.why}"


def _names(names: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(f"'{excerpt(n)}'" for n in names[:NAMES_SHOWN])
    if len(names) > NAMES_SHOWN:
        shown += " " + _("and {count} more").format(count=len(names) - NAMES_SHOWN)
    return shown


@dataclass(frozen=True)
class ImportedTopology:
    """One vhost's topology as an exercise declares it (a mapping as in the document),
    and what the file held that it does not."""

    vhost: str | None
    topology: dict
    skipped: list[Skipped]

    @property
    def plugins(self) -> list[str]:
        """The broker plugins its exchanges' types come from."""
        return _plugins(self.topology)


def _plugins(topology: dict) -> list[str]:
    types = {x["type"] for x in topology.get("exchanges") or []}
    return sorted({p for t, p in EXCHANGE_TYPE_PLUGINS.items() if t in types})


_KINDS = ("exchanges", "queues", "bindings", "policies")
_LIMITS = {
    "exchanges": LIMITS.exchanges,
    "queues": LIMITS.queues,
    "bindings": LIMITS.bindings,
    "policies": LIMITS.policies,
}


def _what(kind: str, item: dict) -> str:
    """One object of the topology as a report names it."""
    if kind == "bindings":
        binding = _("binding from '{source}' to {type} '{destination}'")
        return binding.format(
            source=excerpt(item["source"]) or _("(default exchange)"),
            type=_("exchange") if item.get("destination_type") == "exchange" else _("queue"),
            destination=excerpt(item["destination"]),
        )
    singular = {"exchanges": _("exchange"), "queues": _("queue"), "policies": _("policy")}
    return f"{singular[kind]} '{excerpt(item['name'])}'"


def _exchange_item(x: DefExchange) -> dict:
    item: dict[str, Any] = {"name": x.name, "type": x.type}
    if not x.durable:
        item["durable"] = False
    if x.auto_delete:
        item["auto_delete"] = True
    if x.internal:
        item["internal"] = True
    if x.arguments:
        item["arguments"] = dict(x.arguments)
    return item


def _queue_item(q: DefQueue) -> dict:
    arguments = dict(q.arguments)
    # The file keeps a queue's type among its arguments (newer brokers also as `type`);
    # the spec has a field for it.
    queue_type = arguments.pop("x-queue-type", None) or (q.model_extra or {}).get("type")
    item: dict[str, Any] = {"name": q.name}
    if queue_type not in (None, "classic"):
        item["type"] = queue_type
    if not q.durable:
        item["durable"] = False
    if q.auto_delete:
        item["auto_delete"] = True
    if arguments:
        item["arguments"] = arguments
    return item


def _binding_item(b: DefBinding) -> dict:
    item: dict[str, Any] = {"source": b.source, "destination": b.destination}
    if b.destination_type == "exchange":
        item["destination_type"] = "exchange"
    if b.routing_key:
        item["routing_key"] = b.routing_key
    if b.arguments:
        item["arguments"] = dict(b.arguments)
    return item


def _policy_item(p: DefPolicy) -> dict:
    item: dict[str, Any] = {"name": p.name, "pattern": p.pattern, "apply_to": p.apply_to}
    if p.priority:
        item["priority"] = p.priority
    item["definition"] = dict(p.definition)
    return item


_ITEM = {
    "exchanges": _exchange_item,
    "queues": _queue_item,
    "bindings": _binding_item,
    "policies": _policy_item,
}
#: Keys an object of the file has that the topology reads (or that place it in a vhost).
_READ = {
    "exchanges": {"vhost", "name", "type", "durable", "auto_delete", "internal", "arguments"},
    "queues": {"vhost", "name", "durable", "auto_delete", "arguments", "type"},
    "bindings": {"vhost", "source", "destination", "destination_type", "routing_key", "arguments"},
    "policies": {"vhost", "name", "pattern", "apply-to", "priority", "definition"},
}

# `topology.queues[2]` and what follows it in a SpecError message: the item, and an
# argument or a policy key when the problem is one of those.
_ERROR_PATH = re.compile(
    r"^topology\.(exchanges|queues|bindings|policies)\[(\d+)\]"
    r"(?:\.(arguments|definition)(?:\.([A-Za-z0-9_\-]+)|\[(\"(?:[^\"\\]|\\.)*\")\]))?"
    r"(?:[.\[][^:]*)?: (.*)$",
    re.DOTALL,
)


def _minimal_document(topology: dict) -> dict:
    """The least document the spec takes, to check a topology by every rule it has."""
    return {
        "version": 1,
        "slug": "imported",
        "title": "Imported",
        "summary": "Imported",
        "description": "Imported",
        "level": "beginner",
        "minutes": 15,
        "plugins": _plugins(topology),
        "topology": topology,
    }


def _keep_representable(topology: dict[str, list[dict]], skipped: list[Skipped]) -> None:
    """Removes, in place, what the spec refuses, one refusal at a time as the spec reports
    them: an argument or a policy key when the problem is that one, else the object. An
    object removed can make another refused (a binding to a queue that is gone), so the
    spec reads the topology again until it takes all of it."""
    for _round in range(sum(len(v) for v in topology.values()) * 4 + 2):
        try:
            validate_data(_minimal_document(topology))
            return
        except SpecError as exc:
            errors = exc.errors
        removed: dict[str, set[int]] = {kind: set() for kind in _KINDS}
        progress = False
        for error in errors:
            match = _ERROR_PATH.match(error)
            if match is None:
                continue
            kind, index, field, key, quoted, why = match.groups()
            index = int(index)
            if index in removed[kind]:
                continue
            item = topology[kind][index]
            key = json.loads(quoted) if quoted else key
            values = item.get(field) if field else None
            if key is not None and isinstance(values, dict) and key in values:
                values.pop(key)
                what = _("{object}, {field} {key}").format(
                    object=_what(kind, item),
                    field=_("argument") if field == "arguments" else _("policy key"),
                    key=excerpt(key),
                )
                skipped.append(Skipped(what, (), why))
                if field == "definition" and not values:
                    skipped.append(Skipped(_what(kind, item), (), _("nothing left to define")))
                    removed[kind].add(index)
                elif not values:
                    item.pop(field)
            else:
                skipped.append(Skipped(_what(kind, item), (), why))
                removed[kind].add(index)
            progress = True
        for kind, indexes in removed.items():
            topology[kind] = [x for i, x in enumerate(topology[kind]) if i not in indexes]
        if not progress:
            raise DefinitionsError([f"(topology): {e}" for e in errors])
    raise DefinitionsError([_("(topology): the spec refused it after every repair")])


def topology_from_definitions(definitions: Definitions, *, vhost: str | None) -> ImportedTopology:
    """The topology of `vhost` (or of a file of one vhost), and what it leaves out.
    Raises DefinitionsError when the file holds several vhosts and `vhost` is not one."""
    vhosts = definitions_vhosts(definitions)
    if vhost is None and len(vhosts) == 1:
        vhost = vhosts[0]
    if vhosts and vhost not in vhosts:
        choose = _("(file): choose one of its virtual hosts: {names}")
        raise DefinitionsError([choose.format(names=_names(vhosts))])

    def here(item: Any) -> bool:
        return item.vhost is None or item.vhost == vhost

    skipped: list[Skipped] = []

    def skip(what: str, names: list[str], why: str) -> None:
        if names:
            skipped.append(Skipped(what, tuple(names), why))

    not_topology = _("an exercise's topology has none; the lab makes its own")
    skip(_("Users"), [u.name for u in definitions.users], not_topology)
    skip(
        _("Permissions"),
        [
            _("{user} on {vhost}").format(user=p.user, vhost=p.vhost)
            for p in definitions.permissions
        ],
        _("the lab's user may do anything in its vhost; an exercise's users section sets others"),
    )
    skip(
        _("Topic permissions"),
        [
            _("{user} on {vhost}, exchange {exchange}").format(
                user=p.user, vhost=p.vhost, exchange=p.exchange
            )
            for p in definitions.topic_permissions
        ],
        _("an exercise's topology has none"),
    )
    skip(
        _("Global parameters"),
        [p.name for p in definitions.global_parameters],
        _("they are the broker's, not a vhost's"),
    )
    skip(
        _("Parameters"),
        [f"{p.component} '{p.name}'" for p in definitions.parameters if here(p)],
        _("vhost limits, federation upstreams, shovels and the like: an exercise declares none"),
    )
    others = [v for v in vhosts if v != vhost]
    if others:
        kinds = ("parameters", "policies", "exchanges", "queues", "bindings")
        counts = []
        for name in others:
            count = sum(1 for k in kinds for i in getattr(definitions, k) if i.vhost == name)
            counts.append(_("{name} with {count} objects").format(name=name, count=count))
        imported = _("one virtual host is imported: {name}").format(name=vhost)
        skip(_("Other virtual hosts"), counts, imported)
    extra = sorted(set(definitions.model_extra or {}) - set(_METADATA))
    skip(_("Sections of the file"), extra, _("not part of a definitions file this console reads"))

    topology: dict[str, list[dict]] = {kind: [] for kind in _KINDS}
    own = [x.name for x in definitions.exchanges if here(x) and x.name.startswith("amq.")]
    skip(
        _("The broker's own exchanges"),
        own,
        _("every virtual host has them; bindings from them are kept"),
    )
    for kind in _KINDS:
        for part in getattr(definitions, kind):
            if not here(part) or (kind == "exchanges" and part.name in own):
                continue
            item = _ITEM[kind](part)
            unread = sorted(set(part.model_dump(by_alias=True)) - _READ[kind])
            for key in unread:
                what = _("{object}, field {key}").format(object=_what(kind, item), key=key)
                skipped.append(Skipped(what, (), _("the spec has no such field")))
            if len(topology[kind]) >= _LIMITS[kind]:
                most = _("an exercise declares at most {limit} {kind}")
                skipped.append(
                    Skipped(_what(kind, item), (), most.format(limit=_LIMITS[kind], kind=kind))
                )
                continue
            topology[kind].append(item)
    _keep_representable(topology, skipped)
    return ImportedTopology(vhost=vhost, topology=topology, skipped=skipped)


# --------------------------------------------------------------------------------------
# A topology to definitions


def topology_definitions(topology: Topology, *, vhost: str) -> dict[str, list[dict]]:
    """The topology's exchanges, queues, bindings and policies as a definitions file
    lists them, each in `vhost`."""
    return {
        "policies": [
            {
                "vhost": vhost,
                "name": p.name,
                "pattern": p.pattern,
                "apply-to": p.apply_to,
                "priority": p.priority,
                "definition": p.definition,
            }
            for p in topology.policies
        ],
        "exchanges": [
            {
                "vhost": vhost,
                "name": x.name,
                "type": x.type,
                "durable": x.durable,
                "auto_delete": x.auto_delete,
                "internal": x.internal,
                "arguments": x.arguments,
            }
            for x in topology.exchanges
        ],
        "queues": [
            {
                "vhost": vhost,
                "name": q.name,
                "durable": q.durable,
                "auto_delete": q.auto_delete,
                "arguments": {**q.arguments, "x-queue-type": q.type},
            }
            for q in topology.queues
        ],
        "bindings": [
            {
                "vhost": vhost,
                "source": b.source,
                "destination": b.destination,
                "destination_type": b.destination_type,
                "routing_key": b.routing_key,
                "arguments": b.arguments,
            }
            for b in topology.bindings
        ],
    }


def exercise_definitions(topology: Topology, *, vhost: str) -> dict:
    """A definitions file of the topology in `vhost`: `rabbitmqctl import_definitions`
    makes the vhost and everything in it, `POST /api/definitions/<vhost>` loads it into
    an existing vhost."""
    return {"vhosts": [{"name": vhost}], **topology_definitions(topology, vhost=vhost)}


# --------------------------------------------------------------------------------------
# A topology as YAML


class _Dumper(yaml.SafeDumper):
    """Lists indented under their key, as the catalogue's documents are written."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


def _dump(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100, indent=2)


_SECTION_NOTES = {
    "exchanges": "Exchanges: name, type (direct, fanout, topic, headers), arguments.",
    "queues": "Queues: name, type (classic, quorum, stream), arguments (x-message-ttl, ...).",
    "bindings": "Bindings: from an exchange to a queue, or to an exchange (destination_type).",
    "policies": "Policies: what the broker applies to the queues or exchanges a pattern names.",
}


def _topology_block(topology: dict) -> str:
    lines = ["topology:"]
    for kind in _KINDS:
        lines.append(f"  # {_SECTION_NOTES[kind]}")
        body = _dump({kind: topology.get(kind) or []}).rstrip("\n")
        lines += [f"  {line}" for line in body.split("\n")]
    return "\n".join(lines) + "\n"


def exercise_document(
    imported: ImportedTopology, *, slug: str, title: str, version: str | None = None
) -> str:
    """A new exercise whose topology is the imported one: valid as it is, with its steps
    and workloads to be written."""
    where = f'virtual host "{imported.vhost}"' if imported.vhost else "one virtual host"
    broker = f", RabbitMQ {version}" if version else ""
    header = (
        f"# Imported from RabbitMQ definitions ({where}{broker}).\n"
        "# The topology is what the file held that an exercise can declare; the import page\n"
        "# listed what it left out. The steps are to be written: each with a title,\n"
        "# instructions and checkpoints (docs/exercise-format.md). Until then the lab shows\n"
        "# the topology only.\n"
    )
    top: dict[str, Any] = {
        "version": 1,
        "slug": slug,
        "title": title,
        "summary": "Imported from RabbitMQ definitions: a summary is to be written.",
        "description": "Imported from RabbitMQ definitions: a description is to be written.",
        "level": "beginner",
        "minutes": 15,
    }
    if imported.plugins:
        top["plugins"] = imported.plugins
    rest = (
        "\n# Producers and consumers that run in the lab are to be written.\n"
        "workloads:\n  producers: []\n  consumers: []\n"
        "\n# The steps are to be written.\n"
        "steps: []\n"
    )
    text = header + _dump(top) + "\n" + _topology_block(imported.topology) + rest
    parse_spec(text)  # the document must be valid as it is: a bug here is ours
    return text


_TOP_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\s*:", re.MULTILINE)
_TOPOLOGY_KEY = re.compile(r"^topology\s*:\s*(#.*)?$", re.MULTILINE)


def document_with_topology(source: str, topology: dict) -> str:
    """`source` with its topology replaced, its other lines (comments too) kept. Raises
    SpecError when the document is not valid with it (a workload or a check naming a
    queue that is gone)."""
    start = _TOPOLOGY_KEY.search(source)
    if start is None:  # written another way (in flow style): the comments are lost
        parse_spec(source)  # within the limits of a document before PyYAML reads it whole
        text = _dump({**yaml.safe_load(source), "topology": topology})
    else:
        after = _TOP_KEY.search(source, start.end())
        end = after.start() if after else len(source)
        # The comment lines just above the next key belong to it.
        lines = source[start.end() : end].split("\n")
        while len(lines) > 1 and (lines[-1] == "" or lines[-1].startswith("#")):
            lines.pop()
        end = start.end() + len("\n".join(lines)) + 1
        text = source[: start.start()] + _topology_block(topology) + source[end:]
    parse_spec(text)
    return text
