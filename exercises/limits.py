"""How large an exercise document may be, in one place.

The YAML reader (`exercises.safe_yaml`) and the spec's models (`exercises.spec`) both read
these numbers, and `docs/exercise-format.md` lists them for authors. They are part of the
format, not of a deployment: a document valid on one console is valid on every other, so
they are constants rather than settings.

The biggest built-in exercise is about 17 KB, 360 YAML values and 8 levels deep, with no
string longer than 1,400 characters; every limit leaves it room many times over while
keeping the cost of refusing a hostile document small (reading 128 KiB of YAML takes
about a tenth of a second).
"""

import json
import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict


class SpecLimits(BaseModel):
    model_config = ConfigDict(frozen=True)

    #: The document as UTF-8 bytes, checked before the YAML is read.
    document_bytes: int = 128 * 1024
    #: Mappings and lists inside one another (the document itself is level 1).
    depth: int = 32
    #: Values (mappings, lists, strings, numbers, keys) in the document, each alias counted
    #: as the values it repeats: what stops a "billion laughs".
    values: int = 10_000
    #: Characters of every string in the document, each alias counted as the text it
    #: repeats.
    expanded_chars: int = 1024 * 1024
    #: One string (a Markdown text, a payload template, a key).
    text_chars: int = 20_000
    #: One number as written (an integer of 2**63 has 19 digits).
    number_chars: int = 32
    #: AMQP short strings: exchange and queue names, routing and binding keys, as UTF-8.
    shortstr_bytes: int = 255
    #: Items of the topology's and workloads' lists, and of the steps.
    exchanges: int = 64
    queues: int = 64
    bindings: int = 256
    policies: int = 32
    #: Exchanges, queues and bindings a running lab may have once the learner changed its
    #: topology from the page (an exercise's own topology may have more; edits that would
    #: go past this are refused, deletions never are).
    lab_objects: int = 30
    producers: int = 32
    consumers: int = 32
    steps: int = 50
    checkpoints: int = 50
    alerts: int = 16
    #: Any other list (tags, hints, routing_keys, a check's queues) and mapping (arguments,
    #: headers, a policy's definition).
    items: int = 64
    #: Integers sent to the broker or through pika (AMQP signed 64-bit), and the
    #: millisecond times the broker keeps in 32 bits (TTLs, expiry).
    int64: int = 2**63 - 1
    milliseconds: int = 2**32 - 1
    #: Problems reported for one document, and the characters of a value one message
    #: quotes.
    errors: int = 50
    excerpt_chars: int = 60
    #: Parsed specs kept in memory (the catalogue reads them on every page).
    cached_specs: int = 256


LIMITS = SpecLimits()


def excerpt(value: Any, *, limit: int = LIMITS.excerpt_chars) -> str:
    """The start of `value` as text, at most `limit` characters and an ellipsis; a list
    or a mapping only by its size (writing it out could cost as much as the document)."""
    if isinstance(value, list | tuple):
        return f"a list of {len(value)} items"
    if isinstance(value, dict):
        return f"a mapping of {len(value)} keys"
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_\-]+")


def format_path(loc: Iterable[Any]) -> str:
    """`("topology", "queues", 2, "arguments", "x-max-priority")` as
    `topology.queues[2].arguments.x-max-priority`; other keys are quoted, and cut short."""
    out = ""
    for item in loc:
        if isinstance(item, int) and not isinstance(item, bool):
            out += f"[{item}]"
            continue
        item = excerpt(item, limit=40)
        if _PLAIN_KEY.fullmatch(item):
            out += f".{item}" if out else item
        else:
            out += f"[{json.dumps(item, ensure_ascii=False)}]"
    return out
