"""The orders admin: searching, what a confirmed order still lets one edit, and who may use the
"Mark confirmed" action."""

from __future__ import annotations

import json
import threading

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client

from kafka_bridge.models import OutboxEvent
from orders.models import Order
from orders.permissions import CONFIRM_ORDER, VIEW_ORDER
from orders.services import order_confirm
from tests.support.factories import order_factory, user_factory

pytestmark = pytest.mark.django_db

CHANGELIST_URL = "/admin/orders/order/"
# Everything a clerk may do to orders and their lines in the admin, short of confirming them.
CLERK_PERMISSIONS = [
    f"orders.{action}_{model}" for action in ("view", "add", "change", "delete") for model in ("order", "orderline")
]


def change_url(order: Order) -> str:
    return f"{CHANGELIST_URL}{order.pk}/change/"


def staff_client(permissions: list[str]) -> Client:
    client = Client()
    client.force_login(user_factory(is_staff=True, permissions=permissions))
    return client


# --- search -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "term",
    [
        pytest.param("²", id="superscript-two"),  # str.isdigit() is true for it, int() refuses it
        pytest.param("#²", id="hash-superscript-two"),
        pytest.param("١", id="arabic-indic-one"),  # int() would read it as 1
        pytest.param("99999999999999999999999", id="beyond-a-64-bit-id"),
    ],
)
def test_searching_for_what_is_not_an_order_id_is_200_and_finds_no_order_by_id(admin_client, term):
    order_factory()

    response = admin_client.get(CHANGELIST_URL, {"q": term})

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []


@pytest.mark.parametrize("prefix", ["", "#"])
def test_searching_for_an_order_id_finds_that_order(admin_client, prefix):
    wanted, _other = order_factory(customer_id="c-wanted"), order_factory(customer_id="c-other")

    response = admin_client.get(CHANGELIST_URL, {"q": f"{prefix}{wanted.pk}"})

    assert response.status_code == 200
    assert [order.pk for order in response.context["cl"].result_list] == [wanted.pk]


# --- a confirmed order is read-only -------------------------------------------------------------


def lines_formset(response):
    [formset] = response.context["inline_admin_formsets"]
    return formset


def test_a_confirmed_orders_page_shows_its_customer_and_lines_read_only(admin_client):
    order = order_factory(customer_id="c-sent", confirmed=True)

    response = admin_client.get(change_url(order))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="customer_id"' not in html
    assert "customer_id" in response.context["adminform"].readonly_fields
    assert "c-sent" in html
    lines = lines_formset(response)
    assert (lines.has_add_permission, lines.has_change_permission, lines.has_delete_permission) == (False, False, False)
    assert 'name="lines-0-sku"' not in html
    assert "SKU-1" in html


def test_a_pending_orders_page_keeps_its_customer_and_lines_editable(admin_client):
    order = order_factory(customer_id="c-pending")

    response = admin_client.get(change_url(order))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="customer_id"' in html
    lines = lines_formset(response)
    assert (lines.has_add_permission, lines.has_change_permission, lines.has_delete_permission) == (True, True, True)
    assert 'name="lines-0-sku"' in html


def change_form_post(order: Order, *, delete_first_line: bool = False, add_line: bool = True) -> dict:
    """What the change page would post to make the customer "c-changed", edit (or delete) the
    first line and (unless `add_line` is false) add a line "SKU-ADDED"."""
    line = order.lines.get()
    data = {
        "customer_id": "c-changed",
        "lines-TOTAL_FORMS": "2" if add_line else "1",
        "lines-INITIAL_FORMS": "1",
        "lines-MIN_NUM_FORMS": "1",
        "lines-MAX_NUM_FORMS": "1000",
        "lines-0-id": str(line.pk),
        "lines-0-order": str(order.pk),
        "lines-0-sku": "SKU-CHANGED",
        "lines-0-quantity": "9",
        "lines-0-unit_price": "1.00",
        "lines-1-order": str(order.pk),
        "lines-1-sku": "SKU-ADDED",
        "lines-1-quantity": "1",
        "lines-1-unit_price": "5.00",
        "_save": "Save",
    }
    if delete_first_line:
        data["lines-0-DELETE"] = "on"
    if not add_line:
        data = {name: value for name, value in data.items() if not name.startswith("lines-1-")}
    return data


