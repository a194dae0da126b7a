"""The pages through Django's test client: catalogue, exercise, lab, controls, access."""

import re

import pytest
import yaml
from django.urls import reverse
from pydantic import ValidationError

from exercises.forms import ConsumerForm
from exercises.models import Exercise, LabSession, Workload
from exercises.services import exercise_apply_source, lab_session_start
from exercises.spec import PREFETCH_MAX, PREFETCH_MIN, Consumer
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


def test_tags_that_are_words_read_in_the_pages_language_and_filter_by_their_value(
    client_in, catalogue
):
    english = client_in.get(reverse("catalogue")).content.decode()
    assert '<option value="routing">routing</option>' in english
    client_in.cookies["django_language"] = "ru"
    russian = client_in.get(reverse("catalogue"), {"tag": "routing"}).content.decode()
    assert '<option value="routing" selected>маршрутизация</option>' in russian
    assert '<li class="chip chip-active">маршрутизация</li>' in russian
    # A tag naming a RabbitMQ thing reads as it is.
    assert '<option value="x-death">x-death</option>' in russian
    exercise = client_in.get(reverse("exercise", args=["direct-routing"])).content.decode()
    assert f'href="{reverse("catalogue")}?tag=routing">маршрутизация</a>' in exercise


def test_catalogue_lists_the_course_in_its_order_then_the_others(client_in, catalogue):
    from exercises.services import exercise_save

    data = yaml.safe_load(catalogue["direct-routing"].source)
    data.pop("order")
    data["slug"] = "a-first-by-title"
    data["title"] = {"en": "A first by title", "ru": "Первое по алфавиту"}
    exercise_save(source=yaml.safe_dump(data, allow_unicode=True))
    page = client_in.get(reverse("catalogue")).content.decode()
    listed = re.findall(r'href="/exercises/([a-z0-9-]+)/"', page)
    listed = list(dict.fromkeys(listed))
    course = sorted((e for e in catalogue.values() if e.spec.order), key=lambda e: e.spec.order)
    assert listed[: len(course)] == [e.slug for e in course]
    assert listed[:3] == ["hello-world", "work-queues", "fanout-pubsub"]
    assert listed[-1] == "a-first-by-title"


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
    listed = len(catalogue)
    assert listed >= 2 and len(parsed) == listed
    client_in.get(reverse("catalogue"))
    client_in.get(reverse("catalogue"), {"level": "beginner"}, headers={"HX-Request": "true"})
    assert len(parsed) == listed

    exercise = catalogue["direct-routing"]
    edited = exercise.source.replace("rate: 2\n", "rate: 3\n", 1)
    exercise_apply_source(exercise=exercise, source=edited)
    exercise.save()
    assert exercise.version == 2
    client_in.get(reverse("catalogue"))
    client_in.get(reverse("catalogue"))
    assert parsed[listed:] == [edited]


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


def _card(response) -> str:
    match = re.search(r'<section class="error-card.*?</section>', response.content.decode(), re.S)
    assert match, f"not the site's error page: {response.content[:200]!r}"
    return " ".join(re.sub(r"<[^>]+>", " ", match[0]).split())


