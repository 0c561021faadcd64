"""The orders REST API held to the contract (/work/shared/CONTRACT.md: "REST API", "The order",
"The event").

These are plain `django_db` tests: the test transaction is never committed, so the outbox's
`transaction.on_commit` publish never runs and nothing here talks to Kafka. What a confirm leaves
behind is the outbox row, and that is what these tests check.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.contrib.staticfiles import finders
from django.contrib.staticfiles.views import serve as serve_static
from django.test import RequestFactory
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from exports.models import OrderExport
from kafka_bridge.models import OutboxEvent
from orders.models import Order, OrderLine
from orders.permissions import ORDER_OPERATOR_PERMISSIONS
from tests.support.factories import DEFAULT_PASSWORD, order_factory, user_factory

pytestmark = pytest.mark.django_db

ORDERS_URL = "/api/orders/"
VALID_LINE = {"sku": "SKU-1", "quantity": 2, "unit_price": "10.00"}
VALID_BODY = {"customer_id": "c-1", "lines": [VALID_LINE]}
ABSENT = object()  # marks a key to leave out of a request body


def order_url(order_id: Any) -> str:
    return f"{ORDERS_URL}{order_id}/"


def confirm_url(order_id: Any) -> str:
    return f"{ORDERS_URL}{order_id}/confirm/"


def iso(moment: datetime) -> str:
    """A datetime the way the API writes it (DRF: ISO-8601, UTC as "Z")."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def without_export(order_json: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in order_json.items() if key != "export"}


@pytest.fixture
def user():
    """A user who may do everything the API offers (what the order-operators group grants);
    tests/unit/orders/test_api_permissions.py covers users who may not."""
    return user_factory(permissions=ORDER_OPERATOR_PERMISSIONS)


@pytest.fixture
def api_client(user) -> APIClient:
    """A client authenticated as `user` without going through any authentication class."""
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def anonymous_client() -> APIClient:
    return APIClient()


# --- POST /api/orders/ --------------------------------------------------------------------------


