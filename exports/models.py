from django.db import models
from django.utils import timezone


class OrderExport(models.Model):
    """Where one confirmed order stands with the external platform."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        EXPORTED = "exported", "Exported"
        FAILED = "failed", "Failed"

    order = models.OneToOneField("orders.Order", on_delete=models.CASCADE, related_name="export")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    # The event this export is about; its id is the Idempotency-Key sent to the platform.
    event_id = models.UUIDField(null=True, blank=True)
    exported_at = models.DateTimeField(null=True, blank=True)
    # null, not "", until an attempt failed: the contract's export.last_error is str | null.
    last_error = models.TextField(null=True, blank=True)  # noqa: DJ001
    updated_at = models.DateTimeField(auto_now=True)
    # Where its event's latest dead letter is (the operator's trace reads it back from there);
    # kept when the export is redriven, replaced when it is dead-lettered again.
    # db_default: the consumer inserts exports with raw SQL that names only the columns it sets.
    dead_letter_topic = models.CharField(max_length=249, blank=True, default="", db_default="")
    dead_letter_partition = models.IntegerField(null=True, blank=True)
    dead_letter_offset = models.BigIntegerField(null=True, blank=True)
    dead_lettered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        permissions = [("redrive_orderexport", "Can retry failed exports and replay dead letters")]
        # The status page's last hour: exports per minute and their delays.
        indexes = [models.Index(fields=["exported_at"], name="orderexport_exported_at")]

    def __str__(self) -> str:
        return f"export of order {self.order_id}: {self.status}"


class ExportAttempt(models.Model):
    """One call to the platform about an order, as the consumer made it: written in the same
    transaction as the export's outcome. The newest EXPORT_ATTEMPTS_KEPT of each order are kept."""

    class Outcome(models.TextChoices):
        EXPORTED = "exported", "Exported"
        FAILED = "failed", "Failed"

    # Indexed by `exportattempt_order_newest`, which begins with it. No foreign key constraint
    # in the database: its check at commit was half of what a batch's attempt rows cost
    # (PostgreSQL, 1,000 rows: 20 ms with it, 9 without). Deleting an order still deletes its
    # attempts (Django's cascade), and the rows written with them (the processed event, a
    # first attempt's export) keep their constraints.
    order = models.ForeignKey(
        "orders.Order", on_delete=models.CASCADE, related_name="export_attempts", db_index=False, db_constraint=False
    )
    event_id = models.UUIDField()
    # Where the consumer read the event: the record's topic, partition and offset.
    topic = models.CharField(max_length=249)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    # The consumer process that made the call: "<name>@<host>:<pid>", as on the status page.
    consumer = models.CharField(max_length=200)
    started_at = models.DateTimeField()
    duration_ms = models.FloatField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    # The platform's (or the client's) error, "<class>: <text>"; empty for an export.
    error = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["id"]
        # An order's attempts, newest first: the trace, and the pruning of the oldest.
        indexes = [models.Index(fields=["order", "-id"], name="exportattempt_order_newest")]

    def __str__(self) -> str:
        return f"attempt on order {self.order_id} at {self.started_at:%Y-%m-%d %H:%M:%S}: {self.outcome}"


class ProcessedEvent(models.Model):
    """An event whose export is done, recorded in the same transaction as the export's result:
    a redelivery of it is acknowledged without a second platform call."""

    event_id = models.UUIDField(primary_key=True)
    order = models.ForeignKey("orders.Order", on_delete=models.CASCADE, related_name="+")
    processed_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"event {self.event_id} (order {self.order_id})"


class RedriveAudit(models.Model):
    """Who retried or replayed what, and when."""

    class Action(models.TextChoices):
        ADMIN_RETRY = "admin_retry", "Retry from the admin"
        REPLAY_DLT = "replay_dlt", "replay_dlt command"
        RESET_OFFSETS = "reset_offsets", "Consumer group offsets reset from the admin"

    actor = models.CharField(max_length=150)
    action = models.CharField(max_length=32, choices=Action.choices)
    event_ids = models.JSONField(default=list)
    order_ids = models.JSONField(default=list)
    # The dead-letter records replayed, as [topic, partition, offset]: a record replayed on its
    # own is not replayed again by a later replay of everything.
    dlt_positions = models.JSONField(default=list, blank=True)
    detail = models.TextField(blank=True, default="")
    # When the redrive began, which a replay sets itself: its row is written once the records
    # are back on the topic, and a consumer may have exported them by then.
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} by {self.actor} at {self.created_at:%Y-%m-%d %H:%M:%S}"
