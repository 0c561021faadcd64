"""The orders REST API: thin views over the services and selectors."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from orders.models import Order
from orders.permissions import OrderPermissions
from orders.selectors import order_get, order_list
from orders.serializers import (
    OrderCreateSerializer,
    OrderListFilterSerializer,
    OrderResponseSerializer,
)
from orders.services import LineInput, order_confirm, order_create

# The contract's error answers, documented so that clients (and the fuzzer in the suite) can rely
# on their shape: {"detail", "code"}, or field errors for a 400.
_ERROR = OpenApiResponse(
    {
        "type": "object",
        "properties": {"detail": {"type": "string"}, "code": {"type": "string"}},
        "required": ["detail", "code"],
    },
    description='{"detail": "...", "code": "..."}',
)
_MESSAGES = {"type": "array", "items": {"type": "string"}}
_FIELD_ERRORS = {
    "type": "object",
    "minProperties": 1,
    # {"customer_id": ["..."]}, {"lines": ["..."]}, per line {"lines": {"0": {"sku": ["..."]}}}
    # or {"lines": {"0": ["..."]}}
    "additionalProperties": {
        "anyOf": [
            _MESSAGES,
            {
                "type": "object",
                "additionalProperties": {"anyOf": [_MESSAGES, {"type": "object", "additionalProperties": _MESSAGES}]},
            },
        ]
    },
}
_BAD_REQUEST = OpenApiResponse(
    {"anyOf": [_ERROR.response, _FIELD_ERRORS]},
    description='Field errors, {"field": ["..."]}, or a body that is not JSON ("code": "parse_error")',
)
_AUTH = {401: _ERROR, 403: _ERROR, 429: _ERROR}


def _order_id(pk: str) -> int:
    # isascii: str.isdigit() is also true for "²" and other Unicode digits.
    if not (pk.isascii() and pk.isdigit()):
        raise NotFound("No order has this id.")
    return int(pk)


def _order_response(order_id: int, *, http_status: int = status.HTTP_200_OK) -> Response:
    try:
        order = order_get(order_id=order_id)
    except Order.DoesNotExist:
        raise NotFound("No order has this id.") from None
    return Response(OrderResponseSerializer(order).data, status=http_status)


class OrderViewSet(viewsets.GenericViewSet):
    """Orders: list and read (`orders.view_order`), create (`orders.add_order`), confirm
    (`orders.confirm_order`)."""

    permission_classes = [OrderPermissions]
    serializer_class = OrderResponseSerializer
    queryset = Order.objects.none()  # for the schema; reads go through the selectors

    @extend_schema(
        parameters=[OpenApiParameter("status", enum=["pending", "confirmed"], required=False)],
        responses={200: OrderResponseSerializer(many=True), 400: _BAD_REQUEST, 404: _ERROR, **_AUTH},
    )
    def list(self, request: Request) -> Response:
        filters = OrderListFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        page = self.paginate_queryset(order_list(status=filters.validated_data.get("status")))
        return self.get_paginated_response(OrderResponseSerializer(page, many=True).data)

    @extend_schema(responses={200: OrderResponseSerializer, 404: _ERROR, **_AUTH})
    def retrieve(self, request: Request, pk: str) -> Response:
        return _order_response(_order_id(pk))

    @extend_schema(
        request=OrderCreateSerializer,
        responses={201: OrderResponseSerializer, 400: _BAD_REQUEST, 413: _ERROR, 415: _ERROR, **_AUTH},
    )
    def create(self, request: Request) -> Response:
        body = OrderCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        order = order_create(
            customer_id=body.validated_data["customer_id"],
            lines=[LineInput(**line) for line in body.validated_data["lines"]],
        )
        return _order_response(order.pk, http_status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: OrderResponseSerializer, 404: _ERROR, 409: _ERROR, **_AUTH})
    @action(detail=True, methods=["post"])
    def confirm(self, request: Request, pk: str) -> Response:
        order_id = _order_id(pk)
        try:
            order_confirm(order_id=order_id)
        except Order.DoesNotExist:
            raise NotFound("No order has this id.") from None
        return _order_response(order_id)
