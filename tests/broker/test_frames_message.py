"""The frames exchange's messages (labconsole/broker/amqp.py): what a worker packs, a web
process cuts back into the same frames, byte for byte; a message that lies about its
body holds none, rather than handing a lab another lab's bytes."""

import string

from hypothesis import given
from hypothesis import strategies as st

from labconsole.broker import amqp

lab_ids = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=16)
frames = st.lists(st.tuples(lab_ids, st.binary(max_size=300)), max_size=30)


@given(frames)
def test_unpack_gives_back_what_was_packed(made):
    headers, body = amqp.pack_frames(made)
    assert amqp.unpack_frames(headers, body) == made
    assert {k for k in headers if k != amqp.FRAMES_INDEX} == {f"lab.{lab}" for lab, _ in made}
    for lab, _ in made:
        assert amqp.lab_frames(lab, headers, body) == [f for other, f in made if other == lab]


def test_each_lab_binding_matches_its_own_header():
    headers, _ = amqp.pack_frames([("abc", b"{}"), ("xyz", b"{}")])
    for lab in ("abc", "xyz"):
        binding = amqp.frames_binding(lab)
        assert binding["x-match"] == "any"
        (key,) = set(binding) - {"x-match"}
        assert headers[key] == binding[key]
    assert "lab.other" not in headers


def test_an_index_that_does_not_fit_its_body_gives_nothing():
    headers, body = amqp.pack_frames([("abc", b'{"a":1}'), ("xyz", b'{"b":2}')])
    assert amqp.unpack_frames(headers, body)  # alive: the whole message is read
    assert amqp.unpack_frames(headers, body[:-1]) == []
    assert amqp.unpack_frames({amqp.FRAMES_INDEX: "abc 7 xyz"}, body) == []
    assert amqp.unpack_frames({amqp.FRAMES_INDEX: "abc -7"}, body) == []
    assert amqp.unpack_frames({}, body) == [] and amqp.unpack_frames(None, body) == []
    assert amqp.unpack_frames({amqp.FRAMES_INDEX: b"abc 7"}, body) == [("abc", b'{"a":1}')]
    assert not amqp.is_frames({"other": 1}) and amqp.is_frames(headers)
