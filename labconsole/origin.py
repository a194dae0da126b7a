"""The WebSocket origin check: a socket is accepted only from a page of the very origin
(scheme, host and port) it was opened on, or from one listed in CSRF_TRUSTED_ORIGINS.

Channels' AllowedHostsOriginValidator compares host names only, so any port or scheme of an
allowed host passes (`http://127.0.0.1:9999`, `https://127.0.0.1`). Here the Origin header
must equal the socket's own origin: `ws://` is `http://`, `wss://` is `https://` (behind a
proxy that ends TLS, so is a socket that carries SECURE_PROXY_SSL_HEADER, as for a page), the
host and port are those
of the Host header, which must itself be one of ALLOWED_HOSTS, as for a page. A refused
socket is answered with a handshake 403 (the page that opened it is not ours)."""

from __future__ import annotations

from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) with the scheme's default port filled in; None if malformed."""
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme]


def _trusted(origin: tuple[str, str, int]) -> bool:
    scheme, host, port = origin
    for entry in settings.CSRF_TRUSTED_ORIGINS:
        entry_scheme, _, entry_netloc = entry.partition("://")
        if entry_netloc.startswith("*."):  # Django's wildcard: any subdomain
            wanted = _origin(entry_scheme, entry_netloc[2:])
            if (
                wanted
                and (wanted[0], wanted[2]) == (scheme, port)
                and host.endswith("." + wanted[1])
            ):
                return True
        elif _origin(entry_scheme, entry_netloc) == origin:
            return True
    return False


def _proxied_https(headers: dict[bytes, bytes]) -> bool:
    """The proxy in front says the browser came over HTTPS (as Django's request.scheme)."""
    if not settings.SECURE_PROXY_SSL_HEADER:
        return False
    name, value = settings.SECURE_PROXY_SSL_HEADER  # ("HTTP_X_FORWARDED_PROTO", "https")
    header = name.removeprefix("HTTP_").lower().replace("_", "-").encode("latin-1")
    return headers.get(header, b"").decode("latin-1").split(",")[0].strip() == value


def origin_allowed(scope: dict) -> bool:
    headers = dict(scope.get("headers") or [])
    try:
        origin_header = headers.get(b"origin", b"").decode("ascii")
        host_header = headers.get(b"host", b"").decode("ascii")
    except UnicodeDecodeError:
        return False
    scheme, _, netloc = origin_header.partition("://")
    origin = _origin(scheme, netloc) if netloc and "/" not in netloc else None
    if origin is None:
        return False
    if _trusted(origin):
        return True
    domain, _ = split_domain_port(host_header)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return False
    own_scheme = "https" if scope.get("scheme") == "wss" or _proxied_https(headers) else "http"
    return _origin(own_scheme, host_header) == origin


class SameOriginValidator:
    """ASGI middleware for the websocket protocol: denies sockets origin_allowed() refuses."""

    def __init__(self, application):
        self.application = application

    async def __call__(self, scope, receive, send):
        if scope["type"] == "websocket" and not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