@pytest.mark.parametrize(
    ("language", "denied"), [("en", "Access denied"), ("ru", "Доступ запрещён")]
)
def test_a_lab_of_someone_else_gets_the_sites_error_pages(
    client, catalogue, learner, django_user_model, labs, language, denied
):
    """The lab's page and each of its endpoints, as a browser may land on them (GET) or
    htmx posts to them: the styled 403, or 404 for a lab that does not exist, in the
    reader's language; and its owner who lands on an endpoint is sent to the lab."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    other = django_user_model.objects.create_user("other", password="other-pass-1")
    client.force_login(other)
    client.cookies["django_language"] = language
    missing = "Страница не найдена" if language == "ru" else "Page not found"
    for lab_id, status, words in ((session.id, 403, denied), ("no-such-lab", 404, missing)):
        page = client.get(reverse("lab", args=[lab_id]))
        assert page.status_code == status and words in _card(page)
        urls = [
            reverse("lab-workload", args=[lab_id, "temperature-sensor"]),
            reverse("lab-publish", args=[lab_id]),
            reverse("lab-reset", args=[lab_id]),
            reverse("lab-end", args=[lab_id]),
        ]
        for url in urls:
            for response in (client.get(url), client.post(url, headers={"hx-request": "true"})):
                assert response.status_code == status, url
                assert words in _card(response), url
    client.force_login(learner)
    landed = client.get(reverse("lab-publish", args=[session.id]))
    assert landed.status_code == 302 and landed["Location"] == session.get_absolute_url()


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


def test_prefetch_0_is_allowed_and_the_page_says_it_means_no_limit(
    client_in, catalogue, learner, labs
):
    """0 is a lesson (AMQP's "no limit"), so it is accepted; the page says what it does
    beside the field, with the bounds the spec and the form share."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    page = client_in.get(session.get_absolute_url()).content.decode()
    field = re.search(r'<input type="number" name="prefetch"[^>]*>\s*<small[^>]*>([^<]*)', page)
    assert field, "no note beside the prefetch field"
    assert "0 means no limit" in field[1]
    assert f'max="{PREFETCH_MAX}"' in field[0] and f'min="{PREFETCH_MIN}"' in field[0]
    assert "0 means no limit" in str(ConsumerForm.base_fields["prefetch"].help_text)

    url = reverse("lab-workload", args=[session.id, "temperature-display"])
    change = {"action": "update", "ack": "manual", "fail": "0", "on_fail": "reject"}
    change["processing_ms"] = "0"
    assert client_in.post(url, {**change, "prefetch": "0"}).status_code == 200
    assert (
        Workload.objects.get(session=session, name="temperature-display").settings["prefetch"] == 0
    )
    too_many = client_in.post(url, {**change, "prefetch": str(PREFETCH_MAX + 1)})
    assert too_many.status_code == 400 and f"less than or equal to {PREFETCH_MAX}" in (
        too_many.content.decode()
    )
    with pytest.raises(ValidationError):
        Consumer(name="c", queue="q", prefetch=PREFETCH_MAX + 1)


def test_publish_form(client_in, catalogue, learner, labs):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    url = reverse("lab-publish", args=[session.id])
    ok = client_in.post(url, {"exchange": "sensors", "routing_key": "temperature", "body": "{}"})
    assert ok.status_code == 200 and "published to exchange 'sensors'" in text_of(ok)
    returned = client_in.post(
        url, {"exchange": "sensors", "routing_key": "nowhere", "body": "{}", "mandatory": "on"}
    )
    assert "returned: no queue took it" in text_of(returned)
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


def test_a_transactional_producers_card_counts_commits_and_sets_the_batch(client_in, learner, labs):
    from exercises.services import exercise_save
    from exercises.spec import TX_BATCH_MAX
    from tests.exercises.test_workloads import TRANSACTIONS

    exercise, _ = exercise_save(source=TRANSACTIONS)
    session = lab_session_start(exercise=exercise, owner=learner, run=False)
    page = client_in.get(session.get_absolute_url()).content.decode()
    card = page[page.index('id="workload-in-batches"') :]
    card = card[: card.index("</article>")]
    assert 'data-counter="in-batches.committed"' in card
    assert 'data-counter="in-batches.confirmed"' not in card
    field = re.search(r'<input type="number" name="tx_batch"[^>]*>', card)
    assert field and f'max="{TX_BATCH_MAX}"' in field[0] and 'value="1000"' in field[0]
    url = reverse("lab-workload", args=[session.id, "in-batches"])
    refused = client_in.post(
        url, {"action": "update", "rate": "20", "routing_key": "batch", "tx_batch": "0"}
    )
    assert refused.status_code == 400 and "commit every: " in refused.content.decode()
    saved = client_in.post(
        url, {"action": "update", "rate": "20", "routing_key": "batch", "tx_batch": "10"}
    )
    assert saved.status_code == 200
    assert Workload.objects.get(session=session, name="in-batches").settings["tx_batch"] == 10
    # A producer without transactions posts no batch, and keeps none.
    plain = reverse("lab-workload", args=[session.id, "each-one"])
    client_in.post(plain, {"action": "update", "rate": "5", "routing_key": "each"})
    assert Workload.objects.get(session=session, name="each-one").settings["tx_batch"] == 1


def test_a_load_preset_runs_on_a_producer_and_a_bad_one_says_what_is_offered(
    client_in, catalogue, learner, labs
):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    url = reverse("lab-workload", args=[session.id, "temperature-sensor"])
    before = Workload.objects.get(session=session, name="temperature-sensor").settings
    assert "load" not in before
    # The card offers the presets.
    page = client_in.get(session.get_absolute_url()).content.decode()
    assert 'class="load-form"' in page and 'value="spike"' in page and 'value="stress"' in page

    response = client_in.post(url, {"action": "load", "preset": "tsunami"})
    assert response.status_code == 400
    assert "Select a valid choice. tsunami is not one of the available choices." in (
        response.content.decode()
    )
    assert Workload.objects.get(session=session, name="temperature-sensor").settings == before

    consumer = reverse("lab-workload", args=[session.id, "temperature-display"])
    response = client_in.post(consumer, {"action": "load", "preset": "spike"})
    assert response.status_code == 400
    assert "temperature-display: only a producer runs a load" in response.content.decode()
    assert "load" not in (
        Workload.objects.get(session=session, name="temperature-display").settings
    )

    response = client_in.post(url, {"action": "load", "preset": "spike"})
    assert response.status_code == 200
    producer = Workload.objects.get(session=session, name="temperature-sensor")
    load = producer.settings["load"]
    assert load["preset"] == "spike" and load["rate"] == 1000
    assert producer.settings["rate"] == before["rate"]  # its own rate comes back after
    assert producer.running
