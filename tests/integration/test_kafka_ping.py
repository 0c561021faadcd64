"""`manage.py kafka_ping`: what `make kafka-up` polls to know the broker answers."""

import io

import pytest
from django.core.management import CommandError, call_command

from kafka_bridge.connection import BrokerUnavailable, admin_client
from tests.support.ports import free_port


@pytest.mark.kafka
def test_reports_the_cluster_when_the_broker_answers(kafka_admin):
    out = io.StringIO()
    call_command("kafka_ping", "--timeout", "5", stdout=out)
    cluster = kafka_admin.describe_cluster()
    assert out.getvalue().strip() == (
        f"kafka: {len(cluster['brokers'])} broker(s) at 127.0.0.1:9092, "
        f"cluster {cluster['cluster_id']}, controller {cluster['controller_id']}"
    )


def test_exits_1_naming_the_servers_when_nothing_answers(settings):
    address = f"127.0.0.1:{free_port()}"
    settings.KAFKA_BOOTSTRAP_SERVERS = [address]

    with pytest.raises(CommandError) as excinfo:
        call_command("kafka_ping", "--timeout", "0.5")

    assert excinfo.value.returncode == 1
    assert str(excinfo.value) == f"no Kafka broker answered at {address} within 0.5 s (KafkaTimeoutError)"


def test_the_admin_client_raises_broker_unavailable_when_nothing_answers(settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = [f"127.0.0.1:{free_port()}"]
    with pytest.raises(BrokerUnavailable):
        with admin_client(timeout_ms=300):
            pass


def test_print_bootstrap_joins_the_configured_servers(settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = ["k1:9092", "k2:9093"]
    out = io.StringIO()
    call_command("kafka_ping", "--print-bootstrap", stdout=out)
    assert out.getvalue() == "k1:9092,k2:9093\n"
