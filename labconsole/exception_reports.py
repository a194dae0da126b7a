"""What Django's error report (the DEBUG 500 page, and error e-mails) may show: nothing that
lets anyone in.

Django's own filter hides settings whose names look secret (`*_PASSWORD`, `SECRET_KEY`),
but the broker and database URLs carry passwords under names that do not
(`RABBITMQ_URL`, `CELERY_BROKER_URL`), variables in the traceback are shown as they are,
and with DEBUG on it shows even the password of a failed login. Here:

- the password of every URL in a setting, the request or a variable is replaced by stars,
  and variables whose names say they hold a secret are hidden;
- POST parameters and variables marked sensitive (`sensitive_post_parameters`, used by the
  login view) stay hidden with DEBUG on too, and so do POST parameters named like a
  secret (`password`), which a request that fails before its view has not marked yet;
- last, every known secret value (the secret key, the broker's and the database's
  passwords, a password posted to the login form) is replaced wherever it still appears
  in the finished page, whatever object carried it there.

https://docs.djangoproject.com/en/5.2/howto/error-reporting/#custom-error-reports
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from urllib.parse import quote, unquote

from django.conf import settings
from django.views.debug import ExceptionReporter, SafeExceptionReporterFilter

SUBSTITUTE = SafeExceptionReporterFilter.cleansed_substitute

# scheme://user:password@ : the password (a URL without one is left alone).
_URL_PASSWORD = re.compile(
    r"(?P<head>\b[a-z][a-z0-9+.-]*://[^\s:/@'\"]*:)(?P<password>[^\s@/'\"]+)(?=@)", re.I
)
# Variable names that say what they hold. Narrower than Django's pattern for settings
# (no API, no KEY: `key` and `api` are everyday names in the console's code).
_SECRET_NAME = re.compile(r"PASS|SECRET|TOKEN|AUTH|CREDENTIAL|SIGNATURE|COOKIE", re.I)


def hide_url_passwords(text: str) -> str:
    return _URL_PASSWORD.sub(lambda m: m["head"] + SUBSTITUTE, text)


def known_secrets(request=None) -> set[str]:
    """The secret values the settings hold now (the secret key, the management API's
    password, the database passwords and the password of every URL in a setting) and the
    request's secret POST parameters (a password typed into the login form)."""
    found = {settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS, settings.EMAIL_HOST_PASSWORD}
    found.update(_secret_post_values(request))
    found.add(getattr(settings, "RABBITMQ_API_PASSWORD", ""))
    found.update(db.get("PASSWORD", "") for db in settings.DATABASES.values())
    for name in dir(settings):
        value = getattr(settings, name) if name.isupper() else None
        if isinstance(value, str):
            for match in _URL_PASSWORD.finditer(value):
                found |= {match["password"], unquote(match["password"])}
    return {secret for secret in found if isinstance(secret, str) and secret}


def _secret_post_values(request) -> set[str]:
    """Values of POST parameters marked sensitive or named like a secret (`password`)."""
    try:
        post = request.POST
    except Exception:  # no request, or a body that cannot be read: nothing to add
        return set()
    marked = getattr(request, "sensitive_post_parameters", None) or ()
    return {
        value
        for name in post
        if marked == "__ALL__" or name in marked or _SECRET_NAME.search(name)
        for value in post.getlist(name)
    }


def hide_secrets(text: str, secrets: Iterable[str]) -> str:
    """`text` with URL passwords and every one of `secrets` replaced by stars, in each form
    a page may show it: as it is, HTML-escaped, percent-encoded, or inside a repr()."""
    text = hide_url_passwords(text)
    forms = set()
    for secret in secrets:
        for form in (secret, quote(secret, safe=""), repr(secret)[1:-1]):
            forms |= {form, html.escape(form), html.escape(form, quote=False)}
    # Longest first, so that a secret containing another is replaced whole.
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, SUBSTITUTE)
    return text


class CredentialHidingFilter(SafeExceptionReporterFilter):
    def is_active(self, request) -> bool:
        # Django hides sensitive POST parameters and variables only with DEBUG off; a
        # developer's page must not show a learner's password either.
        return True

    def get_post_parameters(self, request):
        # A request that fails before its view (a Host not allowed, a middleware error)
        # has no parameters marked sensitive yet: a login form's password is hidden by its
        # name.
        post = super().get_post_parameters(request)
        named = [name for name in post if _SECRET_NAME.search(name)]
        if named:
            post = post.copy()
            for name in named:
                post[name] = SUBSTITUTE
        return post

    def cleanse_setting(self, key, value):
        cleansed = super().cleanse_setting(key, value)
        return hide_url_passwords(cleansed) if isinstance(cleansed, str) else cleansed

    def get_traceback_frame_variables(self, request, tb_frame):
        secrets = known_secrets(request)
        cleansed = []
        for name, value in super().get_traceback_frame_variables(request, tb_frame):
            if _SECRET_NAME.search(name):
                value = SUBSTITUTE
            elif isinstance(value, str):
                value = hide_secrets(value, secrets)
            cleansed.append((name, value))
        return cleansed


class CredentialHidingReporter(ExceptionReporter):
    def get_traceback_html(self) -> str:
        return hide_secrets(super().get_traceback_html(), known_secrets(self.request))

    def get_traceback_text(self) -> str:
        return hide_secrets(super().get_traceback_text(), known_secrets(self.request))
