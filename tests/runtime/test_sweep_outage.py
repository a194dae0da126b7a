"""A lab ended while the broker is away: the page answers at once, the lab is ended in the
database, and the sweeper deletes its vhost and user once the broker is back. On the
tests' own node (tests/brokernode.py), never the shared broker."""

from __future__ import annotations

import time

import pytest
from django.urls import reverse

from exercises.models import LabSession
from exercises.sweep import labs_sweep
from labconsole.broker.management import BrokerError, ManagementClient
from tests.runtime.conftest import on_node, start_lab

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_lab_ended_during_an_outage_is_swept_when_the_broker_is_back(
    node, node_env, node_labs, catalogue, client
):
    session = start_lab(node_env, "direct-routing")
    client.force_login(session.owner)
    answers = {}

    def end_while_down():
        with on_node(node):
            with pytest.raises(BrokerError):
                ManagementClient().vhost_names()  # the outage is real
            started = time.monotonic()
            response = client.post(
                reverse("lab-end", args=[session.id]), headers={"HX-Request": "true"}
            )
            answers["seconds"] = time.monotonic() - started
            answers["response"] = response
            answers["page"] = client.get(session.get_absolute_url())
            # A sweep while the broker is still away does nothing, and says so.
            with pytest.raises(BrokerError):
                labs_sweep(grace_seconds=0)

    with on_node(node):
        api = ManagementClient()
        assert api.vhost_exists(session.vhost) and api.user_exists(session.rabbit_user)
    node.soft_restart(while_down=end_while_down)

    response = answers["response"]
    assert response.status_code == 200, response.content[:500]
    assert response["HX-Redirect"] == reverse("exercise", args=["direct-routing"])
    print(f"lab-end answered in {answers['seconds']:.3f} s with the broker away")
    assert answers["seconds"] < 5, answers["seconds"]
    assert answers["page"].status_code == 200 and "ended" in answers["page"].content.decode()
    session.refresh_from_db()
    assert session.state == LabSession.State.ENDED and session.ended_at is not None
    assert session.teardown_pending

    with on_node(node):
        api = ManagementClient()
        # Still there after the outage: only the sweep deletes them.
        assert api.vhost_exists(session.vhost) and api.user_exists(session.rabbit_user)
        result = labs_sweep(grace_seconds=300)
        assert result.torn_down == [session.id]
        assert not api.vhost_exists(session.vhost)
        assert not api.user_exists(session.rabbit_user)
    session.refresh_from_db()
    assert not session.teardown_pending
