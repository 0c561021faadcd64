from django.db import models


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
    last_error = models.TextField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        permissions = [("redrive_orderexport", "Can retry failed exports and replay dead letters")]
        # The status page's last hour: exports per minute and their delays.
        indexes = [models.Index(fields=["exported_at"], name="orderexport_exported_at")]

    def __str__(self) -> str:
        return f"export of order {self.order_id}: {self.status}"


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
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.get_action_display()} by {self.actor} at {self.created_at:%Y-%m-%d %H:%M:%S}"
