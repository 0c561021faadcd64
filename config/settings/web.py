"""The web process: hosts, HTTPS behind a proxy or not, and the API (DRF, throttles, limits)."""

import re

from django.core.exceptions import ImproperlyConfigured

from config.env import env

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
# Origins (scheme and host) allowed to send unsafe requests with a session, e.g. the admin behind
# https://orders.example.com
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

# --- HTTPS, behind a proxy or not (all off by default; docs/production.env turns them on) -------
# The header and value a TLS-terminating proxy sets, e.g. "HTTP_X_FORWARDED_PROTO,https". Only
# set it when the proxy strips that header from what clients send.
_proxy_ssl_header = env.tuple("DJANGO_SECURE_PROXY_SSL_HEADER", default=())
if _proxy_ssl_header and len(_proxy_ssl_header) != 2:
    raise ImproperlyConfigured(
        'DJANGO_SECURE_PROXY_SSL_HEADER must be "<header>,<value>", e.g. "HTTP_X_FORWARDED_PROTO,https"'
    )
SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl_header) or None
# One decision, HTTPS only: redirect plain HTTP, and send the session and CSRF cookies over
# HTTPS only (a site that redirects never needs them over HTTP).
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
SESSION_COOKIE_SECURE = SECURE_SSL_REDIRECT
CSRF_COOKIE_SECURE = SECURE_SSL_REDIRECT


def hsts_parse(value: str) -> tuple[int, bool, bool]:
    """The Strict-Transport-Security policy as the header writes it, e.g.
    "max-age=31536000; includeSubDomains; preload" (commas may stand for the semicolons):
    (seconds, include subdomains, preload)."""
    seconds, subdomains, preload = None, False, False
    for part in filter(None, (part.strip() for part in re.split("[;,]", value))):
        match = re.fullmatch(r"max-age=(\d+)", part, re.IGNORECASE)
        if match:
            seconds = int(match[1])
        elif part.lower() == "includesubdomains":
            subdomains = True
        elif part.lower() == "preload":
            preload = True
        else:
            seconds = None
            break
    if seconds is None:
        raise ImproperlyConfigured(
            f'DJANGO_SECURE_HSTS={value!r} is not "max-age=<seconds>[; includeSubDomains][; preload]"'
        )
    return seconds, subdomains, preload


# Unset: no Strict-Transport-Security header.
SECURE_HSTS_SECONDS, SECURE_HSTS_INCLUDE_SUBDOMAINS, SECURE_HSTS_PRELOAD = (
    hsts_parse(env("DJANGO_SECURE_HSTS")) if env("DJANGO_SECURE_HSTS", default="") else (0, False, False)
)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first so that an unauthenticated request gets 401 with a WWW-Authenticate
        # header rather than the 403 that SessionAuthentication alone would give.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # JSON only, bounded by API_MAX_BODY_BYTES (config/api/parsers.py). No form or multipart parser:
    # no endpoint takes them (the admin and login pages are Django views, and the browsable
    # API's raw form posts JSON); a form body is a 415.
    "DEFAULT_PARSER_CLASSES": ["config.api.parsers.BoundedJSONParser"],
    "EXCEPTION_HANDLER": "config.api.errors.exception_handler",
    # Every DRF view unless it says otherwise. DRF checks permissions before throttles, so a
    # request without credentials is a 401 that uses up no rate.
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    # Who "the client" of a per-IP rate is. DRF's default (None) takes the whole X-Forwarded-For
    # header when there is one, which any client can send itself to get a fresh count on every
    # request. 0: REMOTE_ADDR, right when nothing stands in front; N proxies in front that append
    # to X-Forwarded-For: the address the outermost of them saw.
    "NUM_PROXIES": env.int("API_NUM_PROXIES", default=0),
    # Per user, and per client IP for anonymous requests (and the login views), in DRF's rate
    # format. A back-office service must not trip the user rate; 60 login attempts a minute per
    # address is more than a person types.
    "DEFAULT_THROTTLE_RATES": {"user": "6000/min", "anon": "60/min"},
}

# --- Limits on what a client may send ----------------------------------------------------------
# Lines per order; a larger order is a 400 naming `lines`. The largest order's event (about
# 63 KB) stays far within Kafka's 1 MiB record.
ORDER_MAX_LINES = 500
# Request bodies larger than this are refused (413) before they are parsed.
API_MAX_BODY_BYTES = 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES
