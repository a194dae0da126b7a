"""Validation of exercise documents: pure unit tests, no database and no broker."""

import copy
import json
import re
import time
import tracemalloc
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from exercises.limits import LIMITS
from exercises.spec import (
    CHECK_TYPES,
    DeadLetteredCheck,
    ExerciseSpec,
    LocalizedText,
    SpecError,
    load_spec_file,
    parse_spec,
    parse_spec_cached,
    validate_data,
)
from labconsole.workloads.payload import compile_template

CATALOGUE = Path(__file__).resolve().parents[2] / "exercises" / "catalogue"

BASE_YAML = """
version: 1
slug: tiny
title: Tiny
summary: {en: A tiny exercise, ru: Крошечное упражнение}
description: Some *Markdown*.
level: beginner
minutes: 5
topology:
  exchanges:
    - {name: logs, type: direct}
  queues:
    - {name: errors}
    - {name: infos}
  bindings:
    - {source: logs, destination: errors, routing_key: error}
    - {source: logs, destination: infos, routing_key: info}
workloads:
  producers:
    - {name: app, exchange: logs, routing_key: error}
  consumers:
    - {name: reader, queue: errors}
steps:
  - id: one
    title: One
    instructions: Do it.
    checkpoints:
      - id: got-some
        description: Some arrived
        check: {type: delivered, queue: errors, min: 1}
"""


def base() -> dict:
    return yaml.safe_load(BASE_YAML)


