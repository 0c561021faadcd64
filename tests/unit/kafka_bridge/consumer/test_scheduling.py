"""KeyScheduler: one item per key at a time, in arrival order, and a key waiting for a retry
holds back its own items and nobody else's."""

from __future__ import annotations

import random
from collections import deque

import pytest

from kafka_bridge.consumer.scheduling import KeyScheduler


def scheduler_with(*items: tuple[str, str]) -> KeyScheduler[str]:
    scheduler: KeyScheduler[str] = KeyScheduler()
    for key, item in items:
        scheduler.add(key, item)
    return scheduler


def counters(scheduler: KeyScheduler) -> dict[str, int]:
    return {"taken": scheduler.taken, "waiting": scheduler.waiting, "queued": scheduler.queued, "len": len(scheduler)}


def test_only_the_first_item_of_a_key_is_taken_and_the_next_after_it_finished():
    scheduler = scheduler_with(("a", "a1"), ("a", "a2"), ("a", "a3"))

    assert scheduler.take(limit=10, now=0) == [("a", "a1")]
    assert scheduler.take(limit=10, now=0) == [], "a1 is being worked on: a2 must wait for it"

    scheduler.finished("a")
    assert scheduler.take(limit=10, now=0) == [("a", "a2")]
    scheduler.finished("a")
    assert scheduler.take(limit=10, now=0) == [("a", "a3")]
    scheduler.finished("a")
    assert counters(scheduler) == {"taken": 0, "waiting": 0, "queued": 0, "len": 0}


def test_different_keys_are_taken_together():
    scheduler = scheduler_with(("a", "a1"), ("b", "b1"), ("a", "a2"), ("c", "c1"))

    assert scheduler.take(limit=10, now=0) == [("a", "a1"), ("b", "b1"), ("c", "c1")]
    assert counters(scheduler) == {"taken": 3, "waiting": 0, "queued": 1, "len": 4}


def test_limit_caps_how_many_are_taken():
    scheduler = scheduler_with(("a", "a1"), ("b", "b1"), ("c", "c1"))

    assert scheduler.take(limit=0, now=0) == []
    assert scheduler.take(limit=2, now=0) == [("a", "a1"), ("b", "b1")]
    assert scheduler.take(limit=2, now=0) == [("c", "c1")]


def test_the_key_ready_longest_is_taken_first():
    scheduler = scheduler_with(("a", "a1"), ("a", "a2"), ("b", "b1"), ("c", "c1"))
    assert scheduler.take(limit=1, now=0) == [("a", "a1")]

    # a2 became ready after b1 and c1 did: it queues behind them.
    scheduler.finished("a")

    assert scheduler.take(limit=3, now=0) == [("b", "b1"), ("c", "c1"), ("a", "a2")]


def test_finishing_a_key_that_is_not_taken_changes_nothing():
    scheduler = scheduler_with(("a", "a1"), ("a", "a2"))

    scheduler.finished("a")
    scheduler.finished("zzz")

    assert scheduler.take(limit=10, now=0) == [("a", "a1")]
    assert counters(scheduler) == {"taken": 1, "waiting": 0, "queued": 1, "len": 2}


def test_a_retried_key_holds_its_later_items_until_due_and_no_other_key():
    scheduler = scheduler_with(("a", "a1"), ("a", "a2"), ("b", "b1"), ("b", "b2"))
    assert scheduler.take(limit=10, now=0) == [("a", "a1"), ("b", "b1")]

    scheduler.retry_at("a", 5.0)
    scheduler.finished("b")

    assert counters(scheduler) == {"taken": 0, "waiting": 1, "queued": 3, "len": 3}
    assert scheduler.take(limit=10, now=4.999) == [("b", "b2")]
    assert not scheduler.has_ready(4.999)
    assert scheduler.take(limit=10, now=5.0) == [("a", "a1")], "the same item again, not a2"
    assert scheduler.waiting == 0
    scheduler.finished("a")
    assert scheduler.take(limit=10, now=5.0) == [("a", "a2")]


def test_items_added_to_a_waiting_key_wait_with_it():
    scheduler = scheduler_with(("a", "a1"))
    scheduler.take(limit=10, now=0)
    scheduler.retry_at("a", 3.0)

    scheduler.add("a", "a2")
    scheduler.add("b", "b1")

    assert scheduler.take(limit=10, now=1.0) == [("b", "b1")]
    assert scheduler.take(limit=10, now=3.0) == [("a", "a1")]