def test_create_returns_201_and_the_pending_order_with_a_decimal_total(api_client):
    response = api_client.post(
        ORDERS_URL,
        {
            "customer_id": "c-1",
            "lines": [
                {"sku": "SKU-1", "quantity": 2, "unit_price": "10.00"},
                {"sku": "SKU-2", "quantity": 1, "unit_price": "0.99"},
            ],
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    order = Order.objects.get()
    assert response.json() == {
        "id": order.pk,
        "customer_id": "c-1",
        "status": "pending",
        # 2 x 10.00 + 0.99 in float arithmetic would be 20.990000000000002
        "total_amount": "20.99",
        "lines": [
            {"sku": "SKU-1", "quantity": 2, "unit_price": "10.00"},
            {"sku": "SKU-2", "quantity": 1, "unit_price": "0.99"},
        ],
        "created_at": iso(order.created_at),
        "confirmed_at": None,
        "export": None,
    }
    created_at = datetime.fromisoformat(response.json()["created_at"])
    assert created_at.tzinfo is not None and created_at == order.created_at
    assert not OutboxEvent.objects.exists()


@pytest.mark.parametrize(
    ("line_changes", "echoed_line", "total_amount"),
    [
        pytest.param({"sku": "S" * 64}, {"sku": "S" * 64}, "20.00", id="sku-of-64-chars"),
        pytest.param({"unit_price": "0"}, {"unit_price": "0.00"}, "0.00", id="unit_price-zero"),
        pytest.param({"unit_price": "1.5"}, {"unit_price": "1.50"}, "3.00", id="unit_price-one-decimal"),
        pytest.param({"unit_price": 3}, {"unit_price": "3.00"}, "6.00", id="unit_price-json-integer"),
        pytest.param(
            {"quantity": 1, "unit_price": "9999999999.99"},
            {"quantity": 1, "unit_price": "9999999999.99"},
            "9999999999.99",
            id="unit_price-largest",
        ),
    ],
)
def test_create_accepts_boundary_values_of_a_line(api_client, line_changes, echoed_line, total_amount):
    response = api_client.post(
        ORDERS_URL, {"customer_id": "c-1", "lines": [{**VALID_LINE, **line_changes}]}, format="json"
    )

    assert response.status_code == 201, response.content
    assert response.json()["lines"] == [{**VALID_LINE, **echoed_line}]
    assert response.json()["total_amount"] == total_amount


def test_create_accepts_a_customer_id_of_64_chars(api_client):
    response = api_client.post(ORDERS_URL, {**VALID_BODY, "customer_id": "c" * 64}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["customer_id"] == "c" * 64


def body_with(**changes: Any) -> dict[str, Any]:
    """VALID_BODY with top-level keys replaced, or removed when given ABSENT."""
    body = {**VALID_BODY, **changes}
    return {key: value for key, value in body.items() if value is not ABSENT}


def line_with(**changes: Any) -> dict[str, Any]:
    """VALID_BODY whose one line has keys replaced, or removed when given ABSENT."""
    line = {key: value for key, value in {**VALID_LINE, **changes}.items() if value is not ABSENT}
    return {"customer_id": "c-1", "lines": [line]}


def line_error(field: str, message: str, index: int = 0) -> dict[str, Any]:
    # DRF 3.18 keys the errors of a nested list by the item's index (LIST_SERIALIZER_ERRORS_AS_DICT
    # is on by default); JSON turns the index into a string key.
    return {"lines": {str(index): {field: [message]}}}


REQUIRED = "This field is required."
BLANK = "This field may not be blank."
NULL = "This field may not be null."
TOO_LONG = "Ensure this field has no more than 64 characters."
NOT_A_STRING = "Not a valid string."
NOT_AN_INTEGER = "A valid integer is required."
NOT_A_NUMBER = "A valid number is required."
QUANTITY_TOO_SMALL = "Ensure this value is greater than or equal to 1."

BAD_BODIES = [
    # the body as a whole
    pytest.param(
        [VALID_BODY], {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]}, id="body-a-list"
    ),
    pytest.param(
        "c-1", {"non_field_errors": ["Invalid data. Expected a dictionary, but got str."]}, id="body-a-string"
    ),
    pytest.param(None, {"non_field_errors": ["No data provided"]}, id="body-null"),
    pytest.param({}, {"customer_id": [REQUIRED], "lines": [REQUIRED]}, id="body-empty-object"),
    # customer_id
    pytest.param(body_with(customer_id=ABSENT), {"customer_id": [REQUIRED]}, id="customer_id-missing"),
    pytest.param(body_with(customer_id=""), {"customer_id": [BLANK]}, id="customer_id-empty"),
    pytest.param(body_with(customer_id="c" * 65), {"customer_id": [TOO_LONG]}, id="customer_id-65-chars"),
    pytest.param(body_with(customer_id=42), {"customer_id": [NOT_A_STRING]}, id="customer_id-a-number"),
    pytest.param(body_with(customer_id=None), {"customer_id": [NULL]}, id="customer_id-null"),
    # lines
    pytest.param(body_with(lines=ABSENT), {"lines": [REQUIRED]}, id="lines-missing"),
    pytest.param(body_with(lines=[]), {"lines": ["This list may not be empty."]}, id="lines-empty"),
    pytest.param(
        body_with(lines="SKU-1"),
        {"lines": ['Expected a list of items but got type "str".']},
        id="lines-a-string",
    ),
    pytest.param(
        body_with(lines=VALID_LINE),
        {"lines": ['Expected a list of items but got type "dict".']},
        id="lines-an-object",
    ),
    pytest.param(
        body_with(lines=[1]),
        {"lines": {"0": {"non_field_errors": ["Invalid data. Expected a dictionary, but got int."]}}},
        id="line-not-an-object",
    ),
    pytest.param(
        body_with(lines=[VALID_LINE, {**VALID_LINE, "quantity": 0}]),
        line_error("quantity", QUANTITY_TOO_SMALL, index=1),
        id="second-line-bad-first-good",
    ),
    # quantity
    pytest.param(line_with(quantity=0), line_error("quantity", QUANTITY_TOO_SMALL), id="quantity-0"),
    pytest.param(line_with(quantity=-1), line_error("quantity", QUANTITY_TOO_SMALL), id="quantity-negative"),
    pytest.param(line_with(quantity="2"), line_error("quantity", NOT_AN_INTEGER), id="quantity-a-string"),
    pytest.param(line_with(quantity=2.5), line_error("quantity", NOT_AN_INTEGER), id="quantity-fractional"),
    pytest.param(line_with(quantity=2.0), line_error("quantity", NOT_AN_INTEGER), id="quantity-a-float"),
    pytest.param(line_with(quantity=True), line_error("quantity", NOT_AN_INTEGER), id="quantity-true"),
    pytest.param(line_with(quantity=None), line_error("quantity", NULL), id="quantity-null"),
    pytest.param(line_with(quantity=ABSENT), line_error("quantity", REQUIRED), id="quantity-missing"),
    pytest.param(
        line_with(quantity=2_147_483_648),
        line_error("quantity", "Ensure this value is less than or equal to 2147483647."),
        id="quantity-beyond-the-column",
    ),
    # unit_price
    pytest.param(
        line_with(unit_price="-1.00"),
        line_error("unit_price", "Ensure this value is greater than or equal to 0."),
        id="unit_price-negative",
    ),
    pytest.param(
        line_with(unit_price="1.001"),
        line_error("unit_price", "Ensure that there are no more than 2 decimal places."),
        id="unit_price-3-decimals",
    ),
    pytest.param(line_with(unit_price="abc"), line_error("unit_price", NOT_A_NUMBER), id="unit_price-not-a-number"),
    pytest.param(line_with(unit_price="NaN"), line_error("unit_price", NOT_A_NUMBER), id="unit_price-nan"),
    pytest.param(line_with(unit_price=True), line_error("unit_price", NOT_A_NUMBER), id="unit_price-true"),
    pytest.param(line_with(unit_price=None), line_error("unit_price", NULL), id="unit_price-null"),
    pytest.param(line_with(unit_price=ABSENT), line_error("unit_price", REQUIRED), id="unit_price-missing"),
    pytest.param(
        line_with(unit_price="10000000000.00"),
        line_error("unit_price", "Ensure that there are no more than 12 digits in total."),
        id="unit_price-beyond-the-column",
    ),
    # sku
    pytest.param(line_with(sku=""), line_error("sku", BLANK), id="sku-empty"),
    pytest.param(line_with(sku="S" * 65), line_error("sku", TOO_LONG), id="sku-65-chars"),
    pytest.param(line_with(sku=7), line_error("sku", NOT_A_STRING), id="sku-a-number"),
    pytest.param(line_with(sku=ABSENT), line_error("sku", REQUIRED), id="sku-missing"),
]


@pytest.mark.parametrize(("body", "errors"), BAD_BODIES)
def test_create_rejects_a_malformed_body_with_400_naming_the_field_and_writes_nothing(api_client, body, errors):
    response = api_client.post(ORDERS_URL, json.dumps(body), content_type="application/json")

    assert response.status_code == 400, response.content
    assert response.json() == errors
    assert not Order.objects.exists()
    assert not OrderLine.objects.exists()


def test_create_rejects_a_body_that_is_not_json_with_400_parse_error(api_client):
    response = api_client.post(ORDERS_URL, b'{"customer_id": "c-1", lines: [', content_type="application/json")

    assert response.status_code == 400
    body = response.json()
    assert set(body) == {"detail", "code"}
    assert body["code"] == "parse_error"
    assert body["detail"].startswith("JSON parse error")
    assert not Order.objects.exists()


# --- GET /api/orders/ ---------------------------------------------------------------------------


def test_list_is_paginated_newest_first_with_the_order_shape(api_client):
    oldest, middle, newest = (order_factory(customer_id=f"c-{n}") for n in range(3))

    response = api_client.get(ORDERS_URL)

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert (body["count"], body["next"], body["previous"]) == (3, None, None)
    assert [order["id"] for order in body["results"]] == [newest.pk, middle.pk, oldest.pk]
    assert body["results"][0] == api_client.get(order_url(newest.pk)).json()


@pytest.mark.parametrize("status", ["pending", "confirmed"])
def test_list_filters_by_status(api_client, status):
    pending = order_factory()
    confirmed = order_factory(confirmed=True)
    expected = {"pending": pending, "confirmed": confirmed}[status]

    response = api_client.get(ORDERS_URL, {"status": status})

    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 1
    assert [(order["id"], order["status"]) for order in body["results"]] == [(expected.pk, status)]


def test_list_rejects_an_unknown_status_with_400_naming_status(api_client):
    response = api_client.get(ORDERS_URL, {"status": "bogus"})

    assert response.status_code == 400
    assert response.json() == {"status": ['"bogus" is not a valid choice.']}


def test_list_pages_at_api_page_size_and_links_the_pages(api_client):
    # DRF's PageNumberPagination copies PAGE_SIZE into a class attribute at import, so the
    # `settings` fixture cannot shrink it; this test uses the configured API_PAGE_SIZE instead.
    page_size = django_settings.REST_FRAMEWORK["PAGE_SIZE"]
    orders = [order_factory() for _ in range(page_size + 1)]
    newest_first = [order.pk for order in reversed(orders)]

    first = api_client.get(ORDERS_URL, {"status": "pending"}).json()
    second = api_client.get(first["next"]).json()

    assert first["count"] == second["count"] == page_size + 1
    assert first["previous"] is None
    assert first["next"] == "http://testserver/api/orders/?page=2&status=pending"
    assert [order["id"] for order in first["results"]] == newest_first[:page_size]
    assert second["next"] is None
    assert second["previous"] == "http://testserver/api/orders/?status=pending"
    assert [order["id"] for order in second["results"]] == newest_first[page_size:]


def test_list_page_past_the_last_is_a_json_404(api_client):
    order_factory()

    response = api_client.get(ORDERS_URL, {"page": 2})

    assert response.status_code == 404
    assert response.json() == {"detail": "Invalid page.", "code": "not_found"}


# --- GET /api/orders/{id}/ ----------------------------------------------------------------------


def test_retrieve_returns_the_order(api_client):
    order = order_factory(customer_id="c-7", lines=[{"sku": "SKU-9", "quantity": 3, "unit_price": "1.10"}])

    response = api_client.get(order_url(order.pk))

    assert response.status_code == 200
    assert response.json() == {
        "id": order.pk,
        "customer_id": "c-7",
        "status": "pending",
        "total_amount": "3.30",
        "lines": [{"sku": "SKU-9", "quantity": 3, "unit_price": "1.10"}],
        "created_at": iso(order.created_at),
        "confirmed_at": None,
        "export": None,
    }


def test_retrieve_of_an_unknown_id_is_a_json_404(api_client):
    order = order_factory()

    response = api_client.get(order_url(order.pk + 1))

    assert response.status_code == 404
    assert response.json() == {"detail": "No order has this id.", "code": "not_found"}


NOT_AN_ORDER_ID = [
    "abc",
    "1_0",
    "-1",
    "1e3",
    "%201",  # " 1"
    "99999999999999999999999",  # beyond a 64-bit id
    pytest.param("%C2%B2", id="superscript-two"),  # "²": str.isdigit() is true for it
    pytest.param("%D9%A1", id="arabic-indic-one"),  # "١": int() would read it as 1
]


@pytest.mark.parametrize("order_id", NOT_AN_ORDER_ID)
@pytest.mark.parametrize(("method", "url_of"), [("get", order_url), ("post", confirm_url)], ids=["retrieve", "confirm"])
def test_an_id_that_is_not_a_decimal_integer_is_a_json_404(api_client, method, url_of, order_id):
    order_factory()

    response = getattr(api_client, method)(url_of(order_id))

    assert response.status_code == 404
    assert response.json() == {"detail": "No order has this id.", "code": "not_found"}


@pytest.mark.parametrize(("method", "path"), [("get", "/api/no-such-thing/"), ("post", "/api/orders/1.0/confirm/")])
def test_an_unrouted_path_under_api_is_a_json_404(api_client, method, path):
    response = getattr(api_client, method)(path)

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


# --- POST /api/orders/{id}/confirm/ -------------------------------------------------------------


def test_confirm_returns_the_confirmed_order_with_a_pending_export(api_client):
    order = order_factory()

    response = api_client.post(confirm_url(order.pk))

    assert response.status_code == 200, response.content
    order.refresh_from_db()
    assert order.status == Order.Status.CONFIRMED
    assert response.json() == {
        "id": order.pk,
        "customer_id": "c-1",
        "status": "confirmed",
        "total_amount": "20.00",
        "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": "10.00"}],
        "created_at": iso(order.created_at),
        "confirmed_at": iso(order.confirmed_at),
        "export": {"status": "pending", "attempts": 0, "exported_at": None, "last_error": None},
    }


