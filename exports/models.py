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
    # The event whose export reached the platform; its id was the Idempotency-Key.
    event_id = models.UUIDField(null=True, blank=True)
    exported_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"export of order {self.order_id}: {self.status}"
