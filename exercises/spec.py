"""The exercise format: one versioned YAML document per exercise.

An exercise declares a RabbitMQ topology (exchanges, queues, bindings, policies), the
workloads that run against it (producers and consumers with their behaviour) and the steps
a learner follows, each with checkpoints that the console evaluates automatically.

Public API:

- `parse_spec(text, source=...)`: YAML text (or UTF-8 bytes) to a validated `ExerciseSpec`.
- `parse_spec_cached(text, source=...)`: the same, kept in memory for stored documents.
- `load_spec_file(path)`: the same for a file.
- `validate_data(data)`: an already parsed mapping to a validated `ExerciseSpec`.

Every problem is reported at once in one `SpecError`, each message as
`path: message` where the path is dotted with `[i]` for list items, for example
`topology.queues[2].arguments.x-max-priority: must be an integer from 1 to 255`. A problem
in YAML text also says where in it, from the document's node tree:
`line 12, column 7: topology.queues[2]...` (`SpecError.problems` keep the four apart).
A message quotes at most a short excerpt of a value. The YAML is read within the limits of
`exercises.limits` (`exercises.safe_yaml`), before anything is built from it.
The format is described for authors in `docs/exercise-format.md`.
"""

import functools
import json
import re
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from labconsole.flow.alerts import METRICS as ALERT_METRICS
from labconsole.flow.alerts import AlertRule
from labconsole.workloads.payload import compile_template

from .limits import LIMITS, excerpt, format_path
from .safe_yaml import DocumentRefused, Problem, read_document

__all__ = [
    "BUILTIN_EXCHANGES",
    "CHECK_TYPES",
    "AckedCheck",
    "Behaviour",
    "Binding",
    "BindingAbsentCheck",
    "BindingExistsCheck",
    "Check",
    "Checkpoint",
    "Consumer",
    "DeadLetteredCheck",
    "DeliveredCheck",
    "Exchange",
    "ExerciseSpec",
    "LocalizedText",
    "MessageProperties",
    "Policy",
    "Producer",
    "Problem",
    "PublishedCheck",
    "Queue",
    "QueueMessagesCheck",
    "RoutedOnlyToCheck",
    "SpecError",
    "Step",
    "Topology",
    "WeightedKey",
    "WorkloadSettingCheck",
    "Workloads",
    "load_spec_file",
    "parse_spec",
    "parse_spec_cached",
    "spec_cache_clear",
    "spec_with_topology_cached",
    "validate_data",
]


class SpecError(Exception):
    """An exercise document is not valid. `problems` holds every problem (path, message,
    and the line and column when the YAML text is known), at most `LIMITS.errors` of them
    (the last one then says how many more there were); `errors` the same as text,
    "line 12, column 7: path: message", or "path: message" without a place."""

    def __init__(self, errors: Iterable[str | Problem]):
        found = [e if isinstance(e, Problem) else Problem.from_text(e) for e in errors]
        if len(found) > LIMITS.errors:
            more = len(found) - LIMITS.errors + 1
            more_problems = _("and {count} more problems").format(count=more)
            found = [*found[: LIMITS.errors - 1], Problem("(document)", more_problems)]
        self.problems: list[Problem] = found
        super().__init__(self.__str__())

    @property
    def errors(self) -> list[str]:
        return [str(p) for p in self.problems]

    def __str__(self) -> str:
        return "\n".join(self.errors)


# --------------------------------------------------------------------------------------
# Shared vocabulary

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"
WORKLOAD_NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
ID_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
PLUGIN_PATTERN = r"^rabbitmq_[a-z_]+$"

_PATTERN_MESSAGES = {
    SLUG_PATTERN: gettext_noop(
        "must be 2 to 63 characters of lowercase letters, digits and hyphens, "
        "starting with a letter or digit"
    ),
    WORKLOAD_NAME_PATTERN: gettext_noop(
        "must be 1 to 63 characters of lowercase letters, digits, '_', '.' and '-', "
        "starting with a letter or digit"
    ),
    ID_PATTERN: gettext_noop(
        "must be 1 to 63 characters of lowercase letters, digits and hyphens, "
        "starting with a letter or digit"
    ),
    PLUGIN_PATTERN: gettext_noop(
        "must be the name of a RabbitMQ plugin: rabbitmq_ and lowercase letters and '_'"
    ),
}

#: Exchanges every virtual host has, with their types. They may be used as binding
#: sources and as the exchange a producer publishes to, but not declared.
BUILTIN_EXCHANGES: dict[str, str] = {
    "amq.direct": "direct",
    "amq.fanout": "fanout",
    "amq.topic": "topic",
    "amq.headers": "headers",
    "amq.match": "headers",
}

X_MATCH_VALUES = ("all", "any", "all-with-x", "any-with-x")

#: Exchange types that come from a broker plugin: an exercise declaring one names the
#: plugin in its `plugins`.
EXCHANGE_TYPE_PLUGINS: dict[str, str] = {
    "x-consistent-hash": "rabbitmq_consistent_hash_exchange",
}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _names(values: Iterable[Any], *, limit: int = 20) -> str:
    """A list of names for a message: the first `limit`, each cut short."""
    values = list(values)
    shown = ", ".join(excerpt(v, limit=40) for v in values[:limit])
    if len(values) > limit:
        shown += " " + _("and {count} more").format(count=len(values) - limit)
    return shown or _("none")


def _declared(values: Iterable[Any]) -> str:
    """The names a document declared, for a message: the first ten."""
    return _names(values, limit=10)


def _q(value: Any) -> str:
    """A value quoted in a message: at most an excerpt of it."""
    return f"'{excerpt(value)}'"


def _got(value: str) -> str:
    """What a message says it was given: " (got the number 5)"."""
    return " " + _("(got {value})").format(value=value)


def _one_of(values: Iterable[Any]) -> str:
    return _("must be one of: {names}").format(names=_names(values))


def _integer(least: Any, greatest: Any) -> str:
    return _("must be an integer from {least} to {greatest}").format(least=least, greatest=greatest)


def _milliseconds(least: int, greatest: int) -> str:
    return _("must be an integer number of milliseconds from {least} to {greatest}").format(
        least=least, greatest=greatest
    )


def _not_declared_queue(name: str, queues: Iterable[str]) -> str:
    problem = _("{name} is not a declared queue (declared queues: {names})")
    return problem.format(name=_q(name), names=_declared(queues))


def _not_declared_exchange(name: str, exchanges: Iterable[str]) -> str:
    problem = _("{name} is not a declared exchange (declared exchanges: {names})")
    return problem.format(name=_q(name), names=_declared(exchanges))


def _shortstr_problem(value: str) -> str | None:
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > LIMITS.shortstr_bytes:
        return _("must be at most {limit} bytes in UTF-8 (got {size} bytes)").format(
            limit=LIMITS.shortstr_bytes, size=size
        )
    return None


def _shortstr(value: str) -> str:
    """AMQP sends names and routing keys as short strings: 255 bytes at most."""
    problem = _shortstr_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _number_to_str(value: Any) -> Any:
    """YAML reads `routing_key: 2` as a number; routing keys are text."""
    if _is_number(value):
        return str(value)
    return value


RoutingKey = Annotated[str, BeforeValidator(_number_to_str), AfterValidator(_shortstr)]
#: The name of an exchange or a queue where one is referred to (declared ones are
#: checked further by their models).
Name = Annotated[str, AfterValidator(_shortstr)]


def _spec_items(items: list[tuple[tuple[str | int, ...], str]]) -> PydanticCustomError:
    """Several problems found by one validator, each with a path relative to its model."""
    return PydanticCustomError("spec_items", "{summary}", {"summary": "invalid", "items": items})


class _Model(BaseModel):
    # Frozen: one parsed spec is shared by every page that shows the exercise.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        frozen=True,
        str_max_length=LIMITS.text_chars,
    )


def _items(limit: int) -> Any:
    return Field(default_factory=list, max_length=limit)


def _mapping() -> Any:
    return Field(default_factory=dict, max_length=LIMITS.items)


# --------------------------------------------------------------------------------------
# Text


def language_codes() -> list[str]:
    """The codes of the languages the console speaks (settings.LANGUAGES), in its order."""
    from django.conf import settings

    return [code.lower() for code, _name in settings.LANGUAGES]


class LocalizedText(_Model):
    """Text in English (required) and optionally in any other language of
    settings.LANGUAGES, by its code (`ru`, `de`, `pt-br`). A plain string means English.
    The other languages' texts are the model's extra fields: `text.ru`, or `text.get("ru")`
    with the fallback to English."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, str | None]

    en: str

    @model_validator(mode="before")
    @classmethod
    def _plain_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"en": value}
        if isinstance(value, dict):
            known = language_codes()
            unknown = [k for k in value if k != "en" and (not isinstance(k, str) or k not in known)]
            if unknown:
                message = _("unknown language {code} (the languages are: {names})")
                names = _names(["en", *(c for c in known if c != "en")])
                raise _spec_items(
                    [((str(k),), message.format(code=_q(k), names=names)) for k in unknown]
                )
        return value

    @field_validator("en")
    @classmethod
    def _en_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError(_("must not be empty"))
        return value

    def __getattr__(self, name: str) -> Any:
        # A language of settings.LANGUAGES this text has nothing in reads as None.
        try:
            return super().__getattr__(name)
        except AttributeError:
            if not name.startswith("_") and name in language_codes():
                return None
            raise

    def get(self, lang: str) -> str:
        """The text in `lang` ("ru", "ru-RU", "pt-br", "en", ...): that language's, else its
        base language's ("pt" for "pt-br"), else English."""
        code = (lang or "en").lower().replace("_", "-")
        extra = self.__pydantic_extra__ or {}
        for candidate in (code, code.split("-")[0]):
            text = extra.get(candidate)
            if text and text.strip():
                return text
        return self.en

    def __str__(self) -> str:
        return self.en


