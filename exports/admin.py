from django.contrib import admin

from exports.models import OrderExport


@admin.register(OrderExport)
class OrderExportAdmin(admin.ModelAdmin):
    list_display = ["order", "status", "attempts", "exported_at", "last_error", "updated_at"]
    list_filter = ["status"]
    search_fields = ["order__id", "order__customer_id", "event_id"]
    list_select_related = ["order"]

    # Written by the consumer only: the admin shows it.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
