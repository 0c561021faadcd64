"""The consumers' status kept in the database, and the "Consumers" tables the admin's Kafka status
page draws from it."""

from __future__ import annotations

import os
import re
import socket
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from kafka_bridge.connection import connection_config
from kafka_bridge.consumer.state import (
    consumer_member_name,
    consumer_state_forget,
    consumer_state_record,
    consumer_states,
    consumer_states_by_group,
)
from kafka_bridge.models import ConsumerState

STATUS_PAGE = "/admin/kafka-status/"


def a_status(group_id: str, *, calls_in_flight: int = 0, breaker: str | None = "closed", partitions=()) -> dict:
    """A dict of the shape `ConsumerLoop.status()` returns."""
    return {
        "group_id": group_id,
        "concurrency": 16,
        "calls_in_flight": calls_in_flight,
        "retries_waiting": 0,
        "records_queued": 0,
        "breaker": breaker,
        "partitions": list(partitions),
    }


def age(member: str, seconds: float) -> None:
    ConsumerState.objects.filter(member=member).update(updated_at=timezone.now() - timedelta(seconds=seconds))


def test_the_member_name_says_which_process_on_which_host():
    assert consumer_member_name("export-consumer") == f"export-consumer@{socket.gethostname()}:{os.getpid()}"


@pytest.mark.django_db
def test_a_recorded_status_is_read_back_for_its_group():
    state = a_status(
        "g-1",
        calls_in_flight=3,
        partitions=[
            {
                "topic": "t",
                "partition": 0,
                "commit_point": 41,
                "uncommitted": 5,
                "done_uncommitted": 2,
                "paused": False,
            },
        ],
    )

    consumer_state_record(member="c@h:1", state=state)

    [read] = consumer_states(group_id="g-1")
    assert read["member"] == "c@h:1"
    assert read["group_id"] == "g-1"
    assert read["calls_in_flight"] == 3
    assert read["partitions"] == state["partitions"]
    assert 0 <= read["age_seconds"] < 5
    assert consumer_states(group_id="another-group") == []


@pytest.mark.django_db
def test_recording_again_is_one_update_of_the_same_row(django_assert_num_queries):
    consumer_state_record(member="c@h:1", state=a_status("g-1", calls_in_flight=1))

    with django_assert_num_queries(1):
        consumer_state_record(member="c@h:1", state=a_status("g-1", calls_in_flight=7))

    assert ConsumerState.objects.count() == 1
    assert [s["calls_in_flight"] for s in consumer_states(group_id="g-1")] == [7]


@pytest.mark.django_db
def test_a_forgotten_member_is_gone():
    consumer_state_record(member="c@h:1", state=a_status("g-1"))
    consumer_state_record(member="c@h:2", state=a_status("g-1"))

    consumer_state_forget(member="c@h:1")
    consumer_state_forget(member="never-recorded@h:9")

    assert [s["member"] for s in consumer_states(group_id="g-1")] == ["c@h:2"]


@pytest.mark.django_db
def test_a_member_that_stopped_reporting_ages_out():
    consumer_state_record(member="crashed@h:1", state=a_status("g-1"))
    consumer_state_record(member="alive@h:2", state=a_status("g-1"))
    age("crashed@h:1", 31)

    assert [s["member"] for s in consumer_states(group_id="g-1")] == ["alive@h:2"]
    assert [s["member"] for s in consumer_states(group_id="g-1", max_age_seconds=60)] == ["alive@h:2", "crashed@h:1"]


@pytest.mark.django_db
def test_a_member_that_reports_again_comes_back():
    consumer_state_record(member="slow@h:1", state=a_status("g-1"))
    age("slow@h:1", 120)

    consumer_state_record(member="slow@h:1", state=a_status("g-1"))

    assert [s["member"] for s in consumer_states(group_id="g-1")] == ["slow@h:1"]


@pytest.mark.django_db
def test_several_groups_are_read_at_once(django_assert_num_queries):
    consumer_state_record(member="a@h:1", state=a_status("g-1"))
    consumer_state_record(member="b@h:2", state=a_status("g-2"))

    with django_assert_num_queries(1):
        found = consumer_states_by_group(group_ids=["g-1", "g-2", "g-3"])

    assert {g: [s["member"] for s in states] for g, states in found.items()} == {
        "g-1": ["a@h:1"],
        "g-2": ["b@h:2"],
        "g-3": [],
    }


