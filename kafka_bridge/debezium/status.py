"""What the operator sees of the outbox connector (the status page, `kafka_status`,
`debezium_connector status`, readiness): the connector's and its tasks' states, the replication
slot's lag, and the backlog, which in this mode is the outbox rows written after the last
transaction the connector has committed (the `ts_usec` of its committed source offset) and how
long the oldest of them has waited. A row the connector cannot publish (its topic missing, say)
holds every later row back while the connector still says RUNNING: the backlog's age shows it
within seconds, and the rows waiting on a topic that does not exist are named."""

from __future__ import annotations

from datetime import UTC, datetime

from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Min
from django.utils import timezone

from kafka_bridge.debezium.connector import connect_client
from kafka_bridge.debezium.postgres import slot_state
from kafka_bridge.debezium.rest import ConnectClient, ConnectError
from kafka_bridge.models import OutboxEvent
from kafka_bridge.text import one_line


def committed_until(offsets: list[dict] | None) -> datetime | None:
    """The commit time of the last transaction the connector committed, from its source offset."""
    for entry in offsets or []:
        ts_usec = (entry.get("offset") or {}).get("ts_usec")
        if ts_usec:
            return datetime.fromtimestamp(int(ts_usec) / 1_000_000, tz=UTC)
    return None


def unpublished_backlog(*, since: datetime | None) -> dict:
    """Rows written after `since` (every row when it is None): their count, the oldest one's
    age in seconds, and the topics they wait for."""
    rows = OutboxEvent.objects.all() if since is None else OutboxEvent.objects.filter(created_at__gt=since)
    summary = rows.aggregate(count=Count("id"), oldest=Min("created_at"))
    oldest = summary["oldest"]
    return {
        "unpublished": summary["count"],
        "oldest_unpublished_age_seconds": (timezone.now() - oldest).total_seconds() if oldest else None,
        "topics": sorted(set(rows.values_list("topic", flat=True).distinct()[:20])) if summary["count"] else [],
    }


def outbox_connector_status(
    *,
    client: ConnectClient | None = None,
    existing_topics: set[str] | None = None,
    max_slot_lag_bytes: int | None = None,
    max_age_seconds: float | None = None,
) -> dict:
    """The connector, its tasks, its slot and its backlog, with `problems` (lines) when it is
    not publishing: not registered, not RUNNING, a task not RUNNING (its error's first line),
    no slot or nobody reading it, the slot's lag over `max_slot_lag_bytes`, the backlog's oldest
    row older than `max_age_seconds`, rows waiting for a topic not in `existing_topics`."""
    client = client or connect_client()
    name = settings.DEBEZIUM_CONNECTOR_NAME
    status: dict = {"name": name, "url": client.url, "state": None, "worker_id": None, "tasks": [], "problems": []}
    problems = status["problems"]
    offsets = None
    offsets_known = True
    try:
        answer = client.connector_status(name=name)
    except ConnectError as exc:
        status["error"] = str(exc)
        problems.append(str(exc))
    else:
        if answer is None:
            status["state"] = "MISSING"
            problems.append(f"connector {name} is not registered (manage.py debezium_connector register)")
        else:
            status["state"] = answer["connector"]["state"]
            status["worker_id"] = answer["connector"].get("worker_id")
            if status["state"] != "RUNNING":
                problems.append(f"connector {name} is {status['state']}")
            for task in answer.get("tasks", []):
                entry = {"id": task["id"], "state": task["state"], "worker_id": task.get("worker_id")}
                if task.get("trace"):
                    entry["error"] = one_line(task["trace"].splitlines()[0])
                status["tasks"].append(entry)
                if task["state"] != "RUNNING":
                    problems.append(
                        f"task {task['id']} of {name} is {task['state']}"
                        + (f": {entry['error']}" if "error" in entry else "")
                    )
            if not answer.get("tasks") and status["state"] == "RUNNING":
                problems.append(f"connector {name} has no task running")
            try:
                offsets = client.connector_offsets(name=name)
            except ConnectError as exc:
                # With exactly-once support the offsets are read committed: a transaction the task
                # left open (a record the broker refused fails it, and the task's stop then waits
                # for the transaction's timeout) holds them back, and the task still says RUNNING
                # meanwhile. The backlog goes unmeasured, and that is a problem of its own.
                offsets_known = False
                status["offsets_error"] = str(exc)
                problems.append(f"the committed offsets of {name} cannot be read (a transaction left open?): {exc}")
    committed = committed_until(offsets)
    status["committed_until"] = committed.isoformat() if committed else None
    if offsets_known and committed is None and status["state"] is not None:
        # A connector registered a moment ago commits its first position with its first record
        # or heartbeat (HEARTBEAT_INTERVAL); until then every row would look unpublished.
        offsets_known = False
        status.setdefault("offsets_error", "the connector has committed no position yet")
    try:
        status["slot"] = slot_state(name=settings.DEBEZIUM_SLOT_NAME)
        status["backlog"] = unpublished_backlog(since=committed) if offsets_known else None
    except DatabaseError as exc:
        problems.append(f"database unavailable: {one_line(str(exc))}")
        status["slot"], status["backlog"] = None, None
        return status
    slot = status["slot"]
    if slot is None:
        problems.append(f"replication slot {settings.DEBEZIUM_SLOT_NAME} does not exist")
    else:
        if not slot["active"]:
            problems.append(f"replication slot {slot['name']} has no reader")
        if max_slot_lag_bytes is not None and (slot["lag_bytes"] or 0) > max_slot_lag_bytes:
            problems.append(
                f"replication slot {slot['name']} holds {slot['lag_bytes']:,} bytes of WAL, over {max_slot_lag_bytes:,}"
            )
    backlog = status["backlog"]
    if backlog is None:
        return status
    age = backlog["oldest_unpublished_age_seconds"]
    if max_age_seconds is not None and age is not None and age > max_age_seconds:
        problems.append(f"oldest unpublished outbox event is {age:.0f} s old, over {max_age_seconds:g} s")
    if existing_topics is not None:
        missing = [t for t in backlog["topics"] if t not in existing_topics]
        if missing:
            backlog["missing_topics"] = missing
            problems.append(f"outbox rows wait for topic(s) that do not exist: {', '.join(missing)}")
    return status


def status_lines(status: dict) -> list[str]:
    """The connector's status as a few readable lines (`kafka_status`, `debezium_connector status`)."""
    tasks = ", ".join(f"task {t['id']} {t['state']}" for t in status["tasks"]) or "no tasks"
    lines = [f"outbox connector {status['name']} at {status['url']}: {status['state'] or 'unknown'} ({tasks})"]
    slot = status.get("slot")
    if slot:
        lines.append(
            f"  slot {slot['name']}: {'active' if slot['active'] else 'inactive'}, {slot['lag_bytes'] or 0:,} bytes "
            f"of WAL held, confirmed {slot['confirmed_flush_lsn']}, wal_status {slot['wal_status']}"
        )
    backlog = status.get("backlog")
    if backlog:
        age = backlog["oldest_unpublished_age_seconds"]
        lines.append(
            f"  unpublished rows: {backlog['unpublished']}"
            + (f", the oldest {age:.0f} s old" if age is not None else "")
            + (f" (committed until {status['committed_until']})" if status.get("committed_until") else "")
        )
    if status.get("offsets_error"):
        lines.append(f"  backlog not measured: {status['offsets_error']}")
    lines.extend(f"  problem: {p}" for p in status["problems"])
    return lines
