"""The delivery ledger: which of a producer's messages were confirmed, and which reached a
consumer, by the sequence number in their `message_id` (`<producer>-<n>`, the producer
setting `message_id: sequence`).

The producer keeps the set of its confirmed numbers, each consumer the set of numbers it
received per producer (a delivery of a number it already had is a duplicate). Both report
their sets; the lab's monitor joins them: received, duplicates, and confirmed but
never received (`missing`: still in a queue, or lost). That is how a lab shows that a
quorum queue loses no confirmed message when a node dies, and that a transient message in
a restarted broker is gone.

A set of numbers is held as sorted, disjoint, inclusive ranges: a producer's numbers come
mostly in order, so the sets stay a handful of ranges whatever their size.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable

# A sequence id as ProducerUnit.properties makes it: the producer's name, a dash, n.
SEQUENCE_ID = re.compile(
    r"^(?P<producer>[A-Za-z0-9][A-Za-z0-9_.:-]{0,127})-(?P<n>[1-9][0-9]{0,17})$"
)
# Beyond this many ranges a set is too scattered to be worth its reports (a consumer that
# gets every third message of a producer, say): it stops and says so.
MAX_RANGES = 1_000
# Producers a consumer keeps a set for.
MAX_PRODUCERS = 32


def sequence_of(message_id: str | None) -> tuple[str, int] | None:
    """(producer, n) of a sequence id, or None for any other message id."""
    if not message_id:
        return None
    m = SEQUENCE_ID.match(message_id)
    return (m["producer"], int(m["n"])) if m else None


class IdSet:
    """A set of positive integers as sorted, disjoint, inclusive [first, last] ranges."""

    __slots__ = ("firsts", "lasts", "size")

    def __init__(self, ranges: Iterable[Iterable[int]] = ()):
        self.firsts: list[int] = []
        self.lasts: list[int] = []
        self.size = 0
        for first, last in ranges:
            for n in (first, last):
                if not isinstance(n, int) or isinstance(n, bool):
                    raise ValueError(f"not a range of integers: {[first, last]!r}")
            if first > last:
                raise ValueError(f"a range must not end before it starts: {[first, last]!r}")
            self.add_range(first, last)

    def __len__(self) -> int:
        return self.size

    def __contains__(self, n: int) -> bool:
        i = bisect.bisect_right(self.firsts, n) - 1
        return i >= 0 and n <= self.lasts[i]

    @property
    def ranges(self) -> int:
        return len(self.firsts)

    def add(self, n: int) -> bool:
        """Adds n; False if it was there already. In order, this is a compare and an add."""
        lasts = self.lasts
        if lasts and n == lasts[-1] + 1:
            lasts[-1] = n
            self.size += 1
            return True
        if lasts and self.firsts[-1] <= n <= lasts[-1]:
            return False
        if n in self:
            return False
        self.add_range(n, n)
        return True

    def add_range(self, first: int, last: int) -> None:
        """Adds first..last, merging what it touches or overlaps."""
        firsts, lasts = self.firsts, self.lasts
        lo = bisect.bisect_left(lasts, first - 1)  # the first range that may touch it
        hi = bisect.bisect_right(firsts, last + 1)  # past the last that may touch it
        if lo < hi:
            first = min(first, firsts[lo])
            last = max(last, lasts[hi - 1])
            self.size -= sum(b - a + 1 for a, b in zip(firsts[lo:hi], lasts[lo:hi], strict=True))
        firsts[lo:hi] = [first]
        lasts[lo:hi] = [last]
        self.size += last - first + 1

    def update(self, other: IdSet) -> None:
        for first, last in zip(other.firsts, other.lasts, strict=True):
            self.add_range(first, last)

    def count_not_in(self, other: IdSet) -> int:
        """How many of this set's numbers `other` lacks."""
        missing = 0
        ofirsts, olasts = other.firsts, other.lasts
        for first, last in zip(self.firsts, self.lasts, strict=True):
            covered = 0
            i = max(0, bisect.bisect_right(ofirsts, first) - 1)
            while i < len(ofirsts) and ofirsts[i] <= last:
                a, b = max(first, ofirsts[i]), min(last, olasts[i])
                if a <= b:
                    covered += b - a + 1
                i += 1
            missing += last - first + 1 - covered
        return missing

    def export(self) -> list[list[int]]:
        return [[a, b] for a, b in zip(self.firsts, self.lasts, strict=True)]


class Received:
    """What one consumer received, per producer: the numbers, and how many deliveries
    brought a number it already had."""

    def __init__(self, data: dict | None = None):
        data = data or {}
        self.sets: dict[str, IdSet] = {}
        self.too_scattered: set[str] = set()
        self.twice: dict[str, int] = {p: int(n) for p, n in (data.get("twice") or {}).items()}
        self.changed = False
        for producer, ranges in (data.get("ids") or {}).items():
            if ranges is None:
                self.too_scattered.add(producer)
            else:
                self.sets[producer] = IdSet(ranges)

    def note(self, message_id: str | None) -> bool:
        """A delivery; True if it brought a number received before."""
        found = sequence_of(message_id)
        if found is None:
            return False
        producer, n = found
        if producer in self.too_scattered:
            return False
        ids = self.sets.get(producer)
        if ids is None:
            if len(self.sets) >= MAX_PRODUCERS:
                return False
            ids = self.sets[producer] = IdSet()
        self.changed = True
        if not ids.add(n):
            self.twice[producer] = self.twice.get(producer, 0) + 1
            return True
        if ids.ranges > MAX_RANGES:
            del self.sets[producer]
            self.too_scattered.add(producer)
        return False

    def __bool__(self) -> bool:
        return bool(self.sets or self.too_scattered)

    def export(self) -> dict:
        """As reported: {"ids": producer -> ranges (None: too scattered to keep), "twice":
        producer -> duplicate deliveries}."""
        return {
            "ids": {
                **{p: ids.export() for p, ids in self.sets.items()},
                **dict.fromkeys(self.too_scattered),
            },
            "twice": dict(self.twice),
        }


def join(confirmed: IdSet, received: Iterable[IdSet]) -> dict[str, int]:
    """A producer's confirmed numbers against what its consumers received: `received`
    (distinct numbers, confirmed or not), `missing` (confirmed, received by none)."""
    union = IdSet()
    for ids in received:
        union.update(ids)
    return {"received": len(union), "missing": confirmed.count_not_in(union)}


def page_counters(ledger: dict) -> dict[str, int]:
    """What the lab page shows of a producer's ledger, among the producer's counters (live,
    and the last numbers of an ended lab)."""
    return {k: ledger[k] for k in ("received", "duplicates", "missing") if k in ledger}