# --- the status page --------------------------------------------------------------------------


@pytest.fixture
def groups_on_the_broker(kafka_topic, unique_name, kafka_admin):
    """`make(n)`: n consumer groups that exist on the broker (each committed an offset on a
    fresh topic, then left), so the status page lists them."""
    made: list[str] = []

    def make(n: int) -> list[str]:
        for _ in range(n):
            group = unique_name("g")
            consumer = KafkaConsumer(**connection_config(), group_id=group, enable_auto_commit=False)
            consumer.assign([TopicPartition(kafka_topic, 0)])
            consumer.commit({TopicPartition(kafka_topic, 0): OffsetAndMetadata(0, "", -1)})
            consumer.close()
            made.append(group)
        return made[-n:]

    yield make
    try:
        kafka_admin.delete_groups(made)
    except Exception:
        pass


@pytest.fixture
def operator(client):
    client.force_login(get_user_model().objects.create_superuser(username="ops", password="pw", email="o@example.com"))
    return client


def consumers_table(html: str, group: str) -> str:
    """The "Consumers" table under `group`'s heading, or "" when it has none."""
    section = re.split(r'<h3 class="consumer-group"|<h2>', html.split(f'data-group="{group}"', 1)[1], maxsplit=1)[0]
    _, table, rest = section.partition('<table class="consumer-states">')
    return table + rest


@pytest.mark.kafka
@pytest.mark.django_db
def test_the_page_shows_what_each_consumer_holds(operator, groups_on_the_broker):
    [group] = groups_on_the_broker(1)
    consumer_state_record(
        member="export-consumer@web-1:42",
        state=a_status(
            group,
            calls_in_flight=5,
            breaker="open",
            partitions=[
                {
                    "topic": "order-export",
                    "partition": 2,
                    "commit_point": 1017,
                    "uncommitted": 9,
                    "done_uncommitted": 4,
                    "paused": True,
                },
            ],
        ),
    )
    consumer_state_record(
        member="export-consumer@web-2:43", state=a_status(group, calls_in_flight=1, breaker="half_open")
    )

    page = operator.get(STATUS_PAGE)

    assert page.status_code == 200
    table = consumers_table(page.content.decode(), group)
    assert '<tr data-member="export-consumer@web-1:42">' in table
    assert '<td class="calls-in-flight">5 / 16</td>' in table
    assert '<td class="breaker lagging">open</td>' in table
    assert re.search(r"<td>order-export</td><td>2</td><td>1017</td><td>9</td>\s*<td>4</td><td>paused</td>", table)
    assert '<tr data-member="export-consumer@web-2:43">' in table
    assert '<td class="breaker">half-open</td>' in table


@pytest.mark.kafka
@pytest.mark.django_db
def test_the_page_leaves_out_a_consumer_that_stopped_reporting(operator, groups_on_the_broker):
    [group] = groups_on_the_broker(1)
    consumer_state_record(member="crashed@web-1:42", state=a_status(group, calls_in_flight=5))
    age("crashed@web-1:42", 60)

    html = operator.get(STATUS_PAGE).content.decode()

    assert f'data-group="{group}"' in html
    assert consumers_table(html, group) == ""
    assert "crashed@web-1:42" not in html


@pytest.mark.kafka
@pytest.mark.django_db
def test_the_pages_queries_do_not_grow_with_the_members(operator, groups_on_the_broker, django_assert_max_num_queries):
    first, second = groups_on_the_broker(2)
    consumer_state_record(member="only@h:1", state=a_status(first))
    operator.get(STATUS_PAGE)  # the session and the user, loaded once per request, are warm now
    with CaptureQueriesContext(connection) as with_one:
        operator.get(STATUS_PAGE)
    for n in range(2, 8):
        consumer_state_record(member=f"more@h:{n}", state=a_status(first if n % 2 else second))

    with django_assert_max_num_queries(len(with_one)), CaptureQueriesContext(connection) as with_seven:
        page = operator.get(STATUS_PAGE)

    # One query for every group shown, not one per group.
    assert sum(ConsumerState._meta.db_table in q["sql"] for q in with_seven.captured_queries) == 1
    html = page.content.decode()
    assert html.count("<tr data-member=") == 7
    assert consumers_table(html, first) and consumers_table(html, second)
