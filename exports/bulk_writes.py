"""The consumer's bulk writes: a batch of exports is recorded in a few statements,
without preparing every field of every object through the ORM (most of a batch's time with
`bulk_create`)."""

from __future__ import annotations

import functools
import sqlite3
import uuid
from collections.abc import Sequence
from datetime import datetime
from operator import attrgetter

from django.db import connections, router
from django.db.models import DateTimeField, FloatField, Model, UUIDField

# Values every driver takes as they are, for the fields they are found in here.
_AS_THEY_ARE = frozenset({int, str, type(None)})


def rows_insert(model: type[Model], attnames: list[str], rows: list[tuple]) -> None:
    """INSERT `rows` (values in `attnames` order) in as few statements as the database allows.

    On PostgreSQL, with COPY in binary format: psycopg sends the rows as they are (an INSERT's
    parameters would be quoted into the SQL in Python by its client-side binding), and the
    binary format spares both sides the text forms (half the time of text COPY for a batch of
    attempts). Elsewhere, multi-row VALUES in chunks the backend allows."""
    if not rows:
        return
    db = connections[router.db_for_write(model)]
    fields = [model._meta.get_field(name) for name in attnames]
    quote = db.ops.quote_name
    table, names = quote(model._meta.db_table), ", ".join(quote(field.column) for field in fields)
    columns = [_column_adapt(field, values, db) for field, values in zip(fields, zip(*rows))]
    with db.cursor() as cursor:
        if db.vendor == "postgresql":
            _copy(db, cursor, table, names, fields, columns)
        elif db.vendor == "sqlite":
            _sqlite_insert(db, cursor, table, names, columns)
        else:
            adapted = list(zip(*columns))
            placeholder = "({})".format(", ".join(["%s"] * len(fields)))
            chunk = max(1, db.ops.bulk_batch_size(fields, adapted))
            for start in range(0, len(adapted), chunk):
                part = adapted[start : start + chunk]
                values = ", ".join([placeholder] * len(part))
                cursor.execute(f"INSERT INTO {table} ({names}) VALUES {values}", [v for row in part for v in row])


def _sqlite_insert(db, cursor, table: str, names: str, columns: list[Sequence]) -> None:
    """Multi-row VALUES in SQLite's own "?" placeholders, on the connection itself: Django's
    cursor would first rewrite each of a batch's thousands of "%s" with a regular expression.
    As many rows per statement as the library's own bound allows (250,000 parameters here),
    not the 999 Django assumes for every build."""
    rows = list(zip(*columns))
    width = len(columns)
    chunk = max(1, db.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // width)
    placeholder = "({})".format(", ".join("?" * width))

    def insert(sql, params, many, context):
        with db.wrap_database_errors:
            return db.connection.execute(sql, params)

    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        sql = f"INSERT INTO {table} ({names}) VALUES " + ", ".join([placeholder] * len(part))
        _through_execute_wrappers(db, cursor, insert, sql, [value for row in part for value in row])


def _copy(db, cursor, table: str, names: str, fields, columns: list[Sequence]) -> None:
    """COPY the columns' rows into `table`, through the connection's execute wrappers as any
    statement of Django's goes (Django's cursor has no COPY: psycopg's own, with Django's error
    classes). Binary when psycopg knows every column's type; text otherwise."""
    types = [db.connection.adapters.types.get(field.db_type(db).split("(")[0]) for field in fields]
    binary = all(types)
    sql = f"COPY {table} ({names}) FROM STDIN" + (" (FORMAT BINARY)" if binary else "")

    def copy_rows(sql, params, many, context):
        with db.wrap_database_errors, cursor.cursor.copy(sql) as copy:
            if binary:
                copy.set_types([info.oid for info in types])
            for row in zip(*columns):
                copy.write_row(row)

    _through_execute_wrappers(db, cursor, copy_rows, sql, None)


def _through_execute_wrappers(db, cursor, execute, sql: str, params) -> None:
    """Run `execute` as Django's cursor runs a statement: inside each of the connection's
    execute wrappers, the first one outermost."""
    for wrapper in reversed(db.execute_wrappers):
        execute = functools.partial(wrapper, execute)
    execute(sql, params, False, {"connection": db, "cursor": cursor})


def _column_adapt(field, values: tuple, db) -> Sequence:
    """`field.get_db_prep_save()` for every value of a column, done once per distinct value;
    columns of plain values, distinct UUIDs or aware datetimes (an attempt each) as Django's
    backend would adapt them, without its checks per value (most of a batch's attempt log
    otherwise)."""
    types = set(map(type, values))
    if types <= _AS_THEY_ARE or (types == {float} and type(field) is FloatField):
        return values
    if types == {uuid.UUID} and isinstance(field, UUIDField):
        # PostgreSQL has a uuid type; elsewhere Django stores the 32 hex digits.
        return values if db.features.has_native_uuid_field else [value.hex for value in values]
    if types == {datetime} and type(field) is DateTimeField and None not in set(map(attrgetter("tzinfo"), values)):
        if db.vendor == "postgresql":
            return values  # timestamptz takes aware datetimes as they are
        if db.vendor == "sqlite":
            # Naive in the connection's time zone, as text: what SQLite's adaptation makes of them.
            tz = db.timezone
            if set(map(attrgetter("tzinfo"), values)) == {tz}:
                return [str(value.replace(tzinfo=None)) for value in values]
            return [str(value.astimezone(tz).replace(tzinfo=None)) for value in values]
    adapted = {value: field.get_db_prep_save(value, db) for value in set(values)}
    return [adapted[value] for value in values]
