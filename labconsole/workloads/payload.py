"""Payload templates of producers.

Placeholders: `{n}` (sequence number from 1), `{routing_key}`, `{producer}`,
`{random:A:B}` (an integer from A to B), `{choice:a|b|c}`. Any other brace is literal, so a
JSON template reads naturally: `{"sensor": "t1", "value": {random:18:25}}`.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

_PLACEHOLDER = re.compile(r"\{([a-z_]+(?::[^{}\"\n]*)?)\}")
_RANDOM = re.compile(r"^random:(-?\d+):(-?\d+)$")

Render = Callable[[int, str, str], str]


class TemplateError(ValueError):
    pass


def _placeholder(expr: str) -> Render:
    if expr == "n":
        return lambda n, key, producer: str(n)
    if expr == "routing_key":
        return lambda n, key, producer: key
    if expr == "producer":
        return lambda n, key, producer: producer
    if m := _RANDOM.match(expr):
        low, high = int(m[1]), int(m[2])
        if low > high:
            raise TemplateError(f"{{{expr}}}: the low bound is above the high bound")
        return lambda n, key, producer: str(random.randint(low, high))
    if expr.startswith("choice:") and expr[7:]:
        options = expr[7:].split("|")
        return lambda n, key, producer: random.choice(options)
    raise TemplateError(
        f"unknown placeholder {{{expr}}} (expected {{n}}, {{routing_key}}, {{producer}}, "
        "{random:A:B} or {choice:a|b|c})"
    )


def compile_template(template: str) -> Render:
    """Returns render(n, routing_key, producer); raises TemplateError naming the problem."""
    parts: list[Render | str] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(template):
        parts.append(template[pos : m.start()])
        parts.append(_placeholder(m[1]))
        pos = m.end()
    parts.append(template[pos:])
    parts = [p for p in parts if p]

    def render(n: int, routing_key: str, producer: str) -> str:
        return "".join(p if isinstance(p, str) else p(n, routing_key, producer) for p in parts)

    return render