# --------------------------------------------------------------------------------------
# Topology


def _check_object_name(value: str) -> str:
    if not value:
        raise ValueError(_("must not be empty"))
    if value.startswith("amq."):
        raise ValueError(_("names starting with 'amq.' are reserved by the broker"))
    return _shortstr(value)


EXCHANGE_ARGUMENTS = ("alternate-exchange", "hash-header", "hash-property")
HASH_PROPERTIES = ("message_id", "correlation_id", "timestamp")


class Exchange(_Model):
    name: str
    type: Literal["direct", "fanout", "topic", "headers", "x-consistent-hash"]
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = _mapping()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_object_name(value)

    @model_validator(mode="after")
    def _arguments(self) -> "Exchange":
        items = []
        for key, value in self.arguments.items():
            path = ("arguments", key)
            if key == "alternate-exchange":
                if not isinstance(value, str) or not value:
                    items.append((path, _("must be the name of a declared exchange")))
                elif problem := _shortstr_problem(value):
                    items.append((path, problem))
            elif key in ("hash-header", "hash-property"):
                if self.type != "x-consistent-hash":
                    items.append((path, _("only x-consistent-hash exchanges take this argument")))
                elif key == "hash-header" and (not isinstance(value, str) or not value):
                    items.append((path, _("must be a header name")))
                elif key == "hash-header" and (problem := _shortstr_problem(value)):
                    items.append((path, problem))
                elif key == "hash-property" and value not in HASH_PROPERTIES:
                    items.append((path, _one_of(HASH_PROPERTIES)))
                elif key == "hash-property" and "hash-header" in self.arguments:
                    items.append((path, _("use either hash-header or hash-property, not both")))
            else:
                unknown = _("unknown exchange argument (expected one of: {names})")
                items.append((path, unknown.format(names=_names(EXCHANGE_ARGUMENTS))))
        if items:
            raise _spec_items(items)
        return self


QUEUE_ARGUMENTS = (
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-overflow",
    "x-max-priority",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-delivery-limit",
    "x-max-age",
    "x-stream-max-segment-size-bytes",
    "x-single-active-consumer",
    "x-queue-mode",
)
OVERFLOW_VALUES = ("drop-head", "reject-publish", "reject-publish-dlx")
QUEUE_MODES = ("default", "lazy")
MAX_AGE_RE = re.compile(r"^\d+(Y|M|D|h|m|s)$")
#: Arguments a stream does not accept (streams keep messages by retention, never drop or
#: dead-letter them).
STREAM_FORBIDDEN = (
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-overflow",
    "x-max-priority",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-queue-mode",
)


def _queue_argument_problem(key: str, value: Any, queue_type: str) -> str | None:
    """What is wrong with one queue argument, or None."""
    if key == "x-queue-type":
        return _("not allowed in arguments: use the queue's type field")
    if key not in QUEUE_ARGUMENTS:
        if key.startswith("x-"):
            unknown = _("unknown queue argument (expected one of: {names})")
        else:
            unknown = _("queue arguments start with 'x-' (expected one of: {names})")
        return unknown.format(names=_names(QUEUE_ARGUMENTS))

    if queue_type == "stream" and key in STREAM_FORBIDDEN:
        return _("stream queues do not support this argument")
    if key in ("x-delivery-limit",) and queue_type != "quorum":
        only = _("only quorum queues support a delivery limit (this queue is {type})")
        return only.format(type=queue_type)
    if key in ("x-max-age", "x-stream-max-segment-size-bytes") and queue_type != "stream":
        only = _("only stream queues support this argument (this queue is {type})")
        return only.format(type=queue_type)
    if key in ("x-max-priority", "x-queue-mode") and queue_type != "classic":
        only = _("only classic queues support this argument (this queue is {type})")
        return only.format(type=queue_type)

    ms, int64 = LIMITS.milliseconds, LIMITS.int64
    if key == "x-message-ttl":
        if not (_is_int(value) and 0 <= value <= ms):
            return _milliseconds(0, ms)
    elif key == "x-expires":
        if not (_is_int(value) and 1 <= value <= ms):
            return _milliseconds(1, ms)
    elif key in ("x-max-length", "x-max-length-bytes", "x-delivery-limit"):
        if not (_is_int(value) and 0 <= value <= int64):
            return _integer(0, int64)
    elif key == "x-stream-max-segment-size-bytes":
        if not (_is_int(value) and 1 <= value <= int64):
            return _("must be an integer number of bytes from {least} to {greatest}").format(
                least=1, greatest=int64
            )
    elif key == "x-overflow":
        if value not in OVERFLOW_VALUES:
            return _one_of(OVERFLOW_VALUES)
        if queue_type == "quorum" and value == "reject-publish-dlx":
            return _("quorum queues support only drop-head and reject-publish")
    elif key == "x-max-priority":
        if not (_is_int(value) and 1 <= value <= 255):
            return _integer(1, 255)
    elif key == "x-dead-letter-exchange":
        if not isinstance(value, str):
            return _('must be the name of a declared exchange, or "" for the default exchange')
        return _shortstr_problem(value)
    elif key == "x-dead-letter-routing-key":
        if not isinstance(value, str):
            return _("must be a string")
        return _shortstr_problem(value)
    elif key == "x-max-age":
        if not (isinstance(value, str) and MAX_AGE_RE.match(value)):
            return _('must be a number followed by a unit Y, M, D, h, m or s, like "7D" or "1h"')
    elif key == "x-single-active-consumer":
        if not isinstance(value, bool):
            return _("must be true or false")
    elif key == "x-queue-mode" and value not in QUEUE_MODES:
        return _one_of(QUEUE_MODES)
    return None


class Queue(_Model):
    name: str
    type: Literal["classic", "quorum", "stream"] = "classic"
    durable: bool = True
    auto_delete: bool = False
    arguments: dict[str, Any] = _mapping()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _check_object_name(value)

    @model_validator(mode="after")
    def _rules(self) -> "Queue":
        items: list[tuple[tuple[str | int, ...], str]] = []
        if self.type in ("quorum", "stream"):
            if not self.durable:
                must = _("{type} queues must be durable").format(type=self.type)
                items.append((("durable",), must))
            if self.auto_delete:
                cannot = _("{type} queues cannot be auto-delete").format(type=self.type)
                items.append((("auto_delete",), cannot))
        for key, value in self.arguments.items():
            problem = _queue_argument_problem(key, value, self.type)
            if problem:
                items.append((("arguments", key), problem))
        if (
            "x-dead-letter-routing-key" in self.arguments
            and "x-dead-letter-exchange" not in self.arguments
            and self.type != "stream"
        ):
            items.append(
                (
                    ("arguments", "x-dead-letter-routing-key"),
                    _("needs x-dead-letter-exchange as well"),
                )
            )
        if items:
            raise _spec_items(items)
        return self


class Binding(_Model):
    source: Name
    destination: Name
    destination_type: Literal["queue", "exchange"] = "queue"
    routing_key: RoutingKey = ""
    arguments: dict[str, Any] = _mapping()

    @field_validator("destination")
    @classmethod
    def _destination(cls, value: str) -> str:
        if not value:
            raise ValueError(_("must not be empty"))
        return value


#: Integer keys of a policy's definition: (least, greatest).
POLICY_INT_KEYS = {
    "message-ttl": (0, LIMITS.milliseconds),
    "max-length": (0, LIMITS.int64),
    "max-length-bytes": (0, LIMITS.int64),
    "delivery-limit": (0, LIMITS.int64),
    "expires": (1, LIMITS.milliseconds),
}


