"""Throttling: DRF's per-user ("user") and per-IP anonymous ("anon") rates on the API, the anon
rate on login attempts, and none on the health check. Past a rate: 429 with Retry-After and,
under /api/, the contract's `{"detail", "code": "throttled"}`."""

from __future__ import annotations

import pytest
from django.urls import include, path
from rest_framework.decorators import api_view, permission_classes
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from kafka_bridge.models import OutboxEvent
from orders.models import Order
from orders.permissions import ORDER_OPERATOR_PERMISSIONS
from tests.support.factories import DEFAULT_PASSWORD, order_factory, user_factory

pytestmark = pytest.mark.django_db

ORDERS_URL = "/api/orders/"
LOGIN_URLS = ["/api/auth/login/", "/admin/login/"]


@api_view(["GET"])
@permission_classes([AllowAny])
def open_to_anyone(request):
    return Response({"ok": True})


# For the tests marked `urls(__name__)`: the project's routes and a DRF view that anonymous
# clients may call, with the default throttles (the orders API answers them 401 before any
# throttle counts).
urlpatterns = [path("api/open/", open_to_anyone), path("", include("config.urls"))]


@pytest.fixture
def throttle_rates(settings, monkeypatch):
    """`throttle_rates(user="3/min")` sets REST_FRAMEWORK's rates for this test."""

    def set_rates(**rates: str) -> None:
        current = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
        settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {**current, **rates}}
        # DRF reloads api_settings when the setting changes, but its throttles read the rates
        # from a class attribute bound at import.
        monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", api_settings.DEFAULT_THROTTLE_RATES)

    return set_rates


def operator_client() -> APIClient:
    client = APIClient()
    client.force_authenticate(user_factory(permissions=ORDER_OPERATOR_PERMISSIONS))
    return client


def assert_throttled_in_the_contract_shape(response) -> None:
    assert response.status_code == 429
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 60
    unit = "second" if retry_after == 1 else "seconds"
    assert response.json() == {
        "detail": f"Request was throttled. Expected available in {retry_after} {unit}.",
        "code": "throttled",
    }


# --- per user -----------------------------------------------------------------------------------


def test_a_user_past_the_user_rate_gets_429_with_retry_after_in_the_contract_shape(throttle_rates):
    throttle_rates(user="3/min")
    client = operator_client()

    allowed = [client.get(ORDERS_URL).status_code for _ in range(3)]
    refused = client.get(ORDERS_URL)

    assert allowed == [200, 200, 200]
    assert_throttled_in_the_contract_shape(refused)


def test_the_user_rate_is_counted_per_user(throttle_rates):
    throttle_rates(user="2/min")
    first, second = operator_client(), operator_client()
    for _ in range(2):
        first.get(ORDERS_URL)

    assert first.get(ORDERS_URL).status_code == 429
    assert second.get(ORDERS_URL).status_code == 200


def test_a_throttled_confirm_confirms_nothing(throttle_rates):
    throttle_rates(user="1/min")
    client = operator_client()
    order = order_factory()
    client.get(ORDERS_URL)

    response = client.post(f"{ORDERS_URL}{order.pk}/confirm/")

    assert_throttled_in_the_contract_shape(response)
    assert Order.objects.get(pk=order.pk).status == Order.Status.PENDING
    assert not OutboxEvent.objects.exists()


# --- anonymous, per client IP -------------------------------------------------------------------


@pytest.mark.urls(__name__)
def test_an_anonymous_client_past_the_anon_rate_gets_429_and_each_ip_is_counted_apart(throttle_rates):
    throttle_rates(anon="2/min")
    client = APIClient()

    allowed = [client.get("/api/open/", REMOTE_ADDR="192.0.2.1").status_code for _ in range(2)]
    refused = client.get("/api/open/", REMOTE_ADDR="192.0.2.1")
    other_address = client.get("/api/open/", REMOTE_ADDR="192.0.2.2")

    assert allowed == [200, 200]
    assert_throttled_in_the_contract_shape(refused)
    assert other_address.status_code == 200


def test_requests_without_credentials_stay_401_past_the_anon_rate(throttle_rates):
    throttle_rates(anon="2/min")
    client = APIClient()

    statuses = [client.get(ORDERS_URL).status_code for _ in range(4)]

    assert statuses == [401] * 4


