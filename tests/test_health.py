"""GET /api/health/ as the contract says: no authentication; 200 `{"database": "ok", "kafka":
"ok"}`; 503 naming the part that is unavailable, within a bound when the broker is not there."""
import time

import pytest
from django.db import OperationalError, connection

pytestmark = pytest.mark.django_db


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
    assert body["kafka"] == "unavailable: no Kafka broker answered at 127.0.0.1:1 within 1 s (KafkaTimeoutError)"
    assert elapsed < 5


@pytest.mark.kafka
def test_health_is_503_naming_the_database_when_its_query_fails(client):
    def database_down(execute, sql, params, many, context):
        raise OperationalError("could not connect to server: Connection refused\n\tIs the server running?")

    with connection.execute_wrapper(database_down):
        response = client.get("/api/health/")

    assert response.status_code == 503
    assert response.json() == {
        "database": "unavailable: OperationalError: could not connect to server: Connection refused Is the server running?",
        "kafka": "ok",
    }


def test_health_is_in_the_openapi_schema_without_security(admin_client):
    response = admin_client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    paths = response.json()["paths"]
    operation = paths["/api/health/"]["get"]
    assert set(operation["responses"]) == {"200", "503"}
    assert "security" not in operation
    assert paths["/api/orders/"]["get"]["security"]  # unlike the API proper
