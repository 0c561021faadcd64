"""GET /api/health/ as the contract says: no authentication; 200 `{"database": "ok", "kafka":
"ok"}`; 503 naming the part that is unavailable, within a bound when the broker is not there.
Anonymous callers get the error's class as the reason, staff its full text; a storm of probes
costs one check per HEALTH_CACHE_SECONDS, and no probe is throttled."""

import threading
import time

import pytest
from django.contrib.auth import get_user_model
from django.db import OperationalError, connection, connections
from rest_framework.authtoken.models import Token

from kafka_bridge.cluster import health as kafka_health
from tests.support.helpers import wait_until

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_user():
    return get_user_model().objects.create_user(username="ops", password="pw", is_staff=True)


@pytest.fixture
def kafka_checks(monkeypatch, settings) -> list[float]:
    """The times (time.monotonic()) at which the health check asked Kafka, against a broker
    address where nothing answers, each check bounded to 200 ms."""
    settings.KAFKA_BOOTSTRAP_SERVERS = ["127.0.0.1:1"]
    settings.HEALTH_KAFKA_TIMEOUT_MS = 200
    started: list[float] = []
    real_admin_client = kafka_health.admin_client

    def counted_admin_client(**kwargs):
        started.append(time.monotonic())
        return real_admin_client(**kwargs)

    monkeypatch.setattr(kafka_health, "admin_client", counted_admin_client)
    return started


@pytest.mark.kafka
def test_health_is_200_with_both_parts_ok_and_needs_no_credentials(client):
    response = client.get("/api/health/")

    assert response.status_code == 200
    assert response.json() == {"database": "ok", "kafka": "ok"}


@pytest.mark.kafka
def test_health_ignores_credentials_it_does_not_need(client):
    response = client.get("/api/health/", HTTP_AUTHORIZATION="Token not-a-real-token")

    assert response.status_code == 200
    assert response.json() == {"database": "ok", "kafka": "ok"}


def test_health_is_503_naming_kafka_when_no_broker_answers_within_the_bound(client, settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = ["127.0.0.1:1"]
    settings.HEALTH_KAFKA_TIMEOUT_MS = 1000

    started = time.monotonic()
    response = client.get("/api/health/")
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    body = response.json()
    assert body["database"] == "ok"
    # The error's class only: the broker addresses are the network's layout, not the public's.
    assert body["kafka"] == "unavailable: BrokerUnavailable"
    assert elapsed < 5


def test_health_tells_staff_which_brokers_did_not_answer(client, staff_user, settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = ["127.0.0.1:1"]
    settings.HEALTH_KAFKA_TIMEOUT_MS = 1000
    client.force_login(staff_user)

    response = client.get("/api/health/")

    assert response.status_code == 503
    assert response.json() == {
        "database": "ok",
        "kafka": "unavailable: no Kafka broker answered at 127.0.0.1:1 within 1 s (KafkaTimeoutError)",
    }


DATABASE_ERROR = (
    'connection to server at "db.internal" (10.0.0.7), port 5432 failed: FATAL:  password '
    'authentication failed for user "orderflow"\n'
)


@pytest.fixture
def database_down():
    """`SELECT 1`, the health check's query, fails with psycopg's words for a refused login;
    the queries that load a session or a token still work."""

    def fail_select_1(execute, sql, params, many, context):
        if sql == "SELECT 1":
            raise OperationalError(DATABASE_ERROR)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(fail_select_1):
        yield


@pytest.mark.kafka
def test_health_is_503_naming_the_database_when_its_query_fails(client, database_down):
    response = client.get("/api/health/")

    assert response.status_code == 503
    # No host, port or user for anonymous callers: the error's class is the reason.
    assert response.json() == {"database": "unavailable: OperationalError", "kafka": "ok"}


@pytest.mark.kafka
def test_health_logs_the_full_text_of_what_is_unavailable(client, database_down, caplog):
    client.get("/api/health/")

    [record] = [r for r in caplog.records if r.name == "config.api.views"]
    assert record.levelname == "WARNING"
    assert record.getMessage() == (
        'health: database unavailable: OperationalError: connection to server at "db.internal" '
        '(10.0.0.7), port 5432 failed: FATAL: password authentication failed for user "orderflow"'
    )


@pytest.mark.kafka
def test_health_tells_a_staff_session_the_full_text_of_the_database_error(client, staff_user, database_down):
    client.force_login(staff_user)

    response = client.get("/api/health/")

    assert response.status_code == 503
    assert response.json() == {
        "database": 'unavailable: OperationalError: connection to server at "db.internal" (10.0.0.7), '
        'port 5432 failed: FATAL: password authentication failed for user "orderflow"',
        "kafka": "ok",
    }


@pytest.mark.kafka
def test_health_tells_a_staff_token_the_full_text_and_other_users_only_the_class(client, staff_user, database_down):
    customer = get_user_model().objects.create_user(username="customer", password="pw")
    staff_token, customer_token = Token.objects.create(user=staff_user), Token.objects.create(user=customer)

    as_staff = client.get("/api/health/", HTTP_AUTHORIZATION=f"Token {staff_token.key}").json()
    as_customer = client.get("/api/health/", HTTP_AUTHORIZATION=f"Token {customer_token.key}").json()

    assert as_staff["database"].startswith('unavailable: OperationalError: connection to server at "db.internal"')
    assert as_customer["database"] == "unavailable: OperationalError"


def test_health_is_in_the_openapi_schema_without_security(admin_client):
    response = admin_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    paths = response.json()["paths"]
    operation = paths["/api/health/"]["get"]
    assert set(operation["responses"]) == {"200", "503"}
    assert "security" not in operation
    assert paths["/api/orders/"]["get"]["security"]  # unlike the API proper


def test_probes_within_the_cache_window_cost_one_kafka_check(client, settings, kafka_checks):
    settings.HEALTH_CACHE_SECONDS = 60

    answers = [client.get("/api/health/") for _ in range(10)]

    assert len(kafka_checks) == 1
    assert {(a.status_code, a.json()["kafka"]) for a in answers} == {(503, "unavailable: BrokerUnavailable")}


def test_a_probe_after_the_cache_window_checks_again(client, settings, kafka_checks):
    settings.HEALTH_CACHE_SECONDS = 0.5
    client.get("/api/health/")

    wait_until(
        lambda: client.get("/api/health/") and len(kafka_checks) == 2,
        timeout=5,
        message=lambda: f"{len(kafka_checks)} check(s)",
    )

    assert kafka_checks[1] - kafka_checks[0] >= 0.5


def test_a_cache_window_of_0_checks_for_every_probe(client, settings, kafka_checks):
    settings.HEALTH_CACHE_SECONDS = 0

    for _ in range(3):
        client.get("/api/health/")

    assert len(kafka_checks) == 3


def test_probes_arriving_while_a_check_runs_wait_for_its_answer(client, settings, kafka_checks):
    settings.HEALTH_CACHE_SECONDS = 60
    statuses: list[int] = []

    def probe():
        try:
            statuses.append(client.get("/api/health/").status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=probe) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert statuses == [503] * 8
    assert len(kafka_checks) == 1


def test_health_answers_probes_past_the_anonymous_throttle_rate(client, settings, kafka_checks):
    # DEFAULT_THROTTLE_RATES allow 60 anonymous requests a minute; a load balancer probing
    # every second from a few nodes goes past that, and a 429 would read as "down".
    settings.HEALTH_CACHE_SECONDS = 60

    statuses = {client.get("/api/health/").status_code for _ in range(70)}

    assert statuses == {503}
