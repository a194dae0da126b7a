"""Reading an exercise document's YAML at a cost its size bounds.

YAML lets a small document describe a huge or deep one: aliases repeat what an anchor
names ("billion laughs": nine levels of ten aliases are a billion strings from a few
hundred bytes), and every level of nesting is a level of recursion in the reader. So the
document is refused, before anything is built from it, when:

- it is larger than `LIMITS.document_bytes`, or not UTF-8;
- its mappings and lists nest deeper than `LIMITS.depth` (checked while the reader
  descends, long before Python's recursion limit);
- it holds more than `LIMITS.values` values, or more than `LIMITS.expanded_chars`
  characters of text, counting each alias as everything it repeats (an alias to the
  collection that contains it, a cycle, is refused too);
- a string is longer than `LIMITS.text_chars`, or a number longer than
  `LIMITS.number_chars`;
- a mapping has the same key twice.

Each refusal is a `Problem`: the path of the value, like `topology.queues[2].arguments`,
the line and column it starts at, and what is wrong, quoting at most a short excerpt of it.
`read_document` also keeps the composed node tree, so that a problem found later, by the
spec's validation, is placed at the line of the value its path names
(`Document.locate`).
"""

from __future__ import annotations

import json
import re
from typing import Any, NamedTuple

import yaml
from django.utils.translation import gettext as _
from yaml.events import AliasEvent, CollectionStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .limits import LIMITS, excerpt, format_path

__all__ = ["Document", "DocumentRefused", "Problem", "parse_path", "read_document"]

_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class Problem(NamedTuple):
    """One thing wrong with a document: the path it is about (`workloads.producers[0].rate`,
    or the document's name for the whole of it), what is wrong, and, when the YAML text is
    known, the line and column (from 1) of the value the path names."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    @classmethod
    def from_text(cls, text: str) -> Problem:
        """A message written as "path: message"."""
        path, sep, message = text.partition(": ")
        return cls(path, message) if sep else cls("", text)

    def __str__(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.line is None:
            return text
        where = _("line {line}, column {column}").format(line=self.line, column=self.column)
        return f"{where}: {text}"


def _problem(path: str, message: str, mark: Any) -> Problem:
    if mark is None:
        return Problem(path, message)
    return Problem(path, message, mark.line + 1, mark.column + 1)


class DocumentRefused(Exception):
    """The document cannot be read; `problems` say where and what, `errors` as text."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(self.errors))

    @property
    def errors(self) -> list[str]:
        return [str(p) for p in self.problems]


class _Refused(yaml.YAMLError):
    """Raised inside the loader; carries the finished problem out of PyYAML."""

    def __init__(self, problem: Problem):
        self.problem = problem
        super().__init__(str(problem))


class _Key:
    """The path segment of a mapping key being read (its value's path is the key itself)."""


_KEY = _Key()


def _kib(n: int) -> str:
    return f"{n / 1024:.0f} KiB" if n >= 1024 else f"{n} bytes"


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader, counting and checking while it composes the document."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._path: list[Any] = []
        self._values = 0
        self._chars = 0
        # What each finished node adds when an alias repeats it: (values, characters).
        self._sizes: dict[int, tuple[int, int]] = {}
        self._keys: list[dict[tuple[str, str], int]] = []

    # -- where we are ----------------------------------------------------------------

    def _where(self) -> str:
        return format_path(s for s in self._path if s is not _KEY) or "(document)"

    def _refuse(self, message: str, mark: Any) -> _Refused:
        return _Refused(_problem(self._where(), message, mark))

    def _count(self, values: int, chars: int, mark: Any) -> None:
        self._values += values
        self._chars += chars
        if self._values > LIMITS.values:
            raise self._refuse(
                f"the document holds more than {LIMITS.values} values, counting each alias "
                "as everything it repeats",
                mark,
            )
        if self._chars > LIMITS.expanded_chars:
            raise self._refuse(
                f"the document holds more than {_kib(LIMITS.expanded_chars)} of text, "
                "counting each alias as everything it repeats",
                mark,
            )

    # -- composing -------------------------------------------------------------------

    def compose_node(self, parent: Any, index: Any) -> Any:
        if parent is None:
            segment = None
        elif isinstance(index, int):
            segment = index
        elif index is None:
            segment = _KEY
        else:
            segment = index.value if isinstance(index, ScalarNode) else "?"
        if segment is not None:
            self._path.append(segment)
        try:
            return self._compose(parent, index)
        finally:
            if segment is not None:
                self._path.pop()

    def _compose(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(index, ScalarNode) and index.tag != _MERGE_TAG:
            seen = self._keys[-1]
            key = (index.tag, index.value)
            if key in seen:
                raise self._refuse(f"duplicate key (first at line {seen[key]})", index.start_mark)
            seen[key] = index.start_mark.line + 1
        if isinstance(event, AliasEvent):
            node = super().compose_node(parent, index)
            size = self._sizes.get(id(node))
            if size is None:
                raise self._refuse(
                    f"the alias *{excerpt(event.anchor, limit=40)} repeats a collection that "
                    "contains it",
                    event.start_mark,
                )
            self._count(*size, event.start_mark)
            return node
        if isinstance(event, CollectionStartEvent) and len(self._path) >= LIMITS.depth:
            raise self._refuse(
                f"mappings and lists nest deeper than {LIMITS.depth} levels", event.start_mark
            )
        values, chars = self._values, self._chars
        node = super().compose_node(parent, index)
        if isinstance(node, ScalarNode):
            self._check_scalar(node)
            self._count(1, len(node.value), node.start_mark)
        else:
            self._count(1, 0, node.start_mark)
        self._sizes[id(node)] = (self._values - values, self._chars - chars)
        return node

    def _check_scalar(self, node: ScalarNode) -> None:
        what = "a key" if self._path and self._path[-1] is _KEY else "a string"
        if node.tag in (_INT_TAG, _FLOAT_TAG) and len(node.value) > LIMITS.number_chars:
            raise self._refuse(
                f"a number of {len(node.value)} characters; at most "
                f"{LIMITS.number_chars} are read ({excerpt(node.value, limit=20)})",
                node.start_mark,
            )
        if len(node.value) > LIMITS.text_chars:
            raise self._refuse(
                f"{what} of {len(node.value)} characters; the limit is {LIMITS.text_chars} "
                f"({excerpt(node.value)})",
                node.start_mark,
            )

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        self._keys.append({})
        try:
            return super().compose_mapping_node(anchor)
        finally:
            self._keys.pop()

    # -- constructing ----------------------------------------------------------------

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as exc:
            # A date like 2024-13-45 or a number Python will not convert: PyYAML lets the
            # error through as it is, without saying where.
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read this value: {excerpt(str(exc))}", node.start_mark
            ) from None


