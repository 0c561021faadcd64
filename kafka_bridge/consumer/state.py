"""Each running consumer's `ConsumerLoop.status()`, kept in the database so that the web
process (the admin's Kafka status page) can show what the consumer processes hold.

A consumer records its status about once a second and forgets it on a clean stop; a consumer
that crashed stops reporting, and its row ages out of what `consumer_states` returns.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from datetime import timedelta

from django.db.models import DurationField, ExpressionWrapper, F
from django.db.models.functions import Now

from kafka_bridge.models import ConsumerState

# A consumer reports once a second; a row this much older belongs to a consumer that is gone.
DEFAULT_MAX_AGE_SECONDS = 30.0


def consumer_member_name(name: str) -> str:
    """The member name of this process's consumer `name`: "<name>@<host>:<pid>"."""
    return f"{name}@{socket.gethostname()}:{os.getpid()}"


def consumer_state_record(*, member: str, state: dict) -> None:
    """Record `state` (a `ConsumerLoop.status()`) as `member`'s latest status."""
    fields = {"group_id": state.get("group_id") or "", "state": state, "updated_at": Now()}
    # One UPDATE a second in the steady state; the INSERT happens once per process. Only this
    # process writes its member's row, so no other writer can slip in between the two.
    if not ConsumerState.objects.filter(member=member).update(**fields):
        ConsumerState.objects.create(member=member, **fields)


def consumer_state_forget(*, member: str) -> None:
    """Remove `member`'s row: it stopped cleanly and holds nothing any more."""
    ConsumerState.objects.filter(member=member).delete()


def consumer_states_by_group(
    *, group_ids: Iterable[str], max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS
) -> dict[str, list[dict]]:
    """`consumer_states` for several groups in one query: {group_id: [state, ...]}, every
    group named present (with [] when none of its members reported lately)."""
    group_ids = list(group_ids)
    found: dict[str, list[dict]] = {group_id: [] for group_id in group_ids}
    if not group_ids:
        return found
    rows = (
        ConsumerState.objects.filter(group_id__in=group_ids, updated_at__gte=Now() - timedelta(seconds=max_age_seconds))
        # The age by the same clock that set updated_at (the database's).
        .annotate(age=ExpressionWrapper(Now() - F("updated_at"), output_field=DurationField()))
        .order_by("group_id", "member")
    )
    for row in rows:
        found[row.group_id].append(
            {
                **row.state,
                "member": row.member,
                "group_id": row.group_id,
                "updated_at": row.updated_at,
                "age_seconds": max(0.0, row.age.total_seconds()),
            }
        )
    return found


def consumer_states(*, group_id: str, max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS) -> list[dict]:
    """The members of `group_id` that reported within `max_age_seconds`, by member name: each
    its `ConsumerLoop.status()` plus `member`, `updated_at` and `age_seconds`."""
    return consumer_states_by_group(group_ids=[group_id], max_age_seconds=max_age_seconds)[group_id]
