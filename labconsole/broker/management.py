"""Client for the RabbitMQ management HTTP API: vhosts, users, definitions, statistics.

https://www.rabbitmq.com/docs/http-api-reference
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import quote

import requests
from django.conf import settings

log = logging.getLogger(__name__)

TRACING_CONFIRMATIONS = 5  # reads of a vhost's tracing before giving up on turning it on


class BrokerError(Exception):
    """The broker refused a request; `reason` is its own words, decoded."""

    def __init__(self, status: int, reason: str, *, path: str = "", body: object = None):
        self.status = status
        self.reason = reason
        self.path = path
        self.body = body  # the decoded JSON answer, when there was one
        super().__init__(f"RabbitMQ refused {path}: {reason}" if path else reason)


def _decode_reason(reason: Any) -> str:
    """The API sometimes returns an Erlang term as JSON: strings become lists of code points."""
    if isinstance(reason, str):
        return reason
    if isinstance(reason, list):
        if reason and all(isinstance(c, int) for c in reason):
            return bytes(reason).decode("utf-8", "replace")
        parts = [_decode_reason(r) for r in reason]
        # ["amqp_error", "precondition_failed", "<text>", "none"]: the text is what matters.
        texts = [p for p in parts if " " in p]
        return texts[0] if texts else ", ".join(p for p in parts if p and p != "none")
    return json.dumps(reason)


def _q(name: str) -> str:
    return quote(name, safe="")


class ManagementClient:
    """`url` (by default RABBITMQ_API_URL) may list several nodes' APIs, separated by
    commas: a request that cannot connect to one goes to the next, and the one that
    answered is asked first from then on."""

    def __init__(
        self, url: str | None = None, user: str | None = None, password: str | None = None
    ):
        self.urls = [
            u.strip().rstrip("/")
            for u in (url or settings.RABBITMQ_API_URL).split(",")
            if u.strip()
        ]
        self.session = requests.Session()
        self.session.auth = (
            user or settings.RABBITMQ_API_USER,
            password or settings.RABBITMQ_API_PASSWORD,
        )

    @property
    def url(self) -> str:
        return self.urls[0]

    def _send(self, method: str, path: str, body: Any) -> requests.Response:
        failed = []
        for i, url in enumerate(self.urls):
            try:
                response = self.session.request(method, f"{url}/api/{path}", json=body, timeout=30)
            except requests.ConnectionError as exc:  # not connected: nothing was done
                failed.append((url, exc))
                continue
            except requests.RequestException as exc:
                raise BrokerError(0, f"management API at {url} did not answer ({exc})") from exc
            if i:
                self.urls.insert(0, self.urls.pop(i))
            return response
        url, exc = failed[-1]
        where = url if len(failed) == 1 else ", ".join(u for u, _ in failed)
        raise BrokerError(0, f"management API at {where} did not answer ({exc})") from exc

    def request(self, method: str, path: str, body: Any = None, *, ok_missing: bool = False) -> Any:
        response = self._send(method, path, body)
        if response.status_code == 404 and ok_missing:
            return None
        if response.status_code >= 400:
            body = None
            try:
                body = response.json()
                reason = _decode_reason(body.get("reason", response.text))
            except (ValueError, AttributeError):
                reason = response.text or response.reason
            raise BrokerError(response.status_code, reason, path=f"{method} /api/{path}", body=body)
        if response.content and response.headers.get("content-type", "").startswith(
            "application/json"
        ):
            return response.json()
        return None

    def listing(self, path: str, *, ok_missing: bool = False) -> list[dict]:
        """A GET of a list. An item that is being deleted as the list is made (a vhost, a
        queue) comes as an empty JSON list instead of an object: it is left out."""
        items = self.request("GET", path, ok_missing=ok_missing) or []
        return [item for item in items if isinstance(item, dict)]

    # --- vhosts and users -----------------------------------------------------------------
    def vhost_names(self) -> list[str]:
        return [v["name"] for v in self.listing("vhosts?columns=name")]

    def vhost_exists(self, name: str) -> bool:
        return self.request("GET", f"vhosts/{_q(name)}", ok_missing=True) is not None

    def user_exists(self, name: str) -> bool:
        return self.request("GET", f"users/{_q(name)}", ok_missing=True) is not None

    def vhosts(self) -> list[dict]:
        """Every vhost's name, description and tags (a list)."""
        return self.listing("vhosts?columns=name,description,tags")

    def users(self) -> list[dict]:
        """Every user's name and tags (a list, or a comma-separated string on older nodes)."""
        return self.listing("users?columns=name,tags")

    def put_vhost(
        self,
        name: str,
        *,
        tracing: bool = False,
        description: str = "",
        tags: list[str] | tuple[str, ...] = (),
    ) -> None:
        """Creates the vhost, or sets all of these on it (a PUT replaces the description
        and tags it had)."""
        self.request(
            "PUT",
            f"vhosts/{_q(name)}",
            {"tracing": tracing, "description": description, "tags": ",".join(tags)},
        )

    def tracing_on(self, name: str) -> bool:
        """Turns the firehose of an existing vhost on again, keeping its description and
        tags; a vhost that is gone is not made again. Returns whether it exists.

        RabbitMQ keeps the firehose per node: a node traces the channels it runs only. With
        several nodes' APIs, it is turned on through each node that answers."""
        vhost = self.request("GET", f"vhosts/{_q(name)}", ok_missing=True)
        if vhost is None:
            return False
        tags = vhost.get("tags") or []
        for url in list(self.urls):
            node = ManagementClient(url, *self.session.auth) if len(self.urls) > 1 else self
            try:
                node.put_vhost(
                    name,
                    tracing=True,
                    description=vhost.get("description") or "",
                    tags=tags.split(",") if isinstance(tags, str) else tags,
                )
            except BrokerError:
                if len(self.urls) == 1:
                    raise
                log.info("firehose of %s not turned on at %s", name, url)
        return True

    def traces(self, name: str) -> bool | None:
        """Whether the vhost is traced now (None: there is no such vhost). Each node says
        from its own list of traced vhosts, not from the setting the vhost was made with:
        the two differ after a lost update (see `confirm_tracing`). With several nodes'
        APIs, it is traced when every node that answers traces it."""
        if len(self.urls) == 1:
            vhost = self.request("GET", f"vhosts/{_q(name)}?columns=tracing", ok_missing=True)
            return None if vhost is None else vhost.get("tracing") is True
        states = []
        for url in self.urls:
            try:
                states.append(ManagementClient(url, *self.session.auth).traces(name))
            except BrokerError:
                continue  # a node that is down traces nothing, and is turned on as it starts
        if not states:
            raise BrokerError(0, f"no management API of {', '.join(self.urls)} answered")
        return None if None in states else all(states)

    def confirm_tracing(self, name: str, *, attempts: int = TRACING_CONFIRMATIONS) -> bool:
        """Reads back that the vhost traces, turning its firehose on again until it does;
        returns whether it does (False as well for a vhost that is gone).

        A node keeps the vhosts it traces as one application setting, read, changed and
        written back by each request that turns tracing on or off, deleting a traced vhost
        included, with nothing ordering them (`rabbit_trace:update_config`). A vhost made
        while another traced vhost is deleted can so be left untraced, though made with
        `tracing: true`; on one node, 9 of 40 vhosts made beside 40 deletions were."""
        for attempt in range(attempts):
            state = self.traces(name)
            if state is not False:
                return bool(state)
            log.warning("the firehose of %s was off at the broker; turning it on", name)
            self.tracing_on(name)
            time.sleep(0.05 * (attempt + 1))
        return self.traces(name) is True

    def delete_vhost(self, name: str) -> None:
        """Deletes the vhost and everything in it, closing its connections; absent is fine."""
        self.request("DELETE", f"vhosts/{_q(name)}", ok_missing=True)

    def delete_user(self, name: str) -> None:
        self.request("DELETE", f"users/{_q(name)}", ok_missing=True)

    def put_operator_policy(self, vhost: str, name: str, policy: dict) -> None:
        self.request("PUT", f"operator-policies/{_q(vhost)}/{_q(name)}", policy)

    def import_definitions(self, definitions: dict, *, vhost: str | None = None) -> None:
        """One call for users, permissions, topology and limits (the fastest way); with
        `vhost`, a file of one vhost's topology into that vhost."""
        self.request(
            "POST", "definitions" if vhost is None else f"definitions/{_q(vhost)}", definitions
        )

    def definitions(self, vhost: str | None = None) -> dict:
        """The broker's definitions file (every vhost, user and permission), or one vhost's
        (its topology, policies and parameters), as `rabbitmqctl export_definitions` and
        the management UI write them."""
        return self.request("GET", "definitions" if vhost is None else f"definitions/{_q(vhost)}")

    def alarms(self) -> list[str]:
        """Resource alarms in force ("memory on rabbit@host", "disk on ..."): while one
        is, the broker blocks every connection that publishes. The health check answers
        live (the nodes' statistics show an alarm seconds late)."""
        try:
            self.request("GET", "health/checks/alarms")
        except BrokerError as exc:
            if exc.status != 503:
                raise
            body = exc.body if isinstance(exc.body, dict) else {}
            found = [
                f"{a.get('resource', 'resource')} on {a.get('node', '?')}"
                for a in body.get("alarms", [])
            ]
            return found or [exc.reason]
        return []

    def enabled_plugins(self) -> set[str]:
        """The plugins enabled on every running node, read now (GET /api/nodes gives each
        node's `enabled_plugins`; /api/overview has none)."""
        nodes = self.listing("nodes?columns=name,running,enabled_plugins")
        found = [set(n.get("enabled_plugins") or ()) for n in nodes if n.get("running")]
        return set.intersection(*found) if found else set()

    # --- topology and statistics ----------------------------------------------------------
    def queues(self, vhost: str) -> list[dict]:
        return self.listing(
            f"queues/{_q(vhost)}?disable_stats=false&columns=name,type,messages,messages_ready,"
            "messages_unacknowledged,consumers,message_stats,arguments",
        )

    def queue_fill(self, vhost: str) -> list[dict]:
        """How full the queues of `vhost` are: each one's ready messages and their bytes,
        its arguments and its effective policy (the operator policy's caps merged in)."""
        return self.listing(
            f"queues/{_q(vhost)}?disable_stats=false&columns=name,messages_ready,"
            "message_bytes_ready,arguments,effective_policy_definition",
        )

    def queue_placement(self, vhost: str) -> list[dict]:
        """Where the queues of `vhost` live: each one's name, type, durability and state;
        a classic queue's `node`; a quorum queue's `leader`, `members` and `online`."""
        return self.listing(
            f"queues/{_q(vhost)}?disable_stats=true&columns=name,type,durable,state,node,leader,"
            "members,online",
        )

    def quorum_queues(self, vhost: str) -> dict[str, dict]:
        """The quorum queues of `vhost`: name -> their `leader`, `members` and `online`
        (node names)."""
        return quorum_of(self.queue_placement(vhost))

    def bindings(self, vhost: str) -> list[dict]:
        return self.listing(f"bindings/{_q(vhost)}")

    def put_exchange(self, vhost: str, name: str, definition: dict) -> None:
        """Declares an exchange (`type`, `durable`, `auto_delete`, `internal`, `arguments`);
        the broker refuses one that exists with other properties (400)."""
        self.request("PUT", f"exchanges/{_q(vhost)}/{_q(name)}", definition)

    def delete_exchange(self, vhost: str, name: str) -> None:
        """Deletes an exchange and every binding from or to it; absent is fine."""
        self.request("DELETE", f"exchanges/{_q(vhost)}/{_q(name)}", ok_missing=True)

    def put_queue(self, vhost: str, name: str, definition: dict) -> None:
        """Declares a queue (`durable`, `auto_delete`, `arguments` with x-queue-type)."""
        self.request("PUT", f"queues/{_q(vhost)}/{_q(name)}", definition)

    def delete_queue(self, vhost: str, name: str) -> None:
        """Deletes a queue, its messages and its bindings; absent is fine."""
        self.request("DELETE", f"queues/{_q(vhost)}/{_q(name)}", ok_missing=True)

    def bind(
        self, vhost: str, source: str, destination: str, destination_type: str, binding: dict
    ) -> None:
        """Binds `destination` (a queue, or an exchange) to `source` with `routing_key`
        and `arguments`."""
        kind = "q" if destination_type == "queue" else "e"
        self.request(
            "POST", f"bindings/{_q(vhost)}/e/{_q(source)}/{kind}/{_q(destination)}", binding
        )

    def unbind(
        self,
        vhost: str,
        source: str,
        destination: str,
        destination_type: str,
        *,
        routing_key: str,
        arguments: dict,
    ) -> bool:
        """Deletes the binding with this key and these arguments; returns whether there
        was one. The API names a binding by its `properties_key`, read from the list."""
        kind = "q" if destination_type == "queue" else "e"
        path = f"bindings/{_q(vhost)}/e/{_q(source)}/{kind}/{_q(destination)}"
        for found in self.listing(path, ok_missing=True):
            if found.get("routing_key") == routing_key and (found.get("arguments") or {}) == (
                arguments or {}
            ):
                self.request("DELETE", f"{path}/{_q(found['properties_key'])}", ok_missing=True)
                return True
        return False

    def put_policy(self, vhost: str, name: str, policy: dict) -> None:
        """Declares or replaces a policy (`pattern`, `apply-to`, `priority`, `definition`)."""
        self.request("PUT", f"policies/{_q(vhost)}/{_q(name)}", policy)

    def delete_policy(self, vhost: str, name: str) -> None:
        self.request("DELETE", f"policies/{_q(vhost)}/{_q(name)}", ok_missing=True)

    def policy_targets(self, vhost: str) -> list[dict]:
        """The queues and exchanges of `vhost` with the policy that applies to each now:
        `kind` (queue or exchange), `name`, `policy` (None for none) and, for a queue,
        `effective` (the keys in force, operator policies merged in)."""
        queues = self.listing(
            f"queues/{_q(vhost)}?disable_stats=true&columns=name,policy,"
            "effective_policy_definition",
        )
        exchanges = self.listing(f"exchanges/{_q(vhost)}?columns=name,policy")
        return [
            {
                "kind": "queue",
                "name": q["name"],
                "policy": q.get("policy") or None,
                "effective": q.get("effective_policy_definition") or {},
            }
            for q in queues
        ] + [
            {"kind": "exchange", "name": x["name"], "policy": x.get("policy") or None}
            for x in exchanges
        ]

    def connections(self, vhost: str) -> list[dict]:
        return self.listing(f"vhosts/{_q(vhost)}/connections")

    def connections_per_node(self, vhost: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for c in self.listing(f"vhosts/{_q(vhost)}/connections?columns=node"):
            counts[c["node"]] = counts.get(c["node"], 0) + 1
        return counts

    def delete_named(self, vhost: str, prefix: str) -> None:
        """Deletes the queues and exchanges of `vhost` whose names start with `prefix` (the
        objects a console with that LABCONSOLE_PREFIX made, when it is done for good)."""
        for kind in ("queues", "exchanges"):
            for item in self.listing(f"{kind}/{_q(vhost)}?columns=name,exclusive"):
                # An exclusive queue goes with its connection (a process that is ending).
                if item["name"].startswith(prefix) and not item.get("exclusive"):
                    self.request(
                        "DELETE", f"{kind}/{_q(vhost)}/{_q(item['name'])}", ok_missing=True
                    )


def quorum_of(placement: list[dict]) -> dict[str, dict]:
    """The quorum queues of a `queue_placement` listing: name -> their `leader`, `members`
    and `online` (node names)."""
    return {
        q["name"]: {
            "leader": q.get("leader"),
            "members": sorted(q.get("members") or []),
            "online": sorted(q.get("online") or []),
        }
        for q in placement
        if q.get("type") == "quorum"
    }
