"""The management commands, as a person types them."""

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from exercises.models import Exercise, LabSession

pytestmark = pytest.mark.django_db(transaction=True)


def test_validate_prints_paths_and_exits_1(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nslug: bad\ntitle: Bad\nsummary: s\ndescription: d\nlevel: beginner\n"
        "minutes: 5\ntopology:\n  queues:\n    - name: q\n      arguments:\n"
        "        x-max-priority: 1000\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        call_command("exercise", "validate", str(bad))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert (
        "bad.yaml: topology.queues[0].arguments.x-max-priority: must be an integer from 1 to 255"
        in err
    )


def test_validate_accepts_the_catalogue(capsys):
    call_command("exercise", "validate", "exercises/catalogue/direct-routing.yaml")
    assert "valid (direct-routing" in capsys.readouterr().out


def test_load_is_idempotent(capsys):
    call_command("exercise", "load")
    first = {e.slug: e.version for e in Exercise.objects.all()}
    call_command("exercise", "load")
    assert {e.slug: e.version for e in Exercise.objects.all()} == first
    assert {"direct-routing", "dlq-retries"} <= set(first)
    assert "unchanged" in capsys.readouterr().out


def test_lab_start_list_stop(api, capsys, labs):
    call_command("exercise", "load")
    capsys.readouterr()
    call_command("lab", "start", "direct-routing", "--json")
    started = json.loads(capsys.readouterr().out)
    assert started["vhost"] == f"lab-{started['session']}"
    assert api.vhost_exists(started["vhost"])
    call_command("lab", "list", "--json")
    listed = json.loads(capsys.readouterr().out)
    assert [lab["session"] for lab in listed] == [started["session"]]
    call_command("lab", "stop", started["session"])
    assert "deleted" in capsys.readouterr().out
    assert not api.vhost_exists(started["vhost"])
    assert LabSession.objects.get().state == LabSession.State.ENDED
    call_command("lab", "list", "--json")
    assert json.loads(capsys.readouterr().out) == []


def test_lab_start_unknown_exercise_says_what_to_do():
    with pytest.raises(CommandError, match="exercise load"):
        call_command("lab", "start", "no-such-exercise")
