"""`make run`'s supervisor (scripts/devstack.py): sets up, serves, and stops cleanly on Ctrl-C."""
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

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
def stack_env(tmp_path, event_topics):
    topic, dlt = event_topics
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "ORDER_EXPORT_TOPIC": topic,
        "ORDER_EXPORT_DLT_TOPIC": dlt,
        "WEB_ADDRESS": f"127.0.0.1:{port}",
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
