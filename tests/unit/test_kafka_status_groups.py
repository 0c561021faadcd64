"""Which consumer groups `kafka_status` shows when the broker's group list leaves some out, as a
broker still loading `__consumer_offsets` does: the groups the caller names are described anyway
and shown if they exist."""

from __future__ import annotations

import contextlib

import pytest
from kafka.structs import OffsetAndMetadata, TopicPartition

from kafka_bridge import status


class LoadingBroker:
    """An admin client whose ListGroups answer lists `listed` only, whatever exists."""

    def __init__(self, *, listed: list[str], committed: dict[str, dict]):
        self.listed, self.committed = listed, committed

    def describe_cluster(self):
        return {"brokers": [{"broker_id": 1, "host": "127.0.0.1", "port": 9092}], "controller_id": 1}

    def describe_topics(self, topics=None):
        return []

    def list_partition_offsets(self, specs):
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
