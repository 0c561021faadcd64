"""The transactional outbox: events are written with the change that caused them and sent to
Kafka after the commit.

`outbox_insert` writes an event's row for the recorder that an app registers for its events
(`kafka_bridge.outbox.recorder`). It knows nothing of what an event means: it needs `event_id`,
`event_type`, `key` and `to_dict()`, and finds the topic that an app registered for the event
type (`kafka_bridge.registry`).

Every write to `OutboxEvent` lives here: insert, claim, release, mark sent, mark failed, mark
refused (and quarantine), resend, purge. The producer and the relay decide what happened to a
send; this module decides what that means for the row. It sends nothing itself, so the
producer, which writes its outcomes here, builds on it and not the other way round.

What happens to a send, and to its row:

- acknowledged: `sent_at` (the database's clock), partition and offset are set, once. A row that
  is already marked is never marked again, so a late or repeated acknowledgement cannot move a
  row's place on the topic.
- failed for the broker's reason (unreachable, timed out, not enough replicas, a topic that
  does not exist yet): `attempts` + 1 and `last_error`; the row is sent again, without limit.
- refused for a reason of the record's own (see `kafka_bridge.send_failures.send_failure_kind`):
  `attempts` + 1, `refusals` + 1 and `last_error`; at `OUTBOX_QUARANTINE_ATTEMPTS` refusals the
  row is quarantined: it keeps its reason in `last_error`, is no longer sent or counted as
  backlog, and waits for an operator (the admin's release action, or `outbox_resend`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, NamedTuple, Protocol
from uuid import UUID

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Min, Q, QuerySet, When
from django.db.models.functions import Now
from django.utils import timezone

from kafka_bridge.models import OutboxEvent
from kafka_bridge.registry import event_topic
from kafka_bridge.tracing import message_create_headers


class DomainEvent(Protocol):
    event_id: UUID
    event_type: str

    @property
    def key(self) -> str | None: ...

    def to_dict(self) -> dict[str, Any]: ...


class SentMark(NamedTuple):
    """An acknowledged send of row `pk`, made while the row's `resends` count was `resends`."""

    pk: int
    resends: int
    partition: int
    offset: int


class SendFailure(NamedTuple):
    """A send of row `pk` that failed with `error` (one line), made under `resends`."""

    pk: int
    resends: int
    error: str


def outbox_insert(*, event: DomainEvent) -> OutboxEvent:
    """Write `event`'s row in the current transaction, unsent: a rolled-back transaction takes
    it with it. Recorded inside a trace, the row's headers carry its context too (`traceparent`,
    and `tracestate` when there is one), so that the fast path, the relay and a resend all send
    it; outside one, nothing is added."""
    topic = event_topic(event_type=event.event_type)
    key = event.key
    return OutboxEvent.objects.create(
        event_id=event.event_id,
        event_type=event.event_type,
        topic=topic,
        key=key,
        payload=json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False),
        headers=[
            ["event_type", event.event_type],
            ["event_id", str(event.event_id)],
            *message_create_headers(destination=topic, message_id=str(event.event_id), key=key),
        ],
    )


def outbox_waiting() -> QuerySet[OutboxEvent]:
    """Rows waiting to be sent: not acknowledged, not quarantined."""
    return OutboxEvent.objects.filter(sent_at__isnull=True, quarantined_at__isnull=True)


def outbox_claim(*, relay_id: str, older_than: float, limit: int, lease: float) -> list[OutboxEvent]:
    """Claim up to `limit` waiting rows, oldest first, for `relay_id` until `lease` seconds from
    now, and return them.

    Two relays never hold the same row: on PostgreSQL the candidates are locked with
    `SELECT ... FOR UPDATE SKIP LOCKED`, so a concurrent relay passes over them; on SQLite the
    IMMEDIATE transaction is a single-writer lock, so claims happen one after the other. Rows
    claimed by another relay whose claim is still running are not candidates. Per-key order
    holds across relays: a row is only claimed when every older waiting row of its key is
    claimed in the same batch.

    Quarantined rows are not waiting, so they hold back nothing, their key's later events
    included: those are sent in their order as if the quarantined event were not there. A row
    is quarantined because the broker will not take it as it is; holding its order's later
    events until an operator steps in would stall them for as long as that takes, for an
    ordering that the released event, sent after them, breaks anyway. A row refused but not yet
    quarantined is still waiting: it is claimed with its key's later rows and sent before them,
    and they go on whether or not it is refused again.
    """
    now = timezone.now()
    with transaction.atomic():
        candidates = (
            outbox_waiting()
            .filter(created_at__lte=now - timedelta(seconds=older_than))
            .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
            .order_by("id")
        )
        if connection.features.has_select_for_update_skip_locked:
            candidates = candidates.select_for_update(skip_locked=True)
        rows = list(candidates[:limit])
        if not rows:
            return []
        # Oldest waiting row of each key, whoever holds it (a plain read; it does not wait on
        # other relays' locks). A key whose oldest waiting row is not in this batch belongs to
        # another relay for now.
        keys = {row.key for row in rows if row.key is not None}
        oldest = dict(
            outbox_waiting().filter(key__in=keys).values("key").annotate(first=Min("id")).values_list("key", "first")
        )
        mine = {row.id for row in rows}
        blocked = {key for key, first in oldest.items() if first not in mine}
        rows = [row for row in rows if row.key not in blocked]
        OutboxEvent.objects.filter(pk__in=[row.pk for row in rows]).update(
            claimed_by=relay_id, claimed_until=now + timedelta(seconds=lease)
        )
    return rows


