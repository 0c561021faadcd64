"""The contract's SASL settings reach the admin client, the producer and the consumer: against a
private broker with a SASL_PLAINTEXT listener (kafka/broker.sh's KAFKA_SASL_PORT), the right
credentials carry an event end to end, and wrong ones fail at once with a clear error. No log
line shows the password, kafka-python's DEBUG lines included."""

import io
import os
import subprocess
import sys
import time

import pytest
from django.core.management import CommandError, call_command
from kafka.errors import SaslAuthenticationFailedError

from config.env import BASE_DIR
from kafka_bridge.connection import BrokerAuthenticationFailed, admin_client
from kafka_bridge.consumer import ConsumerLoop
from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox.publisher import OutboxPublisher
from kafka_bridge.runner import StopFlag
from tests.support.brokers import PrivateBroker
from tests.support.consumers import CallEach, loop_running
from tests.support.factories import order_factory
from tests.support.helpers import logged_text, wait_until

# All of the module on the database, even the tests that need none: pytest-django runs database
# tests before the others, and a split module would start its broker twice.
pytestmark = [pytest.mark.kafka, pytest.mark.django_db]

USERS = {"orderflow": "orderflow-secret", "reporting": "reporting-secret"}
MECHANISMS = ["PLAIN", "SCRAM-SHA-512"]
WRONG_CREDENTIALS = {
    "wrong-password": ("orderflow", "not-the-password"),
    "unknown-user": ("mallory", "orderflow-secret"),
}

# A broker answers a refused login after its failed-authentication delay (100 ms, applied by a
# network thread that wakes every 300 ms), and the client gives up after at most two logins:
# well under a second here. 5 s leaves room for a loaded machine and is still far below the
# 20 s each caller below is allowed, and kafka-python's 30 s default.
FAILS_WITHIN_SECONDS = 5.0
ALLOWED_SECONDS = 20


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory):
    """One broker for the module (a start costs several seconds), with both users known to
    PLAIN and to SCRAM-SHA-512."""
    broker = PrivateBroker(tmp_path_factory.mktemp("sasl-kafka"), sasl_users=USERS)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture(params=MECHANISMS)
def sasl_settings(request, settings, sasl_broker, unique_name):
    """Every client the project builds from settings talks to the SASL listener, as user
    `orderflow`, with the mechanism of the test's parameter; topics and group of its own."""
    settings.KAFKA_BOOTSTRAP_SERVERS = [sasl_broker.sasl_bootstrap]
    settings.KAFKA_SECURITY_PROTOCOL = "SASL_PLAINTEXT"
    settings.KAFKA_SASL_MECHANISM = request.param
    settings.KAFKA_SASL_USERNAME = "orderflow"
    settings.KAFKA_SASL_PASSWORD = USERS["orderflow"]
    settings.ORDER_EXPORT_TOPIC = unique_name("order-export")
    settings.ORDER_EXPORT_DLT_TOPIC = f"{settings.ORDER_EXPORT_TOPIC}.DLT"
    settings.ORDER_EXPORT_CONSUMER_GROUP = unique_name("order-export-consumer")
    # The outbox row is published by the test's own publisher, not by the on-commit fast path.
    settings.KAFKA_PUBLISH_ON_COMMIT = False
    return settings


@pytest.fixture(params=list(WRONG_CREDENTIALS), ids=list(WRONG_CREDENTIALS))
def wrong_credentials(request, sasl_settings):
    username, password = WRONG_CREDENTIALS[request.param]
    sasl_settings.KAFKA_SASL_USERNAME, sasl_settings.KAFKA_SASL_PASSWORD = username, password
    return sasl_settings


def confirmed_order_outbox_row() -> OutboxEvent:
    order = order_factory(confirmed=True)
    return OutboxEvent.objects.get(key=str(order.pk))


def assert_says_authentication_failed(message: str, settings) -> None:
    assert "\n" not in message
    assert (
        f"SASL {settings.KAFKA_SASL_MECHANISM} authentication failed for user "
        f"'{settings.KAFKA_SASL_USERNAME}' at {settings.KAFKA_BOOTSTRAP_SERVERS[0]}"
    ) in message
    assert settings.KAFKA_SASL_PASSWORD not in message


