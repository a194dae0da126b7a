"""Invalid and hostile exercise documents, generated: every one is refused, cheaply, with
a message naming where, and reading them never reaches the broker.

Each generated case is a valid document broken in one way, with the path the refusal
must name. The run is derandomized (the same documents every time, no example database),
so it costs the same in CI as here: 1,000 documents in some tens of seconds, the memory
of a sample of them traced.
"""

from __future__ import annotations

import copy
import re
import socket
import time
import tracemalloc
from collections import Counter

import pytest
import yaml
from django.conf import settings as django_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exercises.limits import LIMITS
from exercises.spec import SpecError, load_spec_file, parse_spec, validate_data

#: What refusing one document may cost. The costliest refusal here takes under half a
#: second on a busy machine and about 2 MB; the budget is generous so that a slower one
#: does not fail it, and still far from the 54 s and 6 GB a nine-level alias bomb cost
#: before the limits.
SECONDS_PER_DOCUMENT = 2.0
BYTES_PER_DOCUMENT = 48 * 1024 * 1024
#: One message may quote an excerpt, name a path and list a few names; never the value.
CHARS_PER_MESSAGE = 600
EXAMPLES = 1000
#: Tracing memory makes a read several times slower: it is traced for one in
#: TRACE_EVERY_GROWING documents of the categories whose cost grows with the input, and one
#: in TRACE_EVERY of the rest (each category's first document among them).
GROWING = {"huge value", "deep nesting", "alias bomb"}
TRACE_EVERY_GROWING = 3
TRACE_EVERY = 8

BASE = {
    "version": 1,
    "slug": "hostile-base",
    "title": {"en": "Hostile", "ru": "Враждебный"},
    "summary": "A valid document that every case breaks in one way",
    "description": "Some *Markdown*.",
    "level": "beginner",
    "minutes": 5,
    "tags": ["routing"],
    "topology": {
        "exchanges": [{"name": "logs", "type": "direct", "durable": True}],
        "queues": [
            {"name": "errors", "arguments": {"x-max-priority": 5}},
            {"name": "infos"},
        ],
        "bindings": [
            {"source": "logs", "destination": "errors", "routing_key": "error"},
            {"source": "logs", "destination": "infos", "routing_key": "info"},
        ],
    },
    "workloads": {
        "producers": [
            {
                "name": "app",
                "exchange": "logs",
                "routing_key": "error",
                "rate": 2,
                "properties": {"priority": 1},
            }
        ],
        "consumers": [
            {"name": "reader", "queue": "errors", "prefetch": 10, "behaviour": {"fail": 0.1}}
        ],
    },
    "steps": [
        {
            "id": "one",
            "title": {"en": "One", "ru": "Один"},
            "instructions": "Do it.",
            "checkpoints": [
                {
                    "id": "got-some",
                    "description": "Some arrived",
                    "check": {"type": "delivered", "queue": "errors", "min": 1},
                }
            ],
        }
    ],
}

CATEGORIES = {
    "wrong type",
    "unknown exchange type",
    "dangling binding",
    "out-of-range argument",
    "huge value",
    "deep nesting",
    "alias bomb",
    "not UTF-8",
    "duplicate key",
}


class Case:
    """A document, and the path its refusal must name (or a path inside it)."""

    def __init__(self, category: str, document: str | bytes, path: str):
        self.category, self.document, self.path = category, document, path

    def __repr__(self) -> str:
        # A failing case is printed; a document of 100 KB would bury the report.
        start = self.document[:300]
        return f"Case({self.category!r}, {self.path!r}, {len(self.document)} long: {start!r}…)"


def dump(data: dict) -> str:
    return yaml.safe_dump(data, allow_unicode=True, sort_keys=False, width=1000)


def with_value(path: tuple, value) -> dict:
    data = copy.deepcopy(BASE)
    target = data
    for key in path[:-1]:
        target = target[key] if isinstance(key, int) else target.setdefault(key, {})
    target[path[-1]] = value
    return data


def path_text(path: tuple) -> str:
    out = ""
    for key in path:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else key)
    return out


def placed(path: tuple, yaml_text: str) -> str:
    """The base document with `yaml_text` (flow style) as the value at `path`."""
    return dump(with_value(path, "@@PLACE@@")).replace("'@@PLACE@@'", yaml_text, 1)


# -- the strategies ----------------------------------------------------------------------

texts = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), texts)
nested = st.one_of(st.lists(scalars, max_size=3), st.dictionaries(texts, scalars, max_size=3))