def test_confirm_records_exactly_one_outbox_event_in_the_contract_shape(api_client, settings):
    order = order_factory()

    response = api_client.post(confirm_url(order.pk))

    assert response.status_code == 200, response.content
    event = OutboxEvent.objects.get()
    payload = json.loads(event.payload)
    event_id = uuid.UUID(payload["event_id"])
    assert event_id.version == 4
    assert payload == {
        "event_id": str(event_id),
        "event_type": "OrderExportRequested",
        "schema_version": 1,
        "occurred_at": payload["occurred_at"],
        "order": without_export(response.json()),
    }
    assert payload["occurred_at"].endswith("Z")
    assert datetime.fromisoformat(payload["occurred_at"]).tzinfo is not None
    assert event.event_id == event_id
    assert event.event_type == "OrderExportRequested"
    assert event.topic == settings.ORDER_EXPORT_TOPIC
    assert event.key == str(order.pk)
    assert event.headers == [["event_type", "OrderExportRequested"], ["event_id", str(event_id)]]
    # the test transaction never commits, so the on-commit publish has not run
    assert event.sent_at is None


def test_confirming_a_confirmed_order_is_409_and_records_no_second_event(api_client):
    order = order_factory(confirmed=True)
    confirmed_at = Order.objects.get(pk=order.pk).confirmed_at

    response = api_client.post(confirm_url(order.pk))

    assert response.status_code == 409
    assert response.json() == {
        "detail": f"Order {order.pk} is confirmed; only a pending order can be confirmed.",
        "code": "order_not_pending",
    }
    assert OutboxEvent.objects.count() == 1
    assert Order.objects.get(pk=order.pk).confirmed_at == confirmed_at


