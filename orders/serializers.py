"""The order's JSON shape (the contract's "order object"), used by the API and by the event."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.validators import MaxLengthValidator, RegexValidator
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


class IdentifierField(StrictCharField):
    """`customer_id` and `sku`: 1 to 64 characters, at least one of them not whitespace.

    Kept exactly as sent, surrounding whitespace included: other services match these ids
    character for character, so quietly trimming one would make it a different id from the
    one the client holds. An id of whitespace only is refused as blank. The rule is a
    RegexValidator so that the schema states it too (`pattern: \\S`).
    """

    def __init__(self, **kwargs: Any):
        super().__init__(
            max_length=64,
            min_length=1,
            allow_blank=False,
            trim_whitespace=False,
            validators=[RegexValidator(r"\S", message="This field may not be blank.", code="blank")],
            **kwargs,
        )


class OrderLineSerializer(serializers.ModelSerializer):
    sku = StrictCharField(max_length=64, allow_blank=False, trim_whitespace=False)
    quantity = StrictIntegerField(min_value=1, max_value=2_147_483_647)
    unit_price = PriceField(max_digits=12, decimal_places=2, min_value=Decimal("0"))

    class Meta:
        model = OrderLine
        fields = ["sku", "quantity", "unit_price"]


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "format": "decimal", "pattern": r"^\d{1,10}(?:\.\d{1,2})?$", "example": "10.00"},
            {"type": "number", "minimum": 0, "maximum": 9_999_999_999.99},
        ],
        "description": "A decimal of at most 10 digits before the point and 2 after, as a string or a number.",
    }
)
class PriceInputField(PriceField):
    """A line's unit_price as a request gives it. The schema says what the field takes: a JSON
    number too, which DRF's own schema for a DecimalField does not (it allows only strings, and
    with a pattern that lets "" and "-1" through)."""


# A serializer of its own, and so a schema component of its own, so that the response's
# `OrderLine` keeps describing what responses hold.
class OrderLineInputSerializer(OrderLineSerializer):
    """A line of a new order."""

    sku = IdentifierField()
    unit_price = PriceInputField(max_digits=12, decimal_places=2, min_value=Decimal("0"))


class OrderSerializer(serializers.ModelSerializer):
    lines = OrderLineSerializer(many=True, read_only=True)
    # No max_digits: a valid order (2^31-1 x 9999999999.99) can total 22 digits.
    total_amount = serializers.DecimalField(max_digits=None, decimal_places=2, read_only=True)

    class Meta:
        model = Order
        fields = ["id", "customer_id", "status", "total_amount", "lines", "created_at", "confirmed_at"]
        read_only_fields = fields


def order_max_lines() -> int:
    """Read when a body is validated or the schema is built, not at import: a changed
    ORDER_MAX_LINES setting applies to both."""
    return settings.ORDER_MAX_LINES


class OrderLinesField(serializers.ListField):
    """An order's lines: 1 to ORDER_MAX_LINES of them.

    A ListField, not many=True: its errors are the contract's {"lines": ["..."]} for an empty,
    oversized or non-list value, and {"lines": {"0": {"quantity": ["..."]}}} per line.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(child=OrderLineInputSerializer(), allow_empty=False, min_length=1, **kwargs)
        # For the schema's maxItems; the length is enforced in to_internal_value, first.
        self.validators.append(
            MaxLengthValidator(order_max_lines, message="Ensure this field has no more than %(limit_value)d elements.")
        )

    def to_internal_value(self, data):
        # Before the lines are validated one by one: 340,000 lines of `{}` fit in a 1 MiB body,
        # and validating them all just to refuse the order took half a minute of CPU.
        if isinstance(data, list) and len(data) > order_max_lines():
            self.fail("max_length", max_length=order_max_lines())
        return super().to_internal_value(data)


class OrderCreateSerializer(serializers.Serializer):
    """The body of POST /api/orders/."""

    customer_id = IdentifierField()
    lines = OrderLinesField(help_text="One line per SKU.")

    def validate_lines(self, lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One line per SKU: a line whose SKU an earlier line already has is refused with a 400
        naming it (`{"lines": {"3": {"sku": ["..."]}}}`), not merged into that line.

        The confirmed order leaves as an event that other services consume, and for them two
        lines of one SKU (at two prices, say) have no single meaning; merging them here would
        pick one for the client without telling it. SKUs are compared exactly as sent.
        """
        first_line_of: dict[str, int] = {}
        errors: dict[int, dict[str, list[str]]] = {}
        for index, line in enumerate(lines):
            first = first_line_of.setdefault(line["sku"], index)
            if first != index:
                errors[index] = {"sku": [f"Line {first} has this SKU already; an order has one line per SKU."]}
        if errors:
            raise serializers.ValidationError(errors)
        return lines


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
