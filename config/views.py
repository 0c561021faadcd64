"""Views of the deployment rather than of an app: the health check and the metrics page."""
from __future__ import annotations

import hmac

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse
from django_prometheus.exports import ExportToDjangoView
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.decorators import api_view, authentication_classes, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from kafka_bridge.dead_letter import one_line
from kafka_bridge.health import kafka_check


def database_check() -> str:
    """"ok" when the database answers `SELECT 1`, else "unavailable: <one line>"."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return f"unavailable: {one_line(f'{type(exc).__name__}: {exc}')}"
    return "ok"


_health = inline_serializer("Health", {"database": serializers.CharField(), "kafka": serializers.CharField()})


@extend_schema(
    summary="Health of the web process's dependencies",
    description='Each part is "ok" or "unavailable: <reason>". No authentication.',
    responses={200: _health, 503: OpenApiResponse(_health, description="a part is unavailable")},
    auth=[],
)
@api_view(["GET"])
@authentication_classes([])
@permission_classes([AllowAny])
def health(request: Request) -> Response:
    parts = {"database": database_check(), "kafka": kafka_check()}
    healthy = all(state == "ok" for state in parts.values())
    return Response(parts, status=200 if healthy else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus' exposition of this process's metrics; with METRICS_AUTH_TOKEN set, only for
    `Authorization: Bearer <token>` (Prometheus' `authorization` scrape setting)."""
    token = settings.METRICS_AUTH_TOKEN
    if token and not hmac.compare_digest(
        request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()
    ):
        return HttpResponse("metrics need a bearer token\n", status=401, content_type="text/plain",
                            headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    return ExportToDjangoView(request)
