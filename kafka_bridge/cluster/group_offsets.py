"""Moving a consumer group's committed offsets on a topic: to the beginning, to the end, or to the
first record at or after a point in time. What `kafka-consumer-groups.sh --reset-offsets` does,
through the project's admin client.

A reset is only safe while nobody consumes in the group: a live member would commit over it
with its next batch. So it is refused while the group has members, and the broker refuses the
commit too should a member join between the check and the write.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from kafka import KafkaAdminClient, TopicPartition
from kafka.errors import KafkaError, NoError
from kafka.protocol.consumer import OffsetSpec, OffsetTimestamp
from kafka.structs import OffsetAndMetadata

from kafka_bridge.connection import KafkaBridgeError, admin_client

ResetTarget = Literal["earliest", "latest"] | datetime

# Group states in which no consumer holds partitions: Empty (members left, offsets kept) and
# Dead (no such group yet, or deleted).
INACTIVE_STATES = frozenset({"Empty", "Dead"})


class GroupActive(KafkaBridgeError):
    """The group has members; its offsets cannot be reset under them."""


class TopicMissing(KafkaBridgeError):
    """The topic does not exist on the cluster."""


class OffsetResetFailed(KafkaBridgeError):
    """The broker refused the new offsets of some partitions."""


@dataclass(frozen=True)
class OffsetMove:
    topic: str
    partition: int
    old: int | None  # None: the group had committed nothing on this partition
    new: int

    def __str__(self) -> str:
        old = "(none)" if self.old is None else str(self.old)
        return f"{self.topic}[{self.partition}]: {old} -> {self.new}"


@dataclass(frozen=True)
class OffsetReset:
    group: str
    topic: str
    target: str
    moves: list[OffsetMove]
    applied: bool

    @property
    def changed(self) -> int:
        return sum(1 for move in self.moves if move.old != move.new)

    def summary(self) -> str:
        where = f"group {self.group} on {self.topic} to {self.target}"
        if self.applied:
            return f"reset {where}: {self.changed} of {len(self.moves)} partition(s) moved"
        return f"dry run: would reset {where}: {self.changed} of {len(self.moves)} partition(s) would move; nothing changed"


def target_describe(target: ResetTarget) -> str:
    return target.isoformat() if isinstance(target, datetime) else target


def group_offsets_reset(
    *,
    group: str,
    topic: str,
    target: ResetTarget,
    dry_run: bool = False,
    timeout_ms: int | None = None,
) -> OffsetReset:
    """Move `group`'s committed offsets on every partition of `topic` to `target` (commit
    them unless `dry_run`). A datetime resolves per partition to the first record at or after
    it, or to the end offset when there is none. Raises `GroupActive` while the group has
    members (dry run included), `TopicMissing`, `OffsetResetFailed`, `BrokerUnavailable`."""
    if isinstance(target, datetime) and target.utcoffset() is None:
        raise ValueError(f"{target.isoformat()} has no timezone")
    if not isinstance(target, datetime) and target not in ("earliest", "latest"):
        raise ValueError(f"unknown reset target {target!r}")

    with admin_client(timeout_ms=timeout_ms) as admin:
        try:
            group_inactive_ensure(admin=admin, group=group)
            partitions = _partitions(admin, topic)
            committed = admin.list_group_offsets({group: partitions})[group]
            new_offsets = _resolve(admin, partitions, target)
            moves = [
                OffsetMove(
                    topic=tp.topic,
                    partition=tp.partition,
                    old=_committed_offset(committed.get(tp)),
                    new=new_offsets[tp],
                )
                for tp in partitions
            ]
            if not dry_run:
                results = admin.alter_group_offsets(
                    group, {tp: OffsetAndMetadata(new_offsets[tp], "", None) for tp in partitions}
                )
                _raise_on_errors(group, results)
        except KafkaError as exc:
            raise OffsetResetFailed(
                f"resetting group {group} on {topic} failed: {type(exc).__name__}: {exc}".splitlines()[0]
            ) from exc
    return OffsetReset(group=group, topic=topic, target=target_describe(target), moves=moves, applied=not dry_run)


def group_inactive_ensure(*, admin: KafkaAdminClient, group: str) -> None:
    """Raise `GroupActive` unless `group` has no members (state Empty, or Dead: unknown)."""
    description = admin.describe_groups([group])[group]
    members = description.get("members") or []
    state = description.get("group_state", "Unknown")
    if members or state not in INACTIVE_STATES:
        raise GroupActive(
            f"refused: consumer group {group} has {len(members)} active member(s) (state {state}); "
            "stop its consumers first, offsets unchanged"
        )


def _partitions(admin: KafkaAdminClient, topic: str) -> list[TopicPartition]:
    [described] = admin.describe_topics([topic])
    if described["error_code"] != 0 or not described["partitions"]:
        raise TopicMissing(f"topic {topic} does not exist")
    return sorted(TopicPartition(topic, p["partition_index"]) for p in described["partitions"])


def _resolve(
    admin: KafkaAdminClient, partitions: list[TopicPartition], target: ResetTarget
) -> dict[TopicPartition, int]:
    """The offset each partition moves to, within its [earliest, latest] range."""
    earliest = _list_offsets(admin, partitions, OffsetSpec.EARLIEST)
    latest = _list_offsets(admin, partitions, OffsetSpec.LATEST)
    if target == "earliest":
        return earliest
    if target == "latest":
        return latest
    # Before 1970 means "from the beginning"; a negative timestamp would be read as a spec.
    millis = max(0, int(target.timestamp() * 1000))
    found = _list_offsets(admin, partitions, OffsetTimestamp(millis))
    # No record at or after the time: the broker answers -1, which means "the end".
    return {tp: latest[tp] if found[tp] < 0 else min(max(found[tp], earliest[tp]), latest[tp]) for tp in partitions}


def _list_offsets(admin: KafkaAdminClient, partitions: list[TopicPartition], spec: int) -> dict[TopicPartition, int]:
    return {tp: found.offset for tp, found in admin.list_partition_offsets(dict.fromkeys(partitions, spec)).items()}


def _committed_offset(meta: OffsetAndMetadata | None) -> int | None:
    return meta.offset if meta is not None and meta.offset >= 0 else None


def _raise_on_errors(group: str, results: dict[TopicPartition, type[KafkaError]]) -> None:
    failed = {tp: error for tp, error in results.items() if error is not NoError}
    if not failed:
        return
    names = ", ".join(f"{tp.topic}[{tp.partition}] {error.__name__}" for tp, error in sorted(failed.items()))
    # UnknownMemberId / IllegalGeneration: a consumer joined after the check; the broker keeps
    # the live group's offsets, so nothing was overwritten under it.
    raise OffsetResetFailed(f"the broker refused new offsets for group {group}: {names}")
