"""The "publishing switched off" recorder: `DOMAIN_EVENT_RECORDER = "bench.noop.noop_record"`.

It drops the event, so a confirm is the status change alone: no outbox row, no on-commit send.
(`KAFKA_PUBLISH_ON_COMMIT=false` is a different thing, measured as "outbox only": it still
writes the outbox row and only skips the send.)
"""

from __future__ import annotations

NOOP_RECORDER = "bench.noop.noop_record"


def noop_record(*, event) -> None:
    """Record nothing."""
    return None
