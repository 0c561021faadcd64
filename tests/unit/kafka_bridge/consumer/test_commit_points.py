"""OffsetTracker: the committed offset of a partition never passes a record that is not done
with, however out of order the records finish."""

from __future__ import annotations

import random

import pytest

from kafka_bridge.consumer.commit_points import OffsetTracker


def tracker_with(partition: str, offsets: list[int]) -> OffsetTracker:
    tracker = OffsetTracker()
    for offset in offsets:
        tracker.received(partition, offset)
    return tracker


def test_nothing_is_to_commit_before_a_record_arrived():
    tracker = OffsetTracker()

    assert tracker.commit_point("p0") is None
    assert tracker.to_commit() == {}
    assert (tracker.uncommitted("p0"), tracker.done_ahead("p0")) == (0, 0)


def test_the_commit_point_is_the_first_received_record_not_done():
    tracker = tracker_with("p0", [10, 11, 12])

    assert tracker.commit_point("p0") == 10
    tracker.done("p0", 10)
    assert tracker.commit_point("p0") == 11


def test_records_done_out_of_order_hold_the_commit_point_until_the_earliest_is_done():
    tracker = tracker_with("p0", [10, 11, 12, 13])

    tracker.done("p0", 12)
    tracker.done("p0", 11)
    assert tracker.commit_point("p0") == 10, "11 and 12 are done, 10 is not: a crash must read 10 again"

    tracker.done("p0", 10)
    assert tracker.commit_point("p0") == 13


def test_once_every_record_is_done_the_commit_point_is_the_offset_after_the_last():
    tracker = tracker_with("p0", [10, 11, 12])

    for offset in (12, 10, 11):
        tracker.done("p0", offset)

    assert tracker.commit_point("p0") == 13
    assert tracker.uncommitted("p0") == 0


def test_gaps_in_the_offsets_are_skipped_over():
    # Compaction and transaction markers leave offsets that are never handed out.
    tracker = tracker_with("p0", [10, 14, 15])

    tracker.done("p0", 10)
    assert tracker.commit_point("p0") == 14
    tracker.done("p0", 15)
    tracker.done("p0", 14)
    assert tracker.commit_point("p0") == 16


def test_partitions_are_tracked_apart():
    tracker = OffsetTracker()
    tracker.received("p0", 5)
    tracker.received("p1", 50)
    tracker.received("p1", 51)

    tracker.done("p1", 50)

    assert tracker.commit_point("p0") == 5
    assert tracker.commit_point("p1") == 51
    assert sorted(tracker.partitions()) == ["p0", "p1"]


def test_to_commit_reports_only_the_partitions_whose_commit_point_moved_since_the_last_commit():
    tracker = OffsetTracker()
    for partition in ("p0", "p1"):
        tracker.received(partition, 0)
        tracker.received(partition, 1)
    assert tracker.to_commit() == {"p0": 0, "p1": 0}
    tracker.committed({"p0": 0, "p1": 0})
    assert tracker.to_commit() == {}

    tracker.done("p0", 0)
    assert tracker.to_commit() == {"p0": 1}
    tracker.done("p1", 1)
    assert tracker.to_commit() == {"p0": 1}, "p1's record 0 is not done: its commit point did not move"

    tracker.committed({"p0": 1})
    assert tracker.to_commit() == {}
    tracker.done("p1", 0)
    assert tracker.to_commit() == {"p1": 2}


def test_a_commit_that_was_not_acknowledged_is_reported_again():
    tracker = tracker_with("p0", [0])
    tracker.done("p0", 0)

    assert tracker.to_commit() == {"p0": 1}
    # `committed()` is only called once the broker took the commit.
    assert tracker.to_commit() == {"p0": 1}


def test_uncommitted_counts_the_records_a_crash_would_hand_out_again():
    tracker = tracker_with("p0", [0, 1, 2, 3, 4])

    tracker.done("p0", 2)
    tracker.done("p0", 4)
    assert tracker.uncommitted("p0") == 5
    assert tracker.done_ahead("p0") == 2

    tracker.done("p0", 0)
    assert tracker.uncommitted("p0") == 4
    assert tracker.done_ahead("p0") == 2

    tracker.done("p0", 1)
    assert (tracker.commit_point("p0"), tracker.uncommitted("p0"), tracker.done_ahead("p0")) == (3, 2, 1)


