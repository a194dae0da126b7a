"""The console in English and Russian through Django's i18n: the switch (set_language),
the pages, the JavaScript catalogue, messages made in Python, and a catalogue in which
`makemessages` finds nothing left to translate."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.urls import reverse

from exercises.services import lab_session_start
from tests.support import ROOT, text_of

# Words the lab page shows in English that must not be left on it in Russian (AMQP's own
# names, such as ack, nack, prefetch or vhost, are the same in both).
LAB_ENGLISH = [
    "routed / delivered",
    "unroutable",
    "returned",
    "dead-lettered",
    "parked",
    "binding",
    "alternate",
    "Event log",
    "Workloads",
    "producer",
    "consumer",
    "running",
    "stopped",
    "published",
    "confirmed",
    "delivered",
    "Publish one message",
    "Routing key",
    "Steps",
    "Hint",
]


def visible_text(page: str) -> str:
    """The words a person reads: no tags, scripts or JSON."""
    page = re.sub(r"<script\b.*?</script>", " ", page, flags=re.S)
    return re.sub(r"<[^>]+>", " ", page)


def choose(client, language: str, next_url: str = "/"):
    return client.post(reverse("set_language"), {"language": language, "next": next_url})


def test_the_switch_posts_to_set_language_with_every_language(client_in, catalogue):
    """Every language in LANGUAGES is a button of one form, with the CSRF token."""
    page = text_of(client_in.get(reverse("catalogue")))
    form = re.search(r'<form class="lang-switch".*?</form>', page, re.S).group(0)
    assert f'action="{reverse("set_language")}"' in form
    assert 'name="csrfmiddlewaretoken"' in form
    assert 'name="next" value="/"' in form
    for code, _name in settings.LANGUAGES:
        assert f'name="language" value="{code}"' in form


def test_set_language_remembers_russian_and_goes_back(client_in, catalogue):
    answer = choose(client_in, "ru", "/?level=beginner")
    assert answer.status_code == 302 and answer["Location"] == "/?level=beginner"
    assert client_in.cookies[settings.LANGUAGE_COOKIE_NAME].value == "ru"

    page = text_of(client_in.get(reverse("catalogue")))
    assert '<html lang="ru">' in page
    assert "Упражнения" in page and "Прямая маршрутизация" in page  # the YAML's ru text
    assert "Начальный" in page and "Все уровни" in page
    assert "Pick an exercise" not in page and "Direct routing" not in page

    choose(client_in, "en")
    page = text_of(client_in.get(reverse("catalogue")))
    assert '<html lang="en">' in page and "Direct routing" in page and "Упражнения" not in page


def test_the_browser_language_is_the_default(client_in, catalogue):
    page = text_of(client_in.get(reverse("catalogue"), headers={"Accept-Language": "ru-RU"}))
    assert '<html lang="ru">' in page and "Упражнения" in page


def test_the_login_page_in_russian(client):
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "ru"
    page = text_of(client.get(reverse("login")))
    assert "Вход в RabbitMQ Lab Console" in page and "Имя пользователя" in page


def test_lab_page_in_russian(client_in, catalogue, learner, labs):
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    choose(client_in, "ru")
    page = visible_text(text_of(client_in.get(session.get_absolute_url())))
    assert "Журнал событий" in page and "маршрут / доставка" in page
    assert "Опубликовать сообщение" in page and "отправлено" in page
    left = [word for word in LAB_ENGLISH if re.search(rf"\b{re.escape(word)}\b", page)]
    assert not left, f"English on the Russian lab page: {left}"


def test_messages_from_python_follow_the_language(client_in, catalogue, learner, labs):
    """A form's error and a service's answer, on the same request, in Russian."""
    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner, run=False)
    choose(client_in, "ru")
    url = reverse("lab-workload", args=[session.id, "temperature-sensor"])
    answer = text_of(client_in.post(url, {"action": "update", "rate": "0"}))
    assert "скорость (сообщ./с):" in answer
    answer = text_of(client_in.post(url, {"action": "dance"}))
    assert "неизвестное действие 'dance'" in answer


def test_the_javascript_catalogue_is_in_the_chosen_language(client):
    english = client.get(reverse("javascript-catalog")).content.decode()
    assert "django.gettext" in english and "Журнал" not in english
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = "ru"
    russian = client.get(reverse("javascript-catalog")).content.decode()
    assert '"published": "\\u043e' in russian or '"published": "отправлено"' in russian
    assert "Переподключение" in russian or "\\u041f\\u0435\\u0440\\u0435" in russian


@pytest.mark.django_db(transaction=True)
def test_the_lab_socket_answers_in_the_pages_language(worker, catalogue, learner, labs):
    """The socket's refusals reach the page as a toast: in the language of the page that
    opened the socket (its cookie), and in English for a browser that asked for nothing."""
    from tests.exercises.test_stream import connect, headers_for, receive, run

    session = lab_session_start(exercise=catalogue["direct-routing"], owner=learner)
    english = headers_for(learner)
    name, value = english[-1]
    russian = [*english[:-1], (name, value + f"; {settings.LANGUAGE_COOKIE_NAME}=ru".encode())]

    async def error_for(headers):
        ws, _, _ = await connect(f"/ws/labs/{session.id}/", headers)
        await receive(ws, "snapshot")
        await ws.send_to(text_data='{"type": "explode"}')
        error = await receive(ws, "error")
        await ws.disconnect()
        return error["message"]

    assert run(lambda: error_for(russian)).startswith("неизвестный тип 'explode'")
    assert run(lambda: error_for(english)).startswith("unknown type 'explode'")


# --- the catalogue is complete ---------------------------------------------------------

IGNORED = (".git", ".venv", "staticfiles", "node_modules", "tests", "test-artifacts")


def po_entries(text: str) -> list[dict]:
    """The entries of a .po file: msgid, msgstr(s), flags; obsolete (#~) ones marked."""
    entries = []
    for block in text.strip().split("\n\n"):
        entry = {"flags": [], "msgid": None, "msgstr": [], "obsolete": False}
        current = None
        for line in block.splitlines():
            if line.startswith("#~"):
                entry["obsolete"] = True
                line = line[2:].strip()
            if line.startswith("#,"):
                entry["flags"] = [flag.strip() for flag in line[2:].split(",")]
            elif line.startswith("#"):
                continue
            elif match := re.match(
                r'^(msgctxt|msgid_plural|msgid|msgstr(?:\[\d+\])?) "(.*)"$', line
            ):
                key, value = match.groups()
                if key == "msgid":
                    entry["msgid"] = value
                    current = ("msgid",)
                elif key.startswith("msgstr"):
                    entry["msgstr"].append(value)
                    current = ("msgstr", len(entry["msgstr"]) - 1)
                else:
                    current = None
            elif line.startswith('"') and current:
                if current[0] == "msgid":
                    entry["msgid"] += line[1:-1]
                else:
                    entry["msgstr"][current[1]] += line[1:-1]
        entries.append(entry)
    return entries


def problems(po_file: Path) -> list[str]:
    found = []
    for entry in po_entries(po_file.read_text(encoding="utf-8")):
        if entry["msgid"] == "":  # the header
            continue
        if entry["obsolete"]:
            found.append(f"no longer used: {entry['msgid']!r}")
        elif "fuzzy" in entry["flags"]:
            found.append(f"fuzzy: {entry['msgid']!r}")
        elif not all(entry["msgstr"]):
            found.append(f"untranslated: {entry['msgid']!r}")
    return found


def test_po_parser_sees_untranslated_fuzzy_and_obsolete_entries(tmp_path):
    """The check below can fail: each kind of problem is found."""
    po = tmp_path / "x.po"
    po.write_text(
        'msgid ""\nmsgstr "Language: ru\\n"\n\n'
        'msgid "one"\nmsgstr ""\n\n'
        '#, fuzzy\nmsgid "two"\nmsgstr "два"\n\n'
        '#~ msgid "three"\n#~ msgstr "три"\n\n'
        'msgid "%s frame"\nmsgid_plural "%s frames"\nmsgstr[0] "кадр"\nmsgstr[1] ""\n\n'
        'msgid "four"\nmsgstr ""\n"четыре"\n',
        encoding="utf-8",
    )
    assert problems(po) == [
        "untranslated: 'one'",
        "fuzzy: 'two'",
        "no longer used: 'three'",
        "untranslated: '%s frame'",
    ]


@pytest.mark.skipif(not shutil.which("xgettext"), reason="gettext is not installed")
@pytest.mark.parametrize("domain", ["django", "djangojs"])
def test_makemessages_finds_nothing_to_translate(tmp_path, domain):
    """`makemessages -l <language>`, run on a copy of the project, leaves every entry
    of every language translated: no new, fuzzy or unused entry (the committed .po
    files are exactly what makemessages makes, with every msgstr filled in)."""
    copy = tmp_path / "project"
    shutil.copytree(
        ROOT, copy, ignore=shutil.ignore_patterns(*IGNORED, "*.mo", "*.sqlite3*", "__pycache__")
    )
    languages = [code for code, _name in settings.LANGUAGES if code != "en"]
    command = [sys.executable, "manage.py", "makemessages", "-d", domain]
    command += [f"--locale={code}" for code in languages]
    command += [f"--ignore={name}" for name in IGNORED]
    env = {
        "PATH": "/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "labconsole.settings",
        "SECRET_KEY": "makemessages-only",
        "ENV_FILE": str(tmp_path / "no.env"),
    }
    subprocess.run(command, cwd=copy, env=env, check=True, capture_output=True, timeout=120)
    found = []
    for code in languages:
        po_file = copy / "locale" / code / "LC_MESSAGES" / f"{domain}.po"
        assert po_file.exists(), f"no {domain}.po for {code}"
        found += [f"{code}: {p}" for p in problems(po_file)]
    assert not found, "run makemessages and translate:\n" + "\n".join(found)
