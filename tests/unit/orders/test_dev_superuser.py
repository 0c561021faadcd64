"""ensure_dev_superuser: `make run`'s development superuser and its API token."""

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token

pytestmark = pytest.mark.django_db


@pytest.fixture
def debug(settings):
    settings.DEBUG = True


def ensure(*args: str) -> tuple[str, str]:
    out, err = io.StringIO(), io.StringIO()
    call_command("ensure_dev_superuser", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_first_run_creates_admin_and_prints_its_password_the_urls_and_a_working_token(debug, client):
    out, _ = ensure("--web-address", "127.0.0.1:8123")

    admin = get_user_model().objects.get(username="admin")
    assert admin.is_superuser
    password = out.split("password: ")[1].split()[0]
    assert admin.check_password(password)
    key = Token.objects.get(user=admin).key
    assert out.splitlines()[2:] == [
        "admin: http://127.0.0.1:8123/admin/",
        "API:   http://127.0.0.1:8123/api/    (Swagger UI: http://127.0.0.1:8123/api/docs/)",
        f"API token for admin: {key}",
        f"    export TOKEN={key}",
        '    curl -H "Authorization: Token $TOKEN" http://127.0.0.1:8123/api/orders/',
    ]
    assert client.get("/api/orders/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200


def test_later_runs_keep_the_user_print_no_password_and_the_same_token(debug):
    first, _ = ensure()
    again, _ = ensure()

    assert "password" not in again
    assert get_user_model().objects.count() == 1
    assert first.splitlines()[-3:] == again.splitlines()[-3:]


def test_token_prints_the_key_alone_and_a_password_made_meanwhile_on_stderr(debug):
    out, err = ensure("--token")

    assert out == Token.objects.get(user__username="admin").key + "\n"
    assert "username: admin    password: " in err
    assert ensure("--token") == (out, "")


def test_an_existing_superuser_is_used_and_no_admin_is_made(debug):
    get_user_model().objects.create_superuser(username="ops", password="pw", email="ops@example.com")

    out, _ = ensure("--token")

    assert not get_user_model().objects.filter(username="admin").exists()
    assert out.strip() == Token.objects.get(user__username="ops").key


def test_it_refuses_to_run_with_debug_off():
    with pytest.raises(CommandError, match="DJANGO_DEBUG=true"):
        ensure()
    assert not get_user_model().objects.exists()