def test_confirm_of_an_unknown_order_is_a_json_404_and_records_nothing(api_client):
    order = order_factory()

    response = api_client.post(confirm_url(order.pk + 1))

    assert response.status_code == 404
    assert response.json() == {"detail": "No order has this id.", "code": "not_found"}
    assert not OutboxEvent.objects.exists()


# --- the order's export -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "attempts", "exported_at", "last_error"),
    [
        pytest.param("exported", 2, datetime(2025, 3, 4, 5, 6, 7, 890000, tzinfo=UTC), None, id="exported"),
        pytest.param("failed", 5, None, "platform answered 422: unknown sku", id="failed"),
    ],
)
def test_an_order_shows_where_its_export_stands(api_client, status, attempts, exported_at, last_error):
    order = order_factory(confirmed=True)
    OrderExport.objects.create(
        order=order,
        status=status,
        attempts=attempts,
        event_id=uuid.uuid4(),
        exported_at=exported_at,
        last_error=last_error,
    )
    expected = {
        "status": status,
        "attempts": attempts,
        "exported_at": iso(exported_at) if exported_at else None,
        "last_error": last_error,
    }

    detail = api_client.get(order_url(order.pk)).json()
    listed = api_client.get(ORDERS_URL).json()["results"]

    assert detail["export"] == expected
    assert [o["export"] for o in listed] == [expected]


