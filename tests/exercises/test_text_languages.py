"""An exercise's texts in any language the console speaks: a language is a line in
settings.LANGUAGES (and its catalogue), and the exercise format takes its code at once."""

import copy

import pytest
import yaml
from django.conf import settings
from django.test import override_settings

from exercises.services import exercise_save, lab_session_start
from exercises.spec import LocalizedText, validate_data
from tests.exercises.test_spec import base, errors
from tests.support import text_of

pytestmark = pytest.mark.django_db(transaction=True)

WITH_GERMAN = [("en", "English"), ("ru", "Русский"), ("de", "Deutsch")]


def in_german() -> dict:
    data = copy.deepcopy(base())
    step = data["steps"][0]
    step["title"] = {"en": "Watch the errors", "ru": "Следите за ошибками", "de": "Fehler ansehen"}
    step["instructions"] = {"en": "Start the **app**.", "de": "Starten Sie die **App**."}
    return data


def page_in(client, language: str, url: str) -> str:
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = language
    return text_of(client.get(url))


def test_a_third_language_in_languages_is_a_language_of_the_exercises(client_in, learner, labs):
    with override_settings(LANGUAGES=WITH_GERMAN):
        spec = validate_data(in_german())
        title = spec.steps[0].title
        assert title.get("de") == "Fehler ansehen" and title.de == "Fehler ansehen"
        assert title.get("de-AT") == "Fehler ansehen"  # a variant reads its base language
        assert spec.steps[0].instructions.de.startswith("Starten")
        assert spec.title.get("de") == "Tiny"  # none in German: English

        exercise, _ = exercise_save(source=yaml.safe_dump(in_german(), allow_unicode=True))
        german = page_in(client_in, "de", f"/exercises/{exercise.slug}/")
        assert '<html lang="de">' in german
        assert "Fehler ansehen" in german and "Watch the errors" not in german

        session = lab_session_start(exercise=exercise, owner=learner, run=False)
        lab = page_in(client_in, "de", session.get_absolute_url())
        assert "Fehler ansehen" in lab and "Starten Sie die <strong>App</strong>." in lab
        # Russian readers get the Russian title, and English where there is no Russian.
        russian = page_in(client_in, "ru", session.get_absolute_url())
        assert "Следите за ошибками" in russian
        assert "Start the <strong>app</strong>." in russian


def test_a_language_not_in_languages_is_refused_by_name():
    assert errors(in_german()) == [
        "steps[0].title.de: unknown language 'de' (the languages are: en, ru)",
        "steps[0].instructions.de: unknown language 'de' (the languages are: en, ru)",
    ]
    data = base()
    data["summary"] = {"en": "Tiny", "xx": "?"}
    with override_settings(LANGUAGES=WITH_GERMAN):
        assert errors(data) == ["summary.xx: unknown language 'xx' (the languages are: en, ru, de)"]
    data["summary"] = ["not", "text"]
    with override_settings(LANGUAGES=WITH_GERMAN):
        assert errors(data) == [
            "summary: must be a string, or a mapping with en (and optionally ru, de) (got a list)"
        ]


def test_english_is_still_required():
    with override_settings(LANGUAGES=WITH_GERMAN):
        data = base()
        data["summary"] = {"de": "Nur Deutsch"}
        assert errors(data) == ["summary.en: required field is missing"]
        assert LocalizedText.model_validate("Hello").de is None
