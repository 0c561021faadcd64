"""What a client may send to POST /api/orders/, held at its limits: the size of the body
(API_MAX_BODY_BYTES), the number of lines (ORDER_MAX_LINES), bodies that are not JSON a server
can read, duplicate SKUs and blank ids. Every refusal is a 4xx in the contract's shape and
writes nothing.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.core import signals
from django.db import close_old_connections
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from config.api.parsers import BoundedJSONParser, RequestTooLarge
from config.wsgi import application
from kafka_bridge.models import OutboxEvent
from orders.models import Order, OrderLine

pytestmark = pytest.mark.django_db

ORDERS_URL = "/api/orders/"
VALID_LINE = {"sku": "SKU-1", "quantity": 2, "unit_price": "10.00"}
VALID_BODY = {"customer_id": "c-1", "lines": [VALID_LINE]}
BLANK = "This field may not be blank."
# Kafka's default limit on a record: the broker's message.max.bytes and the producer's
# max.request.size are both 1 MiB.
KAFKA_DEFAULT_MAX_RECORD_BYTES = 1024 * 1024


class CountingStream(io.BytesIO):
    """A request body that remembers how many bytes the server read from it."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.bytes_read += len(chunk)
        return chunk

    def readline(self, size: int | None = -1) -> bytes:
        line = super().readline(size)
        self.bytes_read += len(line)
        return line


@pytest.fixture
def superuser():
    """Every permission, so that only the limits under test can refuse a request."""
    return get_user_model().objects.create_superuser(username="limits", email="limits@example.com", password=None)


@pytest.fixture
def api_client(superuser) -> APIClient:
    client = APIClient()
    client.force_authenticate(superuser)
    return client


@pytest.fixture
def superuser_token(superuser) -> str:
    return Token.objects.create(user=superuser).key


def post_bytes(client: APIClient, body: bytes, content_type: str = "application/json"):
    return client.post(ORDERS_URL, body, content_type=content_type)


def post_raw(client: APIClient, stream: io.BytesIO, **environ: Any):
    """A POST whose WSGI environ the test writes itself: its own wsgi.input, with or without a
    Content-Length, true or not."""
    return client.generic("POST", ORDERS_URL, b"", content_type="application/json", **{"wsgi.input": stream, **environ})


def lines(count: int, **changes: Any) -> list[dict[str, Any]]:
    return [{**VALID_LINE, "sku": f"SKU-{n}", **changes} for n in range(count)]


def assert_nothing_written() -> None:
    assert not Order.objects.exists()
    assert not OrderLine.objects.exists()
    assert not OutboxEvent.objects.exists()


def assert_error(response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"detail", "code"}
    assert body["code"] == code
    return body


# --- the number of lines --------------------------------------------------------------------


def test_an_order_of_exactly_order_max_lines_lines_is_created(api_client):
    count = django_settings.ORDER_MAX_LINES

    response = api_client.post(ORDERS_URL, {"customer_id": "c-1", "lines": lines(count)}, format="json")

    assert response.status_code == 201, response.content
    assert len(response.json()["lines"]) == count
    assert OrderLine.objects.count() == count


def test_an_order_of_one_line_more_than_order_max_lines_is_400_naming_lines_and_writes_nothing(api_client):
    limit = django_settings.ORDER_MAX_LINES

    response = api_client.post(ORDERS_URL, {"customer_id": "c-1", "lines": lines(limit + 1)}, format="json")

    assert response.status_code == 400, response.content
    assert response.json() == {"lines": [f"Ensure this field has no more than {limit} elements."]}
    assert_nothing_written()


def test_the_line_count_is_refused_before_any_line_is_validated(api_client):
    # Lines of `{}` are each invalid: validated one by one they would give per-line errors (and
    # a few hundred thousand of them, half a minute of CPU). The count comes first.
    too_many = [{}] * (django_settings.ORDER_MAX_LINES + 1)

    response = api_client.post(ORDERS_URL, {"customer_id": "c-1", "lines": too_many}, format="json")

    assert response.status_code == 400
    assert response.json() == {
        "lines": [f"Ensure this field has no more than {django_settings.ORDER_MAX_LINES} elements."]
    }
    assert_nothing_written()


def test_the_line_limit_and_the_schema_follow_the_order_max_lines_setting(api_client, settings):
    settings.ORDER_MAX_LINES = 3

    refused = api_client.post(ORDERS_URL, {"customer_id": "c-1", "lines": lines(4)}, format="json")
    created = api_client.post(ORDERS_URL, {"customer_id": "c-1", "lines": lines(3)}, format="json")
    schema = api_client.get("/api/schema/", {"format": "json"}).json()

    assert refused.status_code == 400
    assert refused.json() == {"lines": ["Ensure this field has no more than 3 elements."]}
    assert created.status_code == 201, created.content
    assert schema["components"]["schemas"]["OrderCreate"]["properties"]["lines"]["maxItems"] == 3


