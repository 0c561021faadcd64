from django.contrib import admin

from kafka_bridge.models import OutboxEvent


class SentFilter(admin.SimpleListFilter):
    title = "sent"
    parameter_name = "sent"

    def lookups(self, request, model_admin):
        return [("yes", "Sent"), ("no", "Not sent yet")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(sent_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(sent_at__isnull=True)
        return queryset


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):
    list_display = ["id", "event_type", "event_id", "topic", "key", "created_at", "sent_at", "partition", "offset", "attempts"]
    list_filter = [SentFilter, "event_type", "topic"]
    search_fields = ["event_id", "key"]
    ordering = ["-id"]

    # The outbox is written by services and read by the relay; the admin only shows it.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
