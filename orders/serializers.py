"""The order's JSON shape (the contract's "order object"), used by the API and by the event."""
from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from orders.models import Order, OrderLine


class StrictCharField(serializers.CharField):
    """A CharField that takes JSON strings only (DRF's also turns numbers into strings)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """An IntegerField that takes JSON integers only, not booleans, strings or 2.0."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class PriceField(serializers.DecimalField):
    """A decimal given as a JSON string ("10.00") or number; never a boolean."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, (str, int, float)):
            self.fail("invalid")
        return super().to_internal_value(data)


class OrderLineSerializer(serializers.ModelSerializer):
    sku = StrictCharField(max_length=64, allow_blank=False, trim_whitespace=False)
    quantity = StrictIntegerField(min_value=1, max_value=2_147_483_647)
    unit_price = PriceField(max_digits=12, decimal_places=2, min_value=Decimal("0"))

    class Meta:
        model = OrderLine
        fields = ["sku", "quantity", "unit_price"]


class OrderSerializer(serializers.ModelSerializer):
    lines = OrderLineSerializer(many=True, read_only=True)
    # No max_digits: a valid order (2^31-1 x 9999999999.99) can total 22 digits.
    total_amount = serializers.DecimalField(max_digits=None, decimal_places=2, read_only=True)

    class Meta:
        model = Order
        fields = ["id", "customer_id", "status", "total_amount", "lines", "created_at", "confirmed_at"]
        read_only_fields = fields


def order_snapshot(order: Order) -> dict[str, Any]:
    """The order as plain JSON types, exactly as the API shows it without `export`."""
    return json.loads(json.dumps(OrderSerializer(order).data))


class OrderCreateSerializer(serializers.Serializer):
    """The body of POST /api/orders/."""

    customer_id = StrictCharField(max_length=64, allow_blank=False, trim_whitespace=False)
    # A ListField, not many=True: its errors are the contract's {"lines": ["..."]} for an empty
    # or non-list value, and {"lines": {"0": {"quantity": ["..."]}}} per line.
    lines = serializers.ListField(child=OrderLineSerializer(), allow_empty=False)


class OrderListFilterSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=Order.Status.choices, required=False)


class OrderExportStatusSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["pending", "exported", "failed"])
    attempts = serializers.IntegerField()
    exported_at = serializers.DateTimeField(allow_null=True)
    last_error = serializers.CharField(allow_null=True)


PENDING_EXPORT = {"status": "pending", "attempts": 0, "exported_at": None, "last_error": None}


@extend_schema_serializer(component_name="Order")
class OrderResponseSerializer(OrderSerializer):
    """The order with `export`: null until confirmed, then where its export stands."""

    export = serializers.SerializerMethodField()

    class Meta(OrderSerializer.Meta):
        fields = [*OrderSerializer.Meta.fields, "export"]
        read_only_fields = fields

    @extend_schema_field(OrderExportStatusSerializer(allow_null=True))
    def get_export(self, order: Order) -> dict[str, Any] | None:
        if order.status != Order.Status.CONFIRMED:
            return None
        # `export` is the reverse side of exports.OrderExport, written by the consumer. Until
        # the consumer has seen the event, a confirmed order's export is pending.
        export = getattr(order, "export", None)
        if export is None:
            return dict(PENDING_EXPORT)
        return OrderExportStatusSerializer(export).data
