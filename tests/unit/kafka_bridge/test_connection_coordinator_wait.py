"""The admin client's group calls wait out a coordinator that is not ready yet, within their
request timeout, and surface every other error at once."""

import pytest
from kafka import KafkaAdminClient
from kafka.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    GroupAuthorizationFailedError,
    NoError,
    NotCoordinatorError,
    UnknownMemberIdError,
)
from kafka.structs import TopicPartition

from kafka_bridge.connection import _AdminClient


def _admin(*, request_timeout_ms: int) -> _AdminClient:
    # The retry needs the client's configuration only; no connection is opened.
    admin = object.__new__(_AdminClient)
    admin.config = {"request_timeout_ms": request_timeout_ms}
    return admin


def _answers(*outcomes):
    calls = []

    def call(*args, **kwargs):
        calls.append((args, kwargs))
        outcome = outcomes[min(len(calls), len(outcomes)) - 1]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    return call, calls


def test_a_coordinator_not_ready_is_asked_again_until_it_answers():
    call, calls = _answers(
        CoordinatorNotAvailableError("creating"), CoordinatorLoadInProgressError("loading"), {"g": {}}
    )

    result = _admin(request_timeout_ms=10_000)._when_coordinator_ready(call, {"g": None}, timeout=1)

    assert result == {"g": {}}
    assert calls == [(({"g": None},), {"timeout": 1})] * 3


def test_a_coordinator_never_ready_surfaces_its_error_after_the_request_timeout():
    call, calls = _answers(CoordinatorNotAvailableError("still creating"))

    with pytest.raises(CoordinatorNotAvailableError, match="still creating"):
        _admin(request_timeout_ms=200)._when_coordinator_ready(call)

    # 50 + 100 ms of backoff fit in 200 ms, the next 200 ms would not: three calls (two on a
    # machine stalled for a while between them), never one and never a fourth.
    assert 2 <= len(calls) <= 3


def test_any_other_error_is_raised_at_the_first_answer():
    call, calls = _answers(GroupAuthorizationFailedError("denied"))

    with pytest.raises(GroupAuthorizationFailedError):
        _admin(request_timeout_ms=10_000)._when_coordinator_ready(call)

    assert len(calls) == 1


@pytest.mark.parametrize(
    "method", ["list_groups", "describe_groups", "list_group_offsets", "alter_group_offsets", "delete_groups"]
)
def test_every_group_call_waits_for_a_coordinator_loading_its_groups(method, monkeypatch):
    call, calls = _answers(CoordinatorLoadInProgressError("loading"), {"answer": NoError})
    monkeypatch.setattr(KafkaAdminClient, method, lambda self, *args, **kwargs: call(*args, **kwargs))

    assert getattr(_admin(request_timeout_ms=10_000), method)("g") == {"answer": NoError}
    assert len(calls) == 2


def test_an_offsets_change_failed_on_every_partition_by_a_coordinator_not_ready_is_made_again(monkeypatch):
    partitions = [TopicPartition("t", 0), TopicPartition("t", 1)]
    call, calls = _answers(dict.fromkeys(partitions, NotCoordinatorError), dict.fromkeys(partitions, NoError))
    monkeypatch.setattr(KafkaAdminClient, "alter_group_offsets", lambda self, *args, **kwargs: call(*args, **kwargs))

    assert _admin(request_timeout_ms=10_000).alter_group_offsets("g", {}) == dict.fromkeys(partitions, NoError)
    assert len(calls) == 2


def test_an_offsets_change_refused_for_another_reason_is_answered_as_it_came(monkeypatch):
    answer = {TopicPartition("t", 0): UnknownMemberIdError, TopicPartition("t", 1): NotCoordinatorError}
    call, calls = _answers(answer)
    monkeypatch.setattr(KafkaAdminClient, "alter_group_offsets", lambda self, *args, **kwargs: call(*args, **kwargs))

    assert _admin(request_timeout_ms=10_000).alter_group_offsets("g", {}) == answer
    assert len(calls) == 1
