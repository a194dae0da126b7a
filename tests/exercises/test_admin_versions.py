"""Kept versions of an exercise, their history, comparison and restore, copies, and built-in
exercises that the admin shows but does not edit."""

import pytest
from django.core.management import call_command
from django.urls import reverse

from exercises.models import Exercise, ExerciseVersion, LabSession
from exercises.services import (
    exercise_apply_source,
    exercise_commit,
    exercise_save,
    lab_session_start,
)
from tests.support import text_of

pytestmark = pytest.mark.django_db(transaction=True)


def change_url(exercise: Exercise) -> str:
    return reverse("admin:exercises_exercise_change", args=[exercise.pk])


def admin_url(name: str, exercise: Exercise, *args) -> str:
    return reverse(f"admin:exercises_exercise_{name}", args=[exercise.pk, *args])


def edited(source: str, rate: int) -> str:
    assert "rate: 2\n" in source
    return source.replace("rate: 2\n", f"rate: {rate}\n", 1)


def numbers(exercise: Exercise) -> list[int]:
    return list(exercise.versions.order_by("number").values_list("number", flat=True))


def test_admin_save_keeps_a_version_with_its_author(admin_in, own, teacher):
    """Each save of a changed text keeps it as the next version, by whoever saved it; a save
    that changes only `published` keeps none."""
    assert numbers(own) == [1]
    response = admin_in.post(change_url(own), {"source": edited(own.source, 3)})
    assert response.status_code == 302
    response = admin_in.post(change_url(own), {"source": edited(own.source, 3), "published": "on"})
    assert response.status_code == 302
    own.refresh_from_db()
    assert own.version == 2 and own.published and numbers(own) == [1, 2]
    newest = own.versions.get(number=2)
    assert newest.author == teacher and "rate: 3\n" in newest.source


def test_the_catalogue_loader_keeps_versions(catalogue):
    """`manage.py exercise load` keeps a version of every exercise it changes, with no author,
    and none of those it leaves unchanged."""
    exercise = catalogue["direct-routing"]
    ExerciseVersion.objects.create(exercise=exercise, number=1, source=exercise.source)
    changed, was_changed = exercise_save(source=edited(exercise.source, 4), builtin=True)
    assert was_changed and changed.version == 2
    call_command("exercise", "load")  # puts the file's text back: version 3
    exercise.refresh_from_db()
    assert exercise.version == 3 and numbers(exercise) == [1, 2, 3]
    assert exercise.versions.get(number=3).author is None
    call_command("exercise", "load")
    assert numbers(exercise) == [1, 2, 3]


def test_numbers_follow_the_saved_row(own):
    """Two people who loaded the same version and both save make versions 2 and 3, not two
    versions 2: the number is counted from the row as it is when saved."""
    first = Exercise.objects.get(pk=own.pk)
    second = Exercise.objects.get(pk=own.pk)
    exercise_commit(exercise=exercise_apply_source(exercise=first, source=edited(own.source, 3)))
    exercise_commit(exercise=exercise_apply_source(exercise=second, source=edited(own.source, 5)))
    assert numbers(own) == [1, 2, 3]
    own.refresh_from_db()
    assert own.version == 3 and "rate: 5\n" in own.source


def test_a_running_lab_keeps_its_text_and_the_next_gets_the_new(
    admin_in, own, learner, labs, worker, api
):
    """A lab started before an edit runs the text it started with (its queues on the broker);
    a lab started after it runs the new one."""
    own.published = True
    own.save()
    before = lab_session_start(exercise=own, owner=learner)
    source = own.source.replace(
        "    - name: pressure\n", "    - name: pressure\n    - name: audit\n", 1
    )
    assert source != own.source
    response = admin_in.post(change_url(own), {"source": source, "published": "on"})
    assert response.status_code == 302, text_of(response)
    after = lab_session_start(exercise=Exercise.objects.get(pk=own.pk), owner=learner)
    before_queues = {q["name"] for q in api.queues(before.vhost)}
    after_queues = {q["name"] for q in api.queues(after.vhost)}
    assert "pressure" in before_queues and "audit" not in before_queues
    assert {"pressure", "audit"} <= after_queues
    before.refresh_from_db()
    assert (before.exercise_version, after.exercise_version) == (1, 2)
    assert LabSession.objects.get(pk=before.pk).state == LabSession.State.RUNNING


def test_history_lists_versions_and_shows_one(admin_in, own):
    """The history page lists every version with who saved it and its size; a version's page
    shows its text as it was."""
    old_source = own.source
    admin_in.post(change_url(own), {"source": edited(own.source, 3)})
    page = text_of(admin_in.get(admin_url("versions", own)))
    assert "version 1" in page and "version 2" in page and "teacher" in page
    assert "(current)" in page
    page = text_of(admin_in.get(admin_url("version", own, 1)))
    assert old_source.strip() in page
    assert admin_in.get(admin_url("version", own, 9)).status_code == 404
    change = text_of(admin_in.get(change_url(own)))
    assert admin_url("versions", own) in change


