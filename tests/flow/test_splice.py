"""What the stream puts in front of a message's text, and how it reads a frame's number,
on the texts the monitor writes."""

import json

import pytest

from labconsole.flow.stream import _status_tail, _tail, frame_seq


@pytest.mark.parametrize(
    "message",
    [
        {"type": "frame", "seq": 7, "t": 1.5, "counters": {"p": {"published": 3}}},
        {"type": "status", "state": "ended", "message": "This lab has ended."},
        {"type": "workload", "name": "p", "settings": {"rate": 10}},
        {},
    ],
)
@pytest.mark.parametrize("separators", [None, (",", ":")])
def test_spliced_text_is_the_message_with_d_and_dropped_first(message, separators):
    text = json.dumps(message, separators=separators, default=str)
    spliced = '{"d":12,"dropped":3' + _tail(text)
    assert json.loads(spliced) == {"d": 12, "dropped": 3, **message}
    assert list(json.loads(spliced))[:2] == ["d", "dropped"]
    assert json.loads('{"d":5' + _tail(" " + text + "\n")) == {"d": 5, **message}


@pytest.mark.parametrize("text", ["[1, 2]", '"frame"', "", "{"])
def test_anything_but_an_object_is_refused(text):
    assert _tail(text) is None


def test_status_text():
    assert json.loads('{"d":1' + _status_tail("broker-back", "Back.")) == {
        "d": 1,
        "type": "status",
        "state": "broker-back",
        "message": "Back.",
    }


def test_frame_number_from_the_first_bytes_or_the_whole_text():
    assert (
        frame_seq(json.dumps({"type": "frame", "seq": 42, "events": [{"seq": 9}]}).encode()) == 42
    )
    assert frame_seq(b'{"type":"frame","seq":3}') == 3
    # Another order is decoded, and the frame's own number is found, not an event's.
    assert frame_seq(json.dumps({"events": [{"seq": 9}], "type": "frame", "seq": 5}).encode()) == 5
    assert frame_seq(b'{"type": "frame"}') is None
    assert frame_seq(b"not json") is None
    assert frame_seq(b'{"type": "frame", "seq": true}') is None
