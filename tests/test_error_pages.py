"""The error pages a person can meet (400, 403, a failed CSRF check, 404, 500), in English
and Russian, and the DEBUG error report: none of them shows a credential."""

from __future__ import annotations

import re
from contextlib import contextmanager

import pytest
from django.conf import settings
from django.core.exceptions import PermissionDenied, SuspiciousOperation
from django.http import HttpRequest
from django.test import Client, override_settings
from django.urls import path
from django.views.debug import get_default_exception_reporter_filter
from django.views.decorators.debug import sensitive_post_parameters

from labconsole.exception_reports import hide_secrets
from labconsole.urls import handler400, handler403, handler404, handler500  # noqa: F401
from labconsole.urls import urlpatterns as console_urlpatterns

AMQP_PASSWORD = "s3cret-amqp-Pw"
API_PASSWORD = "api-Pw-4711"
LOGIN_PASSWORD = "learner-login-Pw"
BROKER_URL = f"amqp://learner:{AMQP_PASSWORD}@broker.example:5672/"
CREDENTIALS = (AMQP_PASSWORD, API_PASSWORD, LOGIN_PASSWORD)


@sensitive_post_parameters("password")
def fails(request: HttpRequest):
    """A view that fails while holding credentials the way the console's code does: a broker
    URL, an (user, password) pair, a posted password, and an error message naming the URL."""
    url = settings.RABBITMQ_URL
    pair = ("learner", settings.RABBITMQ_API_PASSWORD)
    posted = request.POST.get("password")
    raise ConnectionError(f"cannot reach {url} as {pair[0]} ({len(posted or '')})")


def forbidden(request: HttpRequest):
    raise PermissionDenied("this lab belongs to someone else")


def suspicious(request: HttpRequest):
    raise SuspiciousOperation("a request that makes no sense")


urlpatterns = [
    path("test/fails/", fails),
    path("test/forbidden/", forbidden),
    path("test/suspicious/", suspicious),
    *console_urlpatterns,
]

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]

broker_credentials = override_settings(
    RABBITMQ_URL=BROKER_URL, CELERY_BROKER_URL=BROKER_URL, RABBITMQ_API_PASSWORD=API_PASSWORD
)


@contextmanager
def djangos_own_report():
    """Django's own reporter and filter, for the half of a test that shows the leak is real.
    Django keeps the filter it made first: the cache is emptied on the way in and out."""
    with override_settings(
        DEFAULT_EXCEPTION_REPORTER="django.views.debug.ExceptionReporter",
        DEFAULT_EXCEPTION_REPORTER_FILTER="django.views.debug.SafeExceptionReporterFilter",
    ):
        get_default_exception_reporter_filter.cache_clear()
        try:
            yield
        finally:
            get_default_exception_reporter_filter.cache_clear()


def shown(response) -> str:
    return response.content.decode()


def assert_no_credential(page: str) -> None:
    leaked = [secret for secret in (*CREDENTIALS, settings.SECRET_KEY) if secret in page]
    assert not leaked, f"the page shows {leaked}"


# --- The DEBUG error report ------------------------------------------------------------


@broker_credentials
@override_settings(DEBUG=True)
@pytest.mark.parametrize("accept", ["text/html", "text/plain"])
def test_the_debug_report_shows_no_credential(accept):
    """A developer's DEBUG page shows the error, the settings and the variables, with every
    password starred, in its HTML and its plain-text form."""
    client = Client(raise_request_exception=False, HTTP_ACCEPT=accept)
    url = "/test/fails/"

    # Django's own report, first: it shows them (the text form has no variables, so not
    # the API password), so the page below is a real test.
    with djangos_own_report():
        page = shown(client.post(url, {"password": LOGIN_PASSWORD}))
    leaks = CREDENTIALS if accept == "text/html" else (AMQP_PASSWORD, LOGIN_PASSWORD)
    assert [secret for secret in leaks if secret in page] == list(leaks)

    response = client.post(url, {"password": LOGIN_PASSWORD})
    assert response.status_code == 500
    page = shown(response)
    # The report is all there...
    assert "ConnectionError" in page and "cannot reach amqp://learner:" in page
    assert "RABBITMQ_URL" in page and "CELERY_BROKER_URL" in page and "broker.example" in page
    # ...with the credentials starred.
    assert_no_credential(page)
    assert "amqp://learner:********************@broker.example:5672/" in page