def test_compare_two_versions(admin_in, own):
    """The comparison shows the two texts side by side with the changed line marked, in
    either order of choosing."""
    admin_in.post(change_url(own), {"source": edited(own.source, 3)})
    response = admin_in.get(admin_url("version_compare", own), {"a": 2, "b": 1})
    assert response.status_code == 200
    page = response.content.decode()
    assert 'class="diff"' in page and "diff_chg" in page
    assert "version 1" in page and "version 2" in page
    same = text_of(admin_in.get(admin_url("version_compare", own), {"a": 1, "b": 1}))
    assert "The two versions have the same text." in same


def test_restore_makes_a_new_version(admin_in, own):
    """Restoring asks first; then the old text becomes a new version, and none is lost."""
    original = own.source
    admin_in.post(change_url(own), {"source": edited(own.source, 3)})
    url = admin_url("version_restore", own, 1)
    assert "Yes, restore it" in text_of(admin_in.get(url))
    own.refresh_from_db()
    assert own.version == 2
    response = admin_in.post(url)
    assert response.status_code == 302
    own.refresh_from_db()
    assert own.version == 3 and own.source == original
    assert numbers(own) == [1, 2, 3]
    assert own.versions.get(number=3).source == original


def test_restore_is_validated_like_a_save(admin_in, own, catalogue):
    """A version whose slug another exercise has taken since is refused, saying so."""
    own.versions.filter(number=1).update(
        source=catalogue["topic-routing"].source  # another exercise's slug
    )
    response = admin_in.post(admin_url("version_restore", own, 1))
    assert response.status_code == 200
    assert "another exercise is called 'topic-routing' now" in text_of(response)
    own.refresh_from_db()
    assert own.version == 1


def test_duplicate_a_builtin(admin_in, catalogue):
    """A copy of a built-in has the next free `-copy` slug written into its YAML, "(copy)" in
    its title, the original as `copied_from`, and is an unpublished version 1 of its own."""
    original = catalogue["direct-routing"]
    url = admin_url("duplicate", original)
    assert "Yes, duplicate it" in text_of(admin_in.get(url))
    response = admin_in.post(url)
    copy = Exercise.objects.get(slug="direct-routing-copy")
    assert response.status_code == 302 and response["Location"] == change_url(copy)
    assert "slug: direct-routing-copy\n" in copy.source
    assert copy.title == f"{original.title} (copy)" and copy.spec.title.en == copy.title
    assert copy.copied_from == original and not copy.builtin and not copy.published
    assert copy.version == 1 and numbers(copy) == [1]
    # Everything else of the document is the original's, comments included.
    assert copy.source.count("\n") == original.source.count("\n")
    assert copy.source.splitlines()[0] == original.source.splitlines()[0]
    admin_in.post(url)
    assert Exercise.objects.filter(slug="direct-routing-copy-2", copied_from=original).exists()


def test_duplicate_action(admin_in, catalogue):
    """The list's action copies every selected exercise."""
    chosen = [catalogue["direct-routing"], catalogue["topic-routing"]]
    response = admin_in.post(
        reverse("admin:exercises_exercise_changelist"),
        {"action": "duplicate_exercises", "_selected_action": [e.pk for e in chosen]},
    )
    assert response.status_code == 302
    copies = Exercise.objects.filter(copied_from__in=chosen)
    assert sorted(copies.values_list("slug", flat=True)) == [
        "direct-routing-copy",
        "topic-routing-copy",
    ]


def test_a_builtin_shows_its_text_read_only(admin_in, catalogue):
    """A built-in's change form shows its text, not a field, with the way to edit it."""
    page = admin_in.get(change_url(catalogue["direct-routing"])).content.decode()
    assert 'name="source"' not in page
    assert "built-in: duplicate it to edit" in page
    assert "slug: direct-routing" in page


def test_a_forged_edit_of_a_builtin_is_refused(admin_in, catalogue):
    """A text posted for a built-in all the same is refused (403), and nothing changes."""
    exercise = catalogue["direct-routing"]
    response = admin_in.post(
        change_url(exercise), {"source": edited(exercise.source, 3), "published": "on"}
    )
    assert response.status_code == 403
    exercise.refresh_from_db()
    assert exercise.version == 1 and "rate: 2\n" in exercise.source
    assert not exercise.versions.filter(number__gt=1).exists()


def test_a_builtin_cannot_be_deleted(admin_in, catalogue):
    """Neither the delete page nor the list's delete action removes a built-in."""
    exercise = catalogue["direct-routing"]
    delete = reverse("admin:exercises_exercise_delete", args=[exercise.pk])
    assert admin_in.post(delete, {"post": "yes"}).status_code == 403
    admin_in.post(
        reverse("admin:exercises_exercise_changelist"),
        {"action": "delete_selected", "_selected_action": [exercise.pk], "post": "yes"},
    )
    assert Exercise.objects.filter(pk=exercise.pk).exists()


def test_a_copy_can_be_deleted(admin_in, own):
    """An instructor's own exercise is deleted as usual."""
    delete = reverse("admin:exercises_exercise_delete", args=[own.pk])
    assert admin_in.post(delete, {"post": "yes"}).status_code == 302
    assert not Exercise.objects.filter(pk=own.pk).exists()
