"""The one place where domain errors become HTTP responses, and every error body gets the
contract's shape: `{"detail": ..., "code": ...}`, or field errors `{"field": [...]}` for 400."""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import status
from rest_framework.exceptions import Throttled
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from orders.services import OrderError, OrderHasNoLines, OrderNotPending

DOMAIN_ERROR_STATUS = {
    OrderNotPending: status.HTTP_409_CONFLICT,
    OrderHasNoLines: status.HTTP_409_CONFLICT,
}


def exception_handler(exc, context):
    if isinstance(exc, OrderError):
        http_status = next(
            (code for error, code in DOMAIN_ERROR_STATUS.items() if isinstance(exc, error)),
            status.HTTP_400_BAD_REQUEST,
        )
        return Response({"detail": str(exc), "code": exc.code}, status=http_status)

    response = drf_exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and set(response.data) == {"detail"}:
        detail = response.data["detail"]
        response.data = {"detail": str(detail), "code": getattr(detail, "code", None) or "error"}
    return response


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler400 (Django's own refusals before a view runs: too many query parameters, a body
    over DATA_UPLOAD_MAX_MEMORY_SIZE read through `request.body`, a bad Host): JSON under
    /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        if isinstance(exception, RequestDataTooBig):
            return JsonResponse({"detail": "Request body too large.", "code": "request_too_large"}, status=413)
        return JsonResponse({"detail": "Bad request.", "code": "bad_request"}, status=400)
    return defaults.bad_request(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler404: JSON under /api/ (a path no route matches), Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    return defaults.page_not_found(request, exception)


def too_many_requests(request: HttpRequest, *, wait: float) -> HttpResponse:
    """429 from a view outside DRF, in DRF's words and with its Retry-After: JSON under /api/,
    one line of text elsewhere."""
    throttled = Throttled(wait)
    headers = {"Retry-After": str(throttled.wait)}
    if request.path.startswith("/api/"):
        return JsonResponse(
            {"detail": str(throttled.detail), "code": throttled.default_code}, status=429, headers=headers
        )
    return HttpResponse(f"{throttled.detail}\n", status=429, content_type="text/plain; charset=utf-8", headers=headers)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: JSON under /api/, Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"detail": "Server error.", "code": "server_error"}, status=500)
    return defaults.server_error(request)