#: A field and every kind of value it refuses (strict: no number for a string, no
#: float or boolean for an integer, no 1.0 or true for the version).
WRONG_TYPES = [
    (("version",), st.one_of(st.floats(), st.booleans(), texts, nested, st.none())),
    (("slug",), st.one_of(st.integers(), st.floats(), st.booleans(), nested, st.none())),
    (("minutes",), st.one_of(st.floats(), st.booleans(), texts, nested)),
    (("level",), st.one_of(st.integers(), st.booleans(), nested)),
    (("tags",), st.one_of(st.integers(), st.booleans(), texts, st.dictionaries(texts, texts))),
    (("title",), st.one_of(st.integers(), st.floats(), st.booleans(), st.lists(scalars))),
    (("topology",), st.one_of(st.integers(), texts, st.lists(scalars), st.none())),
    (("topology", "exchanges", 0, "durable"), st.one_of(st.integers(), texts, nested)),
    (("topology", "queues", 0, "name"), st.one_of(st.integers(), st.floats(), nested)),
    (
        ("topology", "queues", 0, "arguments"),
        st.one_of(st.integers(), texts, st.lists(scalars)),
    ),
    (("topology", "bindings", 1, "routing_key"), st.one_of(st.booleans(), nested, st.none())),
    (("workloads", "producers", 0, "rate"), st.one_of(texts, st.booleans(), nested)),
    (("workloads", "producers", 0, "properties"), st.one_of(st.integers(), texts)),
    (("workloads", "consumers", 0, "prefetch"), st.one_of(st.floats(), texts, st.booleans())),
    (("workloads", "consumers", 0, "ack"), st.one_of(st.integers(), st.booleans(), nested)),
    (("steps", 0, "checkpoints", 0, "check", "min"), st.one_of(st.floats(), texts, nested)),
    (("steps", 0, "checkpoints", 0, "check"), st.one_of(st.integers(), texts, st.lists(texts))),
]


@st.composite
def wrong_types(draw) -> Case:
    path, values = draw(st.sampled_from(WRONG_TYPES))
    return Case("wrong type", dump(with_value(path, draw(values))), path_text(path))


@st.composite
def unknown_exchange_types(draw) -> Case:
    known = {"direct", "fanout", "topic", "headers", "x-consistent-hash"}
    value = draw(
        st.one_of(
            texts.filter(lambda t: t not in known),
            st.sampled_from(["Direct", "x-delayed-message", "match", " topic", "fanout "]),
        )
    )
    path = ("topology", "exchanges", 0, "type")
    return Case("unknown exchange type", dump(with_value(path, value)), path_text(path))


names = st.from_regex(r"[a-z][a-z0-9._-]{0,40}", fullmatch=True)


@st.composite
def dangling_bindings(draw) -> Case:
    index = draw(st.integers(0, 1))
    end = draw(st.sampled_from(["source", "destination"]))
    declared = {"logs", "errors", "infos", *BUILTIN}
    name = draw(names.filter(lambda n: n not in declared))
    path = ("topology", "bindings", index, end)
    return Case("dangling binding", dump(with_value(path, name)), path_text(path))


BUILTIN = {"amq.direct", "amq.fanout", "amq.topic", "amq.headers", "amq.match"}
TWO_63 = 2**63

OUT_OF_RANGE = [
    (
        ("topology", "queues", 0, "arguments", "x-max-priority"),
        st.one_of(st.integers(max_value=0), st.integers(min_value=256)),
    ),
    (
        ("topology", "queues", 1, "arguments", "x-message-ttl"),
        st.one_of(st.integers(max_value=-1), st.integers(min_value=2**32, max_value=TWO_63)),
    ),
    (("topology", "queues", 1, "arguments", "x-expires"), st.integers(max_value=0)),
    (
        ("topology", "queues", 1, "arguments", "x-max-length"),
        st.one_of(st.integers(max_value=-1), st.integers(min_value=TWO_63, max_value=10**30)),
    ),
    (
        ("topology", "queues", 1, "arguments", "x-overflow"),
        texts.filter(lambda t: t not in ("drop-head", "reject-publish", "reject-publish-dlx")),
    ),
    (("minutes",), st.one_of(st.integers(max_value=0), st.integers(min_value=241))),
    (("version",), st.integers().filter(lambda v: v != 1)),
    (
        ("workloads", "producers", 0, "rate"),
        st.one_of(
            st.floats(max_value=0.19), st.floats(min_value=10000.01), st.integers(min_value=10001)
        ),
    ),
    (
        ("workloads", "producers", 0, "properties", "priority"),
        st.one_of(st.integers(max_value=-1), st.integers(min_value=256)),
    ),
    (
        ("workloads", "consumers", 0, "prefetch"),
        st.one_of(st.integers(max_value=-1), st.integers(min_value=65536, max_value=10**20)),
    ),
    (
        ("workloads", "consumers", 0, "behaviour", "fail"),
        st.one_of(st.floats(max_value=-0.01), st.floats(min_value=1.01)),
    ),
    (
        ("steps", 0, "checkpoints", 0, "check", "min"),
        st.one_of(st.integers(max_value=0), st.integers(min_value=TWO_63, max_value=10**25)),
    ),
]