@override_settings(DEBUG=True)
def test_a_login_refused_before_its_view_shows_no_password():
    """A Host that is not allowed fails in the middleware, before the login view marks its
    password sensitive; with DEBUG on Django reports the request with its POST data."""
    client = Client(raise_request_exception=False, HTTP_HOST="attacker.example")
    form = {"username": "demo", "password": LOGIN_PASSWORD}
    with djangos_own_report():
        assert LOGIN_PASSWORD in shown(client.post("/accounts/login/", form))

    response = client.post("/accounts/login/", form)
    assert response.status_code == 400
    page = shown(response)
    assert "DisallowedHost" in page and "<td>password</td>" in page
    assert_no_credential(page)


def test_hide_secrets_finds_each_form_of_a_secret():
    secret = "p@ss&<w'o\"rd>"
    text = (
        "raw p@ss&<w'o\"rd> | escaped p@ss&amp;&lt;w&#x27;o&quot;rd&gt; | "
        "quoted p%40ss%26%3Cw%27o%22rd%3E | repr 'p@ss&<w\\'o\"rd>' | url http://u:x%2Fy@h/"
    )
    cleaned = hide_secrets(text, [secret])
    assert "ss" not in cleaned and "rd" not in cleaned and "x%2Fy" not in cleaned
    assert cleaned.count("********************") == 5


# --- The pages a person sees with DEBUG off ---------------------------------------------


def card(page: str) -> str:
    """The error card's text, tags stripped."""
    match = re.search(r'<section class="error-card.*?</section>', page, re.S)
    assert match, page[:2000]
    return " ".join(re.sub(r"<[^>]+>", " ", match[0]).split())


@pytest.mark.parametrize(
    ("url", "status", "english", "russian"),
    [
        ("/no-such-page/", 404, "Page not found", "Страница не найдена"),
        ("/test/forbidden/", 403, "Access denied", "Доступ запрещён"),
        ("/test/suspicious/", 400, "Bad request", "Некорректный запрос"),
        ("/test/fails/", 500, "Something went wrong", "Что-то пошло не так"),
    ],
)
@broker_credentials
def test_error_pages_in_english_and_russian(url, status, english, russian):
    client = Client(raise_request_exception=False)
    response = client.get(url)
    assert response.status_code == status
    page = shown(response)
    assert f"Error {status}" in card(page) and english in card(page)
    assert "To the exercises" in card(page)
    assert 'href="/static/labconsole/console.css"' in page  # the site's look
    assert "this lab belongs" not in page and "makes no sense" not in page  # no details
    assert_no_credential(page)
    assert "broker.example" not in page

    # Russian chosen on the page (set_language's cookie), or the browser's language.
    chosen = Client(raise_request_exception=False)
    chosen.cookies[settings.LANGUAGE_COOKIE_NAME] = "ru"
    for reader, headers in ((chosen, {}), (client, {"accept-language": "ru"})):
        russian_page = card(shown(reader.get(url, headers=headers)))
        assert f"Ошибка {status}" in russian_page and russian in russian_page
        assert "К упражнениям" in russian_page


def test_a_failed_csrf_check_says_to_reload():
    client = Client(enforce_csrf_checks=True)
    response = client.post("/accounts/login/", {"username": "x", "password": "y"})
    assert response.status_code == 403
    assert "The form has expired" in card(shown(response))
    assert "Reload the page" in card(shown(response))


def test_a_host_not_allowed_gets_the_400_page():
    response = Client().get("/accounts/login/", HTTP_HOST="attacker.example")
    assert response.status_code == 400
    assert "Bad request" in card(shown(response))


@override_settings(WHITENOISE_USE_FINDERS=False, WHITENOISE_AUTOREFRESH=False)
def test_the_error_pages_stylesheet_is_served_with_debug_off():
    """DEBUG is off, so Django serves no static file itself: WhiteNoise does, from the
    files `collectstatic` gathered (scripts/setup runs it), as under `make run`."""
    assert not settings.DEBUG
    response = Client().get("/static/labconsole/console.css")
    assert response.status_code == 200, "run scripts/setup (collectstatic)"
    assert b".site-header" in b"".join(response.streaming_content)
