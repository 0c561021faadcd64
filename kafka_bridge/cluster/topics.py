"""Creating and growing topics. A partition count can rise but never fall: Kafka cannot remove
partitions, and lowering would move keys between partitions and break per-key order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from kafka.errors import TopicAlreadyExistsError

from kafka_bridge.connection import KafkaBridgeError, admin_client


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int
    # Topic-level configs set at creation (an existing topic's are left as they are).
    configs: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicChange:
    name: str
    action: Literal["created", "grown", "unchanged"]
    partitions: int
    partitions_before: int | None = None

    def __str__(self) -> str:
        if self.action == "created":
            return f"{self.name}: created with {self.partitions} partition(s)"
        if self.action == "grown":
            return f"{self.name}: grown from {self.partitions_before} to {self.partitions} partition(s)"
        return f"{self.name}: unchanged, {self.partitions} partition(s)"


# The broker's default record batch limit is about 1 MiB; a dead letter carries the record and
# its headers, so its topic takes four times that.
DLT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class PartitionShrinkRefused(KafkaBridgeError):
    """A topic has more partitions than requested; Kafka cannot lower the count."""


def _partition_counts(admin, names: Sequence[str]) -> dict[str, int]:
    return {
        topic["name"]: len(topic["partitions"])
        for topic in admin.describe_topics(list(names))
        if topic["error_code"] == 0
    }


def topics_ensure(*, specs: Sequence[TopicSpec]) -> list[TopicChange]:
    """Create missing topics and grow existing ones to the requested partition count.

    Idempotent. Refuses, before changing anything, when any topic would have to shrink.
    """
    with admin_client() as admin:
        existing = _partition_counts(admin, [spec.name for spec in specs])
        for spec in specs:
            current = existing.get(spec.name)
            if current is not None and current > spec.partitions:
                raise PartitionShrinkRefused(
                    f"topic {spec.name} has {current} partitions; asked for {spec.partitions}, "
                    "but Kafka can only add partitions, never remove them"
                )

        changes: list[TopicChange] = []
        for spec in specs:
            current = existing.get(spec.name)
            if current is None:
                changes.append(_create(admin, spec))
            elif current < spec.partitions:
                admin.create_partitions({spec.name: spec.partitions})
                changes.append(TopicChange(spec.name, "grown", spec.partitions, partitions_before=current))
            else:
                changes.append(TopicChange(spec.name, "unchanged", current))
        return changes


def _create(admin, spec: TopicSpec) -> TopicChange:
    try:
        admin.create_topics(
            {
                spec.name: {
                    "num_partitions": spec.partitions,
                    "replication_factor": spec.replication_factor,
                    **({"configs": spec.configs} if spec.configs else {}),
                }
            },
            wait_for_metadata=True,
        )
    except TopicAlreadyExistsError:
        # Another process created it between our describe and create: that is the goal reached.
        return TopicChange(spec.name, "unchanged", _partition_counts(admin, [spec.name])[spec.name])
    return TopicChange(spec.name, "created", spec.partitions)