def test_the_right_credentials_carry_an_outbox_event_from_topic_creation_to_the_consumer(sasl_settings):
    out = io.StringIO()
    call_command("ensure_topics", stdout=out)
    assert f"{sasl_settings.ORDER_EXPORT_TOPIC}: created with 3 partition(s)" in out.getvalue()
    row = confirmed_order_outbox_row()

    publisher = OutboxPublisher(timeout=10)
    try:
        result = publisher.publish([row])
    finally:
        publisher.close()

    assert (result.sent, result.failed, result.error) == (1, 0, "")
    row.refresh_from_db()
    assert row.sent_at is not None

    received = []
    loop = ConsumerLoop(
        topics=[sasl_settings.ORDER_EXPORT_TOPIC],
        group_id=sasl_settings.ORDER_EXPORT_CONSUMER_GROUP,
        processor=CallEach(received.append),
        stop=StopFlag(),
    )
    with loop_running(loop, name="sasl-consumer"):
        wait_until(lambda: received, timeout=30, message="the consumer read nothing over SASL")

    [record] = received
    assert (record.partition, record.offset) == (row.partition, row.offset)
    assert record.key == row.key.encode() and record.value == row.payload.encode()
    assert dict(record.headers) == {name: value.encode() for name, value in row.headers}


@pytest.mark.parametrize("command", ["kafka_ping", "ensure_topics"])
def test_wrong_credentials_fail_a_command_at_once_saying_authentication_failed(wrong_credentials, command):
    options = ["--timeout", str(ALLOWED_SECONDS)] if command == "kafka_ping" else []
    wrong_credentials.KAFKA_ADMIN_TIMEOUT_MS = ALLOWED_SECONDS * 1000
    started = time.monotonic()

    with pytest.raises(CommandError) as excinfo:
        call_command(command, *options)

    elapsed = time.monotonic() - started
    assert elapsed < FAILS_WITHIN_SECONDS, f"failed only after {elapsed:.1f} s"
    assert excinfo.value.returncode == 1
    assert_says_authentication_failed(str(excinfo.value), wrong_credentials)


def test_wrong_credentials_fail_a_publish_at_once_and_leave_the_row_for_the_relay(wrong_credentials):
    row = confirmed_order_outbox_row()
    publisher = OutboxPublisher(timeout=ALLOWED_SECONDS)
    started = time.monotonic()
    try:
        result = publisher.publish([row])
    finally:
        publisher.close()

    elapsed = time.monotonic() - started
    assert elapsed < FAILS_WITHIN_SECONDS, f"failed only after {elapsed:.1f} s"
    assert (result.sent, result.failed) == (0, 1)
    assert_says_authentication_failed(result.error, wrong_credentials)
    row.refresh_from_db()
    assert row.sent_at is None and row.attempts == 1
    assert "authentication failed" in row.last_error


def test_wrong_credentials_stop_a_consumer_loop_at_once(wrong_credentials):
    loop = ConsumerLoop(
        topics=[wrong_credentials.ORDER_EXPORT_TOPIC],
        group_id=wrong_credentials.ORDER_EXPORT_CONSUMER_GROUP,
        processor=CallEach(lambda record: None),
        stop=StopFlag(),
    )
    started = time.monotonic()

    with pytest.raises(SaslAuthenticationFailedError) as excinfo:
        loop.run()

    # The consumer's bootstrap is not bounded by the project's settings: without the fail-fast
    # it would wait out kafka-python's 30 s default.
    elapsed = time.monotonic() - started
    assert elapsed < FAILS_WITHIN_SECONDS, f"failed only after {elapsed:.1f} s"
    assert_says_authentication_failed(str(excinfo.value), wrong_credentials)


def test_debug_logs_of_a_sasl_login_never_show_the_password(sasl_settings, debug_records):
    with admin_client(timeout_ms=ALLOWED_SECONDS * 1000) as admin:
        admin.describe_cluster()

    logged = logged_text(debug_records)
    # kafka-python logged its configuration and the login request: the lines that held it.
    assert "Starting KafkaAdminClient with configuration" in logged
    assert "SaslAuthenticateRequest" in logged
    assert sasl_settings.KAFKA_SASL_PASSWORD not in logged


def test_a_refused_sasl_login_shows_the_password_neither_in_its_error_nor_in_the_logs(wrong_credentials, debug_records):
    with pytest.raises(BrokerAuthenticationFailed) as excinfo, admin_client(timeout_ms=ALLOWED_SECONDS * 1000):
        pass

    assert_says_authentication_failed(str(excinfo.value), wrong_credentials)
    assert wrong_credentials.KAFKA_SASL_PASSWORD not in logged_text(debug_records)


def test_kafka_client_log_level_debug_prints_no_password(sasl_broker):
    """The configured logging end to end: a process's own stderr at LOG_LEVELS=kafka=DEBUG."""
    env = {
        **os.environ,
        "LOG_LEVELS": "kafka=DEBUG",
        "KAFKA_BOOTSTRAP_SERVERS": sasl_broker.sasl_bootstrap,
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "orderflow",
        "KAFKA_SASL_PASSWORD": USERS["orderflow"],
    }
    result = subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), "kafka_ping", "--timeout", str(ALLOWED_SECONDS)],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert "SaslAuthenticateRequest" in result.stderr
    assert USERS["orderflow"] not in result.stdout + result.stderr
