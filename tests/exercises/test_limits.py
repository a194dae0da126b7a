"""Limits per user and per lab, each reached against the real broker and answered with
its message (docs/operations.md lists the settings)."""

from datetime import timedelta

import pika
import pika.exceptions as px
import pytest
from django.urls import reverse
from django.utils import timezone

from exercises.models import LabSession, RateEvent
from exercises.provisioning import CAP_POLICY
from exercises.services import LabError, lab_session_start, lab_session_stop
from labconsole.broker import amqp
from tests.support import text_of

pytestmark = pytest.mark.django_db(transaction=True)


def lab_connection(session: LabSession) -> pika.BlockingConnection:
    return amqp.connect(
        amqp.parameters(
            vhost=session.vhost,
            user=session.rabbit_user,
            password=session.rabbit_password,
            name="test learner",
        )
    )


def start_url(catalogue) -> str:
    return reverse("lab-start", args=[catalogue["direct-routing"].slug])


def test_fourth_lab_at_once_is_refused(client_in, catalogue, learner, labs, settings):
    settings.LAB_MAX_PER_USER = 3
    settings.LAB_STARTS_PER_MINUTE = 100
    for _ in range(2):
        lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    third = client_in.post(start_url(catalogue), headers={"HX-Request": "true"})
    assert third.status_code == 200 and "HX-Redirect" in third
    fourth = client_in.post(start_url(catalogue), headers={"HX-Request": "true"})
    assert fourth.status_code == 429
    assert "You already have 3 labs running" in text_of(fourth)
    russian = client_in.post(
        start_url(catalogue), headers={"HX-Request": "true", "Accept-Language": "ru"}
    )
    assert "У вас уже запущено лабораторий: 3, больше одновременно нельзя" in text_of(russian)
    assert LabSession.objects.filter(owner=learner).count() == 3
    lab_session_stop(session=LabSession.objects.filter(owner=learner).first())
    again = client_in.post(start_url(catalogue), headers={"HX-Request": "true"})
    assert "HX-Redirect" in again, "ending a lab frees its place"


def test_seventh_start_in_a_minute_is_refused(client_in, catalogue, learner, labs, settings):
    settings.LAB_MAX_PER_USER = 3
    settings.LAB_STARTS_PER_MINUTE = 6
    for _ in range(6):
        response = client_in.post(start_url(catalogue), headers={"HX-Request": "true"})
        assert "HX-Redirect" in response, text_of(response)
        lab_session_stop(session=LabSession.objects.filter(owner=learner).first())
    seventh = client_in.post(start_url(catalogue), headers={"HX-Request": "true"})
    assert seventh.status_code == 429
    assert "You started 6 labs in the last minute" in text_of(seventh)
    assert "Try again in" in text_of(seventh)
    assert not LabSession.objects.exclude(state=LabSession.State.ENDED).exists()
    RateEvent.objects.update(at=timezone.now() - timedelta(seconds=61))
    later = client_in.post(start_url(catalogue), headers={"HX-Request": "true"})
    assert "HX-Redirect" in later, "a minute later starts are allowed again"


def test_publishes_past_the_rate_are_refused(client_in, catalogue, learner, labs, settings):
    settings.LAB_PUBLISHES_PER_MINUTE = 3
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    url = reverse("lab-publish", args=[session.id])
    form = {"exchange": "sensors", "routing_key": "temperature", "body": "{}"}
    for _ in range(3):
        ok = client_in.post(url, form)
        assert ok.status_code == 200 and "published to exchange 'sensors'" in text_of(ok)
    refused = client_in.post(url, form)
    assert refused.status_code == 429
    assert "You published 3 messages from this page in the last minute" in text_of(refused)
    russian = client_in.post(url, form, headers={"Accept-Language": "ru"})
    assert "Сообщений, отправленных с этой страницы за последнюю минуту: 3" in text_of(russian)
    connection = lab_connection(session)
    try:
        assert (
            connection.channel().queue_declare("temperature", passive=True).method.message_count
            == 3
        )
    finally:
        connection.close()


def test_lab_vhost_refuses_a_queue_past_its_limit(catalogue, learner, labs, settings):
    settings.LAB_MAX_QUEUES = 5  # two of the exercise's, the firehose's, two more
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    connection = lab_connection(session)
    try:
        channel = connection.channel()
        channel.queue_declare("mine-1")
        channel.queue_declare("mine-2")
        with pytest.raises(px.ChannelClosedByBroker) as refused:
            channel.queue_declare("mine-3")
        assert refused.value.reply_code == 406  # PRECONDITION_FAILED
        assert "queue limit in vhost" in refused.value.reply_text
    finally:
        amqp.close_quietly(connection)