def test_forget_drops_a_partition_entirely():
    tracker = tracker_with("p0", [0, 1])
    tracker.received("p1", 7)
    tracker.done("p0", 1)

    tracker.forget(["p0"])

    assert tracker.commit_point("p0") is None
    assert (tracker.uncommitted("p0"), tracker.done_ahead("p0")) == (0, 0)
    assert tracker.partitions() == ["p1"]
    assert tracker.to_commit() == {"p1": 7}


def test_forgetting_a_partition_never_seen_is_harmless():
    tracker = tracker_with("p0", [3])

    tracker.forget(["p9"])

    assert tracker.commit_point("p0") == 3


def test_a_late_done_for_a_forgotten_partition_is_ignored():
    tracker = tracker_with("p0", [0, 1])
    tracker.forget(["p0"])

    tracker.done("p0", 0)

    # Its new owner commits from the last commit; nothing here may report an offset for it.
    assert tracker.partitions() == []
    assert tracker.commit_point("p0") is None
    assert tracker.to_commit() == {}


def test_a_committed_offset_for_a_forgotten_partition_is_ignored():
    tracker = tracker_with("p0", [0])
    tracker.forget(["p0"])

    tracker.committed({"p0": 1})

    assert tracker.partitions() == []


def test_a_partition_received_again_after_forget_starts_afresh():
    tracker = tracker_with("p0", [0, 1, 2])
    tracker.done("p0", 2)
    tracker.committed({"p0": 0})
    tracker.forget(["p0"])

    tracker.received("p0", 0)

    assert tracker.commit_point("p0") == 0
    assert tracker.done_ahead("p0") == 0
    assert tracker.to_commit() == {"p0": 0}, "what was committed before the forget is the old assignment's"


@pytest.mark.parametrize("seed", range(20))
def test_the_commit_point_matches_a_brute_force_model(seed):
    rng = random.Random(seed)
    partitions = ["p0", "p1", "p2"]
    tracker = OffsetTracker()
    next_offset = {partition: rng.randrange(0, 1000) for partition in partitions}
    received: dict[str, list[int]] = {partition: [] for partition in partitions}
    done: dict[str, set[int]] = {partition: set() for partition in partitions}
    committed: dict[str, int] = {}

    def expected_point(partition: str) -> int | None:
        if not received[partition]:
            return None
        pending = [offset for offset in received[partition] if offset not in done[partition]]
        return min(pending) if pending else received[partition][-1] + 1

    for _ in range(600):
        partition = rng.choice(partitions)
        not_done = [offset for offset in received[partition] if offset not in done[partition]]
        action = rng.random()
        if action < 0.45 or not not_done:
            # Offsets with gaps, as compaction leaves them.
            offset = next_offset[partition]
            next_offset[partition] += rng.choice([1, 1, 1, 2, 5])
            received[partition].append(offset)
            tracker.received(partition, offset)
        elif action < 0.9:
            offset = rng.choice(not_done)
            done[partition].add(offset)
            tracker.done(partition, offset)
        else:
            offsets = tracker.to_commit()
            assert offsets == {
                p: expected_point(p)
                for p in partitions
                if expected_point(p) is not None and expected_point(p) != committed.get(p)
            }
            tracker.committed(offsets)
            committed.update(offsets)

        for p in partitions:
            assert tracker.commit_point(p) == expected_point(p)
            point = expected_point(p)
            at_or_past = [offset for offset in received[p] if point is not None and offset >= point]
            assert tracker.uncommitted(p) == len(at_or_past)
            assert tracker.done_ahead(p) == len([offset for offset in at_or_past if offset in done[p]])


def test_the_consumers_position_past_a_transaction_marker_moves_the_commit_point_once_all_is_done():
    # Records 10 and 11 of a transaction, its commit marker at 12: the consumer's position is 13.
    tracker = tracker_with("p0", [10, 11])
    tracker.passed("p0", 13)
    assert tracker.commit_point("p0") == 10  # not while a record before it is not done
    tracker.done("p0", 11)
    assert tracker.settled() == []
    tracker.done("p0", 10)
    assert tracker.settled() == ["p0"]

    tracker.passed("p0", 13)

    assert tracker.commit_point("p0") == 13
    tracker.passed("p0", 12)  # never backwards
    assert tracker.commit_point("p0") == 13
    tracker.received("p0", 14)  # the next transaction
    assert tracker.commit_point("p0") == 14
    assert tracker.settled() == []


def test_a_partition_never_received_from_is_not_passed():
    tracker = OffsetTracker()
    tracker.passed("p0", 5)
    assert tracker.commit_point("p0") is None
    assert tracker.settled() == []
