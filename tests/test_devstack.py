"""`make run`'s supervisor (scripts/devstack.py): sets up, serves, and stops cleanly on Ctrl-C."""
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

import requests

import pytest

from config.env import BASE_DIR
from tests.helpers import wait_until

pytestmark = pytest.mark.kafka


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status
    except OSError:
        return None


class Stack:
    def __init__(self, env: dict[str, str]):
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, str(BASE_DIR / "scripts" / "devstack.py")],
            cwd=BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()

    def output(self) -> str:
        return "".join(self.lines)

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=30)


@pytest.fixture
def stack_env(tmp_path, event_topics, unique_name):
    topic, dlt = event_topics
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "ORDER_EXPORT_TOPIC": topic,
        "ORDER_EXPORT_DLT_TOPIC": dlt,
        "ORDER_EXPORT_CONSUMER_GROUP": unique_name("order-export-consumer"),
        "WEB_ADDRESS": f"127.0.0.1:{port}",
        # The relay takes over at once what the fast path did not send.
        "OUTBOX_RELAY_GRACE_SECONDS": "0",
    }
    return env, port


def test_sets_up_serves_the_admin_and_stops_on_ctrl_c_with_exit_0(stack_env, kafka_admin):
    env, port = stack_env
    login = f"http://127.0.0.1:{port}/admin/login/"

    stack = Stack(env)
    try:
        wait_until(lambda: http_status(login) == 200, timeout=60, message=lambda: f"admin not served:\n{stack.output()}")
    finally:
        exit_code = stack.interrupt()

    output = stack.output()
    assert exit_code == 0, output
    assert http_status(login) is None, "the web server outlived the supervisor"
    assert f"admin: http://127.0.0.1:{port}/admin/" in output
    assert f"API:   http://127.0.0.1:{port}/api/" in output
    assert "username: admin    password: " in output
    assert "running web, consumer, relay; Ctrl-C stops them all" in output
    assert "consumer | " in output and "relay    | " in output
    assert f"{env['ORDER_EXPORT_TOPIC']}: created with 3 partition(s)" in output
    topics = {t["name"] for t in kafka_admin.describe_topics([env["ORDER_EXPORT_TOPIC"]]) if t["error_code"] == 0}
    assert topics == {env["ORDER_EXPORT_TOPIC"]}

    # A second start on the same database keeps the superuser and prints no credentials.
    again = Stack(env)
    try:
        wait_until(lambda: http_status(login) == 200, timeout=60, message=lambda: again.output())
    finally:
        assert again.interrupt() == 0
    assert "password:" not in again.output()
    assert f"{env['ORDER_EXPORT_TOPIC']}: unchanged, 3 partition(s)" in again.output()


def admin_session(base: str, password: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{base}/admin/login/", timeout=5)
    response = session.post(
        f"{base}/admin/login/?next=/admin/",
        data={"username": "admin", "password": password, "csrfmiddlewaretoken": session.cookies["csrftoken"], "next": "/admin/"},
        timeout=5,
    )
    assert response.url.endswith("/admin/"), "admin login failed"
    return session


def test_an_order_confirmed_in_the_admin_reaches_the_fake_platform(stack_env):
    env, port = stack_env
    base = f"http://127.0.0.1:{port}"
    stack = Stack(env)
    try:
        wait_until(lambda: http_status(f"{base}/admin/login/") == 200, timeout=60, message=stack.output)
        password = re.search(r"password: (\S+)", stack.output()).group(1)
        session = admin_session(base, password)
        csrf = session.cookies["csrftoken"]
        created = session.post(
            f"{base}/admin/orders/order/add/",
            data={
                "customer_id": "c-admin", "csrfmiddlewaretoken": csrf,
                "lines-TOTAL_FORMS": "1", "lines-INITIAL_FORMS": "0", "lines-MIN_NUM_FORMS": "1", "lines-MAX_NUM_FORMS": "1000",
                "lines-0-sku": "SKU-9", "lines-0-quantity": "3", "lines-0-unit_price": "2.50",
            },
            timeout=10,
        )
        assert created.status_code == 200 and "was added successfully" in created.text
        order_id = int(re.search(r"/admin/orders/order/(\d+)/change/", created.text).group(1))

        session.post(
            f"{base}/admin/orders/order/",
            data={"action": "mark_confirmed", "_selected_action": [str(order_id)], "csrfmiddlewaretoken": csrf},
            timeout=10,
        )

        exported = re.compile(rf"export: order {order_id} event \S+ partition \d+ offset \d+: exported")
        wait_until(lambda: exported.search(stack.output()), timeout=30, message=stack.output)
        page = wait_until(
            lambda: (text := session.get(f"{base}/admin/orders/order/", timeout=5).text) and "exported (1 attempt)" in text and text,
            timeout=10,
            message="the admin does not show the export",
        )
        assert f"#{order_id}" in page or f">{order_id}<" in page
    finally:
        assert stack.interrupt() == 0
