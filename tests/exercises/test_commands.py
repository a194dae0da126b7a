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
        "bad.yaml:12:25: topology.queues[0].arguments.x-max-priority: must be an integer from 1 "
        "to 255" in err
    )


def test_validate_refuses_hostile_files_naming_where(tmp_path, capsys):
    """An alias bomb, a 600-level nesting and a file that is not UTF-8: one line each,
    naming the file and where in it, and no traceback."""
    bomb = tmp_path / "bomb.yaml"
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb.write_text("\n".join(lines) + "\n")
    deep = tmp_path / "deep.yaml"
    deep.write_text("version: 1\nsteps: " + "[" * 600 + "]" * 600 + "\n")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes("version: 1\nslug: café\n".encode("latin-1"))
    with pytest.raises(SystemExit) as exit_info:
        call_command("exercise", "validate", str(bomb), str(deep), str(latin1))
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{bomb}:4:45: a3[7]: the document holds more than 10000 values, counting each alias "
        "as everything it repeats",
        f"{deep}:2:39: steps" + "[0]" * 31 + ": mappings and lists nest deeper than 32 levels",
        f"{latin1}:2:10: the document is not UTF-8 text: byte 0xe9 at offset 20",
    ]


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
