"""export_request_decode: the contract's OrderExportRequested event in, an ExportRequest out,
and PoisonRecord for everything no retry could process."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from exports.events import ExportRequest, PoisonRecord, export_request_decode
from tests.support.factories import EVENT_ORDER as ORDER
from tests.support.factories import MISSING, export_event_factory

EVENT_ID = "0b6e2c1e-8a0f-4c55-9a3e-6f1d2b7c9e10"
ORDER_WITHOUT_ID = {name: value for name, value in ORDER.items() if name != "id"}


def contract_event(**changes: Any) -> dict[str, Any]:
    """The contract's event, under EVENT_ID; a change to `MISSING` drops the field."""
    return export_event_factory(**{"event_id": EVENT_ID, **changes})


def encoded(event: Any) -> bytes:
    return json.dumps(event).encode("utf-8")


def test_decode_of_a_contract_event_gives_its_event_id_order_id_and_order():
    request = export_request_decode(encoded(contract_event()))

    assert request == ExportRequest(event_id=uuid.UUID(EVENT_ID), order_id=7, order=ORDER)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"\xff\xfe{not utf-8", id="not-utf-8"),
        pytest.param(b'{"event_id": ', id="not-json"),
        pytest.param(b"", id="empty"),
        pytest.param(encoded([contract_event()]), id="json-list"),
        pytest.param(encoded("OrderExportRequested"), id="json-string"),
        pytest.param(encoded(contract_event(event_type=MISSING)), id="event-type-missing"),
        pytest.param(encoded(contract_event(event_type="OrderCancelled")), id="event-type-other"),
        pytest.param(encoded(contract_event(schema_version=MISSING)), id="schema-version-missing"),
        pytest.param(encoded(contract_event(schema_version=2)), id="schema-version-2"),
        pytest.param(encoded(contract_event(schema_version="1")), id="schema-version-string"),
        pytest.param(encoded(contract_event(event_id=MISSING)), id="event-id-missing"),
        pytest.param(encoded(contract_event(event_id="not-a-uuid")), id="event-id-not-uuid"),
        pytest.param(encoded(contract_event(event_id=None)), id="event-id-null"),
        pytest.param(encoded(contract_event(order=MISSING)), id="order-missing"),
        pytest.param(encoded(contract_event(order=None)), id="order-null"),
        pytest.param(encoded(contract_event(order=[ORDER])), id="order-list"),
        pytest.param(encoded(contract_event(order=ORDER_WITHOUT_ID)), id="order-id-missing"),
        pytest.param(encoded(contract_event(order={**ORDER, "id": "7"})), id="order-id-string"),
        pytest.param(encoded(contract_event(order={**ORDER, "id": True})), id="order-id-bool"),
        pytest.param(encoded(contract_event(order={**ORDER, "id": 7.5})), id="order-id-float"),
        pytest.param(None, id="value-none"),
    ],
)
def test_decode_raises_poison_record_for_what_the_contract_does_not_define(value):
    with pytest.raises(PoisonRecord):
        export_request_decode(value)


def test_decode_raises_poison_record_for_a_boolean_schema_version():
    with pytest.raises(PoisonRecord):
        export_request_decode(encoded(contract_event(schema_version=True)))


def test_decode_raises_poison_record_for_json_nested_too_deep_to_parse():
    with pytest.raises(PoisonRecord):
        export_request_decode(b"[" * 100_000 + b"]" * 100_000)
