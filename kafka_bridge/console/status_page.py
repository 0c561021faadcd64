"""The admin's "Kafka status" page: what Kafka UI shows, plus what it cannot see (the outbox,
what each running consumer holds, and what the apps registered: their consumer groups, shown
first with their lag and dead-letter topics, and panels of their own)."""

from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from kafka_bridge.cluster.status import kafka_status
from kafka_bridge.connection import BrokerUnavailable
from kafka_bridge.console.charts.svg import Chart
from kafka_bridge.consumer.state import consumer_states_by_group
from kafka_bridge.debezium.status import outbox_connector_status
from kafka_bridge.registry import status_panels, watched_groups
from kafka_bridge.selectors import dead_letters_cut_count, outbox_backlog


def dlt_size(status: dict, topic: str) -> int | None:
    """Records currently on the dead-letter topic (latest minus earliest offset)."""
    for entry in status["topics"]:
        if entry["name"] == topic:
            return sum((p["latest_offset"] or 0) - (p["earliest_offset"] or 0) for p in entry["partitions"])
    return None


def group_lag_chart(*, group: dict, chart_id: str) -> Chart | None:
    """The current lag of each partition `group` has committed to, as bars (None when it has
    committed nothing yet)."""
    partitions = group["partitions"]
    if not partitions:
        return None
    topics = {p["topic"] for p in partitions}
    single_topic = len(topics) == 1
    return Chart(
        chart_id=chart_id,
        title=f"Lag per partition of {group['group_id']}",
        kind="bars",
        labels=[str(p["partition"]) if single_topic else f"{p['topic']}:{p['partition']}" for p in partitions],
        series={"lag": [p["lag"] for p in partitions]},
        label_heading=f"Partition of {next(iter(topics))}" if single_topic else "Topic:partition",
    )


def kafka_status_page(request: HttpRequest) -> HttpResponse:
    watched = [
        {"name": w.name, "group": w.group(), "dlt_topic": w.dead_letter_topic() if w.dead_letter_topic else None}
        for w in watched_groups()
    ]
    context = {**admin.site.each_context(request), "title": "Kafka status", "watched": watched}
    try:
        status = kafka_status(
            include_internal=True,
            timeout_ms=settings.KAFKA_STATUS_TIMEOUT_MS,
            also_groups=[w["group"] for w in watched],
        )
    except BrokerUnavailable as exc:
        context["kafka_error"] = str(exc)
    else:
        context["status"] = status
        for group in status["consumer_groups"]:
            owners = {(a["topic"], a["partition"]): m["client_id"] for m in group["members"] for a in m["assignments"]}
            for partition in group["partitions"]:
                partition["owner"] = owners.get((partition["topic"], partition["partition"]), "")
        # The watched groups first; groups with neither members nor offsets folded away.
        first = [w["group"] for w in watched]
        groups = sorted(
            status["consumer_groups"],
            key=lambda g: (first.index(g["group_id"]) if g["group_id"] in first else len(first), g["group_id"]),
        )
        context["groups"] = [g for g in groups if g["members"] or g["partitions"] or g["group_id"] in first]
        context["idle_groups"] = [g for g in groups if g not in context["groups"]]
        states = consumer_states_by_group(group_ids=[g["group_id"] for g in context["groups"]])
        for group in context["groups"]:
            group["consumers"] = states[group["group_id"]]
        for w in watched:
            w["dlt_size"] = dlt_size(status, w["dlt_topic"]) if w["dlt_topic"] else None
            group = next((g for g in context["groups"] if g["group_id"] == w["group"]), None)
            w["lag_chart"] = group_lag_chart(group=group, chart_id=f"{w['name']}-lag") if group else None
    if settings.OUTBOX_PUBLISHER == "debezium":
        context["connector"] = outbox_connector_status(
            existing_topics={t["name"] for t in context["status"]["topics"]} if "status" in context else None,
            max_slot_lag_bytes=settings.READINESS_MAX_SLOT_LAG_BYTES,
            max_age_seconds=settings.READINESS_MAX_OUTBOX_AGE_SECONDS,
        )
    else:
        context["outbox"] = outbox_backlog()
    cut = dead_letters_cut_count(dead_letter_topics=[w["dlt_topic"] for w in watched if w["dlt_topic"]])
    for w in watched:
        w["dlt_cut"] = cut.get(w["dlt_topic"], 0)
    # A panel may show more to some users than to others: it is told who is looking.
    context["panels"] = [panel(user=request.user) for panel in status_panels()]
    return render(request, "kafka_bridge/status.html", context)
