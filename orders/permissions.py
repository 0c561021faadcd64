"""Who may do what with orders: Django's model permissions, the same ones the admin checks."""

from __future__ import annotations

from rest_framework.exceptions import MethodNotAllowed
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.views import APIView

VIEW_ORDER = "orders.view_order"
ADD_ORDER = "orders.add_order"
CONFIRM_ORDER = "orders.confirm_order"
# Everything the API offers; migration 0003 gives the group these three.
ORDER_OPERATORS_GROUP = "order-operators"
ORDER_OPERATOR_PERMISSIONS = (VIEW_ORDER, ADD_ORDER, CONFIRM_ORDER)


class OrderPermissions(BasePermission):
    """The model permission each action of the orders API needs.

    Unlike DRF's DjangoModelPermissions, which maps HTTP methods to permissions, reads need
    `view_order` too, and confirm (a POST, like create) needs `confirm_order` rather than
    `add_order`.
    """

    required = {
        "list": VIEW_ORDER,
        "retrieve": VIEW_ORDER,
        "create": ADD_ORDER,
        "confirm": CONFIRM_ORDER,
    }

    def has_permission(self, request: Request, view: APIView) -> bool:
        # False for an anonymous request: DRF answers it with 401, not 403.
        if not (request.user and request.user.is_authenticated):
            return False
        action = getattr(view, "action", None)
        if action == "metadata":  # OPTIONS: the API's description, as DjangoModelPermissions allows
            return True
        if action is None:
            # No action for this method: the same 405 for everyone, before anything else is said.
            raise MethodNotAllowed(request.method)
        # An action missing from the map is refused, so a new one is closed until it is listed.
        permission = self.required.get(action)
        return permission is not None and request.user.has_perm(permission)
