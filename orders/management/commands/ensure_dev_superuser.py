"""ensure_dev_superuser: the development superuser and its API token, for `make run`.

Creates a superuser `admin` with a random password when there is no superuser yet, printing the
password this once (only its hash is stored), then prints the API token of the development
superuser (`admin`, or else the first superuser), made on first use. DRF keeps token keys as they
are, so the same token comes back on every run.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractUser
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token

USERNAME = "admin"


def dev_superuser_ensure() -> tuple[AbstractUser, str | None]:
    """The development superuser, and its password when it was created just now."""
    superusers = get_user_model().objects.filter(is_superuser=True)
    with transaction.atomic():
        user = superusers.filter(username=USERNAME).first() or superusers.order_by("pk").first()
        if user is not None:
            return user, None
        password = secrets.token_urlsafe(12)
        user = get_user_model().objects.create_superuser(
            username=USERNAME, email=f"{USERNAME}@example.com", password=password
        )
        return user, password


class Command(BaseCommand):
    help = (
        "Development only (DJANGO_DEBUG=true): create a superuser `admin` when there is none, and "
        "print its password (the first time) and its API token."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--token",
            action="store_true",
            help="print the API token alone, for `export TOKEN=$(... ensure_dev_superuser --token)`",
        )
        parser.add_argument(
            "--web-address",
            default="127.0.0.1:8000",
            help="where the web server listens, for the URLs printed (default 127.0.0.1:8000)",
        )

    def handle(self, *args, token: bool, web_address: str, **options):
        if not settings.DEBUG:
            # It prints a superuser's password and token: a development convenience only.
            raise CommandError("ensure_dev_superuser is for development: it runs with DJANGO_DEBUG=true only")
        user, password = dev_superuser_ensure()
        key = Token.objects.get_or_create(user=user)[0].key
        if password is not None:
            # With --token, stdout is the key alone: the password goes to stderr, unstyled.
            notes = self.stderr if token else self.stdout
            notes.write("Created a development superuser (its password is shown only this once):", style_func=str)
            notes.write(f"    username: {user.username}    password: {password}", style_func=str)
        if token:
            self.stdout.write(key)
            return
        base = f"http://{web_address}"
        self.stdout.write(f"admin: {base}/admin/")
        self.stdout.write(f"API:   {base}/api/    (Swagger UI: {base}/api/docs/)")
        self.stdout.write(f"API token for {user.username}: {key}")
        self.stdout.write(f"    export TOKEN={key}")
        self.stdout.write(f'    curl -H "Authorization: Token $TOKEN" {base}/api/orders/')
