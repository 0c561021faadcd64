from collections.abc import Callable

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest

from orders.models import Order, OrderLine
from orders.permissions import CONFIRM_ORDER
from orders.serializers import PENDING_EXPORT
from orders.services import OrderError, OrderNotPending, order_confirm

# What other apps show on an order's admin page below its lines (the exports app: its
# Delivery panel): each gets the request and the order and returns HTML, or None for nothing.
OrderPagePanel = Callable[[HttpRequest, Order], str | None]
_order_page_panels: list[OrderPagePanel] = []


def order_page_panel_register(*, panel: OrderPagePanel) -> None:
    if panel not in _order_page_panels:
        _order_page_panels.append(panel)


# Said on a confirmed order's page above its lines, and to a post that tries to add one.
CONFIRMED_LINES_LOCKED = "A confirmed order's lines cannot change: its event has left with them."


def _is_confirmed(order: Order | None) -> bool:
    return order is not None and order.status == Order.Status.CONFIRMED


class OrderLineFormSet(BaseInlineFormSet):
    """The API's rules on an order's lines, for the admin too: one line per SKU, and none added
    to a confirmed order."""

    def clean(self) -> None:
        super().clean()
        if _is_confirmed(self.instance) and any(form.changed_data for form in self.extra_forms):
            # Without add permission Django's inline forms report no change and the line would
            # be dropped while the page says "changed successfully"; say no instead.
            raise ValidationError(CONFIRMED_LINES_LOCKED, code="confirmed")
        first_line_of: dict[str, int] = {}
        for index, form in enumerate(self.forms):
            if (
                not form.has_changed()
                and form.instance.pk is None
                or self.can_delete
                and self._should_delete_form(form)
            ):
                continue
            sku = form.cleaned_data.get("sku")
            if sku is None:
                continue
            if sku in first_line_of:
                form.add_error(
                    "sku", f"Line {first_line_of[sku] + 1} has this SKU already; an order has one line per SKU."
                )
            else:
                first_line_of[sku] = index


class OrderLineInline(admin.TabularInline):
    """The lines of a pending order are edited here; those of a confirmed order are only shown,
    since its event has left with them. (`obj` is the order whose page this is.)"""

    model = OrderLine
    formset = OrderLineFormSet
    extra = 1
    min_num = 1

    def get_extra(self, request: HttpRequest, obj: Order | None = None, **kwargs) -> int:
        return 0 if _is_confirmed(obj) else super().get_extra(request, obj, **kwargs)

    def get_max_num(self, request: HttpRequest, obj: Order | None = None, **kwargs) -> int:
        # 0: a confirmed order's page offers no "Add another" (its lines are shown all the same).
        return 0 if _is_confirmed(obj) else settings.ORDER_MAX_LINES

    def get_formset(self, request: HttpRequest, obj: Order | None = None, **kwargs):
        # max_num alone only stops the page from offering more rows; a post may still hold more.
        # A confirmed order's posted lines are refused by the formset's clean(), with the reason.
        return super().get_formset(request, obj, validate_max=not _is_confirmed(obj), **kwargs)

    def has_add_permission(self, request: HttpRequest, obj: Order | None = None) -> bool:
        return not _is_confirmed(obj) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Order | None = None) -> bool:
        return not _is_confirmed(obj) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Order | None = None) -> bool:
        return not _is_confirmed(obj) and super().has_delete_permission(request, obj)


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ["id", "customer_id", "status", "total_amount", "export_status", "created_at", "confirmed_at"]
    list_filter = ["status"]
    search_fields = ["customer_id"]
    search_help_text = "An order id, or (part of) a customer id."
    readonly_fields = ["status", "created_at", "confirmed_at", "total_amount", "export_status"]
    inlines = [OrderLineInline]
    actions = ["mark_confirmed"]
    change_form_template = "admin/orders/order/change_form.html"

    def render_change_form(self, request: HttpRequest, context, add=False, change=False, form_url="", obj=None):
        # Here the admin has read the order and checked the user may see it: the panels use both.
        if obj is not None and request.method == "GET":
            context["order_panels"] = [html for panel in _order_page_panels if (html := panel(request, obj))]
        if _is_confirmed(obj):
            context["lines_locked"] = CONFIRMED_LINES_LOCKED
        return super().render_change_form(request, context, add, change, form_url, obj)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Order]:
        return super().get_queryset(request).prefetch_related("lines").select_related("export")

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Order | None:
        order = super().get_object(request, object_id, from_field)
        if order is not None and request.method == "POST":
            # The admin saves a change in the transaction it reads the order in. Lock the row and
            # read it again: a confirm committing meanwhile would otherwise be undone by the
            # save (status back to pending after the event left), or its customer and lines
            # changed behind the event. Now the confirm waits, or the form sees it confirmed.
            Order.objects.select_for_update().filter(pk=order.pk).values_list("pk").first()
            order = super().get_object(request, object_id, from_field)
        return order

    def get_readonly_fields(self, request: HttpRequest, obj: Order | None = None) -> list[str]:
        readonly = list(super().get_readonly_fields(request, obj))
        if _is_confirmed(obj):
            readonly.append("customer_id")  # the event has left with it
        return readonly

    def get_search_results(self, request, queryset, search_term):
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip().lstrip("#")
        # isascii: str.isdigit() is also true for "²", which int() refuses.
        if term.isascii() and term.isdigit():
            results |= queryset.filter(pk=int(term))
        return results, may_have_duplicates

    def has_confirm_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(CONFIRM_ORDER)

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

    @admin.action(description="Mark confirmed", permissions=["confirm"])
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
            except OrderError as exc:
                refused.append(f"#{order_id} ({exc})")
            except Order.DoesNotExist:
                refused.append(f"#{order_id} (deleted meanwhile)")
        if confirmed:
            ids = ", ".join(f"#{order_id}" for order_id in confirmed)
            self.message_user(request, f"Confirmed {len(confirmed)} order(s): {ids}.", messages.SUCCESS)
        if refused:
            self.message_user(request, f"Refused {len(refused)} order(s): {'; '.join(refused)}.", messages.WARNING)