def test_retry_at_for_a_key_not_taken_is_ignored():
    scheduler = scheduler_with(("a", "a1"))

    scheduler.retry_at("a", 100.0)

    assert scheduler.next_due() is None
    assert scheduler.take(limit=10, now=0) == [("a", "a1")]


def test_retry_now_puts_the_item_back_ahead_of_the_other_ready_keys():
    scheduler = scheduler_with(("a", "a1"), ("a", "a2"), ("b", "b1"), ("c", "c1"))
    assert scheduler.take(limit=1, now=0) == [("a", "a1")]

    scheduler.retry_now("a")

    assert counters(scheduler) == {"taken": 0, "waiting": 0, "queued": 4, "len": 4}
    assert scheduler.next_due() is None
    assert scheduler.take(limit=2, now=0) == [("a", "a1"), ("b", "b1")]


def test_next_due_is_the_earliest_retry():
    scheduler = scheduler_with(("a", "a1"), ("b", "b1"), ("c", "c1"))
    assert scheduler.next_due() is None
    scheduler.take(limit=10, now=0)

    scheduler.retry_at("a", 9.0)
    scheduler.retry_at("b", 4.0)
    scheduler.retry_at("c", 6.0)

    assert scheduler.next_due() == 4.0
    assert scheduler.take(limit=10, now=4.0) == [("b", "b1")]
    assert scheduler.next_due() == 6.0
    scheduler.drop(lambda key: key == "c")
    assert scheduler.next_due() == 9.0
    scheduler.take(limit=10, now=9.0)
    assert scheduler.next_due() is None


def test_drop_forgets_matching_keys_whatever_their_state_and_keeps_the_counters_right():
    scheduler: KeyScheduler[str] = KeyScheduler()
    # Keys are (partition, key); partition "gone" is revoked.
    for key, count in [
        (("gone", "taken"), 3),
        (("gone", "waiting"), 2),
        (("gone", "ready"), 2),
        (("kept", "taken"), 2),
        (("kept", "waiting"), 1),
        (("kept", "ready"), 1),
    ]:
        for n in range(count):
            scheduler.add(key, f"{key[1]}-{n}")
    taken = scheduler.take(limit=4, now=0)
    assert [key for key, _ in taken] == [("gone", "taken"), ("gone", "waiting"), ("gone", "ready"), ("kept", "taken")]
    scheduler.retry_now(("gone", "ready"))
    assert scheduler.take(limit=2, now=0) == [(("gone", "ready"), "ready-0"), (("kept", "waiting"), "waiting-0")]
    scheduler.retry_now(("gone", "ready"))
    scheduler.retry_at(("gone", "waiting"), 5.0)
    scheduler.retry_at(("kept", "waiting"), 7.0)
    assert counters(scheduler) == {"taken": 2, "waiting": 2, "queued": 9, "len": 11}

    let_go: list[str] = []
    dropped = scheduler.drop(lambda key: key[0] == "gone", on_drop=let_go.append)

    assert dropped == 7
    # Every dropped item but the one taken (its call is its caller's to let go).
    assert sorted(let_go) == ["ready-0", "ready-1", "taken-1", "taken-2", "waiting-0", "waiting-1"]
    assert counters(scheduler) == {"taken": 1, "waiting": 1, "queued": 3, "len": 4}
    assert scheduler.next_due() == 7.0
    # The dropped taken key's call comes back after the drop: nothing of it is left to finish.
    scheduler.finished(("gone", "taken"))
    scheduler.retry_at(("gone", "taken"), 1.0)
    assert counters(scheduler) == {"taken": 1, "waiting": 1, "queued": 3, "len": 4}
    assert scheduler.take(limit=10, now=100.0) == [(("kept", "ready"), "ready-0"), (("kept", "waiting"), "waiting-0")]
    scheduler.finished(("kept", "taken"))
    assert scheduler.take(limit=10, now=100.0) == [(("kept", "taken"), "taken-1")]


def test_drop_without_a_match_changes_nothing():
    scheduler = scheduler_with(("a", "a1"), ("b", "b1"))
    scheduler.take(limit=1, now=0)

    assert scheduler.drop(lambda key: key == "zzz") == 0

    assert counters(scheduler) == {"taken": 1, "waiting": 0, "queued": 1, "len": 2}
    assert scheduler.take(limit=10, now=0) == [("b", "b1")]


