"""A sandbox's replay buffer (labconsole.flow.monitor.Replay): at most N seconds kept,
the oldest dropped, events capped a second and counted, served in chunks."""

import orjson

from labconsole.flow.monitor import REPLAY_EVENTS, Replay


def frame(n: int, events: int = 0) -> dict:
    return {
        "counters": {"p": {"published": n}},
        "queues": {"q": {"ready": n, "unacked": 0}},
        "exchanges": {"x": {"rate_in": 1.0, "unroutable": 0}},
        "events": [{"kind": "published", "seq": i, "body": "x" * 100} for i in range(events)],
    }


def chunk(replay: Replay, after: int = 0, limit: int = 1000) -> dict:
    return orjson.loads(replay.chunk(after, limit))


def test_keeps_at_most_n_seconds_and_drops_the_oldest():
    """Ten seconds of frames in a 5-second buffer leave the last five, oldest first."""
    replay = Replay(5)
    for second in range(1000, 1010):
        replay.note(second + 0.2, frame(second), 0)
        replay.note(second + 0.7, frame(second + 1), 0)
    seconds = chunk(replay)["seconds"]
    assert [s["t"] for s in seconds] == [1005, 1006, 1007, 1008, 1009]
    # A second shows its last frame.
    assert seconds[0]["counters"]["p"]["published"] == 1006


def test_a_gap_drops_seconds_older_than_the_window():
    """Seconds are dropped by age too: after a quiet minute the old ones are gone."""
    replay = Replay(5)
    replay.note(1000.1, frame(1), 0)
    replay.note(1001.1, frame(2), 0)
    replay.note(1060.1, frame(3), 0)
    assert [s["t"] for s in chunk(replay)["seconds"]] == [1060]


def test_events_are_capped_a_second_counted_and_lose_their_message():
    """At most REPLAY_EVENTS events a second, the rest (and what frames left out) counted;
    bodies are not kept."""
    replay = Replay(5)
    replay.note(1000.1, frame(1, events=40), 7)
    replay.note(1000.5, frame(2, events=40), 0)
    (second,) = chunk(replay)["seconds"]
    assert len(second["events"]) == REPLAY_EVENTS
    assert second["left_out"] == 7 + 80 - REPLAY_EVENTS
    assert "body" not in second["events"][0]


def test_chunks_page_through_the_history():
    """A page asks for the seconds after the last it has, until `more` is false."""
    replay = Replay(600)
    for second in range(2000, 2010):
        replay.note(second + 0.5, frame(second), 0)
    first = chunk(replay, 0, limit=4)
    assert first["more"] and first["keep"] == 600
    assert [s["t"] for s in first["seconds"]] == [2000, 2001, 2002, 2003]
    rest = chunk(replay, 2003, limit=100)
    assert not rest["more"]
    assert [s["t"] for s in rest["seconds"]] == list(range(2004, 2010))
