"""What long-running processes share: the garbage collector settled once the loop is built."""

from __future__ import annotations

import gc

import pytest

from kafka_bridge.runner import YOUNG_GENERATION_THRESHOLD, garbage_collector_settle


@pytest.fixture
def restored_collector():
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settling_freezes_what_is_alive_and_collects_the_young_generation_less_often(restored_collector):
    older, oldest = gc.get_threshold()[1:]
    alive_before = [object() for _ in range(10)]

    garbage_collector_settle()

    assert gc.get_freeze_count() >= len(alive_before), "what was alive is out of the collector's reach"
    assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, older, oldest)


def test_cycles_made_after_settling_are_still_collected(restored_collector):
    garbage_collector_settle()

    class Node:
        pass

    first, second = Node(), Node()
    first.other, second.other = second, first
    del first, second

    assert gc.collect() >= 2