def errors(data: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        validate_data(data)
    return info.value.errors


def the_error(data: dict) -> str:
    found = errors(data)
    assert len(found) == 1, found
    return found[0]


def has(found: list[str], path: str, phrase: str) -> bool:
    return any(e.startswith(f"{path}: ") and phrase in e for e in found)


# -- valid documents ------------------------------------------------------------------


def test_base_document_is_valid():
    spec = validate_data(base())
    assert isinstance(spec, ExerciseSpec)
    assert spec.title.en == "Tiny" and spec.title.ru is None
    assert spec.summary.get("ru") == "Крошечное упражнение"
    assert spec.title.get("ru") == "Tiny"  # falls back to English
    assert spec.queue("errors").type == "classic"
    assert spec.queue("nope") is None
    assert spec.exchange("logs").type == "direct"
    assert spec.producer("app").rate == 1.0
    assert spec.consumer("reader").ack == "manual"
    assert [(s.id, c.id) for s, c in spec.all_checkpoints()] == [("one", "got-some")]


def test_defaults():
    spec = validate_data(base())
    producer = spec.producer("app")
    assert producer.payload == '{"n": {n}}'
    assert compile_template(producer.payload)(1, "error", "app") == '{"n": 1}'
    assert producer.properties.content_type == "application/json"
    assert producer.properties.message_id == "uuid"
    behaviour = spec.consumer("reader").behaviour
    assert behaviour.fail == 0.0 and behaviour.on_fail == "reject" and not behaviour.requeue
    assert spec.tags == []
    assert spec.topology.policies == []


def test_dump_round_trips():
    spec = validate_data(base())
    assert validate_data(spec.model_dump()) == spec
    assert validate_data(spec.model_dump(mode="json")) == spec


def test_numeric_routing_key_is_read_as_text():
    data = base()
    data["topology"]["bindings"][0]["routing_key"] = 2
    assert validate_data(data).topology.bindings[0].routing_key == "2"


def test_parse_spec_reads_yaml():
    spec = parse_spec(BASE_YAML, source="tiny.yaml")
    assert spec.slug == "tiny"


def test_localized_text_get():
    text = LocalizedText(en="Hello", ru="Привет")
    assert text.get("ru") == "Привет"
    assert text.get("ru-RU") == "Привет"
    assert text.get("de") == "Hello"
    assert str(text) == "Hello"


def test_render_payload_placeholders():
    render = compile_template(
        '{"n": {n}, "k": "{routing_key}", "p": "{producer}", "r": {random:3:3}, '
        '"c": "{choice:x}", "o": {"x": {}}}'
    )
    assert render(4, "a.b", "shop") == (
        '{"n": 4, "k": "a.b", "p": "shop", "r": 3, "c": "x", "o": {"x": {}}}'
    )


def test_choice_options_may_hold_spaces():
    render = compile_template('{"job": "{choice:resize image|send email}", "n": {n}}')
    jobs = {json.loads(render(i, "k", "p"))["job"] for i in range(60)}
    assert jobs == {"resize image", "send email"}


def test_every_catalogue_template_fills_all_its_placeholders():
    """No placeholder of a built-in exercise's payload is sent as it is written."""
    for path in sorted(CATALOGUE.glob("*.yaml")):
        spec = load_spec_file(path)
        for producer in spec.workloads.producers:
            body = compile_template(producer.payload)(1, "key", producer.name)
            assert "{choice:" not in body and "{random:" not in body, (path.name, body)


def test_producer_routing_keys():
    data = base()
    data["workloads"]["producers"][0].update(routing_key="", routing_keys=["error", "info"])
    producer = validate_data(data).producer("app")
    assert producer.keys() == ["error", "info"]


def test_check_types_are_all_known():
    assert set(CHECK_TYPES) == {
        "queue_messages",
        "binding_exists",
        "binding_absent",
        "routed_only_to",
        "delivered",
        "acked",
        "dead_lettered",
        "workload_setting",
        "published",
        "redelivered",
        "faster",
        "delivered_share",
        "overtook",
        "refused",
        "queue_deleted",
        "returned",
        "committed",
        "replied",
        "unanswered",
        "replayed",
        "access_refused",
        "alert_fired",
        "alert_cleared",
        "forwarded",
        "compensated",
        "load_finished",
        "quorum_online",
        "leader_moved",
        "queue_down",
        "none_lost",
        "lost",
    }
    assert CHECK_TYPES["dead_lettered"] is DeadLetteredCheck


# -- the catalogue ----------------------------------------------------------------------


CATALOGUE_FILES = sorted(CATALOGUE.glob("*.yaml"))


def test_catalogue_is_not_empty():
    names = {path.name for path in CATALOGUE_FILES}
    assert {"direct-routing.yaml", "dlq-retries.yaml"} <= names


@pytest.mark.parametrize("path", CATALOGUE_FILES, ids=lambda p: p.name)
def test_catalogue_file_validates(path):
    spec = load_spec_file(path)
    assert spec.slug == path.stem
    assert len(spec.steps) >= 2
    for step in spec.steps:
        assert step.checkpoints, f"step {step.id} has no checkpoint"
        assert step.title.ru and step.instructions.ru, f"step {step.id} lacks Russian"
        for checkpoint in step.checkpoints:
            assert checkpoint.description.ru, f"checkpoint {checkpoint.id} lacks Russian"
    for text in (spec.title, spec.summary, spec.description):
        assert text.ru


def test_docs_complete_example_validates():
    text = (CATALOGUE.parents[1] / "docs" / "exercise-format.md").read_text(encoding="utf-8")
    example = re.findall(r"```yaml\n(.*?)```", text, re.S)[-1]
    spec = parse_spec(example, source="docs/exercise-format.md")
    catalogue = load_spec_file(CATALOGUE / "direct-routing.yaml")
    assert spec.slug == catalogue.slug
    assert spec.topology == catalogue.topology
    assert spec.workloads == catalogue.workloads
    assert [c.check for _s, c in spec.all_checkpoints()] == [
        c.check for _s, c in catalogue.all_checkpoints()
    ]


def test_dlq_exercise_parks_after_three_rejections():
    spec = load_spec_file(CATALOGUE / "dlq-retries.yaml")
    behaviour = spec.consumer("processor").behaviour
    assert behaviour.park_after == 3
    checks = [c.check for _s, c in spec.all_checkpoints() if c.check.type == "dead_lettered"]
    parked = [c for c in checks if c.queue == "orders.parking"]
    assert parked and parked[0].reason == "rejected" and parked[0].retries == 3


# -- document-level errors --------------------------------------------------------------


def test_yaml_syntax_error_has_line_and_column():
    text = "version: 1\nslug: [tiny\ntitle: x\n"
    with pytest.raises(SpecError) as info:
        parse_spec(text, source="bad.yaml")
    (message,) = info.value.errors
    assert message.startswith("line 3, column 6: bad.yaml: YAML syntax error: ")


def test_yaml_bad_indentation_reports_its_line():
    with pytest.raises(SpecError) as info:
        parse_spec("version: 1\nslug: tiny\n  level: beginner\n", source="x.yaml")
    assert str(info.value).startswith("line 3, column 8: x.yaml: YAML syntax error: ")


def test_yaml_duplicate_key():
    with pytest.raises(SpecError) as info:
        parse_spec("version: 1\nslug: a\nslug: b\n", source="dup.yaml")
    assert str(info.value) == "line 3, column 1: slug: duplicate key (first at line 2)"


def test_top_level_list_is_refused():
    with pytest.raises(SpecError) as info:
        parse_spec("- version: 1\n- slug: x\n", source="list.yaml")
    assert info.value.errors == [
        "line 1, column 1: list.yaml: the document must be a mapping of fields, like "
        "'version: 1' (got a list)"
    ]


def test_empty_document_is_refused():
    with pytest.raises(SpecError) as info:
        parse_spec("", source="empty.yaml")
    assert "must be a mapping" in str(info.value)


def test_unreadable_file(tmp_path):
    with pytest.raises(SpecError) as info:
        load_spec_file(tmp_path / "missing.yaml")
    assert "cannot read the file" in str(info.value)


# -- field errors -----------------------------------------------------------------------


def test_unknown_top_level_field():
    data = base()
    data["colour"] = "blue"
    assert the_error(data) == (
        "colour: unknown field (expected one of: version, slug, title, summary, description, "
        "level, minutes, order, tags, broker, plugins, topology, workloads, users, alerts, "
        "steps, topology_edits)"
    )


@pytest.mark.parametrize(
    ("behaviour", "path", "phrase"),
    [
        ({"forward": {"exchange": "nope", "routing_key": "k"}}, "forward.exchange", "'nope'"),
        ({"forward": {"routing_key": "nope"}}, "forward.routing_key", "routes by queue name"),
        ({"compensate": {"exchange": "logs"}}, "compensate.routing_key", "required"),
    ],
)
def test_what_a_consumer_publishes_must_have_somewhere_to_go(behaviour, path, phrase):
    data = base()
    data["workloads"]["consumers"][0]["behaviour"] = behaviour
    found = errors(data)
    assert has(found, f"workloads.consumers[0].behaviour.{path}", phrase), found


def test_a_forwarded_check_needs_a_consumer_that_forwards():
    data = base()
    check = {"type": "forwarded", "workload": "reader"}
    data["steps"][0]["checkpoints"].append({"id": "on", "description": "x", "check": check})
    found = errors(data)
    assert has(found, "steps[0].checkpoints[1].check.workload", "set its behaviour's forward")
    data["workloads"]["consumers"][0]["behaviour"] = {
        "forward": {"exchange": "logs", "routing_key": "info"}
    }
    assert validate_data(data).consumer("reader").behaviour.forward.routing_key == "info"


def test_quorum_checks_need_a_quorum_queue_and_the_cluster():
    data = base()
    for i, check in enumerate(
        (
            {"type": "quorum_online", "queue": "errors", "min": 3},
            {"type": "leader_moved", "queue": "errors"},
        )
    ):
        data["steps"][0]["checkpoints"].append({"id": f"q{i}", "description": "x", "check": check})
    found = errors(data)
    for i in (1, 2):
        path = f"steps[0].checkpoints[{i}].check"
        assert has(found, f"{path}.queue", "'errors' is a classic queue: only quorum queues")
        assert has(found, f"{path}.type", "needs the lab on the cluster: set broker: cluster")
    data["topology"]["queues"][0]["type"] = "quorum"
    data["broker"] = "cluster"
    assert validate_data(data).broker == "cluster"
    data["broker"] = "elsewhere"
    assert has(errors(data), "broker", "must be one of: shared, cluster")


def alert(**fields) -> dict:
    return {"name": "dlq", "title": "DLQ", "queue": "errors", "metric": "messages", **fields}


def test_alert_rules_and_their_checks():
    data = base()
    data["alerts"] = [alert(above=5), alert(name="idle", metric="consumers", below=1)]
    data["steps"][0]["checkpoints"].append(
        {"id": "idle-fired", "description": "x", "check": {"type": "alert_fired", "alert": "idle"}}
    )
    spec = validate_data(data)
    assert [a.rule().for_seconds for a in spec.alerts] == [0, 0]
    assert spec.alerts[1].rule().below == 1


@pytest.mark.parametrize(
    ("rules", "check_alert", "path", "phrase"),
    [
        ([alert()], "dlq", "alerts[0].above", "give one threshold: above or below"),
        ([alert(above=1, below=2)], "dlq", "alerts[0].above", "give one threshold"),
        (
            [alert(above=1, queue="nope")],
            "dlq",
            "alerts[0].queue",
            "'nope' is not a declared queue",
        ),
        ([alert(above=1, metric="bytes")], "dlq", "alerts[0].metric", "must be one of: messages"),
        ([alert(above=1, for_seconds=-1)], "dlq", "alerts[0].for_seconds", "0"),
        ([alert(above=1), alert(below=1)], "dlq", "alerts[1].name", "duplicate alert name 'dlq'"),
        ([alert(above=1)], "dql", "steps[0].checkpoints[1].check.alert", "not a declared alert"),
    ],
)
def test_alert_rule_mistakes_are_refused_where_they_are(rules, check_alert, path, phrase):
    data = base()
    data["alerts"] = rules
    data["steps"][0]["checkpoints"].append(
        {"id": "fired", "description": "x", "check": {"type": "alert_fired", "alert": check_alert}}
    )
    found = errors(data)
    assert has(found, path, phrase), found


def test_topology_edits_exercise_wide_and_per_step():
    """A step's topology_edits overrides the exercise's; unset, the exercise's holds."""
    data = base()
    data["topology_edits"] = False
    data["steps"] = [
        {"id": "look", "title": "t", "instructions": "i"},
        {"id": "bind", "title": "t", "instructions": "i", "topology_edits": True},
    ]
    spec = validate_data(data)
    assert [spec.topology_edits_allowed(s) for s in ("look", "bind", None)] == [
        False,
        True,
        False,
    ]
    data["steps"][1]["topology_edits"] = "yes"
    assert (
        the_error(data) == 'steps[1].topology_edits: must be true or false (got the string "yes")'
    )


def test_unknown_field_in_a_check_lists_that_check_type_fields():
    data = base()
    data["steps"][0]["checkpoints"][0]["check"]["queues"] = ["errors"]
    assert the_error(data) == (
        "steps[0].checkpoints[0].check.queues: unknown field (expected one of: type, queue, min)"
    )


def test_max_priority_out_of_range():
    data = base()
    data["topology"]["queues"].append({"name": "vip", "arguments": {"x-max-priority": 300}})
    assert the_error(data) == (
        "topology.queues[2].arguments.x-max-priority: must be an integer from 1 to 255"
    )


def test_max_priority_is_classic_only():
    data = base()
    data["topology"]["queues"].append(
        {"name": "vip", "type": "quorum", "arguments": {"x-max-priority": 5}}
    )
    assert the_error(data).startswith(
        "topology.queues[2].arguments.x-max-priority: only classic queues support"
    )


def test_delivery_limit_is_quorum_only():
    data = base()
    data["topology"]["queues"][0]["arguments"] = {"x-delivery-limit": 3}
    assert the_error(data) == (
        "topology.queues[0].arguments.x-delivery-limit: only quorum queues support a delivery "
        "limit (this queue is classic)"
    )


def test_stream_cannot_be_auto_delete_nor_dead_letter():
    data = base()
    data["topology"]["queues"].append(
        {
            "name": "events",
            "type": "stream",
            "auto_delete": True,
            "arguments": {"x-dead-letter-exchange": "logs", "x-max-age": "7D"},
        }
    )
    found = errors(data)
    assert found == [
        "topology.queues[2].auto_delete: stream queues cannot be auto-delete",
        (
            "topology.queues[2].arguments.x-dead-letter-exchange: stream queues do not support "
            "this argument"
        ),
    ]


def test_quorum_must_be_durable():
    data = base()
    data["topology"]["queues"][1].update(type="quorum", durable=False)
    assert the_error(data) == "topology.queues[1].durable: quorum queues must be durable"


def test_queue_type_in_arguments_is_refused():
    data = base()
    data["topology"]["queues"][0]["arguments"] = {"x-queue-type": "quorum"}
    assert the_error(data) == (
        "topology.queues[0].arguments.x-queue-type: not allowed in arguments: use the queue's "
        "type field"
    )


def test_unknown_queue_argument_lists_known_ones():
    data = base()
    data["topology"]["queues"][0]["arguments"] = {"x-max-lenght": 5}
    message = the_error(data)
    assert message.startswith("topology.queues[0].arguments.x-max-lenght: unknown queue argument")
    assert "x-max-length, x-max-length-bytes" in message


def test_bad_argument_values():
    data = base()
    data["topology"]["queues"][0]["arguments"] = {
        "x-message-ttl": -1,
        "x-overflow": "drop-tail",
        "x-max-age": "7D",
    }
    found = errors(data)
    assert has(found, "topology.queues[0].arguments.x-message-ttl", "from 0 to 4294967295")
    assert has(found, "topology.queues[0].arguments.x-overflow", "drop-head, reject-publish")
    assert has(found, "topology.queues[0].arguments.x-max-age", "only stream queues")


def test_reserved_exchange_name():
    data = base()
    data["topology"]["exchanges"][0]["name"] = "amq.logs"
    found = errors(data)
    assert has(found, "topology.exchanges[0].name", "reserved by the broker")


def test_bad_slug_and_level_and_minutes_reported_together():
    data = base()
    data.update(slug="Tiny Exercise", level="expert", minutes=0, version=2)
    found = errors(data)
    assert len(found) == 4
    assert has(found, "version", "unsupported format version 2")
    assert has(found, "slug", "lowercase letters, digits and hyphens")
    assert has(found, "level", "must be one of: beginner, intermediate, advanced")
    assert "minutes: must be an integer from 1 to 240 (got 0)" in found


def test_localized_text_needs_english():
    data = base()
    data["summary"] = {"ru": "Только по-русски"}
    data["description"] = "   "
    found = errors(data)
    assert "summary.en: required field is missing" in found
    assert "description.en: must not be empty" in found


def test_wrong_types_are_named():
    data = base()
    data["workloads"]["consumers"][0]["prefetch"] = "10"
    data["topology"]["queues"][0]["durable"] = "yes"
    found = errors(data)
    assert 'workloads.consumers[0].prefetch: must be an integer (got the string "10")' in found
    assert 'topology.queues[0].durable: must be true or false (got the string "yes")' in found


def test_rate_out_of_range():
    data = base()
    data["workloads"]["producers"][0]["rate"] = 0.1
    assert the_error(data) == (
        "workloads.producers[0].rate: must be a number from 0.2 to 10000 (got 0.1)"
    )


def test_routing_key_and_routing_keys_are_exclusive():
    data = base()
    data["workloads"]["producers"][0]["routing_keys"] = ["error", "info"]
    assert the_error(data) == (
        "workloads.producers[0].routing_keys: use either routing_key or routing_keys, not both"
    )


def test_routing_keys_take_weights():
    data = base()
    data["workloads"]["producers"][0].update(
        routing_key="", routing_keys=[{"key": "error", "weight": 3}, "info", {"key": 7}]
    )
    producer = validate_data(data).producer("app")
    assert producer.keys() == ["error", "info", "7"]
    assert producer.weights() == [3, 1, 1]


@pytest.mark.parametrize(
    ("item", "error"),
    [
        (
            {"key": "error", "weight": 0},
            "routing_keys[1].weight: must be an integer from 1 to 100 (got 0)",
        ),
        (
            {"key": "error", "weight": 101},
            "routing_keys[1].weight: must be an integer from 1 to 100 (got 101)",
        ),
        ({"weight": 3}, "routing_keys[1].key: required field is missing"),
        (
            {"key": "error", "weight": "3"},
            'routing_keys[1].weight: must be an integer (got the string "3")',
        ),
        (
            ["error"],
            "routing_keys[1]: must be a routing key, or a mapping with key and weight (got a list)",
        ),
    ],
)
def test_bad_routing_key_weight(item, error):
    data = base()
    data["workloads"]["producers"][0].update(routing_key="", routing_keys=["info", item])
    assert the_error(data) == f"workloads.producers[0].{error}"


def test_header_sets_are_checked_as_headers_are():
    data = base()
    data["workloads"]["producers"][0]["header_sets"] = [
        {"format": "pdf"},
        {"format": "csv", "tags": ["a"], "big": 2**63},
    ]
    found = errors(data)
    assert found == [
        "workloads.producers[0].header_sets[1].tags: must be a string, a number or true/false",
        f"workloads.producers[0].header_sets[1].big: must be an integer from {-(2**63)} to "
        f"{2**63 - 1}",
    ]
    data["workloads"]["producers"][0]["header_sets"] = [{"format": "pdf"}, {}]
    producer = validate_data(data).producer("app")
    assert producer.header_sets == [{"format": "pdf"}, {}]


def test_headers_and_header_sets_are_exclusive():
    data = base()
    data["workloads"]["producers"][0].update(
        headers={"format": "pdf"}, header_sets=[{"format": "csv"}]
    )
    assert the_error(data) == (
        "workloads.producers[0].header_sets: use either headers or header_sets, not both"
    )


CONSISTENT_HASH = {"name": "shards", "type": "x-consistent-hash"}


def test_plugins_name_the_plugin_of_an_exchange_type():
    data = base()
    data["topology"]["exchanges"].append(CONSISTENT_HASH)
    assert the_error(data) == (
        "topology.exchanges[1].type: x-consistent-hash exchanges come from the broker plugin "
        "rabbitmq_consistent_hash_exchange: name it in the exercise's plugins"
    )
    data["plugins"] = ["rabbitmq_consistent_hash_exchange"]
    assert validate_data(data).plugins == ["rabbitmq_consistent_hash_exchange"]


@pytest.mark.parametrize(
    ("plugins", "error"),
    [
        (
            ["consistent_hash_exchange"],
            "plugins[0]: must be the name of a RabbitMQ plugin: rabbitmq_ and lowercase "
            "letters and '_' (got the string \"consistent_hash_exchange\")",
        ),
        (
            ["rabbitmq_shovel", "rabbitmq-federation"],
            "plugins[1]: must be the name of a RabbitMQ plugin: rabbitmq_ and lowercase "
            "letters and '_' (got the string \"rabbitmq-federation\")",
        ),
        (
            ["rabbitmq_shovel", "rabbitmq_shovel"],
            "plugins[1]: 'rabbitmq_shovel' is listed twice",
        ),
        (
            [f"rabbitmq_{name}" for name in ("a", "b", "c", "d", "e")],
            "plugins: must have at most 4 items (got 5)",
        ),
        ("rabbitmq_shovel", 'plugins: must be a list (got the string "rabbitmq_shovel")'),
    ],
)
def test_bad_plugins(plugins, error):
    data = base()
    data["plugins"] = plugins
    assert the_error(data) == error


def test_bad_template_placeholder():
    data = base()
    data["workloads"]["producers"][0]["payload"] = '{"t": {temperature}}'
    message = the_error(data)
    assert message.startswith("workloads.producers[0].payload: unknown placeholder {temperature}")


def test_json_braces_in_template_are_text():
    data = base()
    data["workloads"]["producers"][0]["payload"] = '{"n": {n}, "nested": {"a": [1, {}]}}'
    assert validate_data(data).producer("app").payload.startswith('{"n"')


@pytest.mark.parametrize("placeholder", ["{random:5:1}", "{random:a:b}", "{choice:}", "{rand}"])
def test_malformed_placeholders(placeholder):
    data = base()
    data["workloads"]["producers"][0]["payload"] = f"x {placeholder} y"
    assert the_error(data).startswith("workloads.producers[0].payload: ")


def test_bad_header_value():
    data = base()
    data["workloads"]["producers"][0]["headers"] = {"format": "pdf", "tags": ["a"]}
    assert the_error(data) == (
        "workloads.producers[0].headers.tags: must be a string, a number or true/false"
    )


def test_auto_ack_consumer_cannot_fail():
    data = base()
    data["workloads"]["consumers"][0].update(ack="auto", behaviour={"fail": 0.5})
    assert the_error(data) == (
        "workloads.consumers[0].behaviour.fail: auto-ack consumers cannot fail or park messages"
    )


def test_park_after_needs_a_routing_key():
    data = base()
    data["workloads"]["consumers"][0]["behaviour"] = {"park_after": 3}
    assert the_error(data) == (
        "workloads.consumers[0].behaviour.park_routing_key: required when park_after is set"
    )


def test_fail_fraction_bounds():
    data = base()
    data["workloads"]["consumers"][0]["behaviour"] = {"fail": 1.5}
    assert the_error(data) == (
        "workloads.consumers[0].behaviour.fail: must be a number from 0 to 1 (got 1.5)"
    )


def test_unknown_check_type():
    data = base()
    data["steps"][0]["checkpoints"][0]["check"] = {"type": "queue_len", "queue": "errors"}
    message = the_error(data)
    assert message.startswith(
        "steps[0].checkpoints[0].check.type: unknown check type 'queue_len' (expected one of: "
    )


def test_check_without_type():
    data = base()
    data["steps"][0]["checkpoints"][0]["check"] = {"queue": "errors"}
    assert the_error(data).startswith(
        "steps[0].checkpoints[0].check.type: required field is missing"
    )


def test_queue_messages_needs_a_bound():
    data = base()
    data["steps"][0]["checkpoints"][0]["check"] = {"type": "queue_messages", "queue": "errors"}
    assert the_error(data) == "steps[0].checkpoints[0].check.min: give min, max or both"


def test_workload_setting_value_must_fit_the_field():
    data = base()
    data["steps"][0]["checkpoints"][0]["check"] = {
        "type": "workload_setting",
        "workload": "reader",
        "field": "prefetch",
        "equals": -1,
    }
    assert the_error(data) == (
        "steps[0].checkpoints[0].check.equals: prefetch must be an integer from 0 to 65535"
    )


def test_bad_step_id():
    data = base()
    data["steps"][0]["id"] = "Step One"
    assert the_error(data).startswith("steps[0].id: must be 1 to 63 characters")


def test_policy_pattern_and_definition():
    data = base()
    data["topology"]["policies"] = [
        {"name": "ttl", "pattern": "^(logs", "definition": {"message-ttl": "1s"}}
    ]
    found = errors(data)
    assert has(found, "topology.policies[0].pattern", "is not a valid regular expression")
    assert (
        "topology.policies[0].definition.message-ttl: must be an integer from 0 to 4294967295"
        in found
    )


def test_field_errors_are_all_reported_at_once():
    data = base()
    data["minutes"] = 500
    data["topology"]["queues"][0]["arguments"] = {"x-max-priority": 0}
    data["workloads"]["producers"][0]["rate"] = 0
    data["workloads"]["consumers"][0]["ack"] = "sometimes"
    data["steps"][0]["checkpoints"][0]["check"]["min"] = 0
    found = errors(data)
    assert len(found) == 5
    assert [e.split(":")[0] for e in found] == [
        "minutes",
        "topology.queues[0].arguments.x-max-priority",
        "workloads.producers[0].rate",
        "workloads.consumers[0].ack",
        "steps[0].checkpoints[0].check.min",
    ]


# -- cross-reference errors -------------------------------------------------------------


def test_binding_to_undeclared_queue():
    data = base()
    data["topology"]["bindings"].append({"source": "logs", "destination": "warnings"})
    assert the_error(data) == (
        "topology.bindings[2].destination: binding from 'logs' to 'warnings': 'warnings' is not "
        "a declared queue (declared queues: errors, infos)"
    )


def test_binding_from_undeclared_exchange():
    data = base()
    data["topology"]["bindings"][0]["source"] = "log"
    assert the_error(data).startswith(
        "topology.bindings[0].source: binding from 'log' to 'errors': 'log' is not a declared "
        "exchange"
    )


def test_binding_from_builtin_exchange_is_fine_but_default_is_not():
    data = base()
    data["topology"]["bindings"][0]["source"] = "amq.direct"
    validate_data(data)
    data["topology"]["bindings"][0]["source"] = ""
    assert the_error(data).startswith(
        "topology.bindings[0].source: binding from the default exchange to 'errors': the "
        "default exchange cannot be bound"
    )


def test_headers_binding_x_match():
    data = base()
    data["topology"]["exchanges"].append({"name": "reports", "type": "headers"})
    data["topology"]["bindings"].append(
        {
            "source": "reports",
            "destination": "infos",
            "arguments": {"x-match": "most", "format": "pdf"},
        }
    )
    assert the_error(data) == (
        "topology.bindings[2].arguments.x-match: must be one of: all, any, all-with-x, any-with-x"
    )


def test_dead_letter_exchange_must_be_declared():
    data = base()
    data["topology"]["queues"][0]["arguments"] = {"x-dead-letter-exchange": "dlx"}
    assert the_error(data).startswith(
        "topology.queues[0].arguments.x-dead-letter-exchange: 'dlx' is not a declared exchange"
    )
    data["topology"]["queues"][0]["arguments"] = {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "infos",
    }
    validate_data(data)


def test_alternate_exchange_must_be_declared():
    data = base()
    data["topology"]["exchanges"][0]["arguments"] = {"alternate-exchange": "unrouted"}
    assert the_error(data).startswith(
        "topology.exchanges[0].arguments.alternate-exchange: 'unrouted' is not a declared exchange"
    )


def test_producer_to_undeclared_exchange():
    data = base()
    data["workloads"]["producers"][0]["exchange"] = "log"
    assert the_error(data) == (
        "workloads.producers[0].exchange: 'log' is not a declared exchange "
        "(declared exchanges: logs)"
    )


def test_producer_on_default_exchange_needs_a_queue_name():
    data = base()
    data["workloads"]["producers"][0].update(exchange="", routing_key="error")
    assert the_error(data) == (
        "workloads.producers[0].routing_key: the default exchange routes by queue name; "
        "'error' is not a declared queue (declared queues: errors, infos)"
    )
    data["workloads"]["producers"][0].update(routing_key="", routing_keys=["errors", "warn"])
    assert the_error(data).startswith(
        "workloads.producers[0].routing_keys[1]: the default exchange routes by queue name; "
        "'warn' is not a declared queue"
    )


def test_producer_cannot_publish_to_internal_exchange():
    data = base()
    data["topology"]["exchanges"][0]["internal"] = True
    assert the_error(data).startswith(
        "workloads.producers[0].exchange: 'logs' is an internal exchange"
    )


def test_consumer_of_undeclared_queue():
    data = base()
    data["workloads"]["consumers"][0]["queue"] = "error"
    assert the_error(data).startswith(
        "workloads.consumers[0].queue: 'error' is not a declared queue"
    )


def test_park_on_default_exchange_needs_a_queue():
    data = base()
    data["workloads"]["consumers"][0]["behaviour"] = {
        "park_after": 2,
        "park_routing_key": "parking",
    }
    assert the_error(data).startswith(
        "workloads.consumers[0].behaviour.park_routing_key: with the default exchange"
    )
    data["workloads"]["consumers"][0]["behaviour"]["park_routing_key"] = "infos"
    validate_data(data)


def test_duplicate_names():
    data = base()
    data["topology"]["queues"].append({"name": "errors", "durable": False})
    data["topology"]["exchanges"].append({"name": "logs", "type": "fanout"})
    data["workloads"]["consumers"].append({"name": "app", "queue": "infos"})
    found = errors(data)
    assert (
        "topology.queues[2].name: duplicate queue name 'errors' "
        "(first at topology.queues[0].name)" in found
    )
    assert (
        "topology.exchanges[1].name: duplicate exchange name 'logs' "
        "(first at topology.exchanges[0].name)" in found
    )
    assert (
        "workloads.consumers[1].name: duplicate workload name 'app' "
        "(first at workloads.producers[0].name)" in found
    )


def test_duplicate_step_and_checkpoint_ids():
    data = base()
    step = copy.deepcopy(data["steps"][0])
    data["steps"].append(step)
    found = errors(data)
    assert found == [
        "steps[1].id: duplicate step id 'one' (first at steps[0].id)",
        (
            "steps[1].checkpoints[0].id: duplicate checkpoint id 'got-some' "
            "(first at steps[0].checkpoints[0].id)"
        ),
    ]


def test_checks_referencing_unknown_objects():
    data = base()
    data["steps"][0]["checkpoints"] = [
        {
            "id": "a",
            "description": "a",
            "check": {"type": "queue_messages", "queue": "x", "max": 0},
        },
        {"id": "b", "description": "b", "check": {"type": "acked", "workload": "app"}},
        {"id": "c", "description": "c", "check": {"type": "published", "workload": "ghost"}},
        {
            "id": "d",
            "description": "d",
            "check": {"type": "routed_only_to", "routing_key": "k", "queues": ["errors", "y"]},
        },
        {
            "id": "e",
            "description": "e",
            "check": {
                "type": "workload_setting",
                "workload": "app",
                "field": "prefetch",
                "equals": 1,
            },
        },
        {
            "id": "f",
            "description": "f",
            "check": {"type": "dead_lettered", "queue": "dlq", "reason": "rejected", "retries": 3},
        },
    ]
    data["topology_edits"] = False
    found = errors(data)
    p = "steps[0].checkpoints"
    assert has(found, f"{p}[0].check.queue", "'x' is not a declared queue")
    assert has(
        found, f"{p}[1].check.workload", "'app' is not a consumer (declared consumers: reader)"
    )
    assert has(found, f"{p}[2].check.workload", "'ghost' is not a declared producer")
    assert has(found, f"{p}[3].check.queues[1]", "'y' is not a declared queue")
    assert has(found, f"{p}[4].check.field", "producers have no setting 'prefetch'")
    assert has(found, f"{p}[5].check.queue", "'dlq' is not a declared queue")
    assert len(found) == 6
    # Where the learner may change the topology, the queues a message should reach may be
    # theirs, made at run time: routed_only_to's need not be declared.
    data["topology_edits"] = True
    found = errors(data)
    assert not [e for e in found if e.startswith(f"{p}[3]")], found
    assert len(found) == 5


def test_published_by_you_is_the_learner_not_a_producer():
    """`@you` names the learner's publishes from the page; other names must be producers."""
    data = base()
    data["steps"][0]["checkpoints"][0]["check"] = {"type": "published", "workload": "@you"}
    assert validate_data(data).steps[0].checkpoints[0].check.workload == "@you"
    data["steps"][0]["checkpoints"][0]["check"] = {"type": "published", "workload": "@me"}
    assert has(errors(data), "steps[0].checkpoints[0].check.workload", "'@me' is not")


def test_redelivered_and_delivered_share_name_consumers():
    data = base()
    data["steps"][0]["checkpoints"] = [
        {"id": "a", "description": "a", "check": {"type": "redelivered", "workload": "app"}},
        {
            "id": "c",
            "description": "c",
            "check": {"type": "overtook", "workload": "app", "max_others": 3},
        },
        {
            "id": "b",
            "description": "b",
            "check": {"type": "delivered_share", "workload": "reader", "among": ["reader", "x"]},
        },
    ]
    found = errors(data)
    p = "steps[0].checkpoints"
    assert has(found, f"{p}[0].check.workload", "'app' is not a consumer")
    assert has(found, f"{p}[2].check.among[1]", "'x' is not a declared consumer")
    assert has(found, f"{p}[1].check.workload", "'app' is not a consumer")
    assert len(found) == 3


def test_refused_needs_a_producer_with_confirms():
    data = base()
    data["steps"][0]["checkpoints"] = [
        {"id": "a", "description": "a", "check": {"type": "refused", "workload": "app"}},
        {"id": "b", "description": "b", "check": {"type": "refused", "workload": "reader"}},
        {"id": "c", "description": "c", "check": {"type": "queue_deleted", "queue": "gone"}},
    ]
    found = errors(data)
    p = "steps[0].checkpoints"
    assert has(found, f"{p}[0].check.workload", "'app' must publish with confirms: true")
    assert has(found, f"{p}[1].check.workload", "'reader' is not a producer")
    assert has(found, f"{p}[2].check.queue", "'gone' is not a declared queue")
    assert len(found) == 3
    data["workloads"]["producers"][0]["confirms"] = True
    del data["steps"][0]["checkpoints"][1:]
    assert validate_data(data).steps[0].checkpoints[0].check.type == "refused"


def test_faster_compares_two_declared_producers():
    data = base()
    data["workloads"]["producers"].append({"name": "tx", "routing_key": "errors"})
    checks = [
        {"type": "faster", "workload": "app", "than": "reader"},
        {"type": "faster", "workload": "nobody", "than": "tx"},
        {"type": "faster", "workload": "app", "than": "app"},
        {"type": "faster", "workload": "app", "than": "tx", "ratio": 3},
    ]
    data["steps"][0]["checkpoints"] = [
        {"id": f"c{i}", "description": "d", "check": c} for i, c in enumerate(checks)
    ]
    found = errors(data)
    p = "steps[0].checkpoints"
    assert has(found, f"{p}[0].check.than", "'reader' is not a producer")
    assert has(found, f"{p}[1].check.workload", "'nobody' is not a declared producer")
    assert has(found, f"{p}[2].check.than", "must name another producer than 'app'")
    assert len(found) == 3, found
    del data["steps"][0]["checkpoints"][:3]
    data["steps"][0]["checkpoints"][0]["check"]["ratio"] = 0.5
    assert the_error(data) == f"{p}[0].check.ratio: must be a number from 1 to 1000 (got 0.5)"
    data["steps"][0]["checkpoints"][0]["check"]["ratio"] = 3
    check = validate_data(data).steps[0].checkpoints[0].check
    assert (check.type, check.workload, check.than, check.ratio) == ("faster", "app", "tx", 3)


def test_returned_and_committed_need_a_producer_that_can_say_so():
    data = base()
    tx = {"name": "tx", "routing_key": "errors", "transactions": True}
    data["workloads"]["producers"].append(tx)
    checks = [
        {"type": "returned", "workload": "app"},
        {"type": "returned", "workload": "reader"},
        {"type": "committed", "workload": "app"},
        {"type": "committed", "workload": "@you"},
        {"type": "returned", "workload": "@you"},
        {"type": "committed", "workload": "tx"},
        {"type": "workload_setting", "workload": "reader", "field": "tx_batch", "equals": 5},
        {"type": "workload_setting", "workload": "tx", "field": "tx_batch", "equals": 100},
    ]
    data["steps"][0]["checkpoints"] = [
        {"id": f"c{i}", "description": "d", "check": c} for i, c in enumerate(checks)
    ]
    found = errors(data)
    p = "steps[0].checkpoints"
    assert has(found, f"{p}[0].check.workload", "'app' must publish with mandatory: true")
    assert has(found, f"{p}[1].check.workload", "'reader' is not a producer")
    assert has(found, f"{p}[2].check.workload", "'app' must publish with transactions: true")
    assert has(found, f"{p}[3].check.workload", "'@you' is not a declared producer")
    assert has(found, f"{p}[6].check.field", "consumers have no setting 'tx_batch'")
    assert len(found) == 5
    data["workloads"]["producers"][0]["mandatory"] = True
    kept = [cp for i, cp in enumerate(data["steps"][0]["checkpoints"]) if i in (0, 4, 5, 7)]
    data["steps"][0]["checkpoints"] = kept
    spec = validate_data(data)
    assert [cp.check.type for cp in spec.steps[0].checkpoints] == [
        "returned",
        "returned",
        "committed",
        "workload_setting",
    ]
    kept[3]["check"]["equals"] = 0
    assert the_error(data) == (
        "steps[0].checkpoints[3].check.equals: tx_batch must be an integer from 1 to 1000"
    )


def test_delivered_share_bounds():
    data = base()
    check = {
        "type": "delivered_share",
        "workload": "other",
        "among": ["reader", "reader"],
        "min_share": 0.8,
        "max_share": 0.5,
    }
    data["steps"][0]["checkpoints"][0]["check"] = check
    found = errors(data)
    p = "steps[0].checkpoints[0].check"
    assert has(found, f"{p}.among[1]", "'reader' is listed twice")
    assert has(found, f"{p}.workload", "must be one of among")
    assert has(found, f"{p}.max_share", "must not be less than min_share")


def test_binding_checks_need_not_be_declared():
    data = base()
    data["steps"][0]["checkpoints"][0]["check"] = {
        "type": "binding_exists",
        "source": "logs",
        "destination": "created-at-run-time",
        "routing_key": "warn",
    }
    spec = validate_data(data)
    assert spec.steps[0].checkpoints[0].check.routing_key == "warn"


def test_cross_reference_errors_are_all_reported_at_once():
    data = base()
    data["topology"]["bindings"][1]["destination"] = "info"
    data["workloads"]["producers"][0]["exchange"] = "log"
    data["workloads"]["consumers"][0]["queue"] = "error"
    data["steps"][0]["checkpoints"][0]["check"]["queue"] = "nowhere"
    found = errors(data)
    assert [e.split(":")[0] for e in found] == [
        "topology.bindings[1].destination",
        "workloads.producers[0].exchange",
        "workloads.consumers[0].queue",
        "steps[0].checkpoints[0].check.queue",
    ]


def test_spec_error_str_joins_messages():
    error = SpecError(["a: one", "b: two"])
    assert str(error) == "a: one\nb: two"
    assert error.errors == ["a: one", "b: two"]


# -- limits: what a document may cost --------------------------------------------------


def billion_laughs(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def refusal(text: str | bytes) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    return info.value.errors


def test_billion_laughs_is_refused_within_a_small_budget():
    """Nine levels of ten aliases (a billion strings, 54 s and 6 GB before the limits) are
    refused at the first alias past the budget, with little time and memory."""
    assert len(yaml.safe_load(billion_laughs(3))["a2"]) == 10  # the aliases do expand
    tracemalloc.start()
    started = time.perf_counter()
    try:
        found = refusal(billion_laughs(9))
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found == [
        "line 4, column 45: a3[7]: the document holds more than 10000 values, counting each "
        "alias as everything it repeats"
    ]
    assert seconds < 2.0
    assert peak < 8 * 1024 * 1024


def test_a_long_string_repeated_by_aliases_counts_its_text():
    text = f"a: &s {'x' * 20_000}\nb: [{', '.join(['*s'] * 60)}]\n"
    assert refusal(text) == [
        "line 2, column 209: b[51]: the document holds more than 1024 KiB of text, counting "
        "each alias as everything it repeats"
    ]


def test_merge_keys_count_what_they_repeat():
    lines = ["a0: &a0 {k0: lol, k1: lol, k2: lol, k3: lol, k4: lol}"]
    lines += [f"a{i}: &a{i} {{<<: [{', '.join([f'*a{i - 1}'] * 5)}]}}" for i in range(1, 9)]
    (message,) = refusal("\n".join(lines))
    assert "counting each alias as everything it repeats" in message


def test_an_alias_to_its_own_collection_is_refused():
    assert refusal("tags: &t [a, *t]\n") == [
        "line 1, column 14: tags[1]: the alias *t repeats a collection that contains it"
    ]


def test_anchors_aliases_and_merge_keys_still_work():
    text = BASE_YAML.replace(
        "  queues:\n    - {name: errors}\n    - {name: infos}\n",
        "  queues:\n    - &q {name: errors, durable: true}\n    - {<<: *q, name: infos}\n",
    )
    spec = parse_spec(text)
    assert [q.name for q in spec.topology.queues] == ["errors", "infos"]


@pytest.mark.parametrize("depth", [33, 490, 600, 5000])
@pytest.mark.parametrize(("opening", "closing"), [("[", "]"), ("{a: ", "}")])
def test_deep_nesting_is_refused_before_any_recursion(depth, opening, closing):
    """About 490 levels used to raise RecursionError; now any depth past the limit is a
    message naming where."""
    (message,) = refusal(f"tags: {opening * depth}1{closing * depth}\n")
    assert message.startswith("line 1, column ")
    assert message.endswith(": mappings and lists nest deeper than 32 levels")
    assert message.split(": ")[1].startswith("tags")


def test_nesting_up_to_the_limit_is_read():
    """The document is level 1 and `tags` level 2: 31 lists in `tags` make 32 levels, the
    limit, and are read (only their type is wrong); one more is refused."""
    at_limit = BASE_YAML + "tags: " + "[" * 31 + "x" + "]" * 31 + "\n"
    assert refusal(at_limit)[0].startswith("line 31, column 8: tags[0]: must be a string")
    (message,) = refusal(BASE_YAML + "tags: " + "[" * 32 + "x" + "]" * 32 + "\n")
    assert message.startswith("line 31, column 38: tags[0]")
    assert message.endswith("nest deeper than 32 levels")


def test_document_size_and_encoding():
    assert refusal(BASE_YAML + "# " + "x" * LIMITS.document_bytes) == [
        "(document): the document is larger than the limit of 128 KiB"
    ]
    # Counted in UTF-8 bytes: 70,000 Cyrillic letters are 140,000 bytes.
    assert refusal(BASE_YAML + "# " + "я" * 70_000) == [
        "(document): the document is larger than the limit of 128 KiB"
    ]
    assert refusal(BASE_YAML.encode("cp1251")) == [
        "line 5, column 36: (document): the document is not UTF-8 text: byte 0xca at offset 70"
    ]
    assert refusal(BASE_YAML + "\ud800") == [
        f"(document): the document is not UTF-8 text (at character {len(BASE_YAML)})"
    ]
    assert parse_spec(BASE_YAML.encode()).slug == "tiny"


def test_characters_yaml_does_not_allow_are_a_message():
    assert refusal("version: 1\nslug: ab\x00c\n") == [
        "line 2, column 9: (document): YAML does not allow the character #x0000"
    ]


def test_oversized_file_is_refused_without_reading_it_all(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text(BASE_YAML + "# " + "x" * (10 * LIMITS.document_bytes))
    with pytest.raises(SpecError) as info:
        load_spec_file(big)
    assert info.value.errors == [f"{big}: the document is larger than the limit of 128 KiB"]


def test_long_strings_and_numbers_are_refused_with_an_excerpt():
    (message,) = refusal(
        BASE_YAML.replace("description: Some *Markdown*.", "description: " + "d" * 30_000)
    )
    assert message == (
        "line 6, column 14: description: a string of 30000 characters; the limit is 20000 "
        f"({'d' * 60}… (30000 characters))"
    )
    (message,) = refusal(BASE_YAML.replace("minutes: 5", "minutes: " + "9" * 5000))
    assert message == (
        f"line 8, column 10: minutes: a number of 5000 characters; at most 32 are read "
        f"({'9' * 20}… (5000 characters))"
    )


def test_a_value_yaml_cannot_build_is_a_message():
    """PyYAML lets a ValueError through for an impossible date; it is a message here."""
    (message,) = refusal(BASE_YAML.replace("minutes: 5", "minutes: 2024-13-45"))
    assert message.startswith("line 8, column 10: (document): YAML syntax error: cannot read")
    assert "month must be in 1..12" in message


def test_version_is_a_strict_integer():
    for value, got in [(1.0, "the number 1.0"), (True, "true"), ("1", 'the string "1"')]:
        data = base()
        data["version"] = value
        assert the_error(data) == f"version: must be an integer (got {got})"
    data = base()
    data["version"] = 2
    assert the_error(data) == "version: unsupported format version 2; this console reads version 1"


@pytest.mark.parametrize(
    ("key", "size"), [("k" * 255, 255), ("é" * 127, 254), ("k" * 256, 256), ("é" * 128, 256)]
)
def test_routing_keys_are_at_most_255_utf8_bytes(key, size):
    data = base()
    data["topology"]["bindings"][0]["routing_key"] = key
    data["workloads"]["producers"][0]["routing_key"] = key
    if size <= 255:
        assert validate_data(data).topology.bindings[0].routing_key == key
        return
    found = errors(data)
    message = f"must be at most 255 bytes in UTF-8 (got {size} bytes)"
    assert f"topology.bindings[0].routing_key: {message}" in found
    assert f"workloads.producers[0].routing_key: {message}" in found


def test_names_and_amqp_short_strings_are_at_most_255_bytes():
    data = base()
    data["topology"]["queues"][0]["name"] = "я" * 128
    data["topology"]["queues"][1]["arguments"] = {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": "r" * 300,
    }
    data["workloads"]["consumers"][0]["queue"] = "q" * 256
    data["workloads"]["producers"][0]["headers"] = {"h" * 300: 1}
    found = errors(data)
    assert (
        f'workloads.producers[0].headers["{"h" * 40}… (300 characters)"]: must be at most 255 '
        "bytes in UTF-8 (got 300 bytes)" in found
    )
    assert "topology.queues[0].name: must be at most 255 bytes in UTF-8 (got 256 bytes)" in found
    assert (
        "topology.queues[1].arguments.x-dead-letter-routing-key: must be at most 255 bytes in "
        "UTF-8 (got 300 bytes)" in found
    )
    assert (
        "workloads.consumers[0].queue: must be at most 255 bytes in UTF-8 (got 256 bytes)" in found
    )


def test_lists_are_bounded():
    data = base()
    data["topology"]["queues"] = [{"name": f"q{i}"} for i in range(LIMITS.queues + 1)]
    data["tags"] = ["t"] * (LIMITS.items + 1)
    found = errors(data)
    assert "topology.queues: must have at most 64 items (got 65)" in found
    assert "tags: must have at most 64 items (got 65)" in found


def test_numbers_the_broker_keeps_in_32_or_64_bits_are_bounded():
    data = base()
    data["topology"]["queues"][0]["arguments"] = {"x-message-ttl": 2**32, "x-max-length": 2**63}
    data["workloads"]["producers"][0]["headers"] = {"big": 2**63}
    data["workloads"]["producers"][0]["properties"] = {"expiration": 2**32}
    found = errors(data)
    assert has(found, "topology.queues[0].arguments.x-message-ttl", "from 0 to 4294967295")
    assert has(found, "topology.queues[0].arguments.x-max-length", f"from 0 to {2**63 - 1}")
    assert has(found, "workloads.producers[0].headers.big", f"to {2**63 - 1}")
    assert has(found, "workloads.producers[0].properties.expiration", "from 0 to 4294967295")


def test_messages_quote_only_an_excerpt():
    """A 15,000-character slug (under the string limit) is named by its start and its
    length, and a cross-reference to a long name is cut short too."""
    data = base()
    data["slug"] = "s" * 15_000
    data["workloads"]["producers"][0]["exchange"] = "e" * 200
    found = errors(data)
    assert has(found, "slug", f'a string of 15000 characters starting "{"s" * 60}"…')
    assert all(len(e) < 400 for e in found), found
    data = base()
    data["workloads"]["consumers"][0]["queue"] = "q" * 200
    (message,) = errors(data)
    assert message == (
        f"workloads.consumers[0].queue: '{'q' * 60}… (200 characters)' is not a declared queue "
        "(declared queues: errors, infos)"
    )


def test_many_problems_are_reported_up_to_a_limit():
    data = base()
    data["topology"]["bindings"] = [
        {"source": "logs", "destination": f"nowhere-{i}"} for i in range(LIMITS.bindings)
    ]
    found = errors(data)
    assert len(found) == LIMITS.errors
    assert found[-1] == f"(document): and {LIMITS.bindings - LIMITS.errors + 1} more problems"


def test_a_parsed_spec_is_frozen_and_remembered_by_its_text():
    spec = parse_spec_cached(BASE_YAML, source="tiny")
    assert parse_spec_cached(BASE_YAML, source="tiny") is spec
    assert parse_spec_cached(BASE_YAML + "\n", source="tiny") is not spec
    with pytest.raises(ValidationError):
        spec.slug = "other"
    with pytest.raises(SpecError) as info:
        parse_spec_cached("version: [1", source="broken")
    assert info.value.errors[0].startswith("line 1, column 12: broken: YAML syntax error")
