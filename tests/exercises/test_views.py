"""The pages through Django's test client: catalogue, exercise, lab, controls, access."""

import pytest
from django.urls import reverse

from exercises.models import Exercise, LabSession, Workload
from exercises.services import exercise_apply_source, lab_session_start
from tests.support import text_of

pytestmark = pytest.mark.django_db(transaction=True)


def test_pages_need_a_login(client, catalogue):
    response = client.get(reverse("catalogue"))
    assert response.status_code == 302 and reverse("login") in response["Location"]


def test_catalogue_lists_and_filters(client_in, catalogue):
    page = client_in.get(reverse("catalogue")).content.decode()
    assert "Direct routing" in page and "Dead letters" in page
    partial = client_in.get(
        reverse("catalogue"), {"level": "intermediate"}, headers={"HX-Request": "true"}
    ).content.decode()
    assert "<html" not in partial
    assert "Dead letters" in partial and "Direct routing" not in partial
    tagged = client_in.get(reverse("catalogue"), {"tag": "no-such-tag"}).content.decode()
    assert "Direct routing" not in tagged


def test_catalogue_parses_each_version_once(client_in, catalogue, monkeypatch):
    """Every view of the catalogue reads each exercise's spec; only the first view of a
    version parses it, an edit (a new version) is parsed once more."""
    from exercises import spec as spec_module

    parsed = []
    real_parse = spec_module.parse_spec

    def counting_parse(text, **kwargs):
        parsed.append(text)
        return real_parse(text, **kwargs)

    monkeypatch.setattr(spec_module, "parse_spec", counting_parse)
    spec_module.spec_cache_clear()
    page = client_in.get(reverse("catalogue")).content.decode()
    assert "Direct routing" in page and "Dead letters" in page
    assert len(parsed) == 2
    client_in.get(reverse("catalogue"))
    client_in.get(reverse("catalogue"), {"level": "beginner"}, headers={"HX-Request": "true"})
    assert len(parsed) == 2

    exercise = catalogue["direct-routing"]
    edited = exercise.source.replace("rate: 2\n", "rate: 3\n", 1)
    exercise_apply_source(exercise=exercise, source=edited)
    exercise.save()
    assert exercise.version == 2
    client_in.get(reverse("catalogue"))
    client_in.get(reverse("catalogue"))
    assert parsed[2:] == [edited]


def test_catalogue_leaves_out_a_stored_exercise_that_no_longer_reads(client_in, catalogue):
    """A document saved before the format's limits were tightened does not break the
    catalogue: it is left out, the others are listed."""
    assert "Dead letters" in client_in.get(reverse("catalogue")).content.decode()
    Exercise.objects.filter(slug="dlq-retries").update(source="version: true\n")
    response = client_in.get(reverse("catalogue"))
    assert response.status_code == 200
    page = response.content.decode()
    assert "Direct routing" in page and "Dead letters" not in page


def test_start_lab_redirects_htmx_to_the_lab(client_in, catalogue, learner, labs):
    response = client_in.post(
        reverse("lab-start", args=["direct-routing"]), headers={"HX-Request": "true"}
    )
    session = LabSession.objects.get(owner=learner)
    assert response["HX-Redirect"] == session.get_absolute_url()
    page = client_in.get(session.get_absolute_url()).content.decode()
    assert session.vhost in page
    assert 'id="lab-config"' in page
    assert 'data-checkpoint="temperature-routed"' in page


def test_lab_of_someone_else_is_forbidden(client, catalogue, learner, django_user_model, labs):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    other = django_user_model.objects.create_user("other", password="other-pass-1")
    client.force_login(other)
    assert client.get(session.get_absolute_url()).status_code == 403
    url = reverse("lab-workload", args=[session.id, "temperature-sensor"])
    assert client.post(url, {"action": "stop"}).status_code == 403
    assert client.post(reverse("lab-end", args=[session.id])).status_code == 403


def test_workload_form_errors_name_the_field(client_in, catalogue, learner, labs):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    url = reverse("lab-workload", args=[session.id, "temperature-sensor"])
    response = client_in.post(url, {"action": "update", "rate": "0.01", "routing_key": "x"})
    assert response.status_code == 400
    assert "rate (msg/s): Ensure this value is greater than or equal to 0.2" in (
        response.content.decode()
    )
    consumer = reverse("lab-workload", args=[session.id, "temperature-display"])
    response = client_in.post(
        consumer,
        {
            "action": "update",
            "prefetch": "1",
            "ack": "auto",
            "fail": "0.5",
            "on_fail": "reject",
            "processing_ms": "0",
        },
    )
    assert response.status_code == 400 and "auto-ack consumer cannot fail" in (
        response.content.decode()
    )
    assert Workload.objects.get(session=session, name="temperature-display").settings["ack"] == (
        "manual"
    )


def test_workload_update_is_saved(client_in, catalogue, learner, labs):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    url = reverse("lab-workload", args=[session.id, "temperature-sensor"])
    response = client_in.post(url, {"action": "update", "rate": "5", "routing_key": "pressure"})
    assert response.status_code == 200
    settings = Workload.objects.get(session=session, name="temperature-sensor").settings
    assert settings["rate"] == 5 and settings["routing_key"] == "pressure"


def test_publish_form(client_in, catalogue, learner, labs):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    url = reverse("lab-publish", args=[session.id])
    ok = client_in.post(url, {"exchange": "sensors", "routing_key": "temperature", "body": "{}"})
    assert ok.status_code == 200 and "published to exchange 'sensors'" in text_of(ok)
    returned = client_in.post(
        url, {"exchange": "sensors", "routing_key": "nowhere", "body": "{}", "mandatory": "on"}
    )
    assert "returned: no queue is bound" in text_of(returned)
    bad = client_in.post(url, {"exchange": "nope", "routing_key": "k", "headers": "novalue"})
    text = text_of(bad)
    assert bad.status_code == 400
    assert "exchange: 'nope' is not an exchange of this lab" in text
    assert "line 1: write key=value" in text


def test_end_lab_deletes_the_vhost(client_in, catalogue, learner, api, labs):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    response = client_in.post(reverse("lab-end", args=[session.id]), headers={"HX-Request": "true"})
    assert response["HX-Redirect"] == reverse("exercise", args=["direct-routing"])
    assert not api.vhost_exists(session.vhost)
    page = client_in.get(session.get_absolute_url()).content.decode()
    assert "ended" in page.lower()


def test_reset_makes_the_lab_anew_on_the_same_page(client_in, catalogue, learner, api, labs):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    api.request("DELETE", f"queues/{session.vhost}/pressure")
    response = client_in.post(
        reverse("lab-reset", args=[session.id]), headers={"HX-Request": "true"}
    )
    assert response["HX-Redirect"] == session.get_absolute_url()
    session.refresh_from_db()
    assert session.generation == 2
    assert "pressure" in {q["name"] for q in api.queues(session.vhost)}
