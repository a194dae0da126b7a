"""A lab's RabbitMQ user (the credentials its workloads, and anyone who reads them from a
workload's process, hold) reaches its own vhost and nothing else: not another lab's
vhost, not the console's own, not the management API."""

import pika.exceptions as px
import pytest
import requests
from django.conf import settings

from exercises.models import LabSession
from exercises.services import lab_session_start
from labconsole.broker import amqp

pytestmark = pytest.mark.django_db(transaction=True)


def connect_as(session: LabSession, vhost: str):
    return amqp.connect(
        amqp.parameters(
            vhost=vhost, user=session.rabbit_user, password=session.rabbit_password, name="probe"
        )
    )


@pytest.fixture
def two_labs(catalogue, learner, django_user_model, labs):
    other = django_user_model.objects.create_user("other", password="other-pass-1")
    mine = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    theirs = lab_session_start(exercise=catalogue["dlq-retries"], owner=other, run=False)
    return mine, theirs


def test_a_labs_user_opens_only_its_own_vhost(two_labs):
    """AMQP: the broker refuses the lab's user another lab's vhost, the console's vhost and
    the default one, at the connection's open (530 NOT_ALLOWED); its own vhost opens."""
    mine, theirs = two_labs
    amqp.close_quietly(connect_as(mine, mine.vhost))
    for vhost in {theirs.vhost, amqp.console_vhost(), "/"}:
        with pytest.raises(px.ProbableAccessDeniedError) as refused:
            connect_as(mine, vhost)
        reason = (
            f"(530) \"NOT_ALLOWED - access to vhost '{vhost}' refused for user '{mine.rabbit_user}'"
        )
        assert reason in str(refused.value), refused.value


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "overview"),
        ("GET", "vhosts"),
        ("GET", "queues/{theirs}"),
        ("GET", "queues/{mine}"),
        ("GET", "users"),
        ("DELETE", "vhosts/{theirs}"),
        ("PUT", "permissions/{theirs}/{user}"),
    ],
)
def test_a_labs_user_is_refused_by_the_management_api(two_labs, method, path, api):
    """The lab's user carries no management tag: every call of the HTTP API, even about
    its own vhost, is refused with 401, and the other lab is left as it was."""
    mine, theirs = two_labs
    url = (
        settings.RABBITMQ_API_URL.rstrip("/")
        + "/api/"
        + path.format(
            theirs=requests.utils.quote(theirs.vhost, safe=""),
            mine=requests.utils.quote(mine.vhost, safe=""),
            user=mine.rabbit_user,
        )
    )
    body = {"configure": ".*", "write": ".*", "read": ".*"} if method == "PUT" else None
    response = requests.request(
        method, url, json=body, auth=(mine.rabbit_user, mine.rabbit_password), timeout=10
    )
    assert response.status_code == 401, (path, response.status_code, response.text)
    assert api.vhost_exists(theirs.vhost)
    permissions = api.request("GET", f"users/{mine.rabbit_user}/permissions")
    assert [p["vhost"] for p in permissions] == [mine.vhost]
