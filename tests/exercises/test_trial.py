"""The admin's "Try it": a throwaway lab of the text in the editor, saved or not, on the real
broker with a real worker; a bad text leaves nothing behind; trials end by themselves."""

import asyncio
import time
import uuid

import pytest
from django.test import Client
from django.urls import reverse

from exercises.models import Exercise, ExerciseVersion, LabSession
from exercises.services import TRIAL_DRAFT_PREFIX, lab_session_start
from exercises.sweep import trials_sweep
from exercises.tasks import sweep_trial_labs
from tests.exercises.test_stream import Reader, connect, headers_for, run, until
from tests.support import text_of, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def try_url(exercise: Exercise | None = None) -> str:
    if exercise is None:
        return reverse("admin:exercises_exercise_try_new")
    return reverse("admin:exercises_exercise_try", args=[exercise.pk])


def with_audit_queue(source: str) -> str:
    """The text with one more queue, `audit`, bound to the sensors' exchange for every key."""
    assert "    - name: pressure\n" in source and "  bindings:\n" in source
    source = source.replace(
        "    - name: pressure\n", "    - name: pressure\n    - name: audit\n", 1
    )
    return source.replace(
        "  bindings:\n",
        "  bindings:\n    - source: sensors\n      destination: audit\n"
        "      routing_key: temperature\n",
        1,
    )


def test_try_runs_the_unsaved_text(admin_in, own, teacher, worker, labs, api):
    """The text posted from the form runs in a trial lab on the broker, its workloads
    publishing into the queue only that text has; the exercise itself is not saved."""
    source = with_audit_queue(own.source)
    response = admin_in.post(try_url(own), {"source": source, "published": "on"})
    assert response.status_code == 302
    session = LabSession.objects.get(trial=True)
    assert response["Location"] == session.get_absolute_url()
    assert session.owner == teacher and session.exercise == own and session.source == source
    own.refresh_from_db()
    assert own.version == 1 and "audit" not in own.source
    assert not ExerciseVersion.objects.filter(exercise=own, number__gt=1).exists()

    def audit_fills():
        queues = {q["name"]: q for q in api.queues(session.vhost)}
        return queues.get("audit", {}).get("messages", 0) > 0

    wait_for(audit_fills, timeout=30, message="the trial's producer publishes into audit")
    page = text_of(admin_in.get(session.get_absolute_url()))
    assert "A trial of unsaved text" in page


def test_a_new_exercise_is_tried_as_the_authors_hidden_draft(
    admin_in, catalogue, teacher, learner, worker, labs, api
):
    """From the add form the trial runs as the author's draft: unpublished, not listed in
    the admin or the catalogue, and used again by the next trial."""
    source = catalogue["topic-routing"].source.replace("slug: topic-routing", "slug: brand-new")
    response = admin_in.post(try_url(), {"source": source})
    assert response.status_code == 302
    first = LabSession.objects.get(trial=True)
    draft = first.exercise
    assert draft.slug == f"{TRIAL_DRAFT_PREFIX}{teacher.pk}" and not draft.published
    assert not Exercise.objects.filter(slug="brand-new").exists()
    changelist = text_of(admin_in.get(reverse("admin:exercises_exercise_changelist")))
    assert TRIAL_DRAFT_PREFIX not in changelist
    learners = Client()
    learners.force_login(learner)
    assert draft.slug not in text_of(learners.get(reverse("catalogue")))
    # The trial's page leads nowhere near the draft, which has no page of its own.
    draft_url = reverse("exercise", args=[draft.slug])
    assert draft_url not in admin_in.get(first.get_absolute_url()).content.decode()
    assert admin_in.get(draft_url).status_code == 404
    # Trying again ends the earlier trial of the same exercise and reuses the draft.
    assert admin_in.post(try_url(), {"source": source}).status_code == 302
    second = LabSession.objects.exclude(pk=first.pk).get(trial=True)
    first.refresh_from_db()
    assert first.state == LabSession.State.ENDED and second.exercise == draft
    assert Exercise.objects.filter(slug__startswith=TRIAL_DRAFT_PREFIX).count() == 1
    assert not api.vhost_exists(first.vhost) and api.vhost_exists(second.vhost)


