import logging

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from kafka.errors import KafkaError

from exports.models import ExportAttempt, OrderExport, ProcessedEvent, RedriveAudit
from exports.redrive import (
    REDRIVE_PERMISSION,
    DeadLetterSelection,
    DeadLettersNotFound,
    dead_letters_list,
    dlt_replay,
    export_offsets_reset,
)
from exports.services import OutboxRedrive, order_exports_redrive
from kafka_bridge.cluster.group_offsets import ResetTarget, target_describe
from kafka_bridge.connection import KafkaBridgeError

logger = logging.getLogger(__name__)

# The dead letters page lists the DLT's newest this many, and redrives at most as many at once.
DEAD_LETTERS_SHOWN = 200


class OffsetResetForm(forms.Form):
    target = forms.ChoiceField(
        choices=[
            ("earliest", "Earliest: read again everything still on the topic"),
            ("latest", "Latest: skip everything not consumed yet"),
            ("datetime", "The first record at or after a time (UTC)"),
        ],
        widget=forms.RadioSelect,
    )
    # TIME_ZONE is UTC, so the time entered is read as UTC.
    at = forms.DateTimeField(
        required=False, label="Time (UTC)", widget=forms.DateTimeInput(attrs={"type": "datetime-local", "step": 1})
    )

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("target") == "datetime" and cleaned.get("at") is None:
            self.add_error("at", "A time is needed for this target.")
        return cleaned

    def reset_target(self) -> ResetTarget:
        target = self.cleaned_data["target"]
        return self.cleaned_data["at"] if target == "datetime" else target


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

    def get_urls(self):
        return [
            path("reset-offsets/", self.admin_site.admin_view(self.reset_offsets_view), name="exports_reset_offsets"),
            path("dead-letters/", self.admin_site.admin_view(self.dead_letters_view), name="exports_dead_letters"),
            *super().get_urls(),
        ]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "may_reset_offsets": self.has_redrive_permission(request)}
        return super().changelist_view(request, extra_context)

    def dead_letters_view(self, request: HttpRequest) -> HttpResponse:
        """The dead-letter topic's records with their `dlt.*` headers and their orders' export
        status; the selected ones are redriven like `replay_dlt --offset`."""
        if not self.has_redrive_permission(request):
            raise PermissionDenied
        if request.method == "POST":
            positions = set()
            for value in request.POST.getlist("position"):
                partition, _, offset = value.partition(":")
                if partition.isascii() and partition.isdigit() and offset.isascii() and offset.isdigit():
                    positions.add((int(partition), int(offset)))
            if not positions:
                self.message_user(request, "Select the dead letters to redrive.", messages.WARNING)
            else:
                self._redrive(request, positions)
            return redirect("admin:exports_dead_letters")
        context = {**self.admin_site.each_context(request), "title": "Dead letters", "opts": self.model._meta}
        try:
            context["dead_letters"] = dead_letters_list(
                limit=DEAD_LETTERS_SHOWN, timeout_ms=settings.KAFKA_STATUS_TIMEOUT_MS
            )
            context["refused_count"] = sum(1 for letter in context["dead_letters"] if letter.refusal)
        except KafkaBridgeError as exc:
            context["error"] = str(exc)
        return TemplateResponse(request, "admin/exports/orderexport/dead_letters.html", context)

    def _redrive(self, request: HttpRequest, positions: set[tuple[int, int]]) -> None:
        """Redrive the selected dead letters and say what became of each: whatever goes wrong is
        a message on the page, never a server error."""
        if len(positions) > DEAD_LETTERS_SHOWN:
            self.message_user(
                request,
                f"Nothing redriven: at most {DEAD_LETTERS_SHOWN} dead letters at once from this page "
                f"({len(positions)} selected); replay_dlt redrives more.",
                messages.ERROR,
            )
            return
        try:
            result = dlt_replay(
                operator=request.user.get_username(),
                selection=DeadLetterSelection(positions=frozenset(positions)),
                timeout=settings.KAFKA_STATUS_TIMEOUT_MS / 1000,
            )
        except (DeadLettersNotFound, KafkaBridgeError, KafkaError, TimeoutError) as exc:
            self.message_user(request, f"Nothing redriven: {exc}", messages.ERROR)
            return
        except Exception as exc:
            logger.exception("redrive of %s failed", sorted(positions))
            self.message_user(request, f"Nothing redriven: {type(exc).__name__}: {exc}", messages.ERROR)
            return
        if result.items:
            self.message_user(
                request,
                f"Redrove {len(result.items)} dead letter(s): " + "; ".join(str(item) for item in result.items),
                messages.SUCCESS,
            )
        if result.refused:
            self.message_user(
                request,
                f"Refused {len(result.refused)} dead letter(s): " + "; ".join(str(r) for r in result.refused),
                messages.ERROR,
            )

    def reset_offsets_view(self, request: HttpRequest) -> HttpResponse:
        """Move the export group's offsets: a preview of old -> new per partition first, then
        the reset itself, refused while the group has members, audited like the redrives."""
        if not self.has_redrive_permission(request):
            raise PermissionDenied
        form = OffsetResetForm(request.POST or None)
        context = {
            **self.admin_site.each_context(request),
            "title": "Reset the export group's offsets",
            "opts": self.model._meta,
            "form": form,
        }
        if request.method == "POST" and form.is_valid():
            # Only what was previewed is applied: a target changed after the preview is
            # previewed again first.
            apply = "apply" in request.POST and request.POST.get("previewed") == target_describe(form.reset_target())
            try:
                reset = export_offsets_reset(
                    operator=request.user.get_username(), target=form.reset_target(), dry_run=not apply
                )
            except KafkaBridgeError as exc:
                context["error"] = str(exc)
            else:
                if apply:
                    self.message_user(request, reset.summary(), messages.SUCCESS)
                    return redirect("admin:exports_orderexport_changelist")
                context["preview"] = reset
        return TemplateResponse(request, "admin/exports/orderexport/reset_offsets.html", context)

    @admin.action(description="Retry failed exports", permissions=["redrive"])
    def retry_failed(self, request, queryset):
        """Send the selected failed exports again with their original event (same
        Idempotency-Key); recorded in the redrive audit."""
        result = order_exports_redrive(
            actor=request.user.get_username(),
            source=OutboxRedrive(export_ids=tuple(queryset.values_list("pk", flat=True))),
        )
        if result.reopened:
            ids = ", ".join(f"#{order_id}" for order_id in result.reopened)
            self.message_user(
                request, f"Queued {len(result.reopened)} export(s) again: orders {ids}.", messages.SUCCESS
            )
        if result.skipped:
            self.message_user(request, f"Skipped {len(result.skipped)}: {'; '.join(result.skipped)}.", messages.WARNING)


@admin.register(ExportAttempt)
class ExportAttemptAdmin(ReadOnlyAdmin):
    """Every platform call kept (EXPORT_ATTEMPTS_KEPT per order): e.g. the failed ones of the
    last hour, or the calls one consumer made."""

    list_display = ["started_at", "order", "outcome", "duration_ms", "consumer", "partition", "offset", "error"]
    list_filter = ["outcome", "started_at"]
    search_fields = ["=order__id", "=event_id", "consumer"]
    ordering = ["-id"]
    # The table grows with every call: no COUNT(*) of all of it on each page.
    show_full_result_count = False


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