def order_contents(order: Order) -> tuple[str, list[tuple[str, int, str]]]:
    order = Order.objects.get(pk=order.pk)
    return order.customer_id, [(line.sku, line.quantity, str(line.unit_price)) for line in order.lines.all()]


@pytest.mark.parametrize("delete_first_line", [False, True], ids=["edit-line", "delete-line"])
def test_posting_changes_to_a_confirmed_order_changes_nothing(admin_client, delete_first_line):
    order = order_factory(customer_id="c-sent", confirmed=True)
    before = order_contents(order)

    response = admin_client.post(
        change_url(order), change_form_post(order, delete_first_line=delete_first_line, add_line=False)
    )

    assert response.status_code == 302  # saved, with nothing of this to save: the page offers none of it
    assert order_contents(order) == before == ("c-sent", [("SKU-1", 2, "10.00")])


def test_a_confirmed_orders_page_offers_no_row_to_add_a_line_and_says_why(admin_client):
    order = order_factory(confirmed=True)

    response = admin_client.get(change_url(order))

    html = response.content.decode()
    lines = lines_formset(response)
    assert [form.original for form in lines] == list(order.lines.all())  # its line, and no empty row
    # The admin's script offers "Add another Order line" while TOTAL_FORMS is below MAX_NUM_FORMS.
    assert 'name="lines-TOTAL_FORMS" value="1"' in html
    assert 'name="lines-MAX_NUM_FORMS" value="0"' in html
    assert 'name="lines-1-sku"' not in html and "lines-empty" not in html
    assert (
        '<p class="help" id="lines-locked">A confirmed order&#x27;s lines cannot change: its event has left with them.</p>'
        in html
    )


def test_a_pending_orders_page_offers_an_empty_row_and_says_nothing_of_locked_lines(admin_client, settings):
    order = order_factory()

    response = admin_client.get(change_url(order))

    html = response.content.decode()
    assert 'name="lines-TOTAL_FORMS" value="2"' in html  # its line and an empty row
    assert f'name="lines-MAX_NUM_FORMS" value="{settings.ORDER_MAX_LINES}"' in html
    assert 'name="lines-1-sku"' in html
    assert 'id="lines-locked"' not in html


def test_a_line_posted_to_a_confirmed_order_is_refused_with_the_reason_not_dropped_with_a_success(admin_client):
    """What a user of the old page did: filled in its empty row and saved. The admin said
    "changed successfully" and dropped the line."""
    order = order_factory(customer_id="c-sent", confirmed=True)
    form = change_form_post(order)
    form["customer_id"] = "c-sent"
    form.update({"lines-0-sku": "SKU-1", "lines-0-quantity": "2", "lines-0-unit_price": "10.00"})

    response = admin_client.post(change_url(order), form, follow=True)

    assert response.status_code == 200
    assert response.redirect_chain == []  # the form again, not the changelist
    html = response.content.decode()
    assert "Please correct the error below." in html
    assert "A confirmed order&#x27;s lines cannot change: its event has left with them." in html
    assert not [str(m) for m in response.context["messages"] if "changed successfully" in str(m)]
    assert order_contents(order) == ("c-sent", [("SKU-1", 2, "10.00")])


def test_posting_changes_to_a_pending_order_changes_it(admin_client):
    order = order_factory(customer_id="c-pending")

    response = admin_client.post(change_url(order), change_form_post(order))

    assert response.status_code == 302, response.context and response.context["errors"]
    assert order_contents(order) == ("c-changed", [("SKU-CHANGED", 9, "1.00"), ("SKU-ADDED", 1, "5.00")])


