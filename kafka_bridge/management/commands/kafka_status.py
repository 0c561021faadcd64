import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from kafka_bridge.cluster.status import kafka_status
from kafka_bridge.connection import BrokerUnavailable
from kafka_bridge.debezium.status import outbox_connector_status, status_lines


class Command(BaseCommand):
    help = "Brokers, topics, partitions, consumer groups and lag (as JSON with --json)."

    def add_arguments(self, parser):
        parser.add_argument("--json", action="store_true", dest="as_json", help="print the contract's JSON shape")
        parser.add_argument("--topic", action="append", dest="topics", help="only this topic (repeatable)")
        parser.add_argument("--group", action="append", dest="groups", help="only this consumer group (repeatable)")
        parser.add_argument(
            "--internal", action="store_true", help="include internal topics such as __consumer_offsets"
        )

    def handle(self, *args, as_json: bool, topics, groups, internal: bool, **options):
        try:
            status = kafka_status(topics=topics, group_ids=groups, include_internal=internal)
        except BrokerUnavailable as exc:
            raise CommandError(str(exc), returncode=1) from exc
        if settings.OUTBOX_PUBLISHER == "debezium":
            # Beside the contract's shape: who publishes the outbox, and how far it has come.
            status["outbox_connector"] = outbox_connector_status(
                existing_topics={t["name"] for t in status["topics"]} if not topics else None,
                max_slot_lag_bytes=settings.READINESS_MAX_SLOT_LAG_BYTES,
                max_age_seconds=settings.READINESS_MAX_OUTBOX_AGE_SECONDS,
            )
        if as_json:
            self.stdout.write(json.dumps(status, indent=2))
            return
        self.stdout.write(render_text(status))
        if "outbox_connector" in status:
            self.stdout.write("\n" + "\n".join(status_lines(status["outbox_connector"])))


def render_text(status: dict) -> str:
    lines = [
        "brokers: "
        + ", ".join(
            f"{b['node_id']} {b['host']}:{b['port']}"
            + (" (controller)" if b["node_id"] == status["controller_id"] else "")
            for b in status["brokers"]
        )
    ]
    lines.append("")
    lines.append(f"{'TOPIC':<40} {'PART':>4} {'LEADER':>6} {'REPLICAS':<10} {'ISR':<10} {'EARLIEST':>9} {'LATEST':>9}")
    for topic in status["topics"]:
        for p in topic["partitions"]:
            lines.append(
                f"{topic['name']:<40} {p['partition']:>4} {p['leader']:>6} {','.join(map(str, p['replicas'])):<10} "
                f"{','.join(map(str, p['isr'])):<10} {p['earliest_offset']!s:>9} {p['latest_offset']!s:>9}"
            )
    for group in status["consumer_groups"]:
        lines.append("")
        lines.append(
            f"group {group['group_id']}: {group['state']}, {len(group['members'])} member(s), total lag {group['total_lag']}"
        )
        owners = {
            (a["topic"], a["partition"]): m["client_id"] + "@" + m["host"]
            for m in group["members"]
            for a in m["assignments"]
        }
        lines.append(f"  {'TOPIC':<40} {'PART':>4} {'COMMITTED':>9} {'END':>9} {'LAG':>6}  OWNER")
        for p in group["partitions"]:
            lines.append(
                f"  {p['topic']:<40} {p['partition']:>4} {p['committed_offset']!s:>9} {p['end_offset']!s:>9} "
                f"{p['lag']!s:>6}  {owners.get((p['topic'], p['partition']), '-')}"
            )
    return "\n".join(lines)
