"""No secret of the settings in a log line, an order's `export.last_error` or a DLT header: the
Kafka SASL password, the platform URL's credentials and query string, whatever logger or field
carries them. (kafka-python's own DEBUG lines against a SASL broker are in
test_secure_connections.py, which has one running.)"""

from __future__ import annotations

import json
import logging
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from config.logging import JsonFormatter
from exports.models import OrderExport
from exports.platform.http import HttpExternalPlatformClient
from orders.services import LineInput, order_confirm, order_create
from tests.support.consumers import export_consumer_running
from tests.support.helpers import logged_text, wait_until
from tests.support.records import read_records

SASL_PASSWORD = "sasl-Pa55'word\\ü"
PLATFORM_PASSWORD = "pl@tform pa55"
PLATFORM_TOKEN = "t0ken-x9"
PLATFORM_URL = f"https://alice:{PLATFORM_PASSWORD.replace('@', '%40').replace(' ', '%20')}@platform.example/orders?token={PLATFORM_TOKEN}"
SECRETS = ("sasl-Pa55", "pa55", "%20pa55", PLATFORM_TOKEN)


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} in {text!r}"


@pytest.fixture
def secret_settings(settings):
    settings.KAFKA_SASL_PASSWORD = SASL_PASSWORD
    settings.EXPORT_PLATFORM_URL = PLATFORM_URL
    return settings


def test_kafka_pythons_configuration_line_shows_no_sasl_password(secret_settings, debug_records):
    # What KafkaAdminClient.__init__ logs at DEBUG, with the repr() of the configuration.
    config = {"security_protocol": "SASL_SSL", "sasl_plain_username": "orderflow", "sasl_plain_password": SASL_PASSWORD}
    logging.getLogger("kafka.admin.client").debug("Starting KafkaAdminClient with configuration: %s", config)

    [record] = debug_records.records
    # repr() quotes a password holding a quote with double quotes.
    assert record.getMessage().endswith("""'sasl_plain_password': "***"}""")
    assert_no_secret(logged_text(debug_records))


def test_a_sasl_plain_login_request_line_shows_no_password(secret_settings, debug_records):
    # kafka-python logs every request at DEBUG; a PLAIN login's auth_bytes hold the password.
    auth_bytes = b"\0orderflow\0" + SASL_PASSWORD.encode()
    logging.getLogger("kafka.net.connection").debug("Request 3: SaslAuthenticateRequest(auth_bytes=%r)", auth_bytes)

    assert (
        debug_records.records[0].getMessage()
        == r'Request 3: SaslAuthenticateRequest(auth_bytes=b"\x00orderflow\x00***")'
    )
    assert_no_secret(logged_text(debug_records))


def test_the_platform_urls_credentials_and_query_leave_every_logger_and_field(secret_settings, debug_records):
    log = logging.getLogger("exports.consumer")
    log.warning("posting to %s", PLATFORM_URL, extra={"url": PLATFORM_URL})
    try:
        raise ConnectionError(f"could not reach {PLATFORM_URL}")
    except ConnectionError:
        log.exception("export failed")

    messages = [r.getMessage() for r in debug_records.records]
    assert messages == ["posting to https://***@platform.example/orders?***", "export failed"]
    assert "could not reach https://***@platform.example/orders?***" in debug_records.text
    assert debug_records.records[0].url == "https://***@platform.example/orders?***"
    assert_no_secret(logged_text(debug_records))


def test_userinfo_and_query_strings_of_any_url_are_redacted(debug_records):
    logging.getLogger("kafka.net.connection").info(
        "proxy at socks5://bob:hunter22@proxy.internal:1080/?sig=abc123 refused"
    )

    assert debug_records.records[0].getMessage() == "proxy at socks5://***@proxy.internal:1080/?*** refused"


def test_the_json_format_shows_the_redacted_record(secret_settings, debug_records):
    logging.getLogger("kafka.net.connection").error("login failed", extra={"password": SASL_PASSWORD})

    line = JsonFormatter().format(debug_records.records[0])

    assert json.loads(line)["password"] == "***"
    assert_no_secret(line)


@pytest.mark.kafka
@pytest.mark.django_db(transaction=True)
def test_a_refusing_platform_that_echoes_the_url_leaves_no_secret_in_the_dlt_the_api_or_the_log(
    settings, export_topics, export_group, platform_stub, fresh_publisher, debug_records
):
    _, dlt = export_topics
    url = platform_stub.url.replace(
        "http://", f"http://alice:{PLATFORM_PASSWORD.replace('@', '%40').replace(' ', '%20')}@"
    )
    url += f"?token={PLATFORM_TOKEN}"
    settings.EXPORT_PLATFORM_URL = url
    platform_stub.down_status = 404
    platform_stub.down_body = f"no route for POST /orders?token={PLATFORM_TOKEN} as {url}".encode()
    client = HttpExternalPlatformClient(url=url, timeout=5)
    try:
        with export_consumer_running(client):
            order = order_create(customer_id="c-1", lines=[LineInput(sku="S", quantity=1, unit_price=Decimal("1.00"))])
            order_confirm(order_id=order.pk)
            wait_until(
                lambda: OrderExport.objects.filter(order=order, status="failed").exists(),
                timeout=30,
                message="the refused export was not marked failed",
            )
            [dead] = read_records(dlt, expected=1)
    finally:
        client.close()

    api = APIClient()
    api.force_authenticate(get_user_model().objects.create_superuser(username="ops", password="pw"))
    last_error = api.get(f"/api/orders/{order.pk}/").json()["export"]["last_error"]
    dlt_error = dict(dead.headers)["dlt.error"].decode()
    for text in (last_error, dlt_error):
        assert text.startswith(
            "PermanentExportError: HTTP 404 from the platform: no route for POST /orders?*** as http"
        )
    for text in (last_error, dlt_error, logged_text(debug_records)):
        assert_no_secret(text)
        assert "alice" not in text