@st.composite
def out_of_range_arguments(draw) -> Case:
    path, values = draw(st.sampled_from(OUT_OF_RANGE))
    return Case("out-of-range argument", dump(with_value(path, draw(values))), path_text(path))


STRING_FIELDS = [
    ("slug",),
    ("description",),
    ("topology", "queues", 0, "name"),
    ("topology", "bindings", 0, "routing_key"),
    ("workloads", "producers", 0, "payload"),
    ("steps", 0, "instructions"),
]
SHORTSTR_FIELDS = [
    ("topology", "exchanges", 0, "name"),
    ("topology", "bindings", 1, "routing_key"),
    ("topology", "bindings", 0, "destination"),
    ("workloads", "producers", 0, "routing_key"),
    ("workloads", "consumers", 0, "queue"),
    ("topology", "queues", 1, "arguments", "x-dead-letter-routing-key"),
]


@st.composite
def huge_values(draw) -> Case:
    kind = draw(st.sampled_from(["string", "shortstr", "number", "document", "list"]))
    char = draw(st.sampled_from(["x", "é", "я", "€", "😀", "a b"]))
    if kind == "string":
        # Longer than a string may be, but the document within its size limit.
        path = draw(st.sampled_from(STRING_FIELDS))
        least = LIMITS.text_chars // len(char) + 1
        most = min(2 * least, (LIMITS.document_bytes - 8192) // len(char.encode()))
        value = char * draw(st.integers(least, most))
        return Case("huge value", dump(with_value(path, value)), path_text(path))
    if kind == "shortstr":
        path = draw(st.sampled_from(SHORTSTR_FIELDS))
        size = LIMITS.shortstr_bytes // len(char.encode()) + draw(st.integers(1, 500))
        return Case("huge value", dump(with_value(path, char * size)), path_text(path))
    if kind == "number":
        path = draw(st.sampled_from([("minutes",), ("workloads", "consumers", 0, "prefetch")]))
        digits = draw(st.integers(LIMITS.number_chars + 1, 10_000))
        return Case("huge value", placed(path, "9" * digits), path_text(path))
    if kind == "list":
        field, limit = draw(
            st.sampled_from(
                [
                    (("topology", "queues"), LIMITS.queues),
                    (("topology", "bindings"), LIMITS.bindings),
                    (("steps",), LIMITS.steps),
                    (("tags",), LIMITS.items),
                ]
            )
        )
        count = limit + draw(st.integers(1, 50))
        item = copy.deepcopy(BASE)
        for key in field:
            item = item[key]
        data = with_value(field, [copy.deepcopy(item[0]) for _ in range(count)])
        return Case("huge value", dump(data), path_text(field))
    # A whole document over the size limit: a comment, a long description, or many tags.
    size = LIMITS.document_bytes + draw(st.integers(1, LIMITS.document_bytes))
    filler = draw(st.sampled_from(["comment", "description"]))
    if filler == "comment":
        text = dump(BASE) + "# " + char * (size // len(char.encode())) + "\n"
    else:
        text = dump(with_value(("description",), char * (size // len(char.encode()))))
    return Case("huge value", text, "(document)")


def nesting(depth: int, shape: str) -> str:
    opening = {"list": "[", "map": "{k: ", "mixed": None}[shape]
    if opening:
        closing = "]" if shape == "list" else "}"
        return opening * depth + "1" + closing * depth
    out, close = [], []
    for level in range(depth):
        if level % 2:
            out.append("[")
            close.append("]")
        else:
            out.append("{k: ")
            close.append("}")
    return "".join(out) + "1" + "".join(reversed(close))


DEEP_PLACES = [
    ("tags",),
    ("description",),
    ("topology", "queues", 0, "arguments"),
    ("workloads", "producers", 0, "headers"),
    ("steps", 0, "checkpoints", 0, "check", "min"),
]


@st.composite
def deep_nesting(draw) -> Case:
    path = draw(st.sampled_from(DEEP_PLACES))
    # Mostly just past the limit; one in eight at the depths that used to crash the
    # reader (about 490) and far beyond. Reading a deep line costs its first kilobyte
    # or so either way (that is how far PyYAML looks ahead for a key).
    if draw(st.integers(0, 7)):
        depth = draw(st.integers(LIMITS.depth, 3 * LIMITS.depth))
    else:
        depth = draw(st.sampled_from([490, 600, 1000, 5000]))
    shape = draw(st.sampled_from(["list", "map", "mixed"]))
    return Case("deep nesting", placed(path, nesting(depth, shape)), path_text(path))


@st.composite
def alias_bombs(draw) -> Case:
    path = draw(st.sampled_from(DEEP_PLACES))
    shape = draw(st.sampled_from(["list", "map", "merge", "text", "cycle"]))
    if shape == "cycle":
        return Case("alias bomb", placed(path, "&c [1, *c]"), path_text(path))
    if shape == "text":
        # Few values, but each repeats a long string: what counts is the text.
        size = draw(st.integers(LIMITS.text_chars // 2, LIMITS.text_chars))
        width = LIMITS.expanded_chars // size + draw(st.integers(1, 20))
        items = ", ".join(["*s"] * width)
        return Case("alias bomb", placed(path, f"[&s {'x' * size}, [{items}]]"), path_text(path))
    width = draw(st.integers(2, 12))
    levels = draw(st.integers(2, 12))
    while width**levels <= LIMITS.values:
        levels += 1
    items = [f"&a0 [{', '.join(['lol'] * width)}]"]
    if shape in ("map", "merge"):
        items = [f"&a0 {{{', '.join(f'k{i}: lol' for i in range(width))}}}"]
    for level in range(1, levels):
        refs = [f"*a{level - 1}"] * width
        if shape == "list":
            items.append(f"&a{level} [{', '.join(refs)}]")
        elif shape == "map":
            items.append(f"&a{level} {{{', '.join(f'k{i}: {r}' for i, r in enumerate(refs))}}}")
        else:
            items.append(f"&a{level} {{<<: [{', '.join(refs)}], k{level}: x}}")
    return Case("alias bomb", placed(path, f"[{', '.join(items)}]"), path_text(path))


@st.composite
def not_utf8(draw) -> Case:
    text = dump(BASE)
    way = draw(st.sampled_from(["byte", "cp1251", "latin-1", "utf-16", "cut", "surrogate"]))
    if way == "surrogate":
        at = draw(st.integers(0, len(text)))
        return Case("not UTF-8", text[:at] + "\ud800" + text[at:], "(document)")
    raw = text.encode()
    if way == "byte":
        at = draw(st.integers(0, len(raw)))
        bad = draw(st.sampled_from([b"\x80", b"\xbf", b"\xc0", b"\xc1", b"\xf5", b"\xff"]))
        raw = raw[:at] + bad + raw[at:]
    elif way == "cp1251":
        raw = text.encode("cp1251", errors="replace")
    elif way == "latin-1":
        raw = text.replace("Hostile", "Hostilé").encode("latin-1", errors="replace")
    elif way == "utf-16":
        raw = text.encode("utf-16")
    else:
        raw = raw + "я".encode()[:1]
    return Case("not UTF-8", raw, "(document)")


DUPLICABLE = [
    (),
    ("topology",),
    ("topology", "queues", 0),
    ("topology", "bindings", 1),
    ("workloads", "producers", 0),
    ("workloads", "consumers", 0, "behaviour"),
    ("steps", 0, "checkpoints", 0, "check"),
]


@st.composite
def duplicate_keys(draw) -> Case:
    where = draw(st.sampled_from(DUPLICABLE))
    mapping = BASE
    for key in where:
        mapping = mapping[key]
    key = draw(st.sampled_from(sorted(mapping)))
    value = draw(st.one_of(scalars, st.just(mapping[key])))
    data = copy.deepcopy(BASE)
    target = data
    for part in where:
        target = target[part]
    # The copy of the key goes last, under a name no field has, renamed in the text.
    target["zz-duplicate-zz"] = value
    text = dump(data).replace("zz-duplicate-zz:", f"{key}:", 1)
    return Case("duplicate key", text, path_text((*where, key)))


invalid_documents = st.one_of(
    wrong_types(),
    unknown_exchange_types(),
    dangling_bindings(),
    out_of_range_arguments(),
    huge_values(),
    deep_nesting(),
    alias_bombs(),
    not_utf8(),
    duplicate_keys(),
)


# -- the test ----------------------------------------------------------------------------


def names_path(error: str, path: str) -> bool:
    """The message is about `path` or a value inside it (after the line and column)."""
    error = re.sub(r"^line \d+, column \d+: ", "", error)
    return any(error.startswith(f"{path}{end}") for end in (": ", ".", "["))


def lab_vhosts_of_these_documents(api) -> list[str]:
    """Vhosts a lab of a generated document would have: provisioning describes a lab's
    vhost as `lab: <slug>`, and the generated documents' slug is `hostile-base`."""
    return [
        v["name"]
        for v in api.listing("vhosts?columns=name,description")
        if str(v.get("description", "")).startswith("lab: hostile")
    ]


def no_network(sock, *args):
    raise AssertionError(f"network use of {sock} while reading a document")


def guard_network(patch: pytest.MonkeyPatch) -> None:
    """Reading a document must use no network: no new connection and no bytes sent on an
    open one (the management client keeps its connection alive), to the management API
    or to AMQP."""
    for method in ("connect", "connect_ex", "send", "sendall", "sendto", "sendmsg"):
        patch.setattr(socket.socket, method, no_network)


def test_the_watchers_see_what_they_watch(api):
    """The vhost watcher finds a lab vhost of a generated slug, and the network guard stops
    the management client: so their silence in the test below means something."""
    probe = f"{django_settings.LABCONSOLE_PREFIX}-hostile-probe"
    api.put_vhost(probe, description="lab: hostile-probe")
    try:
        assert probe in lab_vhosts_of_these_documents(api)
    finally:
        api.delete_vhost(probe)
    assert probe not in lab_vhosts_of_these_documents(api)
    with pytest.MonkeyPatch.context() as patch:
        guard_network(patch)
        with pytest.raises(AssertionError, match="network use of"):
            api.vhost_names()


def test_invalid_documents_are_refused_cheaply_naming_where(api, tmp_path):
    """1,000 generated documents, each broken in one way: every one is refused with
    a message naming the path, within a small time and memory budget, and nothing is made
    on the broker."""
    assert validate_data(BASE).slug == "hostile-base"  # the base itself is valid
    assert lab_vhosts_of_these_documents(api) == []
    seen: Counter[str] = Counter()
    traced: Counter[str] = Counter()
    costliest = {"seconds": 0.0, "bytes": 0}

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )
    @given(case=invalid_documents)
    def refused(case: Case) -> None:
        where = case.path
        if isinstance(case.document, bytes):
            # Bytes come from files: read them as `exercise validate` does.
            (tmp_path / "case.yaml").write_bytes(case.document)
            if where == "(document)":
                where = str(tmp_path / "case.yaml")

        def read() -> list[str]:
            with pytest.raises(SpecError) as info:
                if isinstance(case.document, bytes):
                    load_spec_file(tmp_path / "case.yaml")
                else:
                    parse_spec(case.document)
            return info.value.errors

        # Timed alone: tracing memory makes reading several times slower.
        started = time.perf_counter()
        errors = read()
        seconds = time.perf_counter() - started
        peak = 0
        seen[case.category] += 1
        every = TRACE_EVERY_GROWING if case.category in GROWING else TRACE_EVERY
        if seen[case.category] % every == 1:
            tracemalloc.start()
            try:
                assert read() == errors
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            traced[case.category] += 1
        assert any(names_path(e, where) for e in errors), (case.category, where, errors)
        assert len(errors) <= LIMITS.errors
        assert all(len(e) <= CHARS_PER_MESSAGE for e in errors), errors
        assert seconds < SECONDS_PER_DOCUMENT, (case.category, seconds)
        assert peak < BYTES_PER_DOCUMENT, (case.category, peak)
        costliest["seconds"] = max(costliest["seconds"], seconds)
        costliest["bytes"] = max(costliest["bytes"], peak)

    with pytest.MonkeyPatch.context() as patch:
        guard_network(patch)
        refused()
    assert sum(seen.values()) >= 1000, seen
    assert set(seen) == CATEGORIES, seen
    assert set(traced) == CATEGORIES, traced
    assert lab_vhosts_of_these_documents(api) == []
    print(
        f"refused {sum(seen.values())} documents {dict(seen)}, memory traced for "
        f"{sum(traced.values())}, at most {costliest}"
    )