# --- authentication -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "list"), ("post", "list"), ("get", "detail"), ("post", "confirm")],
    ids=["list", "create", "retrieve", "confirm"],
)
def test_a_request_without_credentials_is_401_and_changes_nothing(anonymous_client, method, path):
    order = order_factory()
    url = {"list": ORDERS_URL, "detail": order_url(order.pk), "confirm": confirm_url(order.pk)}[path]

    if method == "post":
        response = anonymous_client.post(url, VALID_BODY, format="json")
    else:
        response = anonymous_client.get(url)

    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided.", "code": "not_authenticated"}
    assert response["WWW-Authenticate"] == "Token"
    assert Order.objects.count() == 1
    assert Order.objects.get().status == Order.Status.PENDING
    assert not OutboxEvent.objects.exists()


def test_an_unknown_token_is_401(anonymous_client):
    anonymous_client.credentials(HTTP_AUTHORIZATION="Token not-a-real-key")

    response = anonymous_client.get(ORDERS_URL)

    assert response.status_code == 401
    assert response.json() == {"detail": "Invalid token.", "code": "authentication_failed"}


def test_token_authentication_lets_a_client_create_and_read_orders(anonymous_client, user):
    token = Token.objects.create(user=user)
    anonymous_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")

    created = anonymous_client.post(ORDERS_URL, VALID_BODY, format="json")
    listed = anonymous_client.get(ORDERS_URL)

    assert created.status_code == 201, created.content
    assert listed.status_code == 200
    assert [order["id"] for order in listed.json()["results"]] == [created.json()["id"]]


def test_session_authentication_lets_a_logged_in_user_read_and_write_with_a_csrf_token(user):
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username=user.username, password=DEFAULT_PASSWORD)

    listed = client.get(ORDERS_URL, HTTP_ACCEPT="text/html")  # the page that hands out the CSRF cookie
    without_csrf = client.post(ORDERS_URL, VALID_BODY, format="json")
    with_csrf = client.post(ORDERS_URL, VALID_BODY, format="json", HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)

    assert listed.status_code == 200
    assert without_csrf.status_code == 403
    assert without_csrf.json()["code"] == "permission_denied"
    assert without_csrf.json()["detail"].startswith("CSRF Failed")
    assert with_csrf.status_code == 201, with_csrf.content
    assert Order.objects.count() == 1


