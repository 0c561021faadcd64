from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from orders.models import Order, OrderLine
from orders.serializers import PENDING_EXPORT
from orders.services import OrderNotPending, order_confirm


class OrderLineInline(admin.TabularInline):
    model = OrderLine
    extra = 1
    min_num = 1


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["id", "customer_id", "status", "total_amount", "export_status", "created_at", "confirmed_at"]
    list_filter = ["status"]
    search_fields = ["customer_id"]
    search_help_text = "An order id, or (part of) a customer id."
    readonly_fields = ["status", "created_at", "confirmed_at", "total_amount", "export_status"]
    inlines = [OrderLineInline]
    actions = ["mark_confirmed"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Order]:
        return super().get_queryset(request).prefetch_related("lines").select_related("export")

    def get_search_results(self, request, queryset, search_term):
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip().lstrip("#")
        if term.isdigit():
            results |= queryset.filter(pk=int(term))
        return results, may_have_duplicates

    @admin.display(description="total")
    def total_amount(self, order: Order) -> str:
        return f"{order.total_amount}"

    @admin.display(description="export")
    def export_status(self, order: Order) -> str:
        if order.status != Order.Status.CONFIRMED:
            return "—"
        export = getattr(order, "export", None)
        if export is None:
            return PENDING_EXPORT["status"]
        text = f"{export.status} ({export.attempts} attempt{'s' if export.attempts != 1 else ''})"
        if export.last_error:
            text += f": {export.last_error}"
        return text

    @admin.action(description="Mark confirmed", permissions=["change"])
    def mark_confirmed(self, request: HttpRequest, queryset: QuerySet[Order]) -> None:
        """Confirm each selected order through the same service as the API."""
        confirmed: list[int] = []
        refused: list[str] = []
        for order_id in queryset.order_by("pk").values_list("pk", flat=True):
            try:
                order_confirm(order_id=order_id)
                confirmed.append(order_id)
            except OrderNotPending as exc:
                refused.append(f"#{order_id} ({exc.order.status}, not pending)")
            except Order.DoesNotExist:
                refused.append(f"#{order_id} (deleted meanwhile)")
        if confirmed:
            ids = ", ".join(f"#{order_id}" for order_id in confirmed)
            self.message_user(request, f"Confirmed {len(confirmed)} order(s): {ids}.", messages.SUCCESS)
        if refused:
            self.message_user(
                request, f"Refused {len(refused)} order(s): {'; '.join(refused)}.", messages.WARNING
            )
