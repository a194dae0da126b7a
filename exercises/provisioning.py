"""From an exercise spec to a lab's vhost, user and topology on the broker."""

from __future__ import annotations

import time
from urllib.parse import quote

from labconsole.broker import amqp
from labconsole.broker.brokers import LabBroker, firehose_arguments, lab_broker
from labconsole.broker.management import BrokerError

from .definitions import topology_definitions
from .quotas import LabQuotas, lab_quotas
from .spec import ExerciseSpec

#: The operator policy every lab vhost gets: it caps each queue whatever the exercise's
#: own policies say (the broker applies the lower of the two values).
CAP_POLICY = "labconsole-cap"


def lab_definitions(
    spec: ExerciseSpec,
    *,
    vhost: str,
    user: str,
    password: str,
    quotas: LabQuotas | None = None,
    made: float | None = None,
) -> dict:
    """A definitions document (https://www.rabbitmq.com/docs/definitions) for the lab: one
    POST declares the user and its limits, its permissions, the vhost limits and the whole
    topology. The user's tags are the console's mark (amqp.lab_tags); none of them opens
    the management UI."""
    quotas = quotas or lab_quotas()
    topology = topology_definitions(spec.topology, vhost=vhost)
    tags = ",".join(amqp.lab_tags(time.time() if made is None else made))
    limits = {"max-connections": quotas.connections, "max-channels": quotas.channels}
    # The exercise's own users, with limited permissions (a security lesson), carry the
    # lab's marks too: the sweeper reconciles them with the lab like its user.
    extra = [(amqp.lab_extra_user(user, u.name), u) for u in spec.users]
    return {
        "users": [{"name": user, "password": password, "tags": tags, "limits": limits}]
        + [
            {
                "name": name,
                "password": amqp.lab_extra_password(password, u.name),
                "tags": tags,
                "limits": limits,
            }
            for name, u in extra
        ],
        "permissions": [
            {"user": user, "vhost": vhost, "configure": ".*", "write": ".*", "read": ".*"}
        ]
        + [
            {
                "vhost": vhost,
                "user": name,
                "configure": u.configure,
                "write": u.write,
                "read": u.read,
            }
            for name, u in extra
        ],
        "parameters": [
            {
                "vhost": vhost,
                "component": "vhost-limits",
                "name": "limits",
                "value": {
                    "max-queues": quotas.queues,
                    "max-connections": quotas.connections,
                },
            }
        ],
        "policies": topology["policies"],
        "exchanges": topology["exchanges"],
        "queues": topology["queues"]
        + [
            {
                "vhost": vhost,
                "name": amqp.firehose_queue(),
                "durable": True,
                "auto_delete": False,
                "arguments": firehose_arguments(spec.broker),
            }
        ],
        "bindings": topology["bindings"]
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


def cap_policy(quotas: LabQuotas) -> dict:
    """Operator policies cannot set `overflow` (https://www.rabbitmq.com/docs/policies
    #operator-policies): a queue past the cap follows its own overflow behaviour, the
    broker's drop-head unless the exercise set reject-publish or reject-publish-dlx, so an
    exercise about limits teaches its own, lower, limit unchanged."""
    return {
        "pattern": ".*",
        "apply-to": "queues",
        "priority": 0,
        "definition": {"max-length": quotas.queue_length, "max-length-bytes": quotas.queue_bytes},
    }


def provision(
    spec: ExerciseSpec,
    *,
    vhost: str,
    user: str,
    password: str,
    quotas: LabQuotas | None = None,
    broker: LabBroker | None = None,
) -> None:
    """Creates the vhost on `broker` (the shared one unless given) with the firehose on and
    its cap policy, then imports everything else in one call (definitions cannot carry
    operator policies). On any failure it removes what it made and re-raises the broker's
    refusal."""
    quotas = quotas or lab_quotas()
    broker = broker or lab_broker()
    api = broker.api()
    made = time.time()
    try:
        api.put_vhost(
            vhost, tracing=True, description=f"lab: {spec.slug}", tags=amqp.lab_tags(made)
        )
        if len(api.urls) > 1:
            api.tracing_on(vhost)  # the firehose is per node: turned on at every node
        api.put_operator_policy(vhost, CAP_POLICY, cap_policy(quotas))
        api.import_definitions(
            lab_definitions(
                spec, vhost=vhost, user=user, password=password, quotas=quotas, made=made
            )
        )
        # Read back once all else is made: a deletion of another traced vhost at the
        # same moment can have undone the tracing the PUT turned on.
        if not api.confirm_tracing(vhost):
            raise BrokerError(0, f"the broker does not trace {vhost}")
    except Exception:
        teardown(vhost=vhost, user=user, broker=broker)
        raise


def teardown(*, vhost: str, user: str, broker: LabBroker | None = None) -> None:
    """Deletes the vhost (everything in it, its connections), the user and the exercise's
    own users (found by their permissions on the vhost, before it goes); any may be gone
    already. Raises BrokerError if the broker does not answer or refuses."""
    api = (broker or lab_broker()).api()
    permissions = api.request("GET", f"vhosts/{quote(vhost, safe='')}/permissions", ok_missing=True)
    extra = sorted({p["user"] for p in permissions or [] if p["user"].startswith(f"{user}.")})
    api.delete_vhost(vhost)
    api.delete_user(user)
    for name in extra:
        api.delete_user(name)
