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

Each refusal names the path of the value, like `topology.queues[2].arguments`, and the
line it is on, and quotes at most a short excerpt of it.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent, CollectionStartEvent
from yaml.nodes import MappingNode, ScalarNode

from .limits import LIMITS, excerpt, format_path

__all__ = ["DocumentRefused", "load_document"]

_INT_TAG = "tag:yaml.org,2002:int"
_FLOAT_TAG = "tag:yaml.org,2002:float"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class DocumentRefused(Exception):
    """The document cannot be read; `errors` are messages, each starting with where."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("\n".join(errors))


class _Refused(yaml.YAMLError):
    """Raised inside the loader; carries the finished message out of PyYAML."""

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


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
        line = f" (line {mark.line + 1})" if mark is not None else ""
        return _Refused(f"{self._where()}: {message}{line}")

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
                line = index.start_mark.line + 1
                raise self._refuse(
                    f"duplicate key at line {line} (first at line {seen[key]})", None
                )
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


def _yaml_error(exc: yaml.YAMLError, source: str) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    context_mark = getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    if context and context_mark is not None and (mark is None or context_mark.line != mark.line):
        context = f"{context} started at line {context_mark.line + 1}"
    detail = f"{problem} ({context})" if context else problem
    return f"{source}: YAML syntax error{where}: {excerpt(detail, limit=200)}"


def _too_large(source: str) -> DocumentRefused:
    limit = _kib(LIMITS.document_bytes)
    return DocumentRefused([f"{source}: the document is larger than the limit of {limit}"])


def _decode(raw: str | bytes, source: str) -> str:
    if isinstance(raw, bytes):
        if len(raw) > LIMITS.document_bytes:
            raise _too_large(source)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise DocumentRefused(
                [
                    f"{source}: the document is not UTF-8 text: byte 0x{raw[exc.start]:02x} "
                    f"at offset {exc.start} (line {line})"
                ]
            ) from None
    # A text of n characters is at least n bytes: a long one is refused without encoding it.
    if len(raw) > LIMITS.document_bytes:
        raise _too_large(source)
    try:
        size = len(raw.encode("utf-8"))
    except UnicodeEncodeError as exc:  # a lone surrogate, from text decoded carelessly
        raise DocumentRefused(
            [f"{source}: the document is not UTF-8 text (at character {exc.start})"]
        ) from None
    if size > LIMITS.document_bytes:
        raise _too_large(source)
    return raw


def load_document(raw: str | bytes, *, source: str = "(document)") -> Any:
    """The YAML document `raw` (text, or bytes that must be UTF-8) as Python data, or
    DocumentRefused with a message naming where and what."""
    text = _decode(raw, source)
    try:
        loader = _BoundedLoader(text)  # checks every character first
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise DocumentRefused(
            [
                f"{source}: YAML does not allow the character #x{exc.character:04x} "
                f"(at line {line}, column {column})"
            ]
        ) from None
    try:
        return loader.get_single_data()
    except _Refused as exc:
        raise DocumentRefused([exc.message]) from None
    except yaml.YAMLError as exc:
        raise DocumentRefused([_yaml_error(exc, source)]) from None
    except RecursionError:
        # Not expected: nesting is refused long before Python's recursion limit. This
        # keeps a traceback from a page should PyYAML recurse somewhere else.
        raise DocumentRefused([f"{source}: the document nests too deeply to be read"]) from None
    finally:
        loader.dispose()
