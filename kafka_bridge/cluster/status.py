"""What Kafka UI shows, read through the admin client: brokers, the controller, topics with
their partitions (leader, replicas, ISR, earliest and latest offsets), consumer groups with
their state, members, assignments, committed offsets and lag. The shape is the contract's
`kafka_status --json`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from kafka import KafkaAdminClient, TopicPartition
from kafka.errors import UnknownTopicOrPartitionError
from kafka.protocol.consumer import OffsetSpec

from kafka_bridge.connection import admin_client


def _assignments(member: dict[str, Any]) -> list[dict[str, Any]]:
    assignment = member.get("member_assignment") or {}
    result = []
    for entry in assignment.get("assigned_partitions") or []:
        topic = entry.get("topic") if isinstance(entry, dict) else entry[0]
        partitions = entry.get("partitions") if isinstance(entry, dict) else entry[1]
        result.extend({"topic": topic, "partition": p} for p in sorted(partitions))
    return sorted(result, key=lambda a: (a["topic"], a["partition"]))


# A topic deleted while the page reads it is looked up again this many times before giving up.
_DELETED_TOPIC_RETRIES = 3


def existing_partition_offsets(
    admin: KafkaAdminClient, partitions: list[TopicPartition], spec, *, timeout_ms: int | None = None
) -> dict[TopicPartition, int]:
    """The offsets of `partitions` by `spec`. A topic deleted between describing it and reading
    its offsets (the admin client then refuses the whole request) has none: the request is
    made again for the topics that still exist."""
    for attempt in range(_DELETED_TOPIC_RETRIES):
        if not partitions:
            return {}
        try:
            found = admin.list_partition_offsets(dict.fromkeys(partitions, spec), timeout_ms=timeout_ms)
        except UnknownTopicOrPartitionError:
            if attempt == _DELETED_TOPIC_RETRIES - 1:
                raise
            partitions = _still_existing(admin, partitions)
            continue
        return {tp: offset.offset for tp, offset in found.items()}
    return {}


def _partitions_of(admin: KafkaAdminClient, topics: list[str]) -> list[TopicPartition]:
    """The partitions of those of `topics` that exist."""
    return [
        TopicPartition(t["name"], p["partition_index"])
        for t in admin.describe_topics(topics)
        if t["error_code"] == 0
        for p in sorted(t["partitions"], key=lambda p: p["partition_index"])
    ]


def _still_existing(admin: KafkaAdminClient, partitions: list[TopicPartition]) -> list[TopicPartition]:
    existing = set(_partitions_of(admin, sorted({tp.topic for tp in partitions})))
    return [tp for tp in partitions if tp in existing]


def kafka_status(
    *,
    topics: Iterable[str] | None = None,
    group_ids: Iterable[str] | None = None,
    include_internal: bool = False,
    timeout_ms: int | None = None,
    also_groups: Iterable[str] = (),
) -> dict[str, Any]:
    """The cluster as the contract's JSON shape. `topics` and `group_ids` narrow it down
    (default: every topic, internal ones only with `include_internal`, and every group).
    `also_groups` are described even when the broker's group list leaves them out (a broker
    still loading `__consumer_offsets` may leave out the groups of partitions it has not loaded),
    and shown if they exist (members or committed offsets).
    Raises `BrokerUnavailable` when no broker answers within the bound."""
    with admin_client(timeout_ms=timeout_ms) as admin:
        cluster = admin.describe_cluster()
        described = admin.describe_topics(list(topics) if topics is not None else None)
        described = [
            t
            for t in described
            if t["error_code"] == 0 and (include_internal or not t["is_internal"] or topics is not None)
        ]
        partitions = [TopicPartition(t["name"], p["partition_index"]) for t in described for p in t["partitions"]]
        earliest = existing_partition_offsets(admin, partitions, OffsetSpec.EARLIEST)
        latest = existing_partition_offsets(admin, partitions, OffsetSpec.LATEST)

        if group_ids is None:
            group_ids = [g["group_id"] for g in admin.list_groups() if g.get("protocol_type") in ("consumer", "")]
        unlisted = set(also_groups) - set(group_ids)
        group_ids = sorted({*group_ids, *unlisted})
        groups = admin.describe_groups(group_ids) if group_ids else {}
        committed = admin.list_group_offsets(dict.fromkeys(group_ids)) if group_ids else {}
        group_ids = [g for g in group_ids if g not in unlisted or committed.get(g) or groups.get(g, {}).get("members")]
        latest.update(_other_latest_offsets(admin, committed, described))
        # A topic deleted while the page was read is left out rather than shown without offsets.
        described = [t for t in described if has_offsets(t, latest)]

    return {
        "brokers": sorted(
            ({"node_id": b["broker_id"], "host": b["host"], "port": b["port"]} for b in cluster["brokers"]),
            key=lambda b: b["node_id"],
        ),
        "controller_id": cluster["controller_id"],
        "topics": [_topic(t, earliest, latest) for t in sorted(described, key=lambda t: t["name"])],
        "consumer_groups": [
            _group(group_id, groups.get(group_id, {}), committed.get(group_id, {}), latest) for group_id in group_ids
        ],
    }


def _other_latest_offsets(
    admin: KafkaAdminClient, committed: dict, described: list[dict[str, Any]]
) -> dict[TopicPartition, int]:
    """End offsets of partitions some group committed to but that the topic list left out
    (when narrowed down); a topic deleted since has none."""
    extra_topics = {tp.topic for offsets in committed.values() for tp in offsets} - {t["name"] for t in described}
    if not extra_topics:
        return {}
    return existing_partition_offsets(admin, _partitions_of(admin, sorted(extra_topics)), OffsetSpec.LATEST)


def has_offsets(described: dict[str, Any], offsets: dict[TopicPartition, int]) -> bool:
    """Whether `offsets` has one of the partitions of the topic `described` (by `describe_topics`)."""
    return not described["partitions"] or any(
        TopicPartition(described["name"], p["partition_index"]) in offsets for p in described["partitions"]
    )


def _topic(
    described: dict[str, Any], earliest: dict[TopicPartition, int], latest: dict[TopicPartition, int]
) -> dict[str, Any]:
    name = described["name"]
    return {
        "name": name,
        "partitions": [
            {
                "partition": p["partition_index"],
                "leader": p["leader_id"],
                "replicas": list(p["replica_nodes"]),
                "isr": list(p["isr_nodes"]),
                "earliest_offset": earliest.get(TopicPartition(name, p["partition_index"])),
                "latest_offset": latest.get(TopicPartition(name, p["partition_index"])),
            }
            for p in sorted(described["partitions"], key=lambda p: p["partition_index"])
        ],
    }


def _group(group_id: str, description: dict, committed: dict, latest: dict[TopicPartition, int]) -> dict[str, Any]:
    partitions = []
    for tp in sorted(committed, key=lambda tp: (tp.topic, tp.partition)):
        end = latest.get(tp)
        offset = committed[tp].offset
        partitions.append(
            {
                "topic": tp.topic,
                "partition": tp.partition,
                "committed_offset": offset,
                "end_offset": end,
                "lag": max(0, end - offset) if end is not None and offset is not None and offset >= 0 else None,
            }
        )
    return {
        "group_id": group_id,
        "state": description.get("group_state", "Unknown"),
        "members": [
            {
                "member_id": m["member_id"],
                "client_id": m["client_id"],
                "host": m["client_host"].lstrip("/"),
                "assignments": _assignments(m),
            }
            for m in sorted(description.get("members", []), key=lambda m: m["member_id"])
        ],
        "partitions": partitions,
        "total_lag": sum(p["lag"] or 0 for p in partitions),
    }