def test_an_unsupported_method_is_a_json_405(api_client):
    order = order_factory()

    response = api_client.delete(order_url(order.pk))

    assert response.status_code == 405
    assert response.json() == {"detail": 'Method "DELETE" not allowed.', "code": "method_not_allowed"}
    assert Order.objects.filter(pk=order.pk).exists()


# --- schema, docs and the browsable API ---------------------------------------------------------


def test_schema_is_an_openapi_3_document_with_the_order_paths(api_client):
    response = api_client.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    paths = schema["paths"]
    assert {"get", "post"} <= set(paths["/api/orders/"])
    assert "get" in paths["/api/orders/{id}/"]
    assert "post" in paths["/api/orders/{id}/confirm/"]
    status_parameter = next(p for p in paths["/api/orders/"]["get"]["parameters"] if p["name"] == "status")
    assert set(status_parameter["schema"]["enum"]) == {"pending", "confirmed"}
    order_schema = schema["components"]["schemas"]["Order"]
    assert set(order_schema["properties"]) == {
        "id",
        "customer_id",
        "status",
        "total_amount",
        "lines",
        "created_at",
        "confirmed_at",
        "export",
    }


class _AssetLinks(HTMLParser):
    """Collects the URLs a page loads: <script src> and <link href>."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script" and attributes.get("src"):
            self.urls.append(attributes["src"])
        if tag == "link" and attributes.get("href"):
            self.urls.append(attributes["href"])


def docs_asset_urls(client: APIClient) -> list[str]:
    response = client.get("/api/docs/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    parser = _AssetLinks()
    parser.feed(response.content.decode())
    return parser.urls


def test_docs_load_swagger_ui_from_local_static_files_only(api_client):
    urls = docs_asset_urls(api_client)

    assert any(url.endswith("swagger-ui-bundle.js") for url in urls), urls
    assert any(url.endswith("swagger-ui.css") for url in urls), urls
    for url in urls:
        assert url.startswith("/static/"), url
        assert "cdn" not in url.lower() and "http" not in url.lower(), url


def test_docs_assets_exist_and_are_served_by_staticfiles(api_client):
    static_prefix = "/" + django_settings.STATIC_URL.lstrip("/")
    paths = [url.removeprefix(static_prefix) for url in docs_asset_urls(api_client)]

    for path in paths:
        assert finders.find(path), f"{path} is not in any static files directory"
    # What runserver (and `make run`, with DEBUG on) does for /static/: staticfiles' serve view.
    bundle = next(path for path in paths if path.endswith("swagger-ui-bundle.js"))
    response = serve_static(RequestFactory().get(static_prefix + bundle), bundle, insecure=True)
    assert response.status_code == 200
    assert b"SwaggerUIBundle" in b"".join(response.streaming_content)


def test_browsable_api_renders_html_for_a_session_user(user):
    order_factory(customer_id="c-browsable")
    client = APIClient()
    assert client.login(username=user.username, password=DEFAULT_PASSWORD)

    response = client.get(ORDERS_URL, HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "Order List" in html
    assert "c-browsable" in html  # the order itself, rendered into the page


# --- totals wider than a fixed-width decimal -----------------------------------

HUGE_LINE = {"sku": "SKU-1", "quantity": 1000, "unit_price": "1000000000.00"}  # total 1000000000000.00


def test_create_of_a_valid_order_with_a_13_digit_total_returns_201(api_client):
    response = api_client.post(ORDERS_URL, {"customer_id": "c-1", "lines": [HUGE_LINE]}, format="json")

    assert response.status_code == 201
    assert response.json()["total_amount"] == "1000000000000.00"


@pytest.mark.parametrize(
    ("method", "url_of"),
    [("get", lambda order_id: ORDERS_URL), ("get", order_url), ("post", confirm_url)],
    ids=["list", "retrieve", "confirm"],
)
def test_an_order_with_a_13_digit_total_does_not_break_the_api(api_client, method, url_of):
    order = order_factory(lines=[HUGE_LINE])
    assert order.total_amount == Decimal("1000000000000.00")

    response = getattr(api_client, method)(url_of(order.pk))

    assert response.status_code == 200