@pytest.mark.django_db(transaction=True)
def test_a_confirm_that_commits_while_the_admin_saves_the_order_is_neither_undone_nor_contradicted(settings):
    """The API confirms the order between the admin's read of it and its save. Whatever the
    order, the event that left must describe the order as stored, and it stays confirmed."""
    settings.KAFKA_PUBLISH_ON_COMMIT = False
    order = order_factory(customer_id="c-original")
    admin = Client()
    admin.force_login(get_user_model().objects.create_superuser(username="boss", password="pw", email="b@example.com"))
    form = change_form_post(order)
    confirms: list[threading.Thread] = []

    def confirm_after_first_read_of_the_order(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if not confirms and sql.lstrip().upper().startswith("SELECT") and f'"{Order._meta.db_table}"' in sql:
            confirm = threading.Thread(target=_confirm_in_a_connection_of_its_own, args=(order.pk,))
            confirms.append(confirm)
            confirm.start()
            # A confirm that must wait for the admin's transaction (SQLite serialises writers;
            # PostgreSQL waits on the row lock) goes on after it.
            confirm.join(timeout=1.0)
        return result

    with connection.execute_wrapper(confirm_after_first_read_of_the_order):
        admin.post(change_url(order), form)
    confirms[0].join(timeout=30)

    order.refresh_from_db()
    assert order.status == Order.Status.CONFIRMED
    event = json.loads(OutboxEvent.objects.get().payload)
    assert event["order"]["customer_id"] == order.customer_id
    assert [line["sku"] for line in event["order"]["lines"]] == list(
        order.lines.order_by("pk").values_list("sku", flat=True)
    )


def _confirm_in_a_connection_of_its_own(order_id: int) -> None:
    try:
        order_confirm(order_id=order_id)
    finally:
        connection.close()


def test_the_admin_refuses_two_lines_of_one_sku_as_the_api_does(admin_client):
    order = order_factory(customer_id="c-pending")
    form = change_form_post(order)
    form["lines-1-sku"] = "SKU-CHANGED"  # the first line's new SKU

    response = admin_client.post(change_url(order), form)

    assert response.status_code == 200  # the form again, with the error
    assert "Line 1 has this SKU already" in response.content.decode()
    assert order_contents(order) == ("c-pending", [("SKU-1", 2, "10.00")])


def test_the_admin_takes_no_more_lines_than_order_max_lines(admin_client, settings):
    settings.ORDER_MAX_LINES = 1
    order = order_factory(customer_id="c-pending")

    response = admin_client.post(change_url(order), change_form_post(order))  # two lines

    assert response.status_code == 200
    assert "Please submit at most 1 form." in response.content.decode()
    assert order_contents(order) == ("c-pending", [("SKU-1", 2, "10.00")])


# --- the "Mark confirmed" action ----------------------------------------------------------------


def offered_actions(client: Client) -> set[str]:
    response = client.get(CHANGELIST_URL)
    assert response.status_code == 200
    return {name for name, _label in response.context["action_form"].fields["action"].choices if name}


def test_the_mark_confirmed_action_is_refused_to_a_staff_user_without_confirm_order():
    client = staff_client(CLERK_PERMISSIONS)
    order = order_factory()

    response = client.post(CHANGELIST_URL, {"action": "mark_confirmed", "_selected_action": [order.pk]}, follow=True)

    assert "mark_confirmed" not in offered_actions(client)
    assert response.status_code == 200
    assert f"Confirmed 1 order(s): #{order.pk}." not in [str(m) for m in response.context["messages"]]
    assert Order.objects.get(pk=order.pk).status == Order.Status.PENDING
    assert not OutboxEvent.objects.exists()


def test_the_mark_confirmed_action_needs_confirm_order_and_not_change_order():
    client = staff_client([VIEW_ORDER, CONFIRM_ORDER])
    order = order_factory()

    response = client.post(CHANGELIST_URL, {"action": "mark_confirmed", "_selected_action": [order.pk]}, follow=True)

    assert [str(m) for m in response.context["messages"]] == [f"Confirmed 1 order(s): #{order.pk}."]
    assert Order.objects.get(pk=order.pk).status == Order.Status.CONFIRMED
    assert OutboxEvent.objects.count() == 1
