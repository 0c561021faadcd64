from django.contrib import admin, messages
from django.db.models.constants import LOOKUP_SEP
from django.utils.translation import ngettext

from kafka_bridge.console.browser.views import BROWSE_PERMISSION
from kafka_bridge.models import CutDeadLetter, OutboxEvent
from kafka_bridge.outbox.store import outbox_quarantine_release


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


class QuarantinedFilter(admin.SimpleListFilter):
    title = "quarantined"
    parameter_name = "quarantined"

    def lookups(self, request, model_admin):
        return [("yes", "Quarantined"), ("no", "Not quarantined")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(quarantined_at__isnull=False, sent_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(quarantined_at__isnull=True)
        return queryset


@admin.register(OutboxEvent)
class OutboxEventAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "event_type",
        "event_id",
        "topic",
        "key",
        "created_at",
        "sent_at",
        "partition",
        "offset",
        "attempts",
        "is_quarantined",
        "last_error",
    ]
    list_filter = [SentFilter, QuarantinedFilter, "event_type", "topic"]
    search_fields = ["event_id", "key"]
    ordering = ["-id"]
    actions = ["release_quarantined"]

    # The record an event becomes: its value and headers carry order data, so they are shown
    # only to those who may read the records on the topic (the topic browser's permission).
    record_fields = ("payload", "headers")

    def may_read_records(self, request) -> bool:
        return request.user.has_perm(BROWSE_PERMISSION)

    def get_exclude(self, request, obj=None):
        exclude = list(super().get_exclude(request, obj) or [])
        if not self.may_read_records(request):
            exclude.extend(self.record_fields)
        return exclude

    def lookup_allowed(self, lookup, value, request=None):
        # Django lets the changelist's URL filter on any field (?payload__contains=...): rows
        # found or not would tell what the value holds.
        if lookup.split(LOOKUP_SEP)[0] in self.record_fields and (
            request is None or not self.may_read_records(request)
        ):
            return False
        return super().lookup_allowed(lookup, value, request)

    @admin.display(boolean=True, description="quarantined", ordering="quarantined_at")
    def is_quarantined(self, obj: OutboxEvent) -> bool:
        return obj.quarantined

    # The outbox is written by services and read by the relay; the admin only shows it, and
    # gives quarantined events another try.
    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_release_permission(self, request) -> bool:
        """Releasing an event sends it again: the model's change permission, which the
        read-only pages above do not otherwise use."""
        return request.user.has_perm("kafka_bridge.change_outboxevent")

    @admin.action(permissions=["release"], description="Release quarantined events for another try")
    def release_quarantined(self, request, queryset):
        chosen = list(queryset.filter(quarantined_at__isnull=False, sent_at__isnull=True))
        released = outbox_quarantine_release(pks=[row.pk for row in chosen])
        for row in chosen:
            self.log_change(request, row, f"Released from quarantine ({row.last_error})")
        skipped = queryset.count() - len(chosen)
        self.message_user(
            request,
            ngettext("%d event released for another try.", "%d events released for another try.", released) % released
            + (f" {skipped} not quarantined, left alone." if skipped else ""),
            messages.SUCCESS if released else messages.WARNING,
        )


@admin.register(CutDeadLetter)
class CutDeadLetterAdmin(admin.ModelAdmin):
    """Written by the consumers only: the admin shows them."""

    list_display = [
        "created_at",
        "group_id",
        "topic",
        "partition",
        "offset",
        "value_size",
        "reason",
        "dead_letter_offset",
    ]
    list_filter = ["group_id", "topic"]
    ordering = ["-id"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
