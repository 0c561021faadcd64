"""What `kafka_status` shows when the cluster changes under it: groups the broker's list leaves out
(a broker still loading `__consumer_offsets`) are described anyway and shown if they exist; a topic
deleted while it is read (another client's work) is left out, and the rest is shown."""

from __future__ import annotations

import contextlib

import pytest
from kafka.errors import UnknownTopicOrPartitionError
from kafka.structs import OffsetAndMetadata, OffsetAndTimestamp, TopicPartition

from kafka_bridge.cluster import status


class LoadingBroker:
    """An admin client whose ListGroups answer lists `listed` only, whatever exists."""

    def __init__(self, *, listed: list[str], committed: dict[str, dict]):
        self.listed, self.committed = listed, committed

    def describe_cluster(self):
        return {"brokers": [{"broker_id": 1, "host": "127.0.0.1", "port": 9092}], "controller_id": 1}

    def describe_topics(self, topics=None):
        return []

    def list_partition_offsets(self, specs, timeout_ms=None):
        return {}

    def list_groups(self):
        return [{"group_id": group, "protocol_type": "consumer"} for group in self.listed]

    def describe_groups(self, group_ids):
        return {group: {"group_state": "Empty", "members": []} for group in group_ids}

    def list_group_offsets(self, groups):
        return {group: self.committed.get(group, {}) for group in groups}


@pytest.fixture
def broker(monkeypatch):
    def use(admin):
        monkeypatch.setattr(status, "admin_client", lambda **kwargs: contextlib.nullcontext(admin))

    return use


def test_a_named_group_the_broker_did_not_list_is_shown_when_it_has_committed_offsets(broker):
    offsets = {TopicPartition("t", 0): OffsetAndMetadata(3, "", -1)}
    broker(LoadingBroker(listed=["other"], committed={"exports": offsets}))

    found = status.kafka_status(also_groups=["exports"])

    assert [g["group_id"] for g in found["consumer_groups"]] == ["exports", "other"]
    [exports] = [g for g in found["consumer_groups"] if g["group_id"] == "exports"]
    assert [p["committed_offset"] for p in exports["partitions"]] == [3]


def test_a_named_group_that_does_not_exist_is_not_shown(broker):
    broker(LoadingBroker(listed=["other"], committed={}))

    found = status.kafka_status(also_groups=["never-started"])

    assert [g["group_id"] for g in found["consumer_groups"]] == ["other"]


class DeletingBroker(LoadingBroker):
    """An admin client on whose cluster another client deletes topic `gone` after it was
    described: reading its offsets then fails for the whole request, as kafka-python's does."""

    def __init__(self):
        super().__init__(listed=[], committed={})
        self.described_once = False

    def describe_topics(self, topics=None):
        names = ["kept", "gone"] if not self.described_once else ["kept"]
        self.described_once = True
        wanted = [name for name in names if topics is None or name in topics]
        return [
            {
                "name": name,
                "error_code": 0,
                "is_internal": False,
                "partitions": [{"partition_index": 0, "leader_id": 1, "replica_nodes": [1], "isr_nodes": [1]}],
            }
            for name in wanted
        ]

    def list_partition_offsets(self, specs, timeout_ms=None):
        if any(tp.topic == "gone" for tp in specs):
            raise UnknownTopicOrPartitionError("The following partitions are not known: gone-0")
        return {tp: OffsetAndTimestamp(7, -1, None) for tp in specs}


def test_a_topic_deleted_while_the_status_is_read_is_left_out_and_the_rest_is_shown(broker):
    broker(DeletingBroker())

    found = status.kafka_status()

    assert [(t["name"], t["partitions"][0]["latest_offset"]) for t in found["topics"]] == [("kept", 7)]


def test_a_topic_that_keeps_failing_after_each_look_up_is_an_error_not_an_empty_page(broker):
    class Unknowing(DeletingBroker):
        def describe_topics(self, topics=None):
            self.described_once = False
            return super().describe_topics(topics)

    broker(Unknowing())

    with pytest.raises(UnknownTopicOrPartitionError):
        status.kafka_status()
