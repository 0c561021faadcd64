"""The event contracts in contracts/: the JSON Schema of the OrderExportRequested value (schema_version
1) and the AsyncAPI document of the event topic and its DLT. Checked against real records read back
from the broker, against the export consumer's decoder (the schema refuses what the consumer
refuses), against the official AsyncAPI 3.0.0 schema (vendored: no network at test time), and as
the web process serves them."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
import yaml
from jsonschema import Draft7Validator, Draft202012Validator, FormatChecker
from referencing import Registry
from referencing.exceptions import NoSuchResource
from referencing.jsonschema import DRAFT7
from rest_framework.test import APIClient

from config.env import BASE_DIR
from exports.consumer import export_record_decode
from exports.events import PoisonRecord, export_request_decode
from kafka_bridge.cluster.topics import DLT_MAX_MESSAGE_BYTES
from orders.services import LineInput, order_confirm, order_create
from tests.support.factories import event_record_factory
from tests.support.records import produce_records, read_records
from tests.support.redrive import dead_lettered_order

CONTRACTS = BASE_DIR / "contracts"
EVENT_SCHEMA_FILE = CONTRACTS / "order-export-requested.v1.schema.json"
ASYNCAPI_FILE = CONTRACTS / "asyncapi.yaml"
ASYNCAPI_SCHEMA_FILE = CONTRACTS / "vendor" / "asyncapi-3.0.0.schema.json"
# `schemas/3.0.0.json` of the npm package @asyncapi/specs 6.11.1 (contracts/vendor/README.md).
ASYNCAPI_SCHEMA_SHA256 = "d4571a420e6ffb7fcc7066c95a6db1202f299a3c51daa103d0706bf30f95e626"

EVENTS_URL = "/api/schema/events/"
EVENT_SCHEMA_URL = "/api/schema/events/order-export-requested.v1.schema.json"

EVENT_SCHEMA: dict[str, Any] = json.loads(EVENT_SCHEMA_FILE.read_bytes())
ASYNCAPI: dict[str, Any] = yaml.safe_load(ASYNCAPI_FILE.read_bytes())
EVENT_MESSAGE = ASYNCAPI["components"]["messages"]["orderExportRequested"]
DEAD_LETTER_MESSAGE = ASYNCAPI["components"]["messages"]["orderExportDeadLetter"]

_RFC3339_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII)


def _format_checker() -> FormatChecker:
    """jsonschema's format checker, with `date-time` checked too: jsonschema checks it only when
    the optional rfc3339-validator package is installed, and passes anything otherwise."""
    checker = FormatChecker()
    if "date-time" not in checker.checkers:

        @checker.checks("date-time", raises=ValueError)
        def is_date_time(instance: object) -> bool:
            if not isinstance(instance, str):
                return True
            if not _RFC3339_DATE_TIME.fullmatch(instance):
                return False
            datetime.fromisoformat(instance.upper())  # a real day and time
            return True

    return checker


FORMAT_CHECKER = _format_checker()
EVENT_VALIDATOR = Draft202012Validator(EVENT_SCHEMA, format_checker=FORMAT_CHECKER)


def asyncapi_schema_validator(schema: dict[str, Any]) -> Draft7Validator:
    """A validator for a schema inside the AsyncAPI document (AsyncAPI Schema: draft-07 based)."""
    return Draft7Validator(schema, format_checker=FORMAT_CHECKER)


def errors_of(validator, instance) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in validator.iter_errors(instance)
    ]


def header_texts(headers) -> dict[str, str | None]:
    """Kafka headers as the AsyncAPI headers object describes them: name -> UTF-8 text (or null);
    a name present twice would be lost in the dict, so it fails here."""
    names = [name for name, _ in headers or []]
    assert len(names) == len(set(names)), f"a header name appears twice: {names}"
    return {name: None if value is None else value.decode("utf-8") for name, value in headers or []}


def key_text(key: bytes | None) -> str | None:
    return None if key is None else key.decode("utf-8")


def assert_is_the_contracts_event(record) -> dict[str, Any]:
    """The record's value satisfies the JSON Schema, its key and headers the AsyncAPI message, and
    the rules no schema can state hold (key = order id, headers = the value's members)."""
    value = json.loads(record.value.decode("utf-8"))
    assert errors_of(EVENT_VALIDATOR, value) == []
    key = key_text(record.key)
    assert errors_of(asyncapi_schema_validator(EVENT_MESSAGE["bindings"]["kafka"]["key"]), key) == []
    assert key == str(value["order"]["id"])
    headers = header_texts(record.headers)
    assert errors_of(asyncapi_schema_validator(EVENT_MESSAGE["headers"]), headers) == []
    assert headers == {"event_type": value["event_type"], "event_id": value["event_id"]}
    return value


def test_the_format_checker_checks_uuid_and_date_time():
    assert FORMAT_CHECKER.conforms("2026-01-02T03:04:05.678901Z", "date-time")
    assert not FORMAT_CHECKER.conforms("2026-02-30T03:04:05Z", "date-time")
    assert not FORMAT_CHECKER.conforms("2026-01-02 03:04:05", "date-time")
    assert not FORMAT_CHECKER.conforms("yesterday", "date-time")
    assert FORMAT_CHECKER.conforms(str(uuid.uuid4()), "uuid")
    assert not FORMAT_CHECKER.conforms("not-a-uuid", "uuid")


def test_the_event_schema_is_a_valid_2020_12_schema():
    Draft202012Validator.check_schema(EVENT_SCHEMA)
    assert EVENT_SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


# --- 1. Real records, read back from the broker -----------------------------------------------

ODD_BUT_VALID_ORDERS = {
    "several lines, free and costly": dict(
        customer_id="c-1",
        lines=[
            LineInput(sku="SKU-1", quantity=2, unit_price=Decimal("10.00")),
            LineInput(sku="FREE", quantity=1, unit_price=Decimal("0.00")),
            LineInput(sku="MAX", quantity=2_147_483_647, unit_price=Decimal("9999999999.99")),
            LineInput(sku="TENTH", quantity=3, unit_price=Decimal("0.1")),
        ],
    ),
    "unicode customer id": dict(
        customer_id="kundin-ü-東京-😀",
        lines=[
            LineInput(sku="ß-١", quantity=1, unit_price=Decimal("5")),
        ],
    ),
    "longest ids": dict(customer_id="c" * 64, lines=[LineInput(sku="s" * 64, quantity=1, unit_price=Decimal("1.00"))]),
    "longest ids in characters beyond the BMP": dict(
        customer_id="😀" * 64,
        lines=[
            LineInput(sku="東" * 64, quantity=1, unit_price=Decimal("1.00")),
        ],
    ),
    "ids kept with their spaces": dict(
        customer_id=" c-2 ", lines=[LineInput(sku=" S ", quantity=1, unit_price=Decimal("2.50"))]
    ),
    "a free order": dict(customer_id="c-3", lines=[LineInput(sku="GIFT", quantity=1, unit_price=Decimal("0.00"))]),
}


@pytest.mark.kafka
@pytest.mark.django_db(transaction=True)
def test_real_events_on_the_topic_satisfy_the_schema_and_the_asyncapi_message(export_topics, fresh_publisher):
    topic, _ = export_topics
    orders = {name: order_create(**shape) for name, shape in ODD_BUT_VALID_ORDERS.items()}
    for order in orders.values():
        order_confirm(order_id=order.pk)

    records = read_records(topic, expected=len(orders))

    by_key = {key_text(record.key): record for record in records}
    assert set(by_key) == {str(order.pk) for order in orders.values()}
    for name, order in orders.items():
        value = assert_is_the_contracts_event(by_key[str(order.pk)])
        shape = ODD_BUT_VALID_ORDERS[name]
        # The odd values went through as they were, so the schema really was shown them.
        assert value["order"]["customer_id"] == shape["customer_id"], name
        assert [line["sku"] for line in value["order"]["lines"]] == [line.sku for line in shape["lines"]], name
    several = json.loads(by_key[str(orders["several lines, free and costly"].pk)].value)["order"]
    assert [line["unit_price"] for line in several["lines"]] == ["10.00", "0.00", "9999999999.99", "0.10"]
    assert several["total_amount"] == "21474836469978525183.83"
    assert json.loads(by_key[str(orders["a free order"].pk)].value)["order"]["total_amount"] == "0.00"


@pytest.mark.kafka
@pytest.mark.django_db(transaction=True)
def test_an_event_recorded_in_a_trace_carries_the_w3c_headers_the_asyncapi_message_describes(
    export_topics, fresh_publisher, spans
):
    from rest_framework.test import APIClient

    from orders.permissions import ORDER_OPERATOR_PERMISSIONS
    from tests.support.factories import user_factory

    topic, _ = export_topics
    order = order_create(customer_id="c-traced", lines=[LineInput(sku="S", quantity=1, unit_price=Decimal("1.00"))])
    client = APIClient()
    client.force_authenticate(user_factory(username="contract-api", permissions=ORDER_OPERATOR_PERMISSIONS))

    confirmed = client.post(
        f"/api/orders/{order.pk}/confirm/",
        HTTP_TRACEPARENT="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        HTTP_TRACESTATE="congo=t61rcWkgMzE",
    )
    assert confirmed.status_code == 200

    [record] = read_records(topic, expected=1)
    headers = header_texts(record.headers)
    assert errors_of(asyncapi_schema_validator(EVENT_MESSAGE["headers"]), headers) == []
    assert list(headers) == ["event_type", "event_id", "traceparent", "tracestate"]
    assert headers["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert headers["tracestate"] == "congo=t61rcWkgMzE"
    assert not asyncapi_schema_validator(EVENT_MESSAGE["headers"]).is_valid(
        {**headers, "traceparent": "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    )


def assert_is_the_contracts_dead_letter(dead) -> dict[str, str | None]:
    headers = header_texts(dead.headers)
    assert errors_of(asyncapi_schema_validator(DEAD_LETTER_MESSAGE["headers"]), headers) == []
    assert (
        errors_of(asyncapi_schema_validator(DEAD_LETTER_MESSAGE["bindings"]["kafka"]["key"]), key_text(dead.key)) == []
    )
    return headers


@pytest.mark.kafka
@pytest.mark.django_db(transaction=True)
def test_dead_letters_carry_the_original_record_and_the_dlt_headers_the_asyncapi_document_describes(
    refusing_consumer, export_topics
):
    topic, dlt = export_topics
    poison = [
        (None, b"\xff\xfe this is not JSON {", []),
        (
            b"not-an-order",
            json.dumps({"event_type": "OrderExportRequested", "schema_version": 2}).encode(),
            [("event_type", b"OrderExportRequested"), ("event_id", str(uuid.uuid4()).encode())],
        ),
    ]
    sent = produce_records(topic, [{"key": key, "value": value, "headers": headers} for key, value, headers in poison])
    order = dead_lettered_order()

    dead_letters = read_records(dlt, expected=3, timeout=30)
    [original] = [r for r in read_records(topic, expected=3) if r.key == str(order.pk).encode()]

    assert len(dead_letters) == 3
    dead_letter_names = set(DEAD_LETTER_MESSAGE["headers"]["required"])
    for dead in dead_letters:
        headers = assert_is_the_contracts_dead_letter(dead)
        assert headers["dlt.original.topic"] == topic
        # The dlt.* headers come after the original ones, and are all described.
        names = [name for name, _ in dead.headers]
        assert {name for name in names if name.startswith("dlt.")} == dead_letter_names
        assert names[-len(dead_letter_names) :] == [name for name in names if name.startswith("dlt.")]
    [refused] = [d for d in dead_letters if d.key == str(order.pk).encode()]
    assert (refused.key, refused.value) == (original.key, original.value)
    assert_is_the_contracts_event(original)
    # The original bytes are still the contract's event, headers included, ahead of the dlt.* ones.
    assert refused.headers[:2] == original.headers
    headers = header_texts(refused.headers)
    assert (headers["dlt.original.partition"], headers["dlt.original.offset"]) == (
        str(original.partition),
        str(original.offset),
    )
    assert headers["dlt.attempts"] == "1" and "422" in headers["dlt.error"]
    for (key, value, _), metadata in zip(poison, sent):
        [dead] = [d for d in dead_letters if d.key == key and d.value == value]
        headers = header_texts(dead.headers)
        assert (headers["dlt.original.partition"], headers["dlt.original.offset"]) == (
            str(metadata.partition),
            str(metadata.offset),
        )
    [not_json] = [d for d in dead_letters if d.key is None]
    assert not_json.headers[0][0] == "dlt.original.topic", "a record without headers gets only the dlt.* ones"


# --- 2. The schema refuses what the consumer refuses ------------------------------------------

VALID_EVENT: dict[str, Any] = {
    "event_id": "5b7f1d0e-3c2a-4f6e-9a1b-2c3d4e5f6a7b",
    "event_type": "OrderExportRequested",
    "schema_version": 1,
    "occurred_at": "2026-01-02T03:04:06.123456Z",
    "order": {
        "id": 42,
        "customer_id": "c-1",
        "status": "confirmed",
        "total_amount": "20.50",
        "lines": [
            {"sku": "SKU-1", "quantity": 2, "unit_price": "10.00"},
            {"sku": "SKU-2", "quantity": 1, "unit_price": "0.50"},
        ],
        "created_at": "2026-01-02T03:04:05.678901Z",
        "confirmed_at": "2026-01-02T03:04:06Z",
    },
}


def changed(change: Callable[[dict[str, Any]], object]) -> bytes:
    """VALID_EVENT with `change` applied, as the producer would write it."""
    event = copy.deepcopy(VALID_EVENT)
    change(event)
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()


def schema_accepts(value: bytes | None) -> bool:
    """The contract's reading of a value: UTF-8 JSON that satisfies the JSON Schema."""
    if value is None:
        return False
    try:
        event = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    return EVENT_VALIDATOR.is_valid(event)


def decoder_accepts(value: bytes | None) -> bool:
    try:
        export_request_decode(value)
    except PoisonRecord:
        return False
    return True


ACCEPTED_BY_BOTH = {
    "the valid event": changed(lambda e: None),
    "microseconds left out when zero": changed(lambda e: e.update(occurred_at="2026-01-02T03:04:06Z")),
    # JSON has one number type: 1.0 is 1 to JSON Schema and to Python's == alike.
    "schema_version written 1.0": changed(lambda e: e.update(schema_version=1.0)),
}

REFUSED_BY_BOTH = {
    "schema_version 2": changed(lambda e: e.update(schema_version=2)),
    "schema_version the string 1": changed(lambda e: e.update(schema_version="1")),
    "schema_version true": changed(lambda e: e.update(schema_version=True)),
    "schema_version missing": changed(lambda e: e.pop("schema_version")),
    "another event_type": changed(lambda e: e.update(event_type="OrderCancelled")),
    "event_type missing": changed(lambda e: e.pop("event_type")),
    "event_id missing": changed(lambda e: e.pop("event_id")),
    "event_id not a UUID": changed(lambda e: e.update(event_id="not-a-uuid")),
    "event_id a number": changed(lambda e: e.update(event_id=12345)),
    "order missing": changed(lambda e: e.pop("order")),
    "order a list": changed(lambda e: e.update(order=[])),
    "order.id missing": changed(lambda e: e["order"].pop("id")),
    "order.id a string": changed(lambda e: e["order"].update(id="42")),
    "order.id true": changed(lambda e: e["order"].update(id=True)),
    "order.id 42.5": changed(lambda e: e["order"].update(id=42.5)),
    "a JSON array": b"[]",
    "JSON null": b"null",
    "not JSON": b'{"event_id": ',
    "not UTF-8": b"\xff\xfe{}",
    "empty bytes": b"",
    "a null value": None,
}

# The schema states exactly what the producer writes; the consumer reads only what it needs and
# tolerates the rest (as the schema's description asks of consumers). Each of these is refused by
# the schema and taken by the decoder; a change on either side shows here.
REFUSED_BY_THE_SCHEMA_ONLY = {
    "a member added": changed(lambda e: e.update(trace_id="abc")),
    "the order with export": changed(lambda e: e["order"].update(export=None)),
    "occurred_at missing": changed(lambda e: e.pop("occurred_at")),
    "occurred_at not UTC": changed(lambda e: e.update(occurred_at="2026-01-02T04:04:06.123456+01:00")),
    "occurred_at on February 30": changed(lambda e: e.update(occurred_at="2026-02-30T03:04:06.123456Z")),
    "event_id in braces": changed(lambda e: e.update(event_id="{5b7f1d0e-3c2a-4f6e-9a1b-2c3d4e5f6a7b}")),
    "event_id in capitals": changed(lambda e: e.update(event_id=VALID_EVENT["event_id"].upper())),
    "a pending order": changed(lambda e: e["order"].update(status="pending", confirmed_at=None)),
    # order_confirm does not refuse an order without lines; only the API and the admin keep such
    # orders from being made, and the decoder does not check.
    "no lines": changed(lambda e: e["order"].update(lines=[], total_amount="0.00")),
    "unit_price a number": changed(lambda e: e["order"]["lines"][0].update(unit_price=10.0)),
    "unit_price negative": changed(lambda e: e["order"]["lines"][0].update(unit_price="-1.00")),
    "total_amount with three places": changed(lambda e: e["order"].update(total_amount="20.500")),
    "quantity 0": changed(lambda e: e["order"]["lines"][0].update(quantity=0)),
    "customer_id of 65 characters": changed(lambda e: e["order"].update(customer_id="c" * 65)),
    "customer_id empty": changed(lambda e: e["order"].update(customer_id="")),
    "sku missing": changed(lambda e: e["order"]["lines"][0].pop("sku")),
    "order.id 0": changed(lambda e: e["order"].update(id=0)),
}

# What JSON Schema cannot say: 42.0 and 42 are the same number to it, Python's json reads 42.0 as
# a float, and the decoder wants an int. The producer writes integers.
REFUSED_BY_THE_DECODER_ONLY = {
    "order.id written 42.0": changed(lambda e: e["order"].update(id=42.0)),
}


@pytest.mark.parametrize("value", ACCEPTED_BY_BOTH.values(), ids=ACCEPTED_BY_BOTH.keys())
def test_values_the_schema_accepts_the_decoder_accepts(value):
    assert schema_accepts(value)
    assert decoder_accepts(value)


@pytest.mark.parametrize("value", REFUSED_BY_BOTH.values(), ids=REFUSED_BY_BOTH.keys())
def test_what_the_decoder_refuses_the_schema_refuses(value):
    assert not decoder_accepts(value)
    assert not schema_accepts(value)


@pytest.mark.parametrize("value", REFUSED_BY_THE_SCHEMA_ONLY.values(), ids=REFUSED_BY_THE_SCHEMA_ONLY.keys())
def test_the_schema_is_stricter_than_the_decoder_where_the_producer_is_exact(value):
    assert not schema_accepts(value)
    assert decoder_accepts(value)


@pytest.mark.parametrize("value", REFUSED_BY_THE_DECODER_ONLY.values(), ids=REFUSED_BY_THE_DECODER_ONLY.keys())
def test_an_integral_float_id_is_the_one_refusal_json_schema_cannot_state(value):
    assert not decoder_accepts(value)
    assert schema_accepts(value)


def test_the_schema_reads_the_same_as_draft_07_as_the_asyncapi_document_reads_payloads():
    """The schema's description says so: AsyncAPI tools read a payload as a draft-07 based schema."""
    as_draft_07 = Draft7Validator(EVENT_SCHEMA, format_checker=FORMAT_CHECKER)
    values = {**ACCEPTED_BY_BOTH, **REFUSED_BY_BOTH, **REFUSED_BY_THE_SCHEMA_ONLY, **REFUSED_BY_THE_DECODER_ONLY}
    verdicts = {}
    for name, value in values.items():
        try:
            event = json.loads(value.decode("utf-8"))
        except (AttributeError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        verdicts[name] = (EVENT_VALIDATOR.is_valid(event), as_draft_07.is_valid(event))
    assert len(verdicts) > 30
    assert {name: v for name, v in verdicts.items() if v[0] != v[1]} == {}


def record_of(**options):
    """The record of VALID_EVENT as the producer writes it, unless `options` give another key or
    other headers."""
    return event_record_factory(VALID_EVENT, **options)


def contract_accepts_record(record) -> bool:
    """The AsyncAPI message's reading of a record: its key and headers schemas, the value's JSON
    Schema, and the rules between them (key = order.id, headers = the value's members)."""
    if not schema_accepts(record.value):
        return False
    value = json.loads(record.value)
    key, headers = key_text(record.key), header_texts(record.headers)
    return (
        asyncapi_schema_validator(EVENT_MESSAGE["bindings"]["kafka"]["key"]).is_valid(key)
        and key == str(value["order"]["id"])
        and asyncapi_schema_validator(EVENT_MESSAGE["headers"]).is_valid(headers)
        and all(headers[name] == value[name] for name in ("event_type", "event_id"))
    )


def record_decoder_accepts(record) -> bool:
    try:
        export_record_decode(record, max_event_bytes=1024 * 1024)
    except PoisonRecord:
        return False
    return True


OTHER_UUID = "0f0e0d0c-0b0a-4908-8706-050403020100"
RECORDS_REFUSED_BY_BOTH = {
    "a null key": lambda: record_of(key=None),
    "a key that is not a number": lambda: record_of(key=b"abc"),
    "the key of another order": lambda: record_of(key=b"43"),
    "an event_type header of another type": lambda: record_of(
        headers=[("event_type", b"OrderCancelled"), ("event_id", VALID_EVENT["event_id"].encode())]
    ),
    "an event_id header of another event": lambda: record_of(
        headers=[("event_type", b"OrderExportRequested"), ("event_id", OTHER_UUID.encode())]
    ),
    "a null event_id header": lambda: record_of(headers=[("event_type", b"OrderExportRequested"), ("event_id", None)]),
}
RECORDS_REFUSED_BY_THE_CONTRACT_ONLY = {
    "no headers": lambda: record_of(headers=[]),
    "a header added": lambda: record_of(
        headers=[
            ("event_type", b"OrderExportRequested"),
            ("event_id", VALID_EVENT["event_id"].encode()),
            ("traceparent", b"00-x"),
        ]
    ),
}


def test_the_producers_record_is_accepted_by_the_contract_and_the_consumer():
    record = record_of()
    assert contract_accepts_record(record)
    assert record_decoder_accepts(record)


@pytest.mark.parametrize("make", RECORDS_REFUSED_BY_BOTH.values(), ids=RECORDS_REFUSED_BY_BOTH.keys())
def test_a_key_or_header_the_consumer_refuses_the_asyncapi_message_refuses(make):
    record = make()
    assert not record_decoder_accepts(record)
    assert not contract_accepts_record(record)


@pytest.mark.parametrize(
    "make", RECORDS_REFUSED_BY_THE_CONTRACT_ONLY.values(), ids=RECORDS_REFUSED_BY_THE_CONTRACT_ONLY.keys()
)
def test_the_asyncapi_headers_are_the_producers_exact_ones_which_the_consumer_does_not_require(make):
    record = make()
    assert not contract_accepts_record(record)
    assert record_decoder_accepts(record)


# --- 3. The AsyncAPI document -----------------------------------------------------------------


def _no_network(uri: str):
    raise NoSuchResource(ref=uri)


@pytest.fixture(scope="module")
def asyncapi_validator() -> Draft7Validator:
    """The official AsyncAPI 3.0.0 schema: a draft-07 bundle whose definitions are addressed by
    their own `$id`s (http://asyncapi.com/definitions/3.0.0/...), all resolved from the bundle."""
    schema = json.loads(ASYNCAPI_SCHEMA_FILE.read_bytes())
    registry = Registry(retrieve=_no_network).with_resource(schema["$id"], DRAFT7.create_resource(schema)).crawl()
    assert "http://asyncapi.com/definitions/3.0.0/channel.json" in registry
    return Draft7Validator(schema, registry=registry)


def test_the_vendored_asyncapi_schema_is_the_official_3_0_0_file():
    assert hashlib.sha256(ASYNCAPI_SCHEMA_FILE.read_bytes()).hexdigest() == ASYNCAPI_SCHEMA_SHA256
    schema = json.loads(ASYNCAPI_SCHEMA_FILE.read_bytes())
    assert schema["properties"]["asyncapi"]["const"] == "3.0.0"


def test_asyncapi_yaml_is_a_valid_asyncapi_3_0_0_document(asyncapi_validator):
    assert ASYNCAPI["asyncapi"] == "3.0.0"
    assert errors_of(asyncapi_validator, ASYNCAPI) == []


def _set(path: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node = document
        for part in parents:
            node = node[part]
        node[last] = value

    return change


BROKEN_DOCUMENTS = {
    # (change, the path of the error, the keyword that refuses it)
    "a channel address that is a number": (
        _set("channels/orderExport/address", 123),
        "channels/orderExport/address",
        "type",
    ),
    "an operation action of AsyncAPI 2": (
        _set("operations/consumeOrderExportRequested/action", "subscribe"),
        "operations/consumeOrderExportRequested/action",
        "enum",
    ),
    "a Kafka binding with no partitions": (
        _set("channels/orderExport/bindings/kafka/partitions", 0),
        "channels/orderExport/bindings/kafka/partitions",
        "minimum",
    ),
    "a server without a protocol": (lambda d: d["servers"]["kafka"].pop("protocol"), "servers/kafka", "required"),
    "an AsyncAPI version of 2": (_set("asyncapi", "2.6.0"), "asyncapi", "const"),
}


def _all_errors(errors) -> Iterator:
    for error in errors:
        yield error
        yield from _all_errors(error.context or ())


@pytest.mark.parametrize("broken", BROKEN_DOCUMENTS.values(), ids=BROKEN_DOCUMENTS.keys())
def test_the_asyncapi_schema_really_refuses_a_broken_document(asyncapi_validator, broken):
    change, path, keyword = broken
    document = copy.deepcopy(ASYNCAPI)
    change(document)

    found = {
        ("/".join(map(str, e.absolute_path)), e.validator)
        for e in _all_errors(asyncapi_validator.iter_errors(document))
    }

    assert (path, keyword) in found, sorted(found)


def _refs(node) -> Iterator[str]:
    if isinstance(node, dict):
        for name, value in node.items():
            if name == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_every_ref_of_the_asyncapi_document_resolves():
    refs = set(_refs(ASYNCAPI))
    for ref in sorted(r for r in refs if r.startswith("#/")):
        node = ASYNCAPI
        for part in ref[2:].split("/"):
            assert part in node, f"{ref} does not resolve"
            node = node[part]
    [file_ref] = [r for r in refs if not r.startswith("#")]
    assert file_ref == "./order-export-requested.v1.schema.json"
    assert EVENT_MESSAGE["payload"] == {"$ref": file_ref}
    assert Path(urlsplit(urljoin(ASYNCAPI_FILE.as_uri(), file_ref)).path) == EVENT_SCHEMA_FILE


def test_the_asyncapi_examples_satisfy_the_message_schemas():
    [example] = EVENT_MESSAGE["examples"]
    assert errors_of(EVENT_VALIDATOR, example["payload"]) == []
    assert errors_of(asyncapi_schema_validator(EVENT_MESSAGE["headers"]), example["headers"]) == []
    assert example["headers"]["event_id"] == example["payload"]["event_id"]


_SETTINGS_WITH_DEFAULTS_IN_THE_DOCUMENT = (
    "ORDER_EXPORT_TOPIC",
    "ORDER_EXPORT_DLT_TOPIC",
    "ORDER_EXPORT_PARTITIONS",
    "ORDER_EXPORT_REPLICATION_FACTOR",
    "ORDER_EXPORT_CONSUMER_GROUP",
    "KAFKA_CLIENT_ID",
    "KAFKA_BOOTSTRAP_SERVERS",
)


@pytest.mark.skipif(
    any(name in os.environ for name in _SETTINGS_WITH_DEFAULTS_IN_THE_DOCUMENT),
    reason="the environment overrides a default the AsyncAPI document names",
)
def test_the_asyncapi_document_names_the_settings_defaults(settings):
    channels, operations = ASYNCAPI["channels"], ASYNCAPI["operations"]
    assert channels["orderExport"]["address"] == settings.ORDER_EXPORT_TOPIC
    assert channels["orderExportDeadLetters"]["address"] == settings.ORDER_EXPORT_DLT_TOPIC
    for channel in channels.values():
        binding = channel["bindings"]["kafka"]
        assert (binding["partitions"], binding["replicas"]) == (
            settings.ORDER_EXPORT_PARTITIONS,
            settings.ORDER_EXPORT_REPLICATION_FACTOR,
        )
    assert channels["orderExportDeadLetters"]["bindings"]["kafka"]["topicConfiguration"] == {
        "max.message.bytes": DLT_MAX_MESSAGE_BYTES,
    }
    consume = operations["consumeOrderExportRequested"]["bindings"]["kafka"]
    assert consume["groupId"]["enum"] == [settings.ORDER_EXPORT_CONSUMER_GROUP]
    assert consume["clientId"]["enum"] == [settings.KAFKA_CLIENT_ID]
    replay = operations["replayDeadLetters"]["bindings"]["kafka"]
    assert replay["groupId"]["enum"] == [f"{settings.ORDER_EXPORT_CONSUMER_GROUP}.dlt-replay"]
    assert [ASYNCAPI["servers"]["kafka"]["host"]] == settings.KAFKA_BOOTSTRAP_SERVERS


# --- 4. Served by the web process -------------------------------------------------------------

SERVED = {
    # url, the file, its content type, the file name it is offered under
    "asyncapi": (EVENTS_URL, ASYNCAPI_FILE, "application/yaml; charset=utf-8", "asyncapi.yaml"),
    "asyncapi by name": (
        f"{EVENTS_URL}asyncapi.yaml",
        ASYNCAPI_FILE,
        "application/yaml; charset=utf-8",
        "asyncapi.yaml",
    ),
    "event schema": (
        EVENT_SCHEMA_URL,
        EVENT_SCHEMA_FILE,
        "application/schema+json",
        "order-export-requested.v1.schema.json",
    ),
}


@pytest.mark.django_db
@pytest.mark.parametrize("served", SERVED.values(), ids=SERVED.keys())
def test_a_contract_is_served_as_the_file_is_without_credentials(served):
    url, file, content_type, filename = served

    response = APIClient().get(url)

    assert response.status_code == 200
    assert response["Content-Type"] == content_type
    assert response.content == file.read_bytes()
    assert response["Content-Disposition"] == f'inline; filename="{filename}"'


@pytest.mark.django_db
def test_the_asyncapi_document_is_served_as_json_too():
    response = APIClient().get(EVENTS_URL, {"format": "json"})

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == ASYNCAPI
    assert response["Content-Disposition"] == 'inline; filename="asyncapi.json"'


@pytest.mark.django_db
def test_the_served_asyncapi_documents_payload_ref_resolves_to_the_served_schema():
    client = APIClient()
    document = yaml.safe_load(client.get(EVENTS_URL).content)
    ref = document["components"]["messages"]["orderExportRequested"]["payload"]["$ref"]

    for base in (f"http://testserver{EVENTS_URL}", f"http://testserver{EVENTS_URL}asyncapi.yaml"):
        response = client.get(urlsplit(urljoin(base, ref)).path)
        assert response.status_code == 200
        assert response.content == EVENT_SCHEMA_FILE.read_bytes()


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/api/schema/", EVENTS_URL, EVENT_SCHEMA_URL])
def test_the_contracts_need_what_the_openapi_schema_needs(url):
    """None: anyone gets them; a token that does not authenticate is a 401, as everywhere."""
    assert APIClient().get(url).status_code == 200
    refused = APIClient().get(url, HTTP_AUTHORIZATION="Token not-a-token")
    assert refused.status_code == 401


@pytest.mark.django_db
def test_an_error_from_a_contract_url_is_json():
    response = APIClient().get(EVENTS_URL, HTTP_AUTHORIZATION="Token not-a-token")

    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Invalid token.", "code": "authentication_failed"}


@pytest.mark.django_db
def test_the_contract_urls_are_not_part_of_the_openapi_schema():
    paths = APIClient().get("/api/schema/", {"format": "json"}).json()["paths"]

    assert "/api/health/" in paths
    assert not [path for path in paths if path.startswith(EVENTS_URL)]
