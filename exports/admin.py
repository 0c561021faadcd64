from django.contrib import admin, messages

from exports.models import OrderExport, ProcessedEvent, RedriveAudit
from exports.redrive import REDRIVE_PERMISSION
from exports.services import order_export_retry


class ReadOnlyAdmin(admin.ModelAdmin):
    """Written by the consumer and the services only: the admin shows it."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(OrderExport)
class OrderExportAdmin(ReadOnlyAdmin):
    list_display = ["order", "status", "attempts", "exported_at", "last_error", "event_id", "updated_at"]
    list_filter = ["status"]
    search_fields = ["order__id", "order__customer_id", "event_id"]
    list_select_related = ["order"]
    actions = ["retry_failed"]

    def has_redrive_permission(self, request) -> bool:
        return request.user.has_perm(REDRIVE_PERMISSION)

    @admin.action(description="Retry failed exports", permissions=["redrive"])
    def retry_failed(self, request, queryset):
        """Send the selected failed exports again with their original event (same
        Idempotency-Key); recorded in the redrive audit."""
        result = order_export_retry(export_ids=queryset.values_list("pk", flat=True), actor=request.user.get_username())
        if result.retried:
            ids = ", ".join(f"#{order_id}" for order_id in result.retried)
            self.message_user(request, f"Queued {len(result.retried)} export(s) again: orders {ids}.", messages.SUCCESS)
        if result.skipped:
            self.message_user(request, f"Skipped {len(result.skipped)}: {'; '.join(result.skipped)}.", messages.WARNING)


@admin.register(ProcessedEvent)
class ProcessedEventAdmin(ReadOnlyAdmin):
    list_display = ["event_id", "order", "processed_at"]
    search_fields = ["event_id", "order__id"]


@admin.register(RedriveAudit)
class RedriveAuditAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "actor", "action", "order_ids", "detail"]
    list_filter = ["action"]
    search_fields = ["actor"]

    def has_delete_permission(self, request, obj=None):
        return False  # an audit trail is not edited away
