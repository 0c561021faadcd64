"""Who may do what on the orders API: Django's model permissions, as the admin asks for them.
List and read need orders.view_order, create orders.add_order, confirm orders.confirm_order;
the `order-operators` group holds the three."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import connection
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from kafka_bridge.models import OutboxEvent
from orders.models import Order
from orders.permissions import (
    ADD_ORDER,
    CONFIRM_ORDER,
    ORDER_OPERATOR_PERMISSIONS,
    ORDER_OPERATORS_GROUP,
    VIEW_ORDER,
)
from tests.support.factories import order_factory, user_factory

pytestmark = pytest.mark.django_db

ORDERS_URL = "/api/orders/"
VALID_BODY = {"customer_id": "c-1", "lines": [{"sku": "SKU-1", "quantity": 2, "unit_price": "10.00"}]}
PERMISSION_DENIED = {"detail": "You do not have permission to perform this action.", "code": "permission_denied"}
# What the admin grants beyond the API's three; none of them opens an API operation.
OTHER_ORDER_PERMISSIONS = ("orders.change_order", "orders.delete_order")


@dataclass(frozen=True)
class Operation:
    method: str
    url_of: Callable[[Order], str]
    permission: str
    success: int

    def send(self, client: APIClient, order: Order):
        url = self.url_of(order)
        if self.method == "post":
            return client.post(url, VALID_BODY if url == ORDERS_URL else None, format="json")
        return client.get(url)


OPERATIONS = {
    "list": Operation("get", lambda order: ORDERS_URL, VIEW_ORDER, 200),
    "retrieve": Operation("get", lambda order: f"{ORDERS_URL}{order.pk}/", VIEW_ORDER, 200),
    "create": Operation("post", lambda order: ORDERS_URL, ADD_ORDER, 201),
    "confirm": Operation("post", lambda order: f"{ORDERS_URL}{order.pk}/confirm/", CONFIRM_ORDER, 200),
}


def client_of(user) -> APIClient:
    """A client sending the user's API token, as a script would."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def assert_nothing_changed(order: Order) -> None:
    assert list(Order.objects.values_list("pk", "status")) == [(order.pk, Order.Status.PENDING)]
    assert not OutboxEvent.objects.exists()


@pytest.mark.parametrize("name", OPERATIONS)
def test_each_operation_is_allowed_with_its_permission_alone(name):
    operation = OPERATIONS[name]
    order = order_factory()

    response = operation.send(client_of(user_factory(permissions=[operation.permission])), order)

    assert response.status_code == operation.success, response.content


@pytest.mark.parametrize("holding", ["nothing", "every other order permission"])
@pytest.mark.parametrize("name", OPERATIONS)
def test_each_operation_is_403_in_the_contract_shape_without_its_permission_and_changes_nothing(name, holding):
    operation = OPERATIONS[name]
    others = [p for p in (*ORDER_OPERATOR_PERMISSIONS, *OTHER_ORDER_PERMISSIONS) if p != operation.permission]
    user = user_factory(permissions=others if holding != "nothing" else [])
    order = order_factory()

    response = operation.send(client_of(user), order)

    assert response.status_code == 403
    assert response.json() == PERMISSION_DENIED
    assert_nothing_changed(order)


@pytest.mark.parametrize("name", OPERATIONS)
def test_a_session_user_without_the_permission_is_403_too(name):
    operation = OPERATIONS[name]
    order = order_factory()
    client = APIClient()
    client.force_login(user_factory())

    response = operation.send(client, order)

    assert response.status_code == 403
    assert response.json() == PERMISSION_DENIED
    assert_nothing_changed(order)


@pytest.mark.parametrize("name", OPERATIONS)
def test_without_credentials_each_operation_stays_401(name):
    order = order_factory()

    response = OPERATIONS[name].send(APIClient(), order)

    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication credentials were not provided.", "code": "not_authenticated"}
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize("name", ["retrieve", "confirm"])
def test_without_the_permission_an_unknown_order_is_403_not_404(name):
    operation = OPERATIONS[name]
    order = order_factory()
    others = [p for p in ORDER_OPERATOR_PERMISSIONS if p != operation.permission]
    unknown = Order(pk=order.pk + 1)

    response = operation.send(client_of(user_factory(permissions=others)), unknown)

    assert response.status_code == 403
    assert response.json() == PERMISSION_DENIED


def test_an_unsupported_method_is_405_whatever_the_user_holds():
    order = order_factory()

    response = client_of(user_factory()).delete(f"{ORDERS_URL}{order.pk}/")

    assert response.status_code == 405
    assert response.json() == {"detail": 'Method "DELETE" not allowed.', "code": "method_not_allowed"}
    assert Order.objects.filter(pk=order.pk).exists()


@pytest.fixture
def order_operators() -> Group:
    """The group the data migration made. A transactional test that ran before on this worker
    (its teardown flushes every table; post_migrate then brings back the content types and the
    permissions, not the group) leaves it gone: it is made again by the migration's own code."""
    if not Group.objects.filter(name=ORDER_OPERATORS_GROUP).exists():
        migration = importlib.import_module("orders.migrations.0003_order_operators_group")
        migration.group_create(django_apps, SimpleNamespace(connection=connection))
    return Group.objects.get(name=ORDER_OPERATORS_GROUP)


def test_the_order_operators_group_holds_exactly_view_add_and_confirm_order(order_operators):
    group = order_operators

    permissions = group.permissions.select_related("content_type")
    held = {f"{p.content_type.app_label}.{p.codename}": p.name for p in permissions}

    assert held == {
        "orders.view_order": "Can view order",
        "orders.add_order": "Can add order",
        "orders.confirm_order": "Can confirm order",
    }


def test_a_member_of_order_operators_can_list_read_create_and_confirm(order_operators):
    user = user_factory()
    user.groups.add(order_operators)
    client = client_of(user)

    created = client.post(ORDERS_URL, VALID_BODY, format="json")
    order_id = created.json()["id"]
    listed = client.get(ORDERS_URL)
    read = client.get(f"{ORDERS_URL}{order_id}/")
    confirmed = client.post(f"{ORDERS_URL}{order_id}/confirm/")

    assert created.status_code == 201, created.content
    assert listed.status_code == 200
    assert [order["id"] for order in listed.json()["results"]] == [order_id]
    assert read.status_code == 200
    assert confirmed.status_code == 200, confirmed.content
    assert confirmed.json()["status"] == "confirmed"


@pytest.mark.django_db(transaction=True)
def test_the_group_migration_is_reversible():
    call_command("migrate", "orders", "0002", verbosity=0)
    assert not Group.objects.filter(name=ORDER_OPERATORS_GROUP).exists()

    # Every app forward again, not only orders: going back to orders 0002 also unapplied the
    # exports migrations that depend on a later one, and the tests after this one need them.
    call_command("migrate", verbosity=0)

    permissions = Group.objects.get(name=ORDER_OPERATORS_GROUP).permissions.values_list("codename", flat=True)
    assert sorted(permissions) == ["add_order", "confirm_order", "view_order"]