# --- the size of the body -------------------------------------------------------------------


def padded_to(size: int) -> bytes:
    """A valid order body of exactly `size` bytes (JSON allows the trailing whitespace)."""
    body = json.dumps(VALID_BODY).encode()
    return body + b" " * (size - len(body))


def test_a_body_of_exactly_api_max_body_bytes_is_read(api_client):
    response = post_bytes(api_client, padded_to(django_settings.API_MAX_BODY_BYTES))

    assert response.status_code == 201, response.content


def test_a_body_one_byte_over_api_max_body_bytes_is_413_json_and_writes_nothing(api_client):
    response = post_bytes(api_client, padded_to(django_settings.API_MAX_BODY_BYTES + 1))

    body = assert_error(response, 413, "request_too_large")
    assert str(django_settings.API_MAX_BODY_BYTES) in body["detail"]
    assert_nothing_written()


def test_a_content_length_over_the_limit_is_413_before_the_body_is_read(api_client):
    stream = CountingStream(json.dumps(VALID_BODY).encode())

    response = post_raw(api_client, stream, CONTENT_LENGTH=str(django_settings.API_MAX_BODY_BYTES + 1))

    assert_error(response, 413, "request_too_large")
    assert stream.bytes_read == 0
    assert_nothing_written()


def test_a_body_longer_than_its_content_length_is_read_no_further(api_client):
    # Content-Length understates the body: what lies past it is never read, and the truncated
    # JSON is a parse error rather than an order.
    stream = CountingStream(padded_to(2 * django_settings.API_MAX_BODY_BYTES))

    response = post_raw(api_client, stream, CONTENT_LENGTH="10")

    assert_error(response, 400, "parse_error")
    assert stream.bytes_read == 10
    assert_nothing_written()


