"""Validation of the pattern settings (RPC, poison messages, stream offsets) and their
checks: pure unit tests, no database and no broker."""

import pytest

from exercises.spec import validate_data
from tests.exercises.test_spec import base, errors, the_error


def with_stream(consumer: dict) -> dict:
    data = base()
    data["topology"]["queues"].append({"name": "log", "type": "stream"})
    data["workloads"]["consumers"].append({"name": "tail", "queue": "log", **consumer})
    return data


def test_pattern_settings_are_read():
    data = with_stream({"prefetch": 10, "stream_offset": "first"})
    data["workloads"]["producers"][0]["reply_to"] = "infos"
    data["workloads"]["consumers"][0]["behaviour"] = {"reply": True, "poison": "bad"}
    data["steps"][0]["checkpoints"] += [
        {"id": "r", "description": "r", "check": {"type": "replied", "workload": "reader"}},
        {"id": "u", "description": "u", "check": {"type": "unanswered", "workload": "reader"}},
        {"id": "p", "description": "p", "check": {"type": "replayed", "workload": "tail"}},
    ]
    spec = validate_data(data)
    assert spec.producer("app").reply_to == "infos"
    assert spec.consumer("reader").behaviour.reply
    assert spec.consumer("reader").behaviour.poison == "bad"
    assert spec.consumer("tail").stream_offset == "first"


@pytest.mark.parametrize(
    "offset", ["first", "last", "next", 0, 42, "10m", "1D", "2026-01-31T12:00:00Z"]
)
def test_stream_offsets_rabbitmq_reads(offset):
    spec = validate_data(with_stream({"prefetch": 10, "stream_offset": offset}))
    assert spec.consumer("tail").stream_offset == offset


@pytest.mark.parametrize("offset", ["start", -1, "10 minutes", "2026-01-31T12:00:00", True, 1.5])
def test_a_bad_stream_offset_says_what_is_accepted(offset):
    error = the_error(with_stream({"prefetch": 10, "stream_offset": offset}))
    assert error.startswith("workloads.consumers[1].stream_offset: ")
    assert "first, last, next" in error or "from 0" in error


def test_stream_consumers_need_manual_ack_and_a_prefetch():
    found = errors(with_stream({"ack": "auto"}))
    assert "workloads.consumers[1].ack: a stream's consumers must acknowledge manually" in found
    assert "workloads.consumers[1].prefetch: a stream's consumers need a prefetch above 0" in found


def test_only_a_stream_consumer_takes_an_offset():
    data = base()
    data["workloads"]["consumers"][0]["stream_offset"] = "first"
    error = the_error(data)
    assert error.startswith("workloads.consumers[0].stream_offset: only consumers of a stream")
    assert "classic queue" in error


def test_reply_to_must_be_a_declared_queue():
    data = base()
    data["workloads"]["producers"][0]["reply_to"] = "answers"
    error = the_error(data)
    assert error.startswith("workloads.producers[0].reply_to: ")
    assert "'answers' is not a declared queue" in error


def test_poison_text_is_bounded():
    data = base()
    data["workloads"]["consumers"][0]["behaviour"] = {"poison": ""}
    assert the_error(data).startswith("workloads.consumers[0].behaviour.poison: ")
    data["workloads"]["consumers"][0]["behaviour"] = {"poison": "x" * 201}
    assert the_error(data).startswith("workloads.consumers[0].behaviour.poison: ")


@pytest.mark.parametrize("kind", ["replied", "unanswered"])
def test_reply_checks_need_a_consumer_that_replies(kind):
    data = base()
    data["steps"][0]["checkpoints"].append(
        {"id": "r", "description": "r", "check": {"type": kind, "workload": "reader"}}
    )
    error = the_error(data)
    assert error == (
        "steps[0].checkpoints[1].check.workload: 'reader' must answer requests: "
        "set its behaviour's reply: true"
    )
    data["steps"][0]["checkpoints"][1]["check"]["workload"] = "app"
    assert "'app' is not a consumer" in the_error(data)


def test_an_auto_ack_consumer_cannot_fail_a_poison_message():
    data = base()
    data["workloads"]["consumers"][0].update(ack="auto", behaviour={"poison": "bad"})
    assert the_error(data) == (
        "workloads.consumers[0].behaviour.poison: auto-ack consumers cannot fail or park messages"
    )


def test_a_producer_publishes_as_a_declared_user():
    data = base()
    data["users"] = [{"name": "app", "write": "^app\\."}]
    data["workloads"]["producers"][0]["user"] = "app"
    spec = validate_data(data)
    assert (spec.users[0].configure, spec.users[0].write, spec.users[0].read) == (
        "^$",
        "^app\\.",
        "^$",
    )
    data["workloads"]["producers"][0]["user"] = "ops"
    assert the_error(data) == (
        "workloads.producers[0].user: 'ops' is not a declared user (declared users: app)"
    )


def test_lab_users_are_checked():
    data = base()
    data["users"] = [{"name": "App"}, {"name": "ok", "write": "(("}]
    found = errors(data)
    assert any(e.startswith("users[0].name: must match") for e in found), found
    assert any(e.startswith("users[1].write: is not a valid regular expression") for e in found), (
        found
    )
    data["users"] = [{"name": "ok"}, {"name": "ok"}]
    assert the_error(data) == "users[1].name: duplicate user name 'ok' (first at users[0].name)"


def test_access_refused_needs_a_producer_with_a_user():
    data = base()
    data["steps"][0]["checkpoints"].append(
        {"id": "r", "description": "r", "check": {"type": "access_refused", "workload": "app"}}
    )
    assert "publishes as the lab's own user" in the_error(data)