def test_a_key_dropped_and_added_again_is_not_woken_by_its_old_timer():
    scheduler = scheduler_with(("a", "old"))
    scheduler.take(limit=10, now=0)
    scheduler.retry_at("a", 5.0)
    scheduler.drop(lambda key: key == "a")

    scheduler.add("a", "new")
    assert scheduler.take(limit=10, now=0) == [("a", "new")]
    scheduler.retry_at("a", 20.0)

    assert scheduler.next_due() == 20.0
    assert scheduler.take(limit=10, now=10.0) == [], "the old timer (5.0) belongs to the dropped key"
    assert counters(scheduler) == {"taken": 0, "waiting": 1, "queued": 1, "len": 1}
    assert scheduler.take(limit=10, now=20.0) == [("a", "new")]


def test_a_key_dropped_and_added_again_while_taken_is_not_taken_twice_by_its_old_timer():
    scheduler = scheduler_with(("a", "old"))
    scheduler.take(limit=10, now=0)
    scheduler.retry_at("a", 5.0)
    scheduler.drop(lambda key: key == "a")
    scheduler.add("a", "new")
    scheduler.add("a", "newer")

    assert scheduler.take(limit=10, now=0) == [("a", "new")]
    assert scheduler.take(limit=10, now=10.0) == []
    assert counters(scheduler) == {"taken": 1, "waiting": 0, "queued": 1, "len": 2}


@pytest.mark.parametrize("seed", range(25))
def test_a_random_run_finishes_every_key_in_arrival_order_one_at_a_time(seed):
    rng = random.Random(seed)
    keys = [f"k{n}" for n in range(6)]
    scheduler: KeyScheduler[tuple[str, int]] = KeyScheduler()
    added: dict[str, list[tuple[str, int]]] = {key: [] for key in keys}
    unfinished: dict[str, deque[tuple[str, int]]] = {key: deque() for key in keys}
    finished: dict[str, list[tuple[str, int]]] = {key: [] for key in keys}
    in_flight: dict[str, tuple[str, int]] = {}
    # Keys waiting for a retry, and when it is due; a take() at or after that wakes them.
    due: dict[str, float] = {}
    now = 0.0
    serial = 0

    def check_counters() -> None:
        assert scheduler.taken == len(in_flight)
        assert scheduler.waiting == len(due)
        assert len(scheduler) == sum(len(queue) for queue in unfinished.values())
        assert scheduler.queued == len(scheduler) - scheduler.taken

    for _ in range(400):
        for _ in range(rng.randrange(3)):
            key = rng.choice(keys)
            serial += 1
            item = (key, serial)
            scheduler.add(key, item)
            added[key].append(item)
            unfinished[key].append(item)

        for key, item in scheduler.take(limit=rng.randrange(1, 4), now=now):
            assert key not in in_flight, f"two items of {key} taken at once"
            assert item == unfinished[key][0], f"{item} taken before {unfinished[key][0]}"
            assert due.get(key, now) <= now, f"{key} taken before its retry was due"
            in_flight[key] = item
        due = {key: moment for key, moment in due.items() if moment > now}

        for key in rng.sample(sorted(in_flight), k=len(in_flight)):
            outcome = rng.random()
            if outcome < 0.4:
                scheduler.finished(key)
                finished[key].append(unfinished[key].popleft())
                del in_flight[key]
            elif outcome < 0.55:
                due[key] = now + rng.choice([0.5, 1.0, 3.0])
                scheduler.retry_at(key, due[key])
                del in_flight[key]
            elif outcome < 0.6:
                scheduler.retry_now(key)
                del in_flight[key]
        check_counters()
        now += rng.choice([0.0, 0.25, 0.5])

    # Whatever is left finishes once its retries are due.
    while len(scheduler):
        taken = scheduler.take(limit=100, now=now + 1000)
        assert taken or in_flight, "items left that nothing will ever take"
        for key, item in taken:
            assert key not in in_flight and item == unfinished[key][0]
            in_flight[key] = item
        due.clear()
        for key in list(in_flight):
            scheduler.finished(key)
            finished[key].append(unfinished[key].popleft())
            del in_flight[key]
        check_counters()

    assert finished == added
    assert sum(len(items) for items in added.values()) > 100
