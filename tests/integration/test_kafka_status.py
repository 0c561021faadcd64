"""`kafka_status` and the admin's Kafka status page, checked against Kafka itself: the offsets
must agree with Debian's kcat, an independent client, on the same broker."""

import io
import json
import re
import subprocess

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from kafka_bridge.cluster.status import kafka_status
from kafka_bridge.connection import bootstrap_servers, connection_config
from tests.support.helpers import wait_until
from tests.support.records import produce_records

pytestmark = pytest.mark.kafka


def kcat_offset(topic: str, partition: int, which: int) -> int:
    """kcat's answer for a partition's beginning (-2) or end (-1) offset."""
    result = subprocess.run(
        ["kcat", "-b", bootstrap_servers(), "-Q", "-t", f"{topic}:{partition}:{which}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return int(re.search(rf"{re.escape(topic)} \[{partition}\] offset (-?\d+)", result.stdout).group(1))


@pytest.fixture
def busy_topic(kafka_topic_factory, consumer_group):
    """A 3-partition topic with 10 records per partition and a live consumer in a group that has
    committed 6 of them on each partition."""
    topic = kafka_topic_factory(partitions=3)
    produce_records(
        topic,
        [{"value": f"{partition}-{i}".encode(), "partition": partition} for partition in range(3) for i in range(10)],
    )
    consumer = KafkaConsumer(
        topic,
        **connection_config(),
        group_id=consumer_group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id="status-probe",
    )
    wait_until(lambda: consumer.poll(timeout_ms=200) is not None and len(consumer.assignment()) == 3, timeout=30)
    consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(6, "", -1) for p in range(3)})
    yield topic, consumer_group
    consumer.close()


def test_the_status_agrees_with_kcat_and_the_group(busy_topic):
    topic, group = busy_topic

    status = kafka_status(topics=[topic], group_ids=[group])

    assert status["brokers"] == [{"node_id": 1, "host": "127.0.0.1", "port": 9092}]
    assert status["controller_id"] == 1
    [entry] = status["topics"]
    assert entry["name"] == topic
    for p in entry["partitions"]:
        assert (p["leader"], p["replicas"], p["isr"]) == (1, [1], [1])
        assert p["earliest_offset"] == kcat_offset(topic, p["partition"], -2) == 0
        assert p["latest_offset"] == kcat_offset(topic, p["partition"], -1) == 10
    [g] = status["consumer_groups"]
    assert (g["group_id"], g["state"]) == (group, "Stable")
    [member] = g["members"]
    assert member["client_id"] == "status-probe"
    assert member["assignments"] == [{"topic": topic, "partition": p} for p in range(3)]
    assert g["partitions"] == [
        {"topic": topic, "partition": p, "committed_offset": 6, "end_offset": 10, "lag": 4} for p in range(3)
    ]
    assert g["total_lag"] == 12


def test_the_json_command_prints_the_same_shape(busy_topic):
    topic, group = busy_topic
    out = io.StringIO()

    call_command("kafka_status", "--json", "--topic", topic, "--group", group, stdout=out)

    printed = json.loads(out.getvalue())
    assert set(printed) == {"brokers", "controller_id", "topics", "consumer_groups"}
    assert printed["consumer_groups"][0]["total_lag"] == 12
    assert [p["latest_offset"] for p in printed["topics"][0]["partitions"]] == [10, 10, 10]


def test_the_command_exits_1_with_one_line_when_the_broker_is_unreachable(settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = ["127.0.0.1:1"]
    settings.KAFKA_ADMIN_TIMEOUT_MS = 300
    with pytest.raises(CommandError) as excinfo:
        call_command("kafka_status")
    assert excinfo.value.returncode == 1
    assert str(excinfo.value).startswith("no Kafka broker answered at 127.0.0.1:1 within 0.3 s")


@pytest.mark.django_db
def test_the_admin_page_shows_brokers_topics_groups_and_lag(client, busy_topic, settings):
    topic, group = busy_topic
    settings.ORDER_EXPORT_DLT_TOPIC = topic  # any topic with records will do for the size
    staff = get_user_model().objects.create_user(username="ops", password="pw", is_staff=True)
    client.force_login(staff)

    page = client.get("/admin/kafka-status/")

    html = page.content.decode()
    assert page.status_code == 200
    assert "active controller" in html
    assert f"<strong>{topic}</strong> (3 partitions)" in html
    assert "<strong>__consumer_offsets</strong>" in html
    assert f'data-group="{group}"' in html
    assert re.search(
        rf'data-group="{re.escape(group)}">{re.escape(group)}: <span class="group-state">Stable</span>,\s+1 member\(s\), total lag <span class="total-lag lagging">12</span>',
        html,
    )
    assert '<strong id="export-group-dlt-size">30</strong>' in html
    assert "Unsent events: <strong>0</strong>" in html


@pytest.mark.django_db
def test_the_admin_page_says_when_kafka_is_unreachable(client, settings):
    settings.KAFKA_BOOTSTRAP_SERVERS = ["127.0.0.1:1"]
    settings.KAFKA_STATUS_TIMEOUT_MS = 300
    client.force_login(get_user_model().objects.create_user(username="ops", password="pw", is_staff=True))

    page = client.get("/admin/kafka-status/")

    assert page.status_code == 200
    assert "Kafka is unreachable: no Kafka broker answered at 127.0.0.1:1" in page.content.decode()
    assert "Unsent events:" in page.content.decode()


@pytest.mark.django_db
def test_the_admin_page_is_for_staff_only(client):
    client.force_login(get_user_model().objects.create_user(username="customer", password="pw"))
    page = client.get("/admin/kafka-status/")
    assert page.status_code == 302 and "/admin/login/" in page["Location"]