class Policy(_Model):
    name: str
    pattern: str
    apply_to: Literal["queues", "exchanges", "all"] = "queues"
    priority: int = 0
    definition: dict[str, Any] = Field(max_length=LIMITS.items)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value:
            raise ValueError(_("must not be empty"))
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(
                _("is not a valid regular expression: {error}").format(error=exc)
            ) from None
        return value

    @field_validator("definition")
    @classmethod
    def _definition(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError(_("must set at least one key, like message-ttl or max-length"))
        items = []
        for key, (least, greatest) in POLICY_INT_KEYS.items():
            if key in value and not (_is_int(value[key]) and least <= value[key] <= greatest):
                items.append(((key,), _integer(least, greatest)))
        if items:
            raise _spec_items(items)
        return value


class Topology(_Model):
    exchanges: list[Exchange] = _items(LIMITS.exchanges)
    queues: list[Queue] = _items(LIMITS.queues)
    bindings: list[Binding] = _items(LIMITS.bindings)
    policies: list[Policy] = _items(LIMITS.policies)


# --------------------------------------------------------------------------------------
# Workloads

WorkloadName = Annotated[str, Field(pattern=WORKLOAD_NAME_PATTERN)]
HeaderValue = str | int | float | bool


class MessageProperties(_Model):
    persistent: bool = False
    priority: int | None = Field(default=None, ge=0, le=255)
    expiration: int | None = Field(default=None, ge=0, le=LIMITS.milliseconds)
    content_type: str = "application/json"
    message_id: Literal["uuid", "sequence"] = "uuid"


DEFAULT_PAYLOAD = '{"n": {n}}'
RATE_MIN, RATE_MAX = 0.2, 10000  # a producer's messages per second
# A transactional producer commits after this many publishes (tx.commit); AMQP has no
# bound, this one keeps uncommitted messages few.
TX_BATCH_MAX = 1000
# What a producer's ledger needs.
LEDGER_NEEDS = (
    "the ledger needs confirms: true and properties.message_id: sequence (it follows each "
    "message by its number, from the broker's confirm to a consumer)"
)
# A channel in confirm mode refuses tx.select, and the other way round (406).
CONFIRMS_OR_TRANSACTIONS = (
    "a channel uses publisher confirms or transactions, not both: turn one of them off"
)


def _headers(value: Any) -> Any:
    """A producer's message headers: strings, numbers (64-bit integers) or true/false."""
    if isinstance(value, dict):
        items = [
            ((key,), "must be a string, a number or true/false")
            for key, item in value.items()
            if not isinstance(item, str | int | float | bool)
        ] + [
            ((key,), f"must be an integer from {-LIMITS.int64 - 1} to {LIMITS.int64}")
            for key, item in value.items()
            if _is_int(item) and not -LIMITS.int64 - 1 <= item <= LIMITS.int64
        ]
        if items:
            raise _spec_items(items)
    return value


Headers = Annotated[
    dict[Name, HeaderValue], BeforeValidator(_headers), Field(max_length=LIMITS.items)
]


class WeightedKey(_Model):
    """One of a producer's `routing_keys`: a key and its share of the messages. A plain key
    in the document is this with weight 1."""

    key: RoutingKey
    weight: int = Field(default=1, ge=1, le=100)

    @model_validator(mode="before")
    @classmethod
    def _plain_key(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return value
        if isinstance(value, str) or _is_number(value):
            key = _number_to_str(value)
            if problem := _shortstr_problem(key):
                raise _spec_items([((), problem)])
            return {"key": key}
        what = _("must be a routing key, or a mapping with key and weight")
        raise _spec_items([((), what + _got(_describe(value)))])


class Producer(_Model):
    name: WorkloadName
    exchange: Name = ""
    routing_key: RoutingKey = ""
    #: Published in a fixed order that gives each key its weight's share (`key_order`).
    routing_keys: list[WeightedKey] = _items(LIMITS.items)
    headers: Headers = _mapping()
    #: The headers of each message, taken in turn, instead of `headers`.
    header_sets: list[Headers] = _items(LIMITS.items)
    rate: float = Field(default=1.0, ge=RATE_MIN, le=RATE_MAX)
    count: int | None = Field(default=None, ge=1, le=LIMITS.int64)
    duration: float | None = Field(default=None, gt=0)
    payload: str = DEFAULT_PAYLOAD
    properties: MessageProperties = Field(default_factory=MessageProperties)
    mandatory: bool = False
    confirms: bool = False
    #: The delivery ledger (labconsole/workloads/ledger.py): the page shows what of this
    #: producer's confirmed messages the consumers received, and what is missing.
    ledger: bool = False
    transactions: bool = False
    tx_batch: int = Field(default=1, ge=1, le=TX_BATCH_MAX)
    #: RPC: each message is a request whose replies go to this queue (through the default
    #: exchange); the producer sets `reply_to` and a `correlation_id` on every message.
    reply_to: Name | None = None
    #: Publish as this one of the exercise's `users` (with its permissions), not as the
    #: lab's own user.
    user: str | None = None
    autostart: bool = True

    @field_validator("payload")
    @classmethod
    def _payload(cls, value: str) -> str:
        try:
            compile_template(value)
        except ValueError as exc:  # a TemplateError, or int() refusing thousands of digits
            raise _spec_items([((), excerpt(str(exc), limit=200))]) from None
        return value

    @model_validator(mode="after")
    def _tx(self) -> "Producer":
        if self.confirms and self.transactions:
            raise _spec_items([(("transactions",), CONFIRMS_OR_TRANSACTIONS)])
        return self

    @model_validator(mode="after")
    def _ledger(self) -> "Producer":
        if self.ledger and not (self.confirms and self.properties.message_id == "sequence"):
            raise _spec_items([(("ledger",), LEDGER_NEEDS)])
        return self

    @model_validator(mode="after")
    def _keys(self) -> "Producer":
        if self.routing_key and self.routing_keys:
            raise _spec_items(
                [
                    (
                        ("routing_keys",),
                        "use either routing_key or routing_keys, not both",
                    )
                ]
            )
        return self

    @model_validator(mode="after")
    def _header_sets(self) -> "Producer":
        if self.headers and self.header_sets:
            both = _("use either headers or header_sets, not both")
            raise _spec_items([(("header_sets",), both)])
        return self

    def keys(self) -> list[str]:
        """The routing keys this producer publishes with, as declared (each once)."""
        return [k.key for k in self.routing_keys] or [self.routing_key]

    def weights(self) -> list[int]:
        """The weight of each of `keys()`."""
        return [k.weight for k in self.routing_keys] or [1]


POISON_MAX = 200  # characters of a behaviour's `poison` text


class Emit(_Model):
    """A message a consumer publishes of its own: to `exchange` (the default one if
    empty) with `routing_key`."""

    exchange: Name = ""
    routing_key: RoutingKey


class Behaviour(_Model):
    """What a consumer does with each delivery.

    A delivery is processed for `processing_ms`, then acked, or, for a fraction `fail` of
    deliveries, rejected (`on_fail: reject`) or nacked (`on_fail: nack`) with the `requeue`
    flag. With `crash_after`, the consumer drops its connection abruptly after that many
    deliveries, leaving unacked messages to be redelivered.

    Parking (the retry pattern): `count` is the highest `count` among the delivery's
    `x-death` entries whose `queue` is this consumer's queue (0 without `x-death`). When
    `count >= park_after`, the consumer publishes the message unchanged (body, properties
    and headers, `x-death` included) to `park_exchange` with `park_routing_key` and acks
    it, instead of processing it.

    With `reply`, every delivery it acknowledges is answered (RPC): a message to the
    default exchange with the request's `reply_to` as routing key and its `correlation_id`.
    A delivery whose body contains `poison` always fails, as a fraction `fail` would.

    With `forward`, every delivery it acknowledges is passed on, as the next service of a
    pipeline publishes an event of its own: the same body, published to
    `forward.exchange` with `forward.routing_key`, with the delivery's `correlation_id`
    (its `message_id` if it has none), so that a saga's messages share one. With
    `compensate`, a delivery that fails is not rejected: a compensating event (the same
    body, with the correlation id) is published to `compensate.exchange` with
    `compensate.routing_key`, and the delivery is acknowledged, as a saga's step that
    failed announces it for the others to undo theirs.
    """

    processing_ms: int = Field(default=0, ge=0, le=600000)
    fail: float = Field(default=0.0, ge=0, le=1)
    on_fail: Literal["reject", "nack"] = "reject"
    requeue: bool = False
    crash_after: int | None = Field(default=None, ge=1, le=LIMITS.int64)
    park_after: int | None = Field(default=None, ge=1, le=LIMITS.int64)
    park_exchange: Name = ""
    park_routing_key: RoutingKey = ""
    #: RPC: answer each request it acknowledges on the default exchange, to the request's
    #: `reply_to`, with its `correlation_id`.
    reply: bool = False
    #: A delivery whose body contains this text always fails (a poison message).
    poison: str | None = Field(default=None, min_length=1, max_length=POISON_MAX)
    #: Each delivery it acknowledges is published on, here (a pipeline's next step).
    forward: Emit | None = None
    #: A delivery that fails is answered with a compensating event published here, and
    #: acknowledged instead of rejected (a saga).
    compensate: Emit | None = None

    @model_validator(mode="after")
    def _park(self) -> "Behaviour":
        if self.park_after is not None and not self.park_routing_key:
            raise _spec_items([(("park_routing_key",), "required when park_after is set")])
        return self


# basic.qos prefetch_count is a short: 0 means no limit (the broker sends all it has), which
# an exercise may want to show. https://www.rabbitmq.com/docs/consumer-prefetch
PREFETCH_MIN, PREFETCH_MAX = 0, 65535


STREAM_OFFSETS = ("first", "last", "next")
STREAM_INTERVAL_RE = re.compile(r"^\d{1,9}(Y|M|D|h|m|s)$")


def _stream_offset(value: Any) -> Any:
    """first, last, next; an offset (an integer from 0); an interval back from now ("10m");
    or an ISO 8601 timestamp ("2026-01-31T12:00:00Z"), each as RabbitMQ reads them:
    https://www.rabbitmq.com/docs/streams#consuming"""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.isoformat()  # a timestamp YAML read as one
    if _is_int(value):
        if not 0 <= value <= LIMITS.int64:
            raise ValueError(f"an offset must be an integer from 0 to {LIMITS.int64}")
        return value
    if isinstance(value, str):
        if value in STREAM_OFFSETS or STREAM_INTERVAL_RE.match(value):
            return value
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            pass
        else:
            if stamp.tzinfo is not None:
                return value
    raise ValueError(
        "must be first, last, next, an offset (an integer from 0), an interval like "
        '"10m" or "1h", or a timestamp with its time zone, like "2026-01-31T12:00:00Z"'
    )


StreamOffset = Annotated[int | str, BeforeValidator(_stream_offset)]


class Consumer(_Model):
    name: WorkloadName
    queue: Name
    prefetch: int = Field(default=0, ge=PREFETCH_MIN, le=PREFETCH_MAX)
    ack: Literal["manual", "auto"] = "manual"
    behaviour: Behaviour = Field(default_factory=Behaviour)
    #: Where a consumer of a stream starts reading (the x-stream-offset consumer argument).
    stream_offset: StreamOffset | None = None
    autostart: bool = True

    @model_validator(mode="after")
    def _auto_ack(self) -> "Consumer":
        if self.ack == "auto":
            items = []
            if self.behaviour.fail:
                items.append(
                    (("behaviour", "fail"), "auto-ack consumers cannot fail or park messages")
                )
            if self.behaviour.park_after is not None:
                items.append(
                    (
                        ("behaviour", "park_after"),
                        "auto-ack consumers cannot fail or park messages",
                    )
                )
            if self.behaviour.poison is not None:
                items.append(
                    (("behaviour", "poison"), "auto-ack consumers cannot fail or park messages")
                )
            if self.behaviour.compensate is not None:
                items.append(
                    (
                        ("behaviour", "compensate"),
                        "auto-ack consumers cannot fail or park messages",
                    )
                )
            if items:
                raise _spec_items(items)
        return self


class Workloads(_Model):
    producers: list[Producer] = _items(LIMITS.producers)
    consumers: list[Consumer] = _items(LIMITS.consumers)


# --------------------------------------------------------------------------------------
# Checks


class _RangeCheck(_Model):
    """A number read from the broker within [min, max]: at least one of them given."""

    @model_validator(mode="after")
    def _bounds(self):
        if self.min is None and self.max is None:
            raise _spec_items([(("min",), "give min, max or both")])
        if self.min is not None and self.max is not None and self.min > self.max:
            raise _spec_items([(("max",), f"must not be less than min ({self.min})")])
        return self


class QueueMessagesCheck(_RangeCheck):
    """Ready messages in `queue`, read from the broker, are within [min, max]."""

    type: Literal["queue_messages"]
    queue: Name
    min: int | None = Field(default=None, ge=0, le=LIMITS.int64)
    max: int | None = Field(default=None, ge=0, le=LIMITS.int64)


class QuorumOnlineCheck(_RangeCheck):
    """Members of the quorum queue `queue` online, read from the broker, are within
    [min, max]. For labs on the cluster (`broker: cluster`)."""

    type: Literal["quorum_online"]
    queue: Name
    min: int | None = Field(default=None, ge=0, le=9)
    max: int | None = Field(default=None, ge=0, le=9)


class QueueDownCheck(_Model):
    """From the broker: the classic queue `queue` is down (the node it lives on is
    stopped or gone). For a lab on the cluster."""

    type: Literal["queue_down"]
    queue: Name


class LeaderMovedCheck(_Model):
    """The quorum queue `queue` is led by another node than when the lab's checks first
    read it (a `quorum_online` check of an earlier step, or this one when its step opened).
    For labs on the cluster."""

    type: Literal["leader_moved"]
    queue: Name


class _BindingCheck(_Model):
    source: Name
    destination: Name
    destination_type: Literal["queue", "exchange"] = "queue"
    routing_key: RoutingKey | None = None

    @field_validator("source", "destination")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError(_("must not be empty"))
        return value


class BindingExistsCheck(_BindingCheck):
    """The broker has a binding from `source` to `destination` (with `routing_key`, or any
    key when it is omitted)."""

    type: Literal["binding_exists"]


class BindingAbsentCheck(_BindingCheck):
    """The broker has no binding from `source` to `destination` (with `routing_key`, or with
    any key when it is omitted)."""

    type: Literal["binding_absent"]


def _listed_once(value: list[str]) -> list[str]:
    """A list of names with none repeated; each repeat is an error at its index."""
    items = [
        ((i,), f"{_q(name)} is listed twice") for i, name in enumerate(value) if name in value[:i]
    ]
    if items:
        raise _spec_items(items)
    return value


class RoutedOnlyToCheck(_Model):
    """From the recorded flow: at least `min_messages` messages were published to `exchange`
    with `routing_key`, and every one of them was routed to exactly the set `queues`
    (an empty list means unroutable)."""

    type: Literal["routed_only_to"]
    exchange: Name = ""
    routing_key: RoutingKey
    queues: list[Name] = Field(max_length=LIMITS.items)
    min_messages: int = Field(default=1, ge=1, le=LIMITS.int64)

    @field_validator("queues")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return _listed_once(value)


class DeliveredCheck(_Model):
    """From the recorded flow: at least `min` deliveries from `queue` to consumers."""

    type: Literal["delivered"]
    queue: Name
    min: int = Field(default=1, ge=1, le=LIMITS.int64)


class AckedCheck(_Model):
    """From the recorded flow: consumer `workload` acknowledged at least `min` messages."""

    type: Literal["acked"]
    workload: str
    min: int = Field(default=1, ge=1, le=LIMITS.int64)


class DeadLetteredCheck(_Model):
    """From the recorded flow: at least `min` distinct messages were seen arriving in `queue`
    carrying an `x-death` header that matches.

    A message matches when its `x-death` has at least one entry with `reason` (any entry
    when `reason` is omitted) and, when `retries` is given, when the highest `count` among
    those entries equals `retries` exactly. With the retry pattern (reject, wait in a TTL
    queue, come back), the `rejected` entry's count is the number of failed attempts.
    """

    type: Literal["dead_lettered"]
    queue: Name
    min: int = Field(default=1, ge=1, le=LIMITS.int64)
    reason: Literal["rejected", "expired", "maxlen", "delivery_limit"] | None = None
    retries: int | None = Field(default=None, ge=1, le=LIMITS.int64)


class RedeliveredCheck(_Model):
    """From the recorded flow: consumer `workload` received at least `min` deliveries with
    the redelivered flag (messages the broker gave back: another consumer died holding
    them, or rejected them with requeue)."""

    type: Literal["redelivered"]
    workload: str
    min: int = Field(default=1, ge=1, le=LIMITS.int64)


class RefusedCheck(_Model):
    """From the recorded flow: the broker refused (nacked) at least `min` of the messages
    producer `workload` published with publisher confirms."""

    type: Literal["refused"]
    workload: str
    min: int = Field(default=1, ge=1, le=LIMITS.int64)


class ReturnedCheck(_Model):
    """From the recorded flow: at least `min` of the messages producer `workload` (or the
    learner, `@you`, from the page) published with `mandatory` came back to it unroutable."""

    type: Literal["returned"]
    workload: str
    min: int = Field(default=1, ge=1, le=LIMITS.int64)


class CommittedCheck(_Model):
    """From the recorded flow: the transactional producer `workload` has had at least `min`
    messages committed (the broker answered their transaction's tx.commit)."""

    type: Literal["committed"]
    workload: str
    min: int = Field(default=1, ge=1, le=LIMITS.int64)


class FasterCheck(_Model):
    """From the recorded flow: producers `workload` and `than` both run, and `workload`
    publishes at least `ratio` times as many messages a second as `than` does, which
    publishes (the rates the producers' cards show, smoothed over about two seconds)."""

    type: Literal["faster"]
    workload: str
    than: str
    ratio: float = Field(default=1.5, ge=1, le=1000)


class QueueDeletedCheck(_Model):
    """The broker no longer has `queue` (deleted, or expired by `x-expires`)."""

    type: Literal["queue_deleted"]
    queue: Name


class OvertookCheck(_Model):
    """From the recorded flow: consumer `workload` acknowledged at least `min` messages with
    a priority above 0 before it had acknowledged more than `max_others` without one."""

    type: Literal["overtook"]
    workload: str
    min: int = Field(default=1, ge=1, le=LIMITS.int64)
    max_others: int = Field(ge=0, le=LIMITS.int64)


class DeliveredShareCheck(_Model):
    """From the recorded flow: the consumers `among` received at least `min_total`
    deliveries together, and consumer `workload`'s share of them is within
    [`min_share`, `max_share`]."""

    type: Literal["delivered_share"]
    workload: str
    among: list[str] = Field(min_length=2, max_length=LIMITS.items)
    min_share: float = Field(default=0.0, ge=0, le=1)
    max_share: float = Field(default=1.0, ge=0, le=1)
    min_total: int = Field(default=10, ge=1, le=LIMITS.int64)

    @model_validator(mode="after")
    def _shares(self) -> "DeliveredShareCheck":
        items = [
            (("among", i), f"{_q(name)} is listed twice")
            for i, name in enumerate(self.among)
            if name in self.among[:i]
        ]
        if self.workload not in self.among:
            items.append((("workload",), f"must be one of among ({_names(self.among)})"))
        if self.min_share > self.max_share:
            items.append((("max_share",), f"must not be less than min_share ({self.min_share})"))
        if items:
            raise _spec_items(items)
        return self


class RepliedCheck(_Model):
    """From the recorded flow: consumer `workload` (with `reply: true`) answered at least
    `min` requests, each to its `reply_to`."""

    type: Literal["replied"]
    workload: str
    min: int = Field(default=1, ge=1, le=LIMITS.int64)


class UnansweredCheck(_Model):
    """From the recorded flow: consumer `workload` (with `reply: true`) received at least
    `min` requests without `reply_to`, which it could not answer."""

    type: Literal["unanswered"]
    workload: str
    min: int = Field(default=1, ge=1, le=LIMITS.int64)


class ReplayedCheck(_Model):
    """From the recorded flow: consumer `workload` received at least `min` messages that
    were published over a second before it began consuming (a stream read from an offset
    in the past, or a backlog)."""

    type: Literal["replayed"]
    workload: str
    min: int = Field(default=1, ge=1, le=LIMITS.int64)


class AccessRefusedCheck(_Model):
    """From the recorded flow: the broker refused producer `workload` (publishing as one
    of the exercise's `users`) at least `min` times with ACCESS_REFUSED."""

    type: Literal["access_refused"]
    workload: str
    min: int = Field(default=1, ge=1, le=LIMITS.int64)


class ForwardedCheck(_Model):
    """From the recorded flow: consumer `workload` (with a behaviour's `forward`) passed
    at least `min` messages on."""

    type: Literal["forwarded"]
    workload: str
    min: int = Field(default=1, ge=1, le=LIMITS.int64)


class CompensatedCheck(_Model):
    """From the recorded flow: consumer `workload` (with a behaviour's `compensate`)
    answered at least `min` failures with a compensating event."""

    type: Literal["compensated"]
    workload: str
    min: int = Field(default=1, ge=1, le=LIMITS.int64)


class LoadFinishedCheck(_Model):
    """From the recorded flow: producer `workload` ran a load preset from the page to its
    end at least `min` times."""

    type: Literal["load_finished"]
    workload: str
    min: int = Field(default=1, ge=1, le=LIMITS.int64)


class AlertFiredCheck(_Model):
    """From the recorded flow: the exercise's alert rule `alert` fired at least `min`
    times."""

    type: Literal["alert_fired"]
    alert: str
    min: int = Field(default=1, ge=1, le=LIMITS.int64)


class AlertClearedCheck(_Model):
    """From the recorded flow: the alert rule `alert` cleared at least `min` times, and
    it is not firing now."""

    type: Literal["alert_cleared"]
    alert: str
    min: int = Field(default=1, ge=1, le=LIMITS.int64)


PRODUCER_SETTINGS = ("rate", "running", "routing_key", "tx_batch")
CONSUMER_SETTINGS = ("prefetch", "ack", "running", "fail", "on_fail", "requeue")
WORKLOAD_SETTINGS = (
    "rate",
    "prefetch",
    "ack",
    "running",
    "routing_key",
    "fail",
    "on_fail",
    "requeue",
    "tx_batch",
)


def _setting_value_problem(field: str, value: Any) -> str | None:
    if field == "rate":
        if not (_is_number(value) and RATE_MIN <= value <= RATE_MAX):
            return f"rate must be a number from {RATE_MIN:g} to {RATE_MAX:g}"
    elif field == "prefetch":
        if not (_is_int(value) and PREFETCH_MIN <= value <= PREFETCH_MAX):
            return f"prefetch must be an integer from {PREFETCH_MIN} to {PREFETCH_MAX}"
    elif field == "ack":
        if value not in ("manual", "auto"):
            return "ack must be manual or auto"
    elif field in ("running", "requeue"):
        if not isinstance(value, bool):
            return f"{field} must be true or false"
    elif field == "routing_key":
        if not isinstance(value, str):
            return "routing_key must be a string"
        if problem := _shortstr_problem(value):
            return f"routing_key {problem}"
    elif field == "fail":
        if not (_is_number(value) and 0 <= value <= 1):
            return "fail must be a number from 0 to 1"
    elif field == "tx_batch":
        if not (_is_int(value) and 1 <= value <= TX_BATCH_MAX):
            return f"tx_batch must be an integer from 1 to {TX_BATCH_MAX}"
    elif field == "on_fail" and value not in ("reject", "nack"):
        return "on_fail must be reject or nack"
    return None


class WorkloadSettingCheck(_Model):
    """The live setting `field` of `workload`, as the learner set it, equals `equals`."""

    type: Literal["workload_setting"]
    workload: str
    field: Literal[
        "rate",
        "prefetch",
        "ack",
        "running",
        "routing_key",
        "fail",
        "on_fail",
        "requeue",
        "tx_batch",
    ]
    equals: Any

    @model_validator(mode="after")
    def _value(self) -> "WorkloadSettingCheck":
        problem = _setting_value_problem(self.field, self.equals)
        if problem:
            raise _spec_items([(("equals",), problem)])
        return self


YOU = "@you"  # in a `published` check: the learner, publishing from the page


class PublishedCheck(_Model):
    """From the recorded flow: producer `workload` (or the learner, `@you`, from the page)
    published at least `min` messages."""

    type: Literal["published"]
    workload: str
    min: int = Field(default=1, ge=1, le=LIMITS.int64)


class NoneLostCheck(_Model):
    """From the delivery ledger (labconsole/workloads/ledger.py): producer `workload` is
    stopped, the broker confirmed at least `min` of its messages, and every message it
    confirmed reached a consumer."""

    type: Literal["none_lost"]
    workload: str
    min: int = Field(default=1, ge=1, le=LIMITS.int64)


class LostCheck(_Model):
    """From the delivery ledger: producer `workload` is stopped, `queue` (where its
    messages go) is empty, and at least `min` messages the broker confirmed to it were
    received by no consumer: lost."""

    type: Literal["lost"]
    workload: str
    queue: Name
    min: int = Field(default=1, ge=1, le=LIMITS.int64)


Check = Annotated[
    QueueMessagesCheck
    | BindingExistsCheck
    | BindingAbsentCheck
    | RoutedOnlyToCheck
    | DeliveredCheck
    | AckedCheck
    | DeadLetteredCheck
    | WorkloadSettingCheck
    | PublishedCheck
    | RedeliveredCheck
    | DeliveredShareCheck
    | OvertookCheck
    | RefusedCheck
    | QueueDeletedCheck
    | ReturnedCheck
    | CommittedCheck
    | FasterCheck
    | RepliedCheck
    | UnansweredCheck
    | ReplayedCheck
    | AccessRefusedCheck
    | AlertFiredCheck
    | AlertClearedCheck
    | ForwardedCheck
    | CompensatedCheck
    | LoadFinishedCheck
    | QuorumOnlineCheck
    | LeaderMovedCheck
    | NoneLostCheck
    | LostCheck
    | QueueDownCheck,
    Field(discriminator="type"),
]

CHECK_TYPES: dict[str, type[_Model]] = {
    get_args(cls.model_fields["type"].annotation)[0]: cls for cls in get_args(get_args(Check)[0])
}


# --------------------------------------------------------------------------------------
# Steps


class Checkpoint(_Model):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    description: LocalizedText
    check: Check


class Step(_Model):
    id: Annotated[str, Field(pattern=ID_PATTERN)]
    title: LocalizedText
    instructions: LocalizedText
    hints: list[LocalizedText] = _items(LIMITS.items)
    checkpoints: list[Checkpoint] = _items(LIMITS.checkpoints)
    #: Whether the learner may change the lab's topology from the page while this step
    #: is the current one; unset, the exercise's `topology_edits` holds.
    topology_edits: bool | None = None


# --------------------------------------------------------------------------------------
# The exercise


# --------------------------------------------------------------------------------------
# Alert rules


ALERT_FOR_MAX = 3600  # seconds a rule may wait, breached, before it fires


class Alert(_Model):
    """A rule the lab's monitor watches, as a monitoring system would: it fires when
    `metric` of `queue` stays above `above` (or below `below`) for `for_seconds`, and
    clears when it is back (labconsole/flow/alerts.py)."""

    name: Annotated[str, Field(pattern=ID_PATTERN)]
    title: LocalizedText
    queue: Name
    metric: Literal[ALERT_METRICS]
    above: float | None = Field(default=None, ge=0, le=LIMITS.int64)
    below: float | None = Field(default=None, gt=0, le=LIMITS.int64)
    for_seconds: float = Field(default=0, ge=0, le=ALERT_FOR_MAX)

    @model_validator(mode="after")
    def _threshold(self) -> "Alert":
        if (self.above is None) == (self.below is None):
            raise _spec_items([(("above",), _("give one threshold: above or below"))])
        return self

    def rule(self) -> AlertRule:
        return AlertRule(
            name=self.name,
            queue=self.queue,
            metric=self.metric,
            above=self.above,
            below=self.below,
            for_seconds=self.for_seconds,
        )


# --------------------------------------------------------------------------------------
# Users

LAB_USERS_MAX = 4
LAB_USER_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,30}$"


def _permission(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(
            _("is not a valid regular expression: {error}").format(error=exc)
        ) from None
    return value


Permission = Annotated[str, Field(max_length=LIMITS.shortstr_bytes), AfterValidator(_permission)]


class LabUser(_Model):
    """A second RabbitMQ user of the lab's vhost, with the permissions given here (regular
    expressions on the names of exchanges and queues, as RabbitMQ reads them:
    https://www.rabbitmq.com/docs/access-control#authorisation). Made and removed with the
    lab; producers publish as it with `user`."""

    name: Annotated[str, Field(pattern=LAB_USER_NAME_PATTERN)]
    configure: Permission = "^$"
    write: Permission = "^$"
    read: Permission = "^$"


COURSE_ORDER_MAX = 999
PLUGINS_MAX = 4


class ExerciseSpec(_Model):
    # An int, strictly: `version: 1.0` and `version: true` are not version 1.
    version: int
    slug: Annotated[str, Field(pattern=SLUG_PATTERN)]
    title: LocalizedText
    summary: LocalizedText
    description: LocalizedText
    level: Literal["beginner", "intermediate", "advanced"]
    minutes: int = Field(ge=1, le=240)
    #: The exercise's place in the course: the catalogue lists these first, in this order.
    order: int | None = Field(default=None, ge=1, le=COURSE_ORDER_MAX)
    tags: list[str] = _items(LIMITS.items)
    #: The broker the lab runs on: the shared one, or the local cluster of brokers a lab
    #: may break (docs/cluster.md): a node stopped or killed, a broker restarted.
    broker: Literal["shared", "cluster"] = "shared"
    #: The broker plugins the exercise needs: a lab starts only on a broker that has
    #: them enabled.
    plugins: list[Annotated[str, Field(pattern=PLUGIN_PATTERN)]] = _items(PLUGINS_MAX)
    topology: Topology
    workloads: Workloads = Field(default_factory=Workloads)
    users: list[LabUser] = _items(LAB_USERS_MAX)
    #: Alert rules on the queues' numbers, shown on the page firing and clearing.
    alerts: list[Alert] = _items(LIMITS.alerts)
    steps: list[Step] = _items(LIMITS.steps)
    #: Whether the learner may declare, delete, bind and unbind from the lab page, unless
    #: a step says otherwise.
    topology_edits: bool = True

    @field_validator("version")
    @classmethod
    def _version(cls, value: int) -> int:
        if value != 1:
            raise ValueError(
                f"unsupported format version {excerpt(value)}; this console reads version 1"
            )
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        items = [((i,), "must not be empty") for i, tag in enumerate(value) if not tag.strip()]
        if items:
            raise _spec_items(items)
        return value

    @field_validator("plugins")
    @classmethod
    def _plugins(cls, value: list[str]) -> list[str]:
        return _listed_once(value)

    # -- helpers -----------------------------------------------------------------------

    def queue(self, name: str) -> Queue | None:
        return next((q for q in self.topology.queues if q.name == name), None)

    def exchange(self, name: str) -> Exchange | None:
        return next((x for x in self.topology.exchanges if x.name == name), None)

    def producer(self, name: str) -> Producer | None:
        return next((p for p in self.workloads.producers if p.name == name), None)

    def consumer(self, name: str) -> Consumer | None:
        return next((c for c in self.workloads.consumers if c.name == name), None)

    def workload(self, name: str) -> Producer | Consumer | None:
        return self.producer(name) or self.consumer(name)

    def topology_edits_allowed(self, step_id: str | None) -> bool:
        """Whether the learner may change the topology while `step_id` is the current step
        (None: before any step, or an exercise without steps)."""
        step = next((s for s in self.steps if s.id == step_id), None)
        if step is not None and step.topology_edits is not None:
            return step.topology_edits
        return self.topology_edits

    def with_topology(self, topology: dict) -> "ExerciseSpec":
        """This exercise with another topology (a mapping as in the document), checked by
        every rule a document is: each object's own and the cross references (workloads and
        checks must still find their queues and exchanges). Raises SpecError with paths
        like `topology.queues[2].arguments.x-max-priority`."""
        return validate_data({**self.model_dump(), "topology": topology})

    def all_checkpoints(self) -> list[tuple[Step, Checkpoint]]:
        return [(step, checkpoint) for step in self.steps for checkpoint in step.checkpoints]

    # -- cross references --------------------------------------------------------------

    @model_validator(mode="after")
    def _cross_references(self) -> "ExerciseSpec":
        errors = _CrossReferences(self).run()
        if errors:
            raise SpecError(errors)
        return self


# A check on a producer's counter, and what the producer must do for the counter to move.
# Checks that read a queue of a lab on the cluster: the type of queue each needs, and why
# (translated where it is said).
_ONLY_QUORUM = gettext_noop("{name} is a {type} queue: only quorum queues have a leader")
CLUSTER_QUEUE_NEEDS: dict[type, tuple[str, str]] = {
    QueueDownCheck: (
        "classic",
        gettext_noop(
            "{name} is a {type} queue: only a classic queue lives on one node, and is down with it"
        ),
    ),
    QuorumOnlineCheck: ("quorum", _ONLY_QUORUM),
    LeaderMovedCheck: ("quorum", _ONLY_QUORUM),
}
PRODUCER_NEEDS: dict[type, tuple[Callable[[Producer], bool], str]] = {
    RefusedCheck: (
        lambda p: p.confirms,
        "must publish with confirms: true (without publisher confirms the broker does not "
        "say it refused a message)",
    ),
    ReturnedCheck: (
        lambda p: p.mandatory,
        "must publish with mandatory: true (without it the broker drops what it cannot "
        "route and returns nothing)",
    ),
    CommittedCheck: (
        lambda p: p.transactions,
        "must publish with transactions: true (only a transactional producer commits)",
    ),
    NoneLostCheck: (lambda p: p.ledger, "must keep a ledger: set ledger: true"),
    LostCheck: (lambda p: p.ledger, "must keep a ledger: set ledger: true"),
    AccessRefusedCheck: (
        lambda p: p.user is not None,
        "publishes as the lab's own user, who may do anything in the lab: give it a user "
        "with limited permissions",
    ),
}


class _CrossReferences:
    """Checks that need the whole document: names that must exist, names that must be
    unique, rules that depend on another object's type."""

    def __init__(self, spec: ExerciseSpec):
        self.spec = spec
        self.errors: list[Problem] = []
        self.exchanges = {x.name: x for x in spec.topology.exchanges}
        self.queues = {q.name: q for q in spec.topology.queues}
        self.producers = {p.name: p for p in spec.workloads.producers}
        self.consumers = {c.name: c for c in spec.workloads.consumers}

    def add(self, path: str, message: str) -> None:
        self.errors.append(Problem(path, message))

    def run(self) -> list[Problem]:
        self.unique_names()
        self.topology()
        self.workloads()
        self.alerts()
        self.steps()
        return self.errors

    def alerts(self) -> None:
        for i, alert in enumerate(self.spec.alerts):
            if problem := self.queue_problem(alert.queue):
                self.add(f"alerts[{i}].queue", problem)

    # -- helpers -----------------------------------------------------------------------

    def unique(self, entries: Iterable[tuple[str, str]], what: str) -> None:
        seen: dict[str, str] = {}
        for path, name in entries:
            if name in seen:
                duplicate = _("duplicate {what} {name} (first at {path})")
                self.add(path, duplicate.format(what=_(what), name=_q(name), path=seen[name]))
            else:
                seen[name] = path

    def queue_problem(self, name: str) -> str | None:
        if name in self.queues:
            return None
        return _not_declared_queue(name, self.queues)

    def exchange_problem(self, name: str, *, default_ok: bool, builtin_ok: bool) -> str | None:
        if name in self.exchanges:
            return None
        if name == "" and default_ok:
            return None
        if name in BUILTIN_EXCHANGES and builtin_ok:
            return None
        return _not_declared_exchange(name, self.exchanges)

    def exchange_type(self, name: str) -> str | None:
        if name in self.exchanges:
            return self.exchanges[name].type
        return BUILTIN_EXCHANGES.get(name)

    # -- the checks --------------------------------------------------------------------

    def unique_names(self) -> None:
        spec = self.spec
        self.unique(
            (
                (f"topology.exchanges[{i}].name", x.name)
                for i, x in enumerate(spec.topology.exchanges)
            ),
            gettext_noop("exchange name"),
        )
        self.unique(
            ((f"topology.queues[{i}].name", q.name) for i, q in enumerate(spec.topology.queues)),
            gettext_noop("queue name"),
        )
        self.unique(
            (
                (f"topology.policies[{i}].name", p.name)
                for i, p in enumerate(spec.topology.policies)
            ),
            gettext_noop("policy name"),
        )
        self.unique(
            [
                (f"workloads.producers[{i}].name", p.name)
                for i, p in enumerate(spec.workloads.producers)
            ]
            + [
                (f"workloads.consumers[{i}].name", c.name)
                for i, c in enumerate(spec.workloads.consumers)
            ],
            gettext_noop("workload name"),
        )
        users = ((f"users[{i}].name", u.name) for i, u in enumerate(spec.users))
        self.unique(users, gettext_noop("user name"))
        alerts = ((f"alerts[{i}].name", a.name) for i, a in enumerate(spec.alerts))
        self.unique(alerts, gettext_noop("alert name"))
        steps = ((f"steps[{i}].id", s.id) for i, s in enumerate(spec.steps))
        self.unique(steps, gettext_noop("step id"))
        self.unique(
            (
                (f"steps[{i}].checkpoints[{j}].id", c.id)
                for i, s in enumerate(spec.steps)
                for j, c in enumerate(s.checkpoints)
            ),
            gettext_noop("checkpoint id"),
        )

    def topology(self) -> None:
        spec = self.spec
        for i, exchange in enumerate(spec.topology.exchanges):
            plugin = EXCHANGE_TYPE_PLUGINS.get(exchange.type)
            if plugin is not None and plugin not in spec.plugins:
                needs = _(
                    "{type} exchanges come from the broker plugin {plugin}: name it in the "
                    "exercise's plugins"
                )
                self.add(
                    f"topology.exchanges[{i}].type",
                    needs.format(type=exchange.type, plugin=plugin),
                )
            alternate = exchange.arguments.get("alternate-exchange")
            if isinstance(alternate, str) and alternate:
                problem = self.exchange_problem(alternate, default_ok=False, builtin_ok=False)
                if problem:
                    self.add(f"topology.exchanges[{i}].arguments.alternate-exchange", problem)
                elif alternate == exchange.name:
                    self.add(
                        f"topology.exchanges[{i}].arguments.alternate-exchange",
                        _("an exchange cannot be its own alternate exchange"),
                    )

        for i, queue in enumerate(spec.topology.queues):
            dlx = queue.arguments.get("x-dead-letter-exchange")
            if isinstance(dlx, str) and dlx:
                problem = self.exchange_problem(dlx, default_ok=True, builtin_ok=False)
                if problem:
                    self.add(f"topology.queues[{i}].arguments.x-dead-letter-exchange", problem)

        seen_bindings: dict[tuple, int] = {}
        for i, binding in enumerate(spec.topology.bindings):
            path = f"topology.bindings[{i}]"
            prefix = _("binding from {source} to {destination}").format(
                source=_q(binding.source), destination=_q(binding.destination)
            )
            if binding.source == "":
                default = _(
                    "binding from the default exchange to {destination}: the default exchange "
                    "cannot be bound (it routes by queue name)"
                )
                self.add(f"{path}.source", default.format(destination=_q(binding.destination)))
            elif binding.source not in self.exchanges and binding.source not in BUILTIN_EXCHANGES:
                problem = _not_declared_exchange(binding.source, self.exchanges)
                self.add(f"{path}.source", f"{prefix}: {problem}")
            if binding.destination_type == "queue":
                if binding.destination not in self.queues:
                    problem = _not_declared_queue(binding.destination, self.queues)
                    self.add(f"{path}.destination", f"{prefix}: {problem}")
            elif binding.destination not in self.exchanges:
                problem = _not_declared_exchange(binding.destination, self.exchanges)
                self.add(f"{path}.destination", f"{prefix}: {problem}")
            x_match = binding.arguments.get("x-match", "all")
            if self.exchange_type(binding.source) == "headers" and x_match not in X_MATCH_VALUES:
                self.add(f"{path}.arguments.x-match", _one_of(X_MATCH_VALUES))
            identity = (
                binding.source,
                binding.destination,
                binding.destination_type,
                binding.routing_key,
                json.dumps(binding.arguments, sort_keys=True, default=str),
            )
            if identity in seen_bindings:
                again = _("the same binding is already declared at {path}").format(
                    path=f"topology.bindings[{seen_bindings[identity]}]"
                )
                self.add(path, f"{prefix}: {again}")
            else:
                seen_bindings[identity] = i

    def workloads(self) -> None:
        for i, producer in enumerate(self.spec.workloads.producers):
            path = f"workloads.producers[{i}]"
            problem = self.exchange_problem(producer.exchange, default_ok=True, builtin_ok=True)
            if problem:
                self.add(f"{path}.exchange", problem)
            elif producer.exchange in self.exchanges and self.exchanges[producer.exchange].internal:
                internal = _(
                    "{name} is an internal exchange: it only receives messages from other "
                    "exchanges, and clients cannot publish to it"
                )
                self.add(f"{path}.exchange", internal.format(name=_q(producer.exchange)))
            elif producer.exchange == "":
                if producer.routing_keys:
                    keys = [
                        (f"{path}.routing_keys[{j}]", k.key)
                        for j, k in enumerate(producer.routing_keys)
                    ]
                else:
                    keys = [(f"{path}.routing_key", producer.routing_key)]
                for key_path, key in keys:
                    if key not in self.queues:
                        by_name = _("the default exchange routes by queue name")
                        problem = _not_declared_queue(key, self.queues)
                        self.add(key_path, f"{by_name}; {problem}")

            users = [u.name for u in self.spec.users]
            if producer.user is not None and producer.user not in users:
                problem = _("{name} is not a declared user (declared users: {names})")
                self.add(
                    f"{path}.user", problem.format(name=_q(producer.user), names=_declared(users))
                )
            if producer.reply_to is not None and producer.reply_to not in self.queues:
                replies = _("replies go through the default exchange, which routes by queue name")
                problem = _not_declared_queue(producer.reply_to, self.queues)
                self.add(f"{path}.reply_to", f"{replies}; {problem}")

        for i, consumer in enumerate(self.spec.workloads.consumers):
            path = f"workloads.consumers[{i}]"
            problem = self.queue_problem(consumer.queue)
            if problem:
                self.add(f"{path}.queue", problem)
            else:
                self.stream_consumer(path, consumer)
            behaviour = consumer.behaviour
            problem = self.exchange_problem(
                behaviour.park_exchange, default_ok=True, builtin_ok=True
            )
            if problem:
                self.add(f"{path}.behaviour.park_exchange", problem)
            elif (
                behaviour.park_after is not None
                and behaviour.park_exchange == ""
                and behaviour.park_routing_key
                and behaviour.park_routing_key not in self.queues
            ):
                parking = _(
                    'with the default exchange (park_exchange "") this names the parking queue'
                )
                problem = _not_declared_queue(behaviour.park_routing_key, self.queues)
                self.add(f"{path}.behaviour.park_routing_key", f"{parking}; {problem}")
            for field in ("forward", "compensate"):
                emit = getattr(behaviour, field)
                if emit is None:
                    continue
                problem = self.exchange_problem(emit.exchange, default_ok=True, builtin_ok=True)
                if problem:
                    self.add(f"{path}.behaviour.{field}.exchange", problem)
                elif emit.exchange == "" and emit.routing_key not in self.queues:
                    by_name = _("the default exchange routes by queue name")
                    problem = _not_declared_queue(emit.routing_key, self.queues)
                    self.add(f"{path}.behaviour.{field}.routing_key", f"{by_name}; {problem}")

    def stream_consumer(self, path: str, consumer: Consumer) -> None:
        """A stream is read with manual acks and a prefetch above 0, from an offset
        (https://www.rabbitmq.com/docs/streams#consuming); other queues take no offset."""
        if self.queues[consumer.queue].type != "stream":
            if consumer.stream_offset is not None:
                only = _("only consumers of a stream take an offset ({name} is a {type} queue)")
                self.add(
                    f"{path}.stream_offset",
                    only.format(name=_q(consumer.queue), type=self.queues[consumer.queue].type),
                )
            return
        if consumer.ack != "manual":
            self.add(f"{path}.ack", _("a stream's consumers must acknowledge manually"))
        if consumer.prefetch == 0:
            self.add(f"{path}.prefetch", _("a stream's consumers need a prefetch above 0"))

    def steps(self) -> None:
        for i, step in enumerate(self.spec.steps):
            edits = self.spec.topology_edits_allowed(step.id)
            for j, checkpoint in enumerate(step.checkpoints):
                self.check(f"steps[{i}].checkpoints[{j}].check", checkpoint.check, edits=edits)

    def check(self, path: str, check: Any, *, edits: bool = False) -> None:
        if isinstance(
            check, QueueMessagesCheck | DeliveredCheck | DeadLetteredCheck | QueueDeletedCheck
        ):
            problem = self.queue_problem(check.queue)
            if problem:
                self.add(f"{path}.queue", problem)
        elif type(check) in CLUSTER_QUEUE_NEEDS:
            needs, why = CLUSTER_QUEUE_NEEDS[type(check)]
            problem = self.queue_problem(check.queue)
            if problem:
                self.add(f"{path}.queue", problem)
            elif self.queues[check.queue].type != needs:
                kind = self.queues[check.queue].type
                self.add(f"{path}.queue", _(why).format(name=_q(check.queue), type=kind))
            if self.spec.broker != "cluster":
                self.add(
                    f"{path}.type",
                    _("{type} needs the lab on the cluster: set broker: cluster").format(
                        type=check.type
                    ),
                )
        elif isinstance(check, RoutedOnlyToCheck):
            # In a step where the learner may change the topology, the exchange and queues
            # may be theirs, made at run time: their names need not be declared.
            problem = self.exchange_problem(check.exchange, default_ok=True, builtin_ok=True)
            if problem and not edits:
                self.add(f"{path}.exchange", problem)
            for k, name in enumerate(() if edits else check.queues):
                problem = self.queue_problem(name)
                if problem:
                    self.add(f"{path}.queues[{k}]", problem)
        elif isinstance(check, AckedCheck | RedeliveredCheck | OvertookCheck | ReplayedCheck):
            if check.workload not in self.consumers:
                self.add(f"{path}.workload", self.not_a("consumer", check.workload))
        elif isinstance(check, ForwardedCheck | CompensatedCheck):
            consumer = self.spec.consumer(check.workload)
            field = "forward" if isinstance(check, ForwardedCheck) else "compensate"
            if consumer is None:
                self.add(f"{path}.workload", self.not_a("consumer", check.workload))
            elif getattr(consumer.behaviour, field) is None:
                self.add(
                    f"{path}.workload",
                    f"{_q(check.workload)} must pass messages on: set its behaviour's {field}",
                )
        elif isinstance(check, RepliedCheck | UnansweredCheck):
            consumer = self.spec.consumer(check.workload)
            if consumer is None:
                self.add(f"{path}.workload", self.not_a("consumer", check.workload))
            elif not consumer.behaviour.reply:
                self.add(
                    f"{path}.workload",
                    f"{_q(check.workload)} must answer requests: set its behaviour's reply: true",
                )
        elif isinstance(check, AlertFiredCheck | AlertClearedCheck):
            names = list(dict.fromkeys(a.name for a in self.spec.alerts))
            if check.alert not in names:
                missing = _("{name} is not a declared alert (declared alerts: {names})")
                self.add(
                    f"{path}.alert", missing.format(name=_q(check.alert), names=_declared(names))
                )
        elif isinstance(check, DeliveredShareCheck):
            for k, name in enumerate(check.among):
                if name not in self.consumers:
                    self.add(f"{path}.among[{k}]", self.not_a("consumer", name))
        elif type(check) in PRODUCER_NEEDS:
            needs, why = PRODUCER_NEEDS[type(check)]
            producer = self.spec.producer(check.workload)
            if isinstance(check, ReturnedCheck) and check.workload == YOU:
                pass  # the page's mandatory publishes
            elif producer is None:
                self.add(f"{path}.workload", self.not_a("producer", check.workload))
            elif not needs(producer):
                self.add(f"{path}.workload", f"{_q(check.workload)} {why}")
            if isinstance(check, LostCheck) and (problem := self.queue_problem(check.queue)):
                self.add(f"{path}.queue", problem)
        elif isinstance(check, FasterCheck):
            for field in ("workload", "than"):
                if getattr(check, field) not in self.producers:
                    self.add(f"{path}.{field}", self.not_a("producer", getattr(check, field)))
            if check.workload == check.than:
                self.add(
                    f"{path}.than",
                    _("must name another producer than {name}").format(name=_q(check.workload)),
                )
        elif isinstance(check, LoadFinishedCheck):
            if check.workload not in self.producers:
                self.add(f"{path}.workload", self.not_a("producer", check.workload))
        elif isinstance(check, PublishedCheck):
            if check.workload not in self.producers and check.workload != YOU:
                self.add(f"{path}.workload", self.not_a("producer", check.workload))
        elif isinstance(check, WorkloadSettingCheck):
            if check.workload in self.producers:
                if check.field not in PRODUCER_SETTINGS:
                    self.add(
                        f"{path}.field",
                        f"producers have no setting {_q(check.field)} "
                        f"(producer settings: {_names(PRODUCER_SETTINGS)})",
                    )
            elif check.workload in self.consumers:
                if check.field not in CONSUMER_SETTINGS:
                    self.add(
                        f"{path}.field",
                        f"consumers have no setting {_q(check.field)} "
                        f"(consumer settings: {_names(CONSUMER_SETTINGS)})",
                    )
            else:
                self.add(
                    f"{path}.workload",
                    f"{_q(check.workload)} is not a declared workload "
                    f"(declared workloads: {_declared([*self.producers, *self.consumers])})",
                )
        # binding_exists / binding_absent read the live broker: the learner may create the
        # objects at run time, so their names need not be declared.

    def not_a(self, kind: str, name: str) -> str:
        names = self.consumers if kind == "consumer" else self.producers
        if kind == "consumer":
            other = _("{name} is not a consumer (declared consumers: {names})")
            missing = _("{name} is not a declared consumer (declared consumers: {names})")
        else:
            other = _("{name} is not a producer (declared producers: {names})")
            missing = _("{name} is not a declared producer (declared producers: {names})")
        problem = other if name in self.producers or name in self.consumers else missing
        return problem.format(name=_q(name), names=_declared(names))


# --------------------------------------------------------------------------------------
# Turning pydantic's errors into "path: message"


def _strip_optional(tp: Any) -> Any:
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
            continue
        if origin in (Union, type(int | None)):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp


class _Location:
    """Walks an error location through the models: the display path (without the check
    type tag pydantic inserts) and the model, field and type found at its end."""

    def __init__(self, loc: tuple):
        self.path: list[str | int] = []
        self.type: Any = ExerciseSpec
        self.field: Any = None  # FieldInfo of the last model field passed
        self.is_key = False
        self.parent_model: type[BaseModel] | None = None
        tags: dict[str, type] | None = None
        for item in loc:
            if item == "[key]":
                self.is_key = True
                continue
            if tags is not None:
                if item in tags:
                    self.type, tags = tags[item], None
                    continue
                tags = None
            tp = _strip_optional(self.type)
            self.path.append(str(item) if get_origin(tp) is dict else item)
            self.parent_model = None
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                self.parent_model = tp
                info = tp.model_fields.get(item) if isinstance(item, str) else None
                self.field = info
                self.type = info.annotation if info else None
                if info is not None and info.discriminator:
                    tags = {
                        get_args(m.model_fields["type"].annotation)[0]: m
                        for m in get_args(_strip_optional(info.annotation))
                    }
            elif get_origin(tp) is list:
                self.type = get_args(tp)[0]
                self.field = None
            elif get_origin(tp) is dict:
                self.type = get_args(tp)[1]
                self.field = None
            else:
                self.type = None
                self.field = None


def _describe(value: Any) -> str:
    if value is None:
        return _("nothing")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _("the number {value}").format(value=excerpt(value))
    if isinstance(value, str):
        if len(value) > LIMITS.excerpt_chars:
            start = json.dumps(value[: LIMITS.excerpt_chars], ensure_ascii=False)
            long = _("a string of {count} characters starting {start}…")
            return long.format(count=len(value), start=start)
        return _("the string {value}").format(value=json.dumps(value, ensure_ascii=False))
    if isinstance(value, list):
        return _("a list")
    if isinstance(value, dict):
        return _("a mapping")
    return type(value).__name__


def _bounds(field: Any) -> dict[str, Any]:
    """The numeric bounds (ge, gt, le, lt) declared on a model field."""
    found: dict[str, Any] = {}
    for meta in getattr(field, "metadata", None) or []:
        for name in ("ge", "gt", "le", "lt"):
            if getattr(meta, name, None) is not None:
                found[name] = getattr(meta, name)
    return found


def _num(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return excerpt(value)


def _range_message(field: Any, err: dict) -> str:
    bounds = _bounds(field)
    annotation = _strip_optional(getattr(field, "annotation", None))
    got = _got(_num(err.get("input")))
    if "ge" in bounds and "le" in bounds:
        if annotation is int:
            return _integer(_num(bounds["ge"]), _num(bounds["le"])) + got
        between = _("must be a number from {least} to {greatest}")
        return between.format(least=_num(bounds["ge"]), greatest=_num(bounds["le"])) + got
    ctx = err.get("ctx", {})
    if "ge" in ctx:
        return _("must be at least {value}").format(value=_num(ctx["ge"])) + got
    if "gt" in ctx:
        return _("must be greater than {value}").format(value=_num(ctx["gt"])) + got
    if "le" in ctx:
        return _("must be at most {value}").format(value=_num(ctx["le"])) + got
    if "lt" in ctx:
        return _("must be less than {value}").format(value=_num(ctx["lt"])) + got
    return err["msg"]


def _message(err: dict, where: _Location) -> str:
    kind = err["type"]
    value = err.get("input")
    got = _got(_describe(value))
    if where.is_key and kind == "string_type":
        return _("names must be strings") + got
    if kind == "missing":
        return _("required field is missing")
    if kind == "extra_forbidden":
        parent = where.parent_model
        expected = _names(parent.model_fields) if parent else "?"
        return _("unknown field (expected one of: {names})").format(names=expected)
    if kind == "literal_error":
        options = [v for v in get_args(_strip_optional(where.type))] if where.type else []
        if len(options) == 1:
            return _("must be {value}").format(value=repr(options[0])) + got
        if options:
            return _one_of(str(o) for o in options) + got
        expected = err.get("ctx", {}).get("expected", "?")
        return _("must be one of: {names}").format(names=expected) + got
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return _("must be an integer") + got
    if kind in ("float_type", "float_parsing"):
        return _("must be a number") + got
    if kind == "finite_number":
        return _("must be a finite number")
    if kind in ("bool_type", "bool_parsing"):
        return _("must be true or false") + got
    if kind == "string_type":
        return _("must be a string") + got
    if kind == "list_type":
        return _("must be a list") + got
    if kind == "dict_type":
        return _("must be a mapping") + got
    if kind in ("model_type", "model_attributes_type"):
        if _strip_optional(where.type) is LocalizedText:
            others = _names(c for c in language_codes() if c != "en")
            return (
                _("must be a string, or a mapping with en (and optionally {names})").format(
                    names=others
                )
                + got
            )
        return _("must be a mapping of fields") + got
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return _range_message(where.field, err)
    if kind == "string_too_short":
        return _("must not be empty")
    if kind == "string_too_long":
        limit = err.get("ctx", {}).get("max_length")
        return _("must be at most {limit} characters").format(limit=limit) + got
    if kind == "too_long":
        ctx = err.get("ctx", {})
        if isinstance(value, dict):
            most = _("must have at most {limit} keys (got {count})")
        else:
            most = _("must have at most {limit} items (got {count})")
        return most.format(limit=ctx.get("max_length"), count=ctx.get("actual_length"))
    if kind == "string_pattern_mismatch":
        pattern = err.get("ctx", {}).get("pattern")
        if pattern in _PATTERN_MESSAGES:
            return _(_PATTERN_MESSAGES[pattern]) + got
        return _("must match {pattern}").format(pattern=pattern) + got
    if kind in ("value_error", "assertion_error"):
        error = err.get("ctx", {}).get("error")
        return excerpt(str(error), limit=300) if error is not None else err["msg"]
    if kind == "union_tag_invalid":
        unknown = _("unknown check type {type} (expected one of: {names})")
        return unknown.format(type=_q(value.get("type")), names=_names(CHECK_TYPES))
    if kind == "union_tag_not_found":
        missing = _("required field is missing (one of: {names})")
        return missing.format(names=_names(CHECK_TYPES))
    return err["msg"]


def _errors_from_validation(exc: ValidationError) -> list[Problem]:
    out: list[Problem] = []
    for err in exc.errors(include_url=False):
        where = _Location(err["loc"])
        path = list(where.path)
        if err["type"] == "spec_items":
            for subpath, message in err["ctx"]["items"]:
                out.append(Problem(format_path([*path, *subpath]) or "(document)", message))
            continue
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            path.append("type")
        out.append(Problem(format_path(path) or "(document)", _message(err, where)))
    return out


# --------------------------------------------------------------------------------------
# Entry points


def _validate(data: Any, source: str) -> ExerciseSpec:
    if not isinstance(data, dict):
        message = _("the document must be a mapping of fields, like 'version: 1'")
        raise SpecError([Problem(source, message + _got(_describe(data)))])
    try:
        return ExerciseSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_errors_from_validation(exc)) from None


def parse_spec(text: str | bytes, *, source: str = "(document)") -> ExerciseSpec:
    """Parse and validate one exercise document: YAML as text, or as bytes that must be
    UTF-8. Raises SpecError, each problem placed at its line and column."""
    try:
        document = read_document(text, source=source)
    except DocumentRefused as exc:
        raise SpecError(exc.problems) from None
    try:
        return _validate(document.data, source)
    except SpecError as exc:
        raise SpecError(document.locate(p) for p in exc.problems) from None


@functools.lru_cache(maxsize=LIMITS.cached_specs)
def _parse_stored(text: str) -> ExerciseSpec:
    return parse_spec(text)


def parse_spec_cached(text: str, *, source: str) -> ExerciseSpec:
    """`parse_spec` for a document kept in the database, remembered by its text.

    An exercise's source only changes together with its version (a lab pins the text of
    the version it started with), so the text is the version's key: every page that shows
    it shares one parse, and an edit is parsed once, when it is first shown. Specs are
    frozen models, safe to share. A document that fails is not remembered; it is parsed
    again so that the error names `source`."""
    try:
        return _parse_stored(text)
    except SpecError:
        return parse_spec(text, source=source)


@functools.lru_cache(maxsize=LIMITS.cached_specs)
def _with_topology_stored(text: str, topology: str) -> ExerciseSpec:
    return _parse_stored(text).with_topology(json.loads(topology))


def spec_with_topology_cached(text: str, topology: dict) -> ExerciseSpec:
    """The stored document `text` with a lab's stored topology (`with_topology`),
    remembered by both texts: every viewer and the monitor share one check of it."""
    return _with_topology_stored(text, json.dumps(topology, sort_keys=True))


def spec_cache_clear() -> None:
    """Forget every remembered spec (tests that count parses start from here)."""
    _parse_stored.cache_clear()
    _with_topology_stored.cache_clear()


def load_spec_file(path: str | Path) -> ExerciseSpec:
    """Read, parse and validate an exercise file. Raises SpecError (also if unreadable or
    larger than the limit, which is found without reading the whole file)."""
    path = Path(path)
    try:
        with path.open("rb") as file:
            raw = file.read(LIMITS.document_bytes + 1)
    except OSError as exc:
        message = f"cannot read the file: {excerpt(str(exc), limit=200)}"
        raise SpecError([Problem(str(path), message)]) from None
    return parse_spec(raw, source=str(path))


def validate_data(data: dict) -> ExerciseSpec:
    """Validate an already parsed exercise document (a mapping). Raises SpecError."""
    return _validate(data, "<data>")