def outbox_release(*, rows: Iterable[OutboxEvent], relay_id: str | None = None) -> int:
    """Drop the claim on rows that were not sent, so the next round (of any relay) retries
    them. With `relay_id`, only where that relay still holds the claim: a claim that ran out
    and was taken over is the new holder's."""
    unsent = OutboxEvent.objects.filter(pk__in=[row.pk for row in rows], sent_at__isnull=True)
    if relay_id is not None:
        unsent = unsent.filter(claimed_by=relay_id)
    return unsent.update(claimed_by="", claimed_until=None)


def _now_sql() -> str:
    """The SQL of the database's current time, as `Now()` compiles on this connection."""
    compiler = OutboxEvent.objects.all().query.get_compiler(connection=connection)
    sql, params = compiler.compile(Now())
    assert not params
    return sql


def outbox_mark_sent(*, acked: Iterable[SentMark]) -> int:
    """Mark acknowledged sends: `sent_at` by the database's clock, the record's partition and
    offset, one more attempt, the claim dropped. Returns how many rows were marked.

    Only a row not marked yet, and not queued again since the send (`resends` unchanged), is
    marked: a second acknowledgement of the same row (the fast path's and the relay's, say)
    never moves its `sent_at`, partition or offset, and a late acknowledgement of a send made
    before an operator's resend leaves the row waiting, so the resend really happens.

    One UPDATE statement run for many rows (executemany): each row gets its own partition and
    offset, and `bulk_update`'s CASE per column would cost more to build than to run.
    """
    acked = list(acked)
    if not acked:
        return 0
    meta = OutboxEvent._meta
    quote = connection.ops.quote_name

    def column(name: str) -> str:
        return quote(meta.get_field(name).column)

    sql = (
        f"UPDATE {quote(meta.db_table)} SET {column('sent_at')} = {_now_sql()}, {column('partition')} = %s, "
        f"{column('offset')} = %s, {column('attempts')} = {column('attempts')} + 1, "
        f"{column('claimed_by')} = '', {column('claimed_until')} = NULL "
        f"WHERE {column('id')} = %s AND {column('sent_at')} IS NULL AND {column('resends')} = %s"
    )
    with connection.cursor() as cursor:
        cursor.executemany(sql, [(mark.partition, mark.offset, mark.pk, mark.resends) for mark in acked])
        return max(cursor.rowcount, 0)


def outbox_mark_failed(*, failures: Iterable[SendFailure]) -> None:
    """Count a failed send on each unsent row, with its error (one statement per error)."""
    by_error: dict[str, list[int]] = defaultdict(list)
    for failure in failures:
        by_error[failure.error].append(failure.pk)
    for error in sorted(by_error):
        OutboxEvent.objects.filter(pk__in=by_error[error], sent_at__isnull=True).update(
            attempts=F("attempts") + 1, last_error=error
        )


def outbox_mark_refused(*, refusals: Iterable[SendFailure]) -> list[int]:
    """Count a send refused for the record's own reason on each row; a row refused
    `OUTBOX_QUARANTINE_ATTEMPTS` times is quarantined (by the database's clock) with the reason
    in `last_error`. Returns the pks quarantined now.

    A refusal of a send made before the row was queued again (`resends` moved on) is not
    counted against the row: the operator's release starts a fresh count."""
    refusals = list(refusals)
    if not refusals:
        return []
    threshold = max(1, settings.OUTBOX_QUARANTINE_ATTEMPTS)
    by_error: dict[tuple[str, int], list[int]] = defaultdict(list)
    for refusal in refusals:
        by_error[(refusal.error, refusal.resends)].append(refusal.pk)
    for (error, resends), pks in sorted(by_error.items()):
        OutboxEvent.objects.filter(
            pk__in=pks, sent_at__isnull=True, quarantined_at__isnull=True, resends=resends
        ).update(
            attempts=F("attempts") + 1,
            refusals=F("refusals") + 1,
            last_error=error,
            # Compared with the count before this refusal: the UPDATE sees the old row.
            quarantined_at=Case(When(refusals__gte=threshold - 1, then=Now()), default=None),
        )
    return list(
        OutboxEvent.objects.filter(pk__in=[r.pk for r in refusals], quarantined_at__isnull=False, sent_at__isnull=True)
        .order_by("id")
        .values_list("pk", flat=True)
    )