def test_lab_vhost_refuses_a_connection_past_its_limit(catalogue, learner, labs, settings):
    settings.LAB_MAX_CONNECTIONS = 6  # four workloads, the monitor, a publish
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    connections = []
    try:
        # The lab's own units (a worker may run its monitor) hold some of the six.
        with pytest.raises(px.AMQPConnectionError) as refused:
            for _ in range(7):
                connections.append(lab_connection(session))
        assert connections, "connections below the limit are accepted"
        assert "connection limit (6)" in repr(refused.value)
    finally:
        for connection in connections:
            amqp.close_quietly(connection)


def test_lab_user_is_refused_a_channel_past_its_limit(catalogue, learner, labs, settings):
    settings.LAB_MAX_CHANNELS = 11  # the 9 the exercise needs, and two more
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    connection = lab_connection(session)
    try:
        opened = 0
        # The limit counts the user's channels on every connection, the lab's units' too.
        with pytest.raises(px.AMQPError) as refused:
            for _ in range(12):
                connection.channel()
                opened += 1
        assert opened, "channels below the limit are opened"
        assert "limit of (11)" in repr(refused.value)
    finally:
        amqp.close_quietly(connection)


def test_a_queue_fed_past_the_cap_stays_at_the_cap(api, catalogue, learner, labs, settings):
    settings.LAB_QUEUE_MAX_LENGTH = 20
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    policy = api.request("GET", f"operator-policies/{session.vhost}/{CAP_POLICY}")
    assert policy["definition"]["max-length"] == 20
    connection = lab_connection(session)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for i in range(10):
            channel.basic_publish("sensors", "temperature", str(i).encode())
        assert channel.queue_declare("temperature", passive=True).method.message_count == 10
        for i in range(10, 30):
            channel.basic_publish("sensors", "temperature", str(i).encode())
        assert channel.queue_declare("temperature", passive=True).method.message_count == 20
        method, _, body = channel.basic_get("temperature", auto_ack=True)
        assert body == b"10", "the oldest were dropped (the broker's drop-head)"
    finally:
        amqp.close_quietly(connection)


def test_a_queue_fed_past_the_byte_cap_stays_under_it(catalogue, learner, labs, settings):
    settings.LAB_QUEUE_MAX_BYTES = 1000
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    connection = lab_connection(session)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for _ in range(4):
            channel.basic_publish("sensors", "pressure", b"x" * 200)
        assert channel.queue_declare("pressure", passive=True).method.message_count == 4
        for _ in range(6):
            channel.basic_publish("sensors", "pressure", b"x" * 200)
        assert channel.queue_declare("pressure", passive=True).method.message_count == 5
    finally:
        amqp.close_quietly(connection)


OWN_LIMIT = """
version: 1
slug: own-limit
title: Own limit
summary: A queue that rejects past its own length
description: An exercise about queue limits.
level: beginner
minutes: 5
topology:
  queues:
    - name: small
      arguments: {x-max-length: 5, x-overflow: reject-publish}
"""


def test_an_exercise_keeps_its_own_overflow_under_the_cap(catalogue, learner, labs, settings):
    """The cap takes the lower length, but the exercise's reject-publish still answers."""
    from exercises.services import exercise_save

    exercise, _ = exercise_save(source=OWN_LIMIT)
    for cap, taken in ((100, 5), (3, 3)):
        settings.LAB_QUEUE_MAX_LENGTH = cap
        session = lab_session_start(exercise=exercise, owner=learner, run=False)
        connection = lab_connection(session)
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            for _ in range(taken):
                channel.basic_publish("", "small", b"m")
            with pytest.raises(px.NackError):
                channel.basic_publish("", "small", b"m")
        finally:
            amqp.close_quietly(connection)


def test_an_exercise_needing_more_than_a_lab_may_use_is_refused(catalogue, learner, labs, settings):
    settings.LAB_MAX_CONNECTIONS = 5
    with pytest.raises(LabError, match=r"connections: 6 \(at most 5\)") as refused:
        lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    assert "Ask an instructor" in str(refused.value)
    assert not LabSession.objects.exists()
