"""The error pages (400, 403, 404, 500 and a failed CSRF check), in the site's look and in
the language the person reads the console in. They say what happened and where to go,
never why in detail: no exception text, no setting, no path on the server."""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse, HttpResponseServerError
from django.template.loader import render_to_string
from django.utils import translation

logger = logging.getLogger(__name__)


def _language(request: HttpRequest) -> str:
    """The pages' language as LocaleMiddleware chooses it (the language cookie that
    set_language writes, else the browser's Accept-Language), read again here: an error
    may have been raised before that middleware ran, and the session is not needed."""
    return translation.get_language_from_request(request)


def _page(request: HttpRequest, template: str, status: int, **context) -> HttpResponse:
    with translation.override(_language(request)):
        body = render_to_string(template, {"status": status, **context}, request=request)
    return HttpResponse(body, status=status)


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _page(request, "400.html", 400)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _page(request, "403.html", 403)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    return _page(request, "404.html", 404)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    return _page(request, "403.html", 403, csrf_failed=True)


def server_error(request: HttpRequest) -> HttpResponse:
    """Rendered without the request's context: the session, the database or the user may
    be what failed. If even that fails, a line of plain text."""
    try:
        with translation.override(_language(request)):
            body = render_to_string("500.html", {"status": 500})
    except Exception:
        logger.exception("the 500 page could not be rendered")
        return HttpResponseServerError(
            "Server error (500)", content_type="text/plain; charset=utf-8"
        )
    return HttpResponseServerError(body)