# --- the login views ----------------------------------------------------------------------------


def login_attempt(client, url: str, *, address: str, password: str = "wrong-password"):
    return client.post(url, {"username": "someone", "password": password}, REMOTE_ADDR=address)


@pytest.mark.parametrize("url", LOGIN_URLS)
def test_login_attempts_past_the_anon_rate_get_429_per_client_ip(client, throttle_rates, url):
    throttle_rates(anon="2/min")

    allowed = [login_attempt(client, url, address="192.0.2.1").status_code for _ in range(2)]
    refused = login_attempt(client, url, address="192.0.2.1")
    other_address = login_attempt(client, url, address="192.0.2.2")

    assert allowed == [200, 200]  # the form again, with its error
    assert refused.status_code == 429
    retry_after = int(refused["Retry-After"])
    assert 1 <= retry_after <= 60
    detail = f"Request was throttled. Expected available in {retry_after} seconds."
    if url.startswith("/api/"):
        assert refused.json() == {"detail": detail, "code": "throttled"}
    else:
        assert refused["Content-Type"].startswith("text/plain")
        assert refused.content.decode() == f"{detail}\n"
    assert other_address.status_code == 200


def test_login_attempts_are_counted_across_both_login_views(client, throttle_rates):
    throttle_rates(anon="2/min")

    statuses = [login_attempt(client, url, address="192.0.2.1").status_code for url in [*LOGIN_URLS, *LOGIN_URLS]]

    assert statuses == [200, 200, 429, 429]


@pytest.mark.urls(__name__)
def test_anonymous_api_requests_do_not_use_up_the_login_attempts(client, throttle_rates):
    throttle_rates(anon="1/min")
    client.get("/api/open/", REMOTE_ADDR="192.0.2.1")
    assert client.get("/api/open/", REMOTE_ADDR="192.0.2.1").status_code == 429

    assert login_attempt(client, "/api/auth/login/", address="192.0.2.1").status_code == 200


@pytest.mark.parametrize("url", LOGIN_URLS)
def test_the_login_pages_themselves_are_not_throttled(client, throttle_rates, url):
    throttle_rates(anon="1/min")

    statuses = [client.get(url, REMOTE_ADDR="192.0.2.1").status_code for _ in range(3)]

    assert statuses == [200, 200, 200]


@pytest.mark.parametrize(("url", "landing"), [("/api/auth/login/", "/api/orders/"), ("/admin/login/", "/admin/")])
def test_a_login_within_the_rate_still_signs_in(client, url, landing):
    user = user_factory(is_staff=True)

    response = client.post(url, {"username": user.username, "password": DEFAULT_PASSWORD, "next": landing})

    assert response.status_code == 302
    assert response["Location"] == landing
    assert client.session["_auth_user_id"] == str(user.pk)


# --- the health check ---------------------------------------------------------------------------


@pytest.mark.kafka
def test_health_is_not_throttled(client, throttle_rates):
    throttle_rates(anon="1/min", user="1/min")

    statuses = [client.get("/api/health/", REMOTE_ADDR="192.0.2.1").status_code for _ in range(5)]

    assert statuses == [200] * 5


@pytest.mark.urls(__name__)
def test_a_client_cannot_escape_the_anon_rate_by_sending_x_forwarded_for_of_its_own(throttle_rates):
    throttle_rates(anon="2/min")
    client = APIClient()

    statuses = [
        client.get("/api/open/", REMOTE_ADDR="192.0.2.1", HTTP_X_FORWARDED_FOR=f"203.0.113.{i}").status_code
        for i in range(3)
    ]

    assert statuses == [200, 200, 429]


@pytest.mark.urls(__name__)
def test_behind_one_proxy_the_anon_rate_counts_the_address_that_proxy_saw(throttle_rates, settings):
    throttle_rates(anon="2/min")
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    client = APIClient()

    def through_the_proxy(client_address: str) -> int:
        # What the client claims, then the address the proxy appended.
        forwarded = f"198.51.100.7, {client_address}"
        return client.get("/api/open/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=forwarded).status_code

    assert [through_the_proxy("192.0.2.1") for _ in range(3)] == [200, 200, 429]
    assert through_the_proxy("192.0.2.2") == 200
