"""Throttling of the login views, which are plain Django views that DRF's throttles never see:
POSTs (the attempts) per client IP, at the anon rate."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.http import HttpRequest, HttpResponse
from rest_framework.throttling import AnonRateThrottle

from config.api.errors import too_many_requests


class LoginRateThrottle(AnonRateThrottle):
    """Login attempts per client IP at the anon rate, in a count of their own (API requests do
    not use it up), shared by every login view so that alternating between them gains nothing."""

    def get_cache_key(self, request, view) -> str:
        # Per IP even when someone is signed in: a session of one's own must not lift the limit
        # on guessing another user's password.
        return self.cache_format % {"scope": "login", "ident": self.get_ident(request)}


def login_throttled(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """`view` with its POSTs limited by `LoginRateThrottle`: past the rate, 429 with Retry-After."""

    @wraps(view)
    def throttled_view(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.method == "POST":
            throttle = LoginRateThrottle()
            if not throttle.allow_request(request, None):
                # wait() is None when more attempts were counted than the rate now allows (it
                # was lowered): the whole window is then the honest answer.
                return too_many_requests(request, wait=throttle.wait() or throttle.duration)
        return view(request, *args, **kwargs)

    return throttled_view
