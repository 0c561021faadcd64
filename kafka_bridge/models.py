from django.db import models
from django.db.models import Q
from django.utils import timezone


class OutboxEvent(models.Model):
    """An event written in the same transaction as the change that caused it, and sent to
    Kafka after the commit (at once, or later by `run_outbox_relay`)."""

    event_id = models.UUIDField(unique=True, editable=False)
    event_type = models.CharField(max_length=100)
    topic = models.CharField(max_length=249)
    # A record's key may be null, which Kafka tells apart from an empty one.
    key = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    # The exact JSON text sent as the record's value, so every send is byte-identical.
    payload = models.TextField()
    headers = models.JSONField(default=list, help_text="[[name, value], ...], UTF-8 strings")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    sent_at = models.DateTimeField(null=True, blank=True)
    partition = models.IntegerField(null=True, blank=True)
    offset = models.BigIntegerField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    # A relay's claim on the row while it sends it: no two relays send a row at once.
    claimed_by = models.CharField(max_length=100, blank=True, default="")
    claimed_until = models.DateTimeField(null=True, blank=True)
    # Sends refused for a reason of the record's own (too large, an invalid topic name), as the
    # relay counted them; at OUTBOX_QUARANTINE_ATTEMPTS the row is quarantined.
    refusals = models.PositiveIntegerField(default=0)
    # Set (by the database's clock) when the row is given up on until an operator releases it;
    # last_error says why. A quarantined row is neither sent nor counted as backlog.
    quarantined_at = models.DateTimeField(null=True, blank=True)
    # How often an operator queued the row again. A send is marked only against the count it was
    # made under, so a late acknowledgement of a send from before a resend cannot undo it.
    resends = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["id"]
        indexes = [
            # The relay's query: rows waiting to be sent, oldest first. Partial, so it stays small.
            models.Index(
                fields=["id"], condition=Q(sent_at__isnull=True, quarantined_at__isnull=True), name="outbox_unsent_idx"
            ),
            # An aggregate's events (the operator's trace of an order finds them by key).
            models.Index(fields=["topic", "key"], name="outbox_topic_key_idx"),
        ]

    def __str__(self) -> str:
        if self.sent_at:
            state = f"sent {self.sent_at:%Y-%m-%d %H:%M:%S}"
        elif self.quarantined_at:
            state = "quarantined"
        else:
            state = "unsent"
        return f"{self.event_type} {self.event_id} ({state})"

    @property
    def quarantined(self) -> bool:
        return self.quarantined_at is not None


class ConsumerState(models.Model):
    """What one running consumer holds, as its `ConsumerLoop.status()` last reported it: the web
    process cannot read the consumer process's gauges, so the consumer writes them here."""

    # Who reports: "<name>@<host>:<pid>", one row per running consumer process.
    member = models.CharField(max_length=200, unique=True)
    group_id = models.CharField(max_length=249, db_index=True)
    state = models.JSONField(help_text="ConsumerLoop.status()")
    # Set by the database's clock, and compared with it, so clock skew between the consumer's
    # host and the web's host cannot make a live consumer look stale (or a dead one live).
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ["group_id", "member"]

    def __str__(self) -> str:
        return f"{self.member} in {self.group_id}"


class KafkaTopic(models.Model):
    """No table: the holder of the permission to read topic records in the admin's topic
    browser. Records carry order data, so reading them is granted apart from the status page."""

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [("browse_topics", "Can browse topic records")]

    def __str__(self) -> str:
        return "Kafka topics"


class CutDeadLetter(models.Model):
    """A record the dead-letter topic refused to keep even compressed (too large, invalid): a
    bounded dead letter stands in for it on the DLT, and this row keeps the same facts where the
    status page counts them. The record itself is still on its topic, at its offset."""

    group_id = models.CharField(max_length=249)
    topic = models.CharField(max_length=249)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    value_size = models.BigIntegerField(help_text="the record's value, in bytes (uncompressed)")
    value_sha256 = models.CharField(max_length=64)
    reason = models.TextField(help_text="why the record itself could not be dead-lettered")
    # Where the bounded dead letter is.
    dead_letter_topic = models.CharField(max_length=249)
    dead_letter_partition = models.IntegerField()
    dead_letter_offset = models.BigIntegerField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}, {self.value_size:,} bytes: {self.reason}"
