"""What Debezium reads from in PostgreSQL: a publication of the outbox table's INSERTs alone (an
UPDATE or DELETE of an outbox row, a purge say, never becomes a record), and the connector's
logical replication slot, whose lag is the write-ahead log it holds back."""

from __future__ import annotations

from django.db import connection


def publication_ensure(*, name: str, table: str) -> str:
    """Create the publication `name` for `table`'s INSERTs, or make an existing one so (the
    outbox table alone, inserts alone). Returns "created", "altered" or "unchanged"."""
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pubinsert, pubupdate, pubdelete, pubtruncate, puballtables FROM pg_publication WHERE pubname = %s",
            [name],
        )
        row = cursor.fetchone()
        if row is None:
            cursor.execute(f"CREATE PUBLICATION {quote(name)} FOR TABLE {quote(table)} WITH (publish = 'insert')")
            return "created"
        cursor.execute(
            "SELECT tablename FROM pg_publication_tables WHERE pubname = %s AND schemaname = current_schema()",
            [name],
        )
        tables = [t for (t,) in cursor.fetchall()]
        changed = False
        if row[4]:
            raise ValueError(f"publication {name} is FOR ALL TABLES: drop it, and the project creates its own")
        if tables != [table]:
            cursor.execute(f"ALTER PUBLICATION {quote(name)} SET TABLE {quote(table)}")
            changed = True
        if tuple(row[:4]) != (True, False, False, False):
            cursor.execute(f"ALTER PUBLICATION {quote(name)} SET (publish = 'insert')")
            changed = True
        return "altered" if changed else "unchanged"


def slot_state(*, name: str) -> dict | None:
    """The replication slot `name` in this database: whether a connector reads from it
    (`active`), the WAL it holds back (`lag_bytes`: the server's current position minus what
    the connector confirmed), the position confirmed, and PostgreSQL's `wal_status` (reserved,
    extended, unreserved, lost). None when there is no such slot."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT active, pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint, "
            "confirmed_flush_lsn::text, wal_status FROM pg_replication_slots "
            "WHERE slot_name = %s AND database = current_database()",
            [name],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    active, lag, confirmed, wal_status = row
    return {
        "name": name,
        "active": active,
        "lag_bytes": lag,
        "confirmed_flush_lsn": confirmed,
        "wal_status": wal_status,
    }


def slot_drop(*, name: str) -> bool:
    """Drop the replication slot `name` (a connector must no longer read from it: delete the
    connector first). False when there was none."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s AND database = current_database()",
            [name],
        )
        return cursor.fetchone() is not None


def wal_level() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW wal_level")
        return cursor.fetchone()[0]