@dataclass
class WSGIAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@contextmanager
def request_signals_detached() -> Iterator[None]:
    """The WSGI handler's request signals close the database connection, which would end the
    test's transaction; Django's test client detaches them for the same reason."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def post_chunked(stream: io.BytesIO, *, token: str, terminated: bool = True) -> WSGIAnswer:
    """POST /api/orders/ with `Transfer-Encoding: chunked` and no Content-Length, straight to the
    project's WSGI application (the test client always sets a Content-Length). The input is
    marked terminated, as gunicorn marks a body it has de-chunked."""
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": ORDERS_URL,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "HTTP_AUTHORIZATION": f"Token {token}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": stream,
        "wsgi.input_terminated": terminated,
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info=None) -> None:
        started.update(status=int(status.split()[0]), headers=dict(headers))

    with request_signals_detached():
        body = b"".join(application(environ, start_response))
    return WSGIAnswer(status=started["status"], headers=started["headers"], body=body)


def test_a_chunked_body_over_the_limit_is_never_read_past_the_limit_and_writes_nothing(superuser_token):
    stream = CountingStream(b"[" * (2 * django_settings.API_MAX_BODY_BYTES))

    answer = post_chunked(stream, token=superuser_token)

    assert 400 <= answer.status < 500, answer.body
    assert answer.headers["Content-Type"] == "application/json"
    assert stream.bytes_read <= django_settings.API_MAX_BODY_BYTES + 1
    assert_nothing_written()


def test_a_chunked_body_over_the_limit_is_413_json(superuser_token):
    stream = CountingStream(padded_to(django_settings.API_MAX_BODY_BYTES + 1))

    answer = post_chunked(stream, token=superuser_token)

    assert (answer.status, answer.json()["code"]) == (413, "request_too_large"), answer.body
    assert_nothing_written()


def test_a_chunked_valid_order_is_created(superuser_token):
    stream = CountingStream(json.dumps(VALID_BODY).encode())

    answer = post_chunked(stream, token=superuser_token)

    assert answer.status == 201, answer.body
    assert Order.objects.get().customer_id == VALID_BODY["customer_id"]


def test_a_chunked_body_the_server_did_not_end_is_411_and_not_read(superuser_token):
    stream = CountingStream(json.dumps(VALID_BODY).encode())

    answer = post_chunked(stream, token=superuser_token, terminated=False)

    assert (answer.status, answer.json()["code"]) == (411, "length_required"), answer.body
    assert stream.bytes_read == 0
    assert_nothing_written()


def test_the_parser_reads_a_stream_no_further_than_one_byte_past_the_limit():
    # A stream that Content-Length does not bound (ASGI, or no Content-Length at all).
    stream = CountingStream(b" " * (3 * django_settings.API_MAX_BODY_BYTES))

    with pytest.raises(RequestTooLarge):
        BoundedJSONParser().parse(stream, "application/json", {})

    assert stream.bytes_read == django_settings.API_MAX_BODY_BYTES + 1


# --- bodies that are not JSON the server can read ---------------------------------------------

DEEP = 100_000


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"[" * DEEP + b"]" * DEEP, id="array-100000-deep"),
        pytest.param(b'{"a":' * DEEP + b"1" + b"}" * DEEP, id="object-100000-deep"),
        pytest.param(b'{"customer_id": "c-1", "lines": ' + b"[" * DEEP + b"]" * DEEP + b"}", id="lines-100000-deep"),
    ],
)
def test_deeply_nested_json_is_400_parse_error_not_a_500(api_client, body):
    response = post_bytes(api_client, body)

    body = assert_error(response, 400, "parse_error")
    assert body["detail"] == "JSON parse error - nested too deeply"
    assert_nothing_written()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        pytest.param(b'{"customer_id": "c-\xff", "lines": []}', "application/json", id="invalid-utf-8"),
        pytest.param(
            b'{"customer_id": "c-\xed\xa0\x80", "lines": []}', "application/json", id="utf-8-encoded-surrogate"
        ),
        pytest.param(json.dumps(VALID_BODY).encode("utf-16"), "application/json", id="utf-16-without-charset"),
        pytest.param(b"\x00\x01\x02\x03", "application/json", id="binary"),
        pytest.param(b"\xef\xbb\xbf" + json.dumps(VALID_BODY).encode(), "application/json", id="utf-8-bom"),
        pytest.param(
            b'{"customer_id": "c-1", "lines": [{"sku": "S", "quantity": 1, "unit_price": NaN}]}',
            "application/json",
            id="nan-literal",
        ),
        pytest.param(b'{"customer_id": 1' + b"0" * 5000 + b"}", "application/json", id="integer-of-5000-digits"),
        pytest.param(json.dumps(VALID_BODY).encode(), "application/json; charset=bz2_codec", id="compressing-charset"),
    ],
)
def test_a_body_the_server_cannot_read_as_json_is_400_parse_error(api_client, body, content_type):
    response = post_bytes(api_client, body, content_type)

    assert_error(response, 400, "parse_error")
    assert_nothing_written()


@pytest.mark.parametrize(
    ("body", "errors"),
    [
        pytest.param(
            '{"customer_id": "c-\\u0000", "lines": [{"sku": "S", "quantity": 1, "unit_price": "1.00"}]}',
            {"customer_id": ["Null characters are not allowed."]},
            id="customer_id-with-nul",
        ),
        pytest.param(
            '{"customer_id": "c-1", "lines": [{"sku": "S-\\ud800", "quantity": 1, "unit_price": "1.00"}]}',
            {"lines": {"0": {"sku": ["Surrogate characters are not allowed: U+D800."]}}},
            id="sku-with-lone-surrogate",
        ),
    ],
)
def test_characters_no_database_column_can_hold_are_400_naming_the_field(api_client, body, errors):
    # PostgreSQL refuses NUL in text and neither database driver encodes a lone surrogate: past
    # validation, either would be a 500.
    response = post_bytes(api_client, body.encode())

    assert response.status_code == 400, response.content
    assert response.json() == errors
    assert_nothing_written()


@pytest.mark.parametrize(
    "content_type", ["application/x-www-form-urlencoded", "multipart/form-data; boundary=b", "text/plain"]
)
def test_a_body_that_is_not_json_by_its_content_type_is_415(api_client, content_type):
    response = post_bytes(api_client, b"customer_id=c-1", content_type)

    assert_error(response, 415, "unsupported_media_type")
    assert_nothing_written()


# --- duplicate SKUs and blank ids -------------------------------------------------------------


def test_a_line_repeating_an_earlier_lines_sku_is_400_naming_that_line_and_writes_nothing(api_client):
    body = {
        "customer_id": "c-1",
        "lines": [
            {"sku": "SKU-1", "quantity": 1, "unit_price": "1.00"},
            {"sku": "SKU-2", "quantity": 1, "unit_price": "1.00"},
            {"sku": "SKU-1", "quantity": 2, "unit_price": "1.50"},
            {"sku": "SKU-2", "quantity": 1, "unit_price": "1.00"},
        ],
    }

    response = api_client.post(ORDERS_URL, body, format="json")

    assert response.status_code == 400, response.content
    assert response.json() == {
        "lines": {
            "2": {"sku": ["Line 0 has this SKU already; an order has one line per SKU."]},
            "3": {"sku": ["Line 1 has this SKU already; an order has one line per SKU."]},
        }
    }
    assert_nothing_written()


def test_skus_differing_in_case_or_surrounding_spaces_are_different_skus(api_client):
    skus = ["SKU-1", "sku-1", " SKU-1", "SKU-1 "]

    response = api_client.post(
        ORDERS_URL, {"customer_id": "c-1", "lines": [{**VALID_LINE, "sku": s} for s in skus]}, format="json"
    )

    assert response.status_code == 201, response.content
    assert [line["sku"] for line in response.json()["lines"]] == skus


WHITESPACE_ONLY = [
    pytest.param(" ", id="a-space"),
    pytest.param("   ", id="spaces"),
    pytest.param("\t\n\r", id="tab-newline-return"),
    pytest.param("\u00a0\u3000", id="no-break-and-ideographic-spaces"),
]


@pytest.mark.parametrize("blank", WHITESPACE_ONLY)
def test_a_customer_id_of_whitespace_only_is_400_naming_customer_id(api_client, blank):
    response = api_client.post(ORDERS_URL, {**VALID_BODY, "customer_id": blank}, format="json")

    assert response.status_code == 400, response.content
    assert response.json() == {"customer_id": [BLANK]}
    assert_nothing_written()


@pytest.mark.parametrize("blank", WHITESPACE_ONLY)
def test_a_sku_of_whitespace_only_is_400_naming_the_lines_sku(api_client, blank):
    body = {"customer_id": "c-1", "lines": [VALID_LINE, {**VALID_LINE, "sku": blank}]}

    response = api_client.post(ORDERS_URL, body, format="json")

    assert response.status_code == 400, response.content
    assert response.json() == {"lines": {"1": {"sku": [BLANK]}}}
    assert_nothing_written()


def test_ids_are_kept_exactly_as_sent_surrounding_whitespace_included(api_client):
    body = {"customer_id": " c-1 ", "lines": [{**VALID_LINE, "sku": "\tSKU-1"}]}

    response = api_client.post(ORDERS_URL, body, format="json")

    assert response.status_code == 201, response.content
    assert (response.json()["customer_id"], response.json()["lines"][0]["sku"]) == (" c-1 ", "\tSKU-1")
    order = Order.objects.get()
    assert (order.customer_id, order.lines.get().sku) == (" c-1 ", "\tSKU-1")


def test_the_schema_states_the_input_rules():
    schemas = APIClient().get("/api/schema/", {"format": "json"}).json()["components"]["schemas"]

    create = schemas["OrderCreate"]["properties"]
    line = schemas["OrderLineInput"]["properties"]
    assert create["customer_id"] | line["sku"] == {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "\\S"}
    assert (create["lines"]["minItems"], create["lines"]["maxItems"]) == (1, django_settings.ORDER_MAX_LINES)
    assert [variant["type"] for variant in line["unit_price"]["oneOf"]] == ["string", "number"]


# --- the largest valid order ------------------------------------------------------------------

MAX_QUANTITY = 2_147_483_647
MAX_UNIT_PRICE = "9999999999.99"


def test_the_largest_valid_order_is_created_confirmed_and_its_event_fits_a_kafka_record(api_client):
    count = django_settings.ORDER_MAX_LINES
    body = {
        "customer_id": "C" * 64,
        "lines": [{"sku": f"{n:0>64}", "quantity": MAX_QUANTITY, "unit_price": MAX_UNIT_PRICE} for n in range(count)],
    }

    created = api_client.post(ORDERS_URL, body, format="json")
    confirmed = api_client.post(f"{ORDERS_URL}{created.json()['id']}/confirm/")

    assert created.status_code == 201, created.content
    assert confirmed.status_code == 200, confirmed.content
    expected_total = Decimal(MAX_UNIT_PRICE) * MAX_QUANTITY * count
    assert Decimal(confirmed.json()["total_amount"]) == expected_total
    assert len(confirmed.json()["lines"]) == count
    # The record as the producer sends the outbox row: key, value and headers, uncompressed.
    event = OutboxEvent.objects.get()
    value = event.payload.encode("utf-8")
    headers = sum(len(name.encode()) + len(data.encode()) for name, data in event.headers)
    record_bytes = len(event.key.encode()) + len(value) + headers
    assert json.loads(value)["order"]["lines"] == body["lines"]
    assert record_bytes < KAFKA_DEFAULT_MAX_RECORD_BYTES, f"the largest event is {record_bytes} bytes"


def test_more_query_parameters_than_django_reads_is_a_json_400_under_the_api(api_client):
    too_many = "&".join(f"p{i}=1" for i in range(1001))  # DATA_UPLOAD_MAX_NUMBER_FIELDS is 1000

    response = api_client.get(f"{ORDERS_URL}?{too_many}")

    assert response.status_code == 400
    assert response.json() == {"detail": "Bad request.", "code": "bad_request"}