@pytest.mark.parametrize("new", [False, True], ids=["edited", "new"])
def test_a_bad_text_leaves_nothing_behind(admin_in, own, labs, api, new):
    """A text that is not valid is an error page naming where, and no lab, draft, version or
    vhost is left."""
    # A slug of its own, which names the vhost a lab of it would have: the other run of the
    # suite starts and ends labs on the broker meanwhile.
    slug = f"bad-trial-{uuid.uuid4().hex[:8]}"
    source = own.source.replace(f"slug: {own.slug}\n", f"slug: {slug}\n", 1)
    source = source.replace("rate: 2\n", "rate: 0\n", 1)
    exercises = set(Exercise.objects.values_list("pk", flat=True))
    response = admin_in.post(try_url(None if new else own), {"source": source})
    assert response.status_code == 400
    page = text_of(response)
    assert "workloads.producers[0].rate:" in page and "No lab was started" in page
    assert not LabSession.objects.exists()
    assert set(Exercise.objects.values_list("pk", flat=True)) == exercises
    vhosts = api.listing("vhosts?columns=name,description")
    assert not [v for v in vhosts if v["description"] == f"lab: {slug}"]


def test_a_trial_counts_against_the_lab_limit(admin_in, own, teacher, labs, settings, api):
    """A trial is a lab like any: over the user's labs at once it is refused, saying why,
    and nothing is made."""
    settings.LAB_MAX_PER_USER = 1
    other = lab_session_start(exercise=own, owner=teacher, run=False)
    response = admin_in.post(try_url(own), {"source": own.source})
    assert response.status_code == 400
    assert "You already have 1 labs running" in text_of(response)
    assert list(LabSession.objects.values_list("pk", flat=True)) == [other.pk]


def test_a_trial_with_no_page_ends_after_its_grace(admin_in, own, labs, api, settings):
    """A trial whose page never opened ends once the grace is over, and its vhost goes;
    the beat's task reads the grace from the settings."""
    settings.LAB_TRIAL_GRACE_SECONDS = 1.0
    admin_in.post(try_url(own), {"source": own.source})
    session = LabSession.objects.get(trial=True)
    assert trials_sweep(grace_seconds=30, idle_minutes=10) == []
    time.sleep(1.2)
    assert sweep_trial_labs() == [session.id]
    session.refresh_from_db()
    assert session.state == LabSession.State.ENDED
    assert not api.vhost_exists(session.vhost)


def test_a_watched_trial_lasts_until_its_page_closes(admin_in, own, teacher, worker, labs, api):
    """While a page of the trial is open it is not ended, however long the grace ago its
    page last pinged; once the page closes it ends a grace later."""
    grace = 1.0
    admin_in.post(try_url(own), {"source": own.source})
    session = LabSession.objects.get(trial=True)
    headers = headers_for(teacher)

    async def scenario():
        ws, connected, _ = await connect(f"/ws/labs/{session.id}/", headers)
        assert connected
        reader = Reader(ws)
        await reader.wait("snapshot")
        await asyncio.sleep(grace + 0.5)
        assert await asyncio.to_thread(trials_sweep, grace_seconds=grace, idle_minutes=10) == []
        await reader.stop()
        await ws.disconnect()
        # Its close counts as its last sight: the grace starts there.
        closed = await asyncio.to_thread(lambda: LabSession.objects.get(pk=session.pk).last_seen_at)
        ended = await until(
            lambda: trials_sweep(grace_seconds=grace, idle_minutes=10),
            timeout=20,
            message="the trial ends once its page is closed",
        )
        assert ended == [session.id]
        return closed

    closed = run(scenario)
    session.refresh_from_db()
    assert session.state == LabSession.State.ENDED
    assert (closed - session.created_at).total_seconds() >= grace  # touched at its close
    assert (session.ended_at - closed).total_seconds() >= grace
