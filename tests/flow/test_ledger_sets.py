"""The delivery ledger's sets of numbers, against Python's own sets."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from labconsole.workloads.ledger import MAX_RANGES, IdSet, Received, join, sequence_of

numbers = st.lists(st.integers(min_value=1, max_value=300), max_size=200)
ranges = st.lists(
    st.tuples(st.integers(min_value=1, max_value=300), st.integers(min_value=0, max_value=20)),
    max_size=30,
)


def as_set(ids: IdSet) -> set[int]:
    return {n for a, b in ids.export() for n in range(a, b + 1)}


@given(numbers, ranges)
def test_an_id_set_holds_what_a_set_holds(added, spans):
    ids, expected = IdSet(), set()
    for first, length in spans:
        ids.add_range(first, first + length)
        expected |= set(range(first, first + length + 1))
    for n in added:
        assert ids.add(n) == (n not in expected)
        expected.add(n)
    assert as_set(ids) == expected
    assert len(ids) == len(expected)
    assert all(n in ids for n in expected) and 0 not in ids and 301 + 20 not in ids
    # Sorted, disjoint and not touching: as few ranges as the numbers allow.
    exported = ids.export()
    assert all(b + 1 < c for (_, b), (c, _) in zip(exported, exported[1:], strict=False))
    assert as_set(IdSet(exported)) == expected


@given(numbers, numbers)
def test_count_not_in_is_the_size_of_the_difference(a, b):
    ids_a, ids_b = IdSet(), IdSet()
    for n in a:
        ids_a.add(n)
    for n in b:
        ids_b.add(n)
    assert ids_a.count_not_in(ids_b) == len(set(a) - set(b))


def test_a_producer_in_order_is_one_range():
    ids = IdSet()
    for n in range(1, 100_001):
        ids.add(n)
    assert ids.export() == [[1, 100_000]]


def test_bad_ranges_are_refused_with_what_is_wrong():
    with pytest.raises(ValueError, match="must not end before it starts: \\[3, 1\\]"):
        IdSet([[3, 1]])
    with pytest.raises(ValueError, match="not a range of integers"):
        IdSet([["1", 2]])


def test_sequence_ids_and_others():
    assert sequence_of("order-service-17") == ("order-service", 17)
    assert sequence_of("checkout-1") == ("checkout", 1)
    for other in (None, "", "3f2a9c0d4e5b", "checkout-0", "checkout-", "-5", "a b-3"):
        assert sequence_of(other) is None


def test_a_consumer_counts_what_came_twice_per_producer_and_gives_up_when_scattered():
    received = Received()
    for mid in ("a-1", "a-2", "b-1", "a-2", "uuid4hex", "a-1"):
        received.note(mid)
    assert received.twice == {"a": 2}
    assert join(IdSet([[1, 3]]), [received.sets["a"]]) == {"received": 2, "missing": 1}
    # Every other number: a range each, until there are too many to be worth reporting.
    for n in range(11, 11 + 2 * (MAX_RANGES + 1), 2):
        received.note(f"c-{n}")
    assert "c" not in received.sets and received.export()["ids"]["c"] is None
    assert Received(received.export()).export() == received.export()
