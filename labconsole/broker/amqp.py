"""AMQP connection helpers: every pika connection the console opens is made here."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

import pika
from django.conf import settings


def console_nodes() -> list[tuple[str, int]]:
    """Hosts of RABBITMQ_URL; a comma-separated list of host:port names several nodes."""
    netloc = urlsplit(settings.RABBITMQ_URL).netloc.rsplit("@", 1)[-1]
    nodes = []
    for part in netloc.split(","):
        host, _, port = part.rpartition(":") if ":" in part else (part, "", "")
        nodes.append((host or part, int(port or 5672)))
    return nodes


def console_vhost() -> str:
    path = urlsplit(settings.RABBITMQ_URL).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def console_credentials() -> tuple[str, str]:
    url = urlsplit(settings.RABBITMQ_URL)
    return unquote(url.username or "guest"), unquote(url.password or "guest")


def parameters(
    *,
    vhost: str,
    user: str,
    password: str,
    name: str = "labconsole",
    heartbeat: int = 30,
    blocked_timeout: float = 60,
    nodes: Iterable[tuple[str, int]] | None = None,
) -> list[pika.ConnectionParameters]:
    """Parameters for every node (those of RABBITMQ_URL unless `nodes` are given), so
    that pika.BlockingConnection tries them in turn. A connection the broker blocks (a
    memory or disk alarm) for `blocked_timeout` seconds is dropped, and its owner connects
    again."""
    credentials = pika.PlainCredentials(user, password)
    return [
        pika.ConnectionParameters(
            host=host,
            port=port,
            virtual_host=vhost,
            credentials=credentials,
            heartbeat=heartbeat,
            blocked_connection_timeout=blocked_timeout,
            connection_attempts=1,
            client_properties={"connection_name": name},
        )
        for host, port in (console_nodes() if nodes is None else nodes)
    ]


def console_parameters(*, name: str = "labconsole") -> list[pika.ConnectionParameters]:
    user, password = console_credentials()
    return parameters(vhost=console_vhost(), user=user, password=password, name=name)


def connect(params: list[pika.ConnectionParameters]) -> pika.BlockingConnection:
    return pika.BlockingConnection(params)


def aio_url(*, vhost: str | None = None) -> str:
    """An aio-pika URL for the console's vhost (the first node)."""
    user, password = console_credentials()
    host, port = console_nodes()[0]
    return f"amqp://{quote(user, safe='')}:{quote(password, safe='')}@{host}:{port}/" + quote(
        vhost if vhost is not None else console_vhost(), safe=""
    )


def flow_exchange() -> str:
    """Topic exchange in the console vhost carrying reports and frames: lab.<id>.<kind>."""
    return f"{settings.LABCONSOLE_PREFIX}.flow"


def frames_exchange() -> str:
    """Headers exchange in the console vhost carrying the monitors' frames, several labs'
    to a message (`pack_frames`): a queue bound with `frames_binding(lab)` gets every
    message holding one of that lab's frames, once however many of its labs it holds."""
    return f"{settings.LABCONSOLE_PREFIX}.frames"


# A message of the frames exchange: a header per lab it holds (what the bindings match),
# and FRAMES_INDEX, "<lab> <bytes> <lab> <bytes> ...", which cuts its body into the frames
# in that order. A frame's bytes are the monitor's JSON text, forwarded as they are.
FRAMES_INDEX = "frames"


def _frames_header(lab_id: str) -> str:
    return f"lab.{lab_id}"


def frames_binding(lab_id: str) -> dict:
    """The arguments of a queue's binding to the frames exchange for one lab."""
    return {"x-match": "any", _frames_header(lab_id): 1}


def pack_frames(frames: Iterable[tuple[str, bytes]]) -> tuple[dict, bytes]:
    """The headers and body of one frames message holding `frames` (lab id, JSON bytes)."""
    headers: dict = {}
    index, bodies = [], []
    for lab_id, body in frames:
        headers[_frames_header(lab_id)] = 1
        index.append(f"{lab_id} {len(body)}")
        bodies.append(body)
    headers[FRAMES_INDEX] = " ".join(index)
    return headers, b"".join(bodies)


def unpack_frames(headers: dict | None, body: bytes) -> list[tuple[str, bytes]]:
    """The (lab id, frame bytes) of a frames message, in the order they were made; a
    message that does not say what it holds, or whose index overruns its body, holds
    none."""
    index = (headers or {}).get(FRAMES_INDEX)
    if isinstance(index, bytes):
        index = index.decode("utf-8", "replace")
    if not isinstance(index, str):
        return []
    parts = index.split()
    if len(parts) % 2:
        return []
    frames, at = [], 0
    for lab_id, size in zip(parts[::2], parts[1::2], strict=True):
        if not size.isdigit() or at + int(size) > len(body):
            return []
        frames.append((lab_id, body[at : at + int(size)]))
        at += int(size)
    return frames


def lab_frames(lab_id: str, headers: dict | None, body: bytes) -> list[bytes]:
    """One lab's frames in a frames message (it may hold other labs' too)."""
    return [frame for lab, frame in unpack_frames(headers, body) if lab == lab_id]


def is_frames(headers: dict | None) -> bool:
    """Whether a message read from a queue is one of the frames exchange's."""
    return bool(headers) and FRAMES_INDEX in headers


def publish_frames(channel, frames: Iterable[tuple[str, bytes]]) -> None:
    """Publishes one frames message on a pika channel (as a worker's console bus does)."""
    headers, body = pack_frames(frames)
    channel.basic_publish(frames_exchange(), "", body, pika.BasicProperties(headers=headers))


def bind_frames(channel, queue: str, lab_id: str, *, unbind: bool = False) -> None:
    """Binds (or unbinds) a queue of a pika channel to one lab's frames."""
    call = channel.queue_unbind if unbind else channel.queue_bind
    call(queue, frames_exchange(), "", arguments=frames_binding(lab_id))


def control_exchange() -> str:
    """Topic exchange in the console vhost carrying control messages to running tasks."""
    return f"{settings.LABCONSOLE_PREFIX}.control"


def firehose_queue() -> str:
    """The queue in each lab's vhost that collects its firehose (amq.rabbitmq.trace). It is
    declared with the lab, so nothing the lab does is missed while its monitor starts."""
    return f"{settings.LABCONSOLE_PREFIX}.firehose"


FIREHOSE_QUEUE_LENGTH = 20000
# Durable, so that a restart of the broker does not take it (the monitor declares it
# again all the same, with these arguments); the oldest trace messages go first.
FIREHOSE_ARGUMENTS = {"x-max-length": FIREHOSE_QUEUE_LENGTH, "x-overflow": "drop-head"}
# Only publishes: deliveries are counted by the consumers themselves (their reports), which
# halves what the broker enqueues for the live view and what the monitor decodes.
FIREHOSE_PATTERNS = ("publish.#",)


LAB_NAME_PREFIX = "lab-"


def lab_vhost(session_id: str) -> str:
    """The vhost of one lab, and the name of its user: the only place the name is made."""
    return f"{LAB_NAME_PREFIX}{session_id}"


def lab_session_id(name: str) -> str | None:
    """The lab id in a vhost or user name `lab_vhost` or `lab_extra_user` made, or None for
    any other name."""
    if not name.startswith(LAB_NAME_PREFIX):
        return None
    return name.removeprefix(LAB_NAME_PREFIX).partition(".")[0]


def lab_extra_user(lab_user: str, name: str) -> str:
    """The RabbitMQ name of one of an exercise's own users in a lab (`users` in the spec):
    the lab's user, a dot, the name (a lab id has no dot)."""
    return f"{lab_user}.{name}"


def lab_extra_password(lab_password: str, name: str) -> str:
    """The password of an exercise's own user, derived from the lab's, so that whoever
    holds the lab's credentials (its workloads) can connect as it, and nobody else."""
    return hmac.new(lab_password.encode(), name.encode(), hashlib.sha256).hexdigest()[:32]


# Lab vhost names do not carry LABCONSOLE_PREFIX, and several consoles (a developer's, the
# test suite, a benchmark) may share one broker, each with labs of its own database. So
# every lab vhost and user carries two tags the console sets when it makes them: whose it
# is, and when it was made (the management API tells neither). The sweeper removes only
# what carries its own console's mark.
MADE_TAG = "made:"


def lab_mark() -> str:
    return f"labconsole:{settings.LABCONSOLE_PREFIX}"


def lab_tags(made: float) -> list[str]:
    """The tags of a lab vhost or user made at `made` (seconds since the epoch)."""
    return [lab_mark(), f"{MADE_TAG}{int(made)}"]


def lab_made(tags: list[str] | str) -> float | None:
    """When a lab vhost or user was made, from its tags; None if they do not say."""
    if isinstance(tags, str):
        tags = tags.split(",")
    for tag in tags:
        if tag.startswith(MADE_TAG) and tag[len(MADE_TAG) :].isdigit():
            return float(tag[len(MADE_TAG) :])
    return None


def lab_key(session_id: str, kind: str) -> str:
    """Routing key of one lab's messages on the flow exchange (`report`, `frame`,
    `status`, `workload`) and of its monitor on the control exchange (`monitor`)."""
    return f"lab.{session_id}.{kind}"


def runtime_queue(host: str, pid: int) -> str:
    """The control queue of one worker process's console bus (exclusive to it)."""
    return f"{settings.LABCONSOLE_PREFIX}.runtime.{host}.{pid}"


def reports_queue(session_id: str) -> str:
    """The queue in the console's vhost that collects one lab's workload reports."""
    return f"{settings.LABCONSOLE_PREFIX}.reports.{session_id}"


def declare_reports_queue(channel, session_id: str) -> None:
    """Collects the lab's workload reports from the moment it starts, so that none is lost
    while its monitor starts or moves to another worker. It expires an hour after its
    last consumer left, should a lab end without deleting it."""
    name = reports_queue(session_id)
    channel.queue_declare(name, durable=True, arguments={"x-expires": 3_600_000})
    channel.queue_bind(name, flow_exchange(), lab_key(session_id, "report"))


def declare_console_exchanges(channel) -> None:
    channel.exchange_declare(flow_exchange(), "topic", durable=True)
    channel.exchange_declare(control_exchange(), "topic", durable=True)
    channel.exchange_declare(frames_exchange(), "headers", durable=True)


def close_quietly(connection: pika.BlockingConnection | None) -> None:
    """Closes a connection that may already be gone (the vhost was deleted, the broker
    restarted): at the end of a run, a failure to close is not news."""
    if connection is not None and connection.is_open:
        with contextlib.suppress(pika.exceptions.AMQPError, OSError):
            connection.close()