def outbox_outcomes_record(
    *,
    acked: Iterable[SentMark] = (),
    refused: Iterable[SendFailure] = (),
    failed: Iterable[SendFailure] = (),
    relay_id: str | None = None,
    claimed: Iterable[OutboxEvent] = (),
) -> list[int]:
    """Write what happened to a set of sends in one transaction: the acknowledged marked sent,
    the refused counted (and quarantined at the limit), the failed counted; and, for a relay,
    its claim on the `claimed` rows left unsent dropped, so the next round retries them.
    Returns the pks quarantined now."""
    acked, refused, failed, claimed = list(acked), list(refused), list(failed), list(claimed)
    if not (acked or refused or failed or claimed):
        # An idle round writes nothing: on SQLite even an empty transaction takes the write lock.
        return []
    with transaction.atomic():
        outbox_mark_sent(acked=acked)
        quarantined = outbox_mark_refused(refusals=refused)
        outbox_mark_failed(failures=failed)
        if relay_id is not None and claimed:
            outbox_release(rows=claimed, relay_id=relay_id)
    return quarantined


def _requeue(rows: QuerySet[OutboxEvent]) -> int:
    return rows.update(
        sent_at=None,
        claimed_by="",
        claimed_until=None,
        last_error="",
        refusals=0,
        quarantined_at=None,
        resends=F("resends") + 1,
    )


def outbox_resend(*, event_ids) -> int:
    """Queue events for the relay again (same row, same bytes, same event id), sent or not,
    quarantined ones included (their refusal count starts afresh). An acknowledgement still on
    its way from a send before this call does not count: the event is sent again. Returns how
    many rows were found.

    With OUTBOX_PUBLISHER=debezium the publication carries INSERTs alone, so an event is
    published again by writing its row again: deleted and inserted as it was (same event id,
    topic, key, payload and headers; a new id), in one transaction."""
    rows = OutboxEvent.objects.filter(event_id__in=list(event_ids))
    if settings.OUTBOX_PUBLISHER != "debezium":
        return _requeue(rows)
    with transaction.atomic():
        found = list(rows.select_for_update().order_by("id"))
        OutboxEvent.objects.filter(pk__in=[row.pk for row in found]).delete()
        OutboxEvent.objects.bulk_create(
            OutboxEvent(
                event_id=row.event_id,
                event_type=row.event_type,
                topic=row.topic,
                key=row.key,
                payload=row.payload,
                headers=row.headers,
                created_at=row.created_at,
                resends=row.resends + 1,
            )
            for row in found
        )
    return len(found)


def outbox_quarantine_release(*, pks: Iterable[int]) -> int:
    """Give quarantined rows among `pks` another try (the admin's action); rows that are not
    quarantined are left alone. Returns how many were released."""
    return _requeue(OutboxEvent.objects.filter(pk__in=list(pks), quarantined_at__isnull=False, sent_at__isnull=True))


def outbox_purge(*, older_than, dry_run: bool = False, chunk: int = 5000) -> int:
    """Delete rows acknowledged more than `older_than` (a timedelta) ago, in chunks so no single
    transaction grows with the table. Unsent rows, quarantined ones included, are never touched.

    With OUTBOX_PUBLISHER=debezium nothing marks a row sent: rows written more than `older_than`
    ago are deleted. Debezium reads INSERTs from the write-ahead log, so deleting a row it has
    not read yet loses nothing (the publication carries no DELETE)."""
    cutoff = timezone.now() - older_than
    if settings.OUTBOX_PUBLISHER == "debezium":
        old = OutboxEvent.objects.filter(created_at__lt=cutoff)
    else:
        old = OutboxEvent.objects.filter(sent_at__isnull=False, sent_at__lt=cutoff)
    if dry_run:
        return old.count()
    deleted = 0
    while ids := list(old.order_by("id").values_list("id", flat=True)[:chunk]):
        deleted += OutboxEvent.objects.filter(pk__in=ids).delete()[0]
    return deleted
