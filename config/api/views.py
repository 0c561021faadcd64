"""Views of the deployment rather than of an app: the health check, the metrics page and the
event contracts (contracts/ at the project root)."""

from __future__ import annotations

import hmac
import json
import logging
import threading
from pathlib import PurePosixPath

import yaml
from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse
from django_prometheus.exports import ExportToDjangoView
from drf_spectacular.settings import spectacular_settings
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from drf_spectacular.views import AUTHENTICATION_CLASSES as SCHEMA_AUTHENTICATION_CLASSES
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.decorators import api_view, authentication_classes, permission_classes, throttle_classes
from rest_framework.exceptions import AuthenticationFailed
from rest_framework.permissions import AllowAny
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from kafka_bridge.cluster.health import OK, CheckResult, kafka_check

logger = logging.getLogger(__name__)

HEALTH_CACHE_KEY = "orderflow:health"
# Probes that arrive while a check runs wait for its answer instead of each starting one.
_health_check_lock = threading.Lock()


def database_check() -> CheckResult:
    """OK when the database answers `SELECT 1`, else the DatabaseError."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return CheckResult.failed(exc, detail=f"{type(exc).__name__}: {exc}")
    return OK


def health_checks_run() -> dict[str, CheckResult]:
    """Both parts, checked now; what is unavailable is logged with its full text."""
    parts = {"database": database_check(), "kafka": kafka_check()}
    for name, result in parts.items():
        if not result.ok:
            logger.warning("health: %s unavailable: %s", name, result.detail, extra={"part": name})
    return parts


def health_checks() -> dict[str, CheckResult]:
    """Both parts, from a check at most HEALTH_CACHE_SECONDS old (0: checked for every call), so
    that a storm of probes costs one database query and one Kafka bootstrap per process."""
    seconds = settings.HEALTH_CACHE_SECONDS
    if seconds <= 0:
        return health_checks_run()
    parts = cache.get(HEALTH_CACHE_KEY)
    if parts is None:
        with _health_check_lock:
            parts = cache.get(HEALTH_CACHE_KEY)
            if parts is None:
                parts = health_checks_run()
                cache.set(HEALTH_CACHE_KEY, parts, timeout=seconds)
    return parts


class OptionalTokenAuthentication(TokenAuthentication):
    """A token that does not authenticate makes an anonymous caller rather than a 401: the
    health check needs no credentials, and a probe that sends stale ones must still get it."""

    def authenticate(self, request: Request):
        try:
            return super().authenticate(request)
        except AuthenticationFailed:
            return None


_health = inline_serializer("Health", {"database": serializers.CharField(), "kafka": serializers.CharField()})


@extend_schema(
    summary="Health of the web process's dependencies",
    description=(
        'Each part is "ok" or "unavailable: <reason>". No authentication. The reason is the class '
        'of the error (e.g. "unavailable: OperationalError", "unavailable: BrokerUnavailable"); '
        "staff users, signed in with a session or a token, get its full one-line text instead, "
        "which may name hosts, ports and users. The answer comes from a check at most "
        "HEALTH_CACHE_SECONDS (2 s) old. Not throttled."
    ),
    responses={200: _health, 503: OpenApiResponse(_health, description="a part is unavailable")},
    auth=[],
)
@api_view(["GET"])
@authentication_classes([OptionalTokenAuthentication, SessionAuthentication])
@permission_classes([AllowAny])
@throttle_classes([])
def health(request: Request) -> Response:
    """`{"database", "kafka"}`, each "ok" or "unavailable: <reason>": the error's class for
    anyone, its full text (hosts, ports, users) only for staff, since anonymous callers
    include whoever can reach a load balancer. The full text is always in the log."""
    checks = health_checks()
    detailed = request.user.is_staff
    parts = {name: result.text(detailed=detailed) for name, result in checks.items()}
    healthy = all(result.ok for result in checks.values())
    return Response(parts, status=200 if healthy else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus' exposition of this process's metrics; with METRICS_AUTH_TOKEN set, only for
    `Authorization: Bearer <token>` (Prometheus' `authorization` scrape setting)."""
    token = settings.METRICS_AUTH_TOKEN
    if token and not hmac.compare_digest(request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()):
        return HttpResponse(
            "metrics need a bearer token\n",
            status=401,
            content_type="text/plain",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
    return ExportToDjangoView(request)


# --- The event contracts ---------------------------------------------------------------------
# Served from one folder-like URL, /api/schema/events/, under their file names, so that the
# AsyncAPI document's relative `$ref: './order-export-requested.v1.schema.json'` resolves both
# here and for someone who downloads the two files next to each other.
ASYNCAPI_FILE = "asyncapi.yaml"
ORDER_EXPORT_REQUESTED_V1_FILE = "order-export-requested.v1.schema.json"


def contract_file_read(name: str) -> bytes:
    """A file of contracts/ at the project root, as it is on disk."""
    return (settings.BASE_DIR / "contracts" / name).read_bytes()


class _FileBytesRenderer(BaseRenderer):
    """Sends a contract file's bytes as they are."""

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return data


class YamlFileRenderer(_FileBytesRenderer):
    media_type = "application/yaml"
    format = "yaml"
    charset = "utf-8"


class JsonSchemaFileRenderer(_FileBytesRenderer):
    media_type = "application/schema+json"
    format = "json"
    charset = None  # JSON is UTF-8 by definition


class JsonFileRenderer(_FileBytesRenderer):
    media_type = "application/json"
    format = "json"
    charset = None


class YamlAsJsonRenderer(BaseRenderer):
    """The YAML document as JSON (`?format=json`, `Accept: application/json`)."""

    media_type = "application/json"
    format = "json"
    charset = None

    def render(self, data, accepted_media_type=None, renderer_context=None):
        return json.dumps(yaml.safe_load(data), indent=2, ensure_ascii=False).encode()


class ContractFileView(APIView):
    """A contract file, with the access of the OpenAPI schema at /api/schema/ (drf-spectacular's
    SERVE_AUTHENTICATION and SERVE_PERMISSIONS: no credentials needed) and the default throttles."""

    file_name: str = ""
    authentication_classes = SCHEMA_AUTHENTICATION_CLASSES
    permission_classes = spectacular_settings.SERVE_PERMISSIONS

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        name = PurePosixPath(self.file_name)
        suffix = request.accepted_renderer.format
        filename = name.name if name.suffix == f".{suffix}" else f"{name.stem}.{suffix}"
        return Response(
            contract_file_read(self.file_name), headers={"Content-Disposition": f'inline; filename="{filename}"'}
        )

    def handle_exception(self, exc):
        # Errors are JSON under /api/ (the contract), whichever format the file was asked in.
        response = super().handle_exception(exc)
        self.request.accepted_renderer, self.request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        return response


class AsyncApiView(ContractFileView):
    """The AsyncAPI 3.0 document of the event topic and its dead-letter topic: YAML, or JSON with
    `?format=json`."""

    file_name = ASYNCAPI_FILE
    renderer_classes = [YamlFileRenderer, YamlAsJsonRenderer]


class OrderExportRequestedSchemaView(ContractFileView):
    """The JSON Schema (2020-12) of the OrderExportRequested event's value, schema_version 1."""

    file_name = ORDER_EXPORT_REQUESTED_V1_FILE
    renderer_classes = [JsonSchemaFileRenderer, JsonFileRenderer]
