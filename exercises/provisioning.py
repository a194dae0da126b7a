"""From an exercise spec to a lab's vhost, user and topology on the broker."""

from __future__ import annotations

import time

from django.conf import settings

from labconsole.broker import amqp
from labconsole.broker.management import ManagementClient

from .spec import ExerciseSpec


def lab_definitions(
    spec: ExerciseSpec, *, vhost: str, user: str, password: str, made: float | None = None
) -> dict:
    """A definitions document (https://www.rabbitmq.com/docs/definitions) for the lab: one
    POST declares the user, its permissions, the vhost limits and the whole topology. The
    user's tags are the console's mark (amqp.lab_tags); none of them opens the management
    UI."""
    t = spec.topology
    tags = ",".join(amqp.lab_tags(time.time() if made is None else made))
    return {
        "users": [{"name": user, "password": password, "tags": tags}],
        "permissions": [
            {"user": user, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}
        ],
        "parameters": [
            {
                "vhost": vhost,
                "component": "vhost-limits",
                "name": "limits",
                "value": {
                    "max-queues": settings.LAB_MAX_QUEUES,
                    "max-connections": settings.LAB_MAX_CONNECTIONS,
                },
            }
        ],
        "policies": [
            {
                "vhost": vhost,
                "name": p.name,
                "pattern": p.pattern,
                "apply-to": p.apply_to,
                "priority": p.priority,
                "definition": p.definition,
            }
            for p in t.policies
        ],
        "exchanges": [
            {
                "vhost": vhost,
                "name": x.name,
                "type": x.type,
                "durable": x.durable,
                "auto_delete": x.auto_delete,
                "internal": x.internal,
                "arguments": x.arguments,
            }
            for x in t.exchanges
        ],
        "queues": [
            {
                "vhost": vhost,
                "name": q.name,
                "durable": q.durable,
                "auto_delete": q.auto_delete,
                "arguments": {**q.arguments, "x-queue-type": q.type},
            }
            for q in t.queues
        ]
        + [
            {
                "vhost": vhost,
                "name": amqp.firehose_queue(),
                "durable": True,
                "auto_delete": False,
                "arguments": amqp.FIREHOSE_ARGUMENTS,
            }
        ],
        "bindings": [
            {
                "vhost": vhost,
                "source": b.source,
                "destination": b.destination,
                "destination_type": b.destination_type,
                "routing_key": b.routing_key,
                "arguments": b.arguments,
            }
            for b in t.bindings
        ]
        + [
            {
                "vhost": vhost,
                "source": "amq.rabbitmq.trace",
                "destination": amqp.firehose_queue(),
                "destination_type": "queue",
                "routing_key": pattern,
                "arguments": {},
            }
            for pattern in amqp.FIREHOSE_PATTERNS
        ],
    }


def provision(spec: ExerciseSpec, *, vhost: str, user: str, password: str) -> None:
    """Creates the vhost with the firehose on, then imports everything else in one call.
    On any failure it removes what it made and re-raises the broker's refusal."""
    api = ManagementClient()
    made = time.time()
    try:
        api.put_vhost(
            vhost, tracing=True, description=f"lab: {spec.slug}", tags=amqp.lab_tags(made)
        )
        api.import_definitions(
            lab_definitions(spec, vhost=vhost, user=user, password=password, made=made)
        )
    except Exception:
        teardown(vhost=vhost, user=user)
        raise


def teardown(*, vhost: str, user: str) -> None:
    """Deletes the vhost (everything in it, its connections) and the user; either may be
    gone already. Raises BrokerError if the broker does not answer or refuses."""
    api = ManagementClient()
    api.delete_vhost(vhost)
    api.delete_user(user)