def _yaml_error(exc: yaml.YAMLError, source: str) -> Problem:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    if context and context_mark is not None and (mark is None or context_mark.line != mark.line):
        context = f"{context} started at line {context_mark.line + 1}"
    detail = f"{problem} ({context})" if context else problem
    return _problem(source, f"YAML syntax error: {excerpt(detail, limit=200)}", mark)


def _too_large(source: str) -> DocumentRefused:
    limit = _kib(LIMITS.document_bytes)
    return DocumentRefused([Problem(source, f"the document is larger than the limit of {limit}")])


def _decode(raw: str | bytes, source: str) -> str:
    if isinstance(raw, bytes):
        if len(raw) > LIMITS.document_bytes:
            raise _too_large(source)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
            message = (
                f"the document is not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start}"
            )
            raise DocumentRefused([Problem(source, message, line, column)]) from None
    # A text of n characters is at least n bytes: a long one is refused without encoding it.
    if len(raw) > LIMITS.document_bytes:
        raise _too_large(source)
    try:
        size = len(raw.encode("utf-8"))
    except UnicodeEncodeError as exc:  # a lone surrogate, from text decoded carelessly
        raise DocumentRefused(
            [Problem(source, f"the document is not UTF-8 text (at character {exc.start})")]
        ) from None
    if size > LIMITS.document_bytes:
        raise _too_large(source)
    return raw


_PATH_SEGMENT = re.compile(r'\.?([A-Za-z0-9_\-]+)|\[(\d+)\]|\[("(?:[^"\\]|\\.)*")\]')


def parse_path(path: str) -> list[str | int] | None:
    """`topology.queues[2].arguments["a b"]` as its segments, the inverse of `format_path`;
    None for what is not a path (`(document)`)."""
    segments: list[str | int] = []
    at = 0
    while at < len(path):
        found = _PATH_SEGMENT.match(path, at)
        if found is None or (at == 0 and path.startswith(".")):
            return None
        name, index, quoted = found.groups()
        segments.append(name if name is not None else int(index) if index else json.loads(quoted))
        at = found.end()
    return segments or None


def _child(node: Node, segment: str | int) -> tuple[Node | None, Node] | None:
    """The (key, value) nodes `segment` names inside `node`: a key of a mapping (also one
    that a merge key `<<` brings in), or an item of a list."""
    if isinstance(node, SequenceNode):
        if isinstance(segment, int) and 0 <= segment < len(node.value):
            return None, node.value[segment]
        return None
    if not isinstance(node, MappingNode):
        return None
    merged = []
    for key, value in node.value:
        if isinstance(key, ScalarNode) and key.tag == _MERGE_TAG:
            merged.extend(value.value if isinstance(value, SequenceNode) else [value])
        elif isinstance(key, ScalarNode) and key.value == str(segment):
            return key, value
    for source in merged:
        if (found := _child(source, segment)) is not None:
            return found
    return None


class Document:
    """A document read by `read_document`: its data, and where each of its values is."""

    def __init__(self, data: Any, root: Node | None):
        self.data = data
        self.root = root

    def locate(self, problem: Problem) -> Problem:
        """`problem` with the line and column of the value its path names, or of the
        nearest value that exists on the way there (a missing key: its mapping). A value
        written below its key (a block list or mapping) is placed at the key."""
        segments = parse_path(problem.path)
        if problem.line is not None or self.root is None or segments is None:
            return problem
        key, node = None, self.root
        for segment in segments:
            found = _child(node, segment)
            if found is None:
                break
            key, node = found
        mark = node.start_mark
        if key is not None and key.start_mark.line != mark.line:
            mark = key.start_mark
        return _problem(problem.path, problem.message, mark)


def read_document(raw: str | bytes, *, source: str = "(document)") -> Document:
    """The YAML document `raw` (text, or bytes that must be UTF-8) as Python data with its
    node tree, or DocumentRefused with problems naming where and what."""
    text = _decode(raw, source)
    try:
        loader = _BoundedLoader(text)  # checks every character first
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        message = f"YAML does not allow the character #x{exc.character:04x}"
        raise DocumentRefused([Problem(source, message, line, column)]) from None
    try:
        root = loader.get_single_node()
        return Document(loader.construct_document(root) if root is not None else None, root)
    except _Refused as exc:
        raise DocumentRefused([exc.problem]) from None
    except yaml.YAMLError as exc:
        raise DocumentRefused([_yaml_error(exc, source)]) from None
    except RecursionError:
        # Not expected: nesting is refused long before Python's recursion limit. This
        # keeps a traceback from a page should PyYAML recurse somewhere else.
        message = "the document nests too deeply to be read"
        raise DocumentRefused([Problem(source, message)]) from None
    finally:
        loader.dispose()
