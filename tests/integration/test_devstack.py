"""`make run` (scripts/devstack.py, honcho on Procfile.dev): sets up, serves, stops on Ctrl-C
with exit 0, and stops everything when a process dies."""

import codecs
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
import requests
from honcho.environ import parse_procfile

from config.env import BASE_DIR
from tests.support.helpers import wait_until
from tests.support.ports import free_port

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# Where a run's output shows each process started; honcho starts each in a process group of
# its own, led by the process it names.
STARTED = re.compile(r"(\w+)\.1 started \(pid=(\d+)\)")


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status
    except OSError:
        return None


def live_processes(*, sessions: set[int] = frozenset(), groups: set[int] = frozenset()) -> list[int]:
    """Pids of the processes of these sessions or process groups that still run (zombies waiting
    for their parent do not count)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...: comm may hold spaces and parentheses.
        state, _ppid, pgrp, session = text[text.rindex(")") + 2 :].split()[:4]
        if state != "Z" and (int(pgrp) in groups or int(session) in sessions):
            alive.append(int(stat.parent.name))
    return alive


class Run:
    """The output and exit of one `make run` or scripts/devstack.py, started in a session of its
    own."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        self.chunks: list[str] = []

    def output(self) -> str:
        return ANSI_ESCAPE.sub("", "".join(self.chunks).replace("\r\n", "\n"))

    def started(self) -> dict[str, int]:
        """Process type -> the pid honcho started it with (the leader of its process group)."""
        return {name: int(pid) for name, pid in STARTED.findall(self.output())}

    def leftovers(self) -> list[int]:
        """Processes of this run still running: in its session (make, the script, honcho) or in
        the process groups honcho started."""
        return live_processes(sessions={self.process.pid}, groups=set(self.started().values()))

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout=timeout)

    def request_stop(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """The cleanup of a test that failed before its run ended: asked to stop, then killed
        with everything it started."""
        if self.process.poll() is None:
            self.request_stop()
            try:
                self.wait()
            except subprocess.TimeoutExpired:
                pass
        for pid in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.wait(timeout=10)


class TerminalRun(Run):
    """`make run` in a terminal of its own (a pseudo-terminal), where Ctrl-C is typed."""

    def __init__(self, env: dict[str, str]):
        self.terminal, follower = os.openpty()
        # Nested under `make test`, its flags (a jobserver) are not for this make.
        env = {k: v for k, v in env.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
        # setsid --ctty: a session whose controlling terminal is the pseudo-terminal, as a shell's.
        process = subprocess.Popen(
            ["setsid", "--ctty", "--wait", "make", "--no-print-directory", "run"],
            cwd=BASE_DIR,
            env=env,
            stdin=follower,
            stdout=follower,
            stderr=follower,
        )
        os.close(follower)
        super().__init__(process)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        try:
            while data := os.read(self.terminal, 4096):
                self.chunks.append(decoder.decode(data))
        except OSError:  # EIO: no process holds the terminal any more
            pass
        finally:
            os.close(self.terminal)

    def request_stop(self) -> None:
        os.write(self.terminal, b"\x03")

    def ctrl_c(self) -> int:
        self.request_stop()
        code = self.wait()
        self._reader.join(timeout=5)
        return code


class ScriptRun(Run):
    """scripts/devstack.py with no terminal, stopped by a signal sent to it alone."""

    def __init__(self, env: dict[str, str]):
        process = subprocess.Popen(
            [sys.executable, str(BASE_DIR / "scripts" / "devstack.py")],
            cwd=BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        super().__init__(process)
        threading.Thread(target=lambda: self.chunks.extend(process.stdout), daemon=True).start()

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        return self.wait()

    def request_stop(self) -> None:
        self.process.send_signal(signal.SIGINT)


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


def test_procfile_dev_runs_the_procfiles_process_types():
    """Procfile.dev differs from the deployment's Procfile only in its web server (and `exec`)."""
    deployed = parse_procfile((BASE_DIR / "Procfile").read_text()).processes
    dev = parse_procfile((BASE_DIR / "Procfile.dev").read_text()).processes

    assert list(dev) == list(deployed) == ["release", "web", "consumer", "relay"]
    for name in ("release", "consumer", "relay"):
        assert dev[name].removeprefix("exec ") == deployed[name]
    assert deployed["web"].startswith("gunicorn config.wsgi ")
    assert "runserver" in dev["web"]


@pytest.mark.kafka
def test_make_run_sets_up_serves_the_admin_and_stops_on_ctrl_c_with_exit_0(stack_env, kafka_admin):
    env, port = stack_env
    login = f"http://127.0.0.1:{port}/admin/login/"

    run = TerminalRun(env)
    try:
        wait_until(lambda: http_status(login) == 200, timeout=90, message=lambda: f"admin not served:\n{run.output()}")
        started = run.started()
        assert run.ctrl_c() == 0, run.output()
    finally:
        run.stop()

    output = run.output()
    assert set(started) == {"release", "web", "consumer", "relay"}, output
    assert run.leftovers() == [], "processes outlived make run"
    assert http_status(login) is None, "the web server outlived make run"
    assert f"admin: http://127.0.0.1:{port}/admin/" in output
    assert f"API:   http://127.0.0.1:{port}/api/" in output
    assert "username: admin    password: " in output
    assert re.search(r"consumer\.1 +\| ", output) and re.search(r"relay\.1 +\| ", output), output
    assert f"{env['ORDER_EXPORT_TOPIC']}: created with 3 partition(s)" in output
    topics = {t["name"] for t in kafka_admin.describe_topics([env["ORDER_EXPORT_TOPIC"]]) if t["error_code"] == 0}
    assert topics == {env["ORDER_EXPORT_TOPIC"]}

    # A second start on the same database keeps the superuser and prints no credentials; a
    # SIGINT sent to the script (no terminal) stops it as Ctrl-C does.
    again = ScriptRun(env)
    try:
        wait_until(lambda: http_status(login) == 200, timeout=60, message=again.output)
        assert again.interrupt() == 0, again.output()
    finally:
        again.stop()
    assert "password:" not in again.output()
    assert f"{env['ORDER_EXPORT_TOPIC']}: unchanged, 3 partition(s)" in again.output()
    assert again.leftovers() == []


@pytest.mark.kafka
def test_a_process_that_dies_stops_the_others_and_the_run_fails(stack_env):
    env, port = stack_env
    login = f"http://127.0.0.1:{port}/admin/login/"
    run = ScriptRun(env)
    try:
        wait_until(lambda: http_status(login) == 200 and "consumer" in run.started(), timeout=60, message=run.output)
        started = run.started()
        os.kill(started["consumer"], signal.SIGKILL)
        assert run.wait() != 0, run.output()
    finally:
        run.stop()
    assert run.leftovers() == [], run.output()
    assert http_status(login) is None


def admin_session(base: str, password: str) -> requests.Session:
    session = requests.Session()
    session.get(f"{base}/admin/login/", timeout=5)
    response = session.post(
        f"{base}/admin/login/?next=/admin/",
        data={
            "username": "admin",
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        timeout=5,
    )
    assert response.url.endswith("/admin/"), "admin login failed"
    return session


@pytest.mark.kafka
def test_an_order_confirmed_in_the_admin_reaches_the_fake_platform(stack_env):
    env, port = stack_env
    base = f"http://127.0.0.1:{port}"
    stack = ScriptRun(env)
    try:
        wait_until(lambda: http_status(f"{base}/admin/login/") == 200, timeout=60, message=stack.output)
        password = re.search(r"password: (\S+)", stack.output()).group(1)
        session = admin_session(base, password)
        csrf = session.cookies["csrftoken"]
        created = session.post(
            f"{base}/admin/orders/order/add/",
            data={
                "customer_id": "c-admin",
                "csrfmiddlewaretoken": csrf,
                "lines-TOTAL_FORMS": "1",
                "lines-INITIAL_FORMS": "0",
                "lines-MIN_NUM_FORMS": "1",
                "lines-MAX_NUM_FORMS": "1000",
                "lines-0-sku": "SKU-9",
                "lines-0-quantity": "3",
                "lines-0-unit_price": "2.50",
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
            lambda: (
                (text := session.get(f"{base}/admin/orders/order/", timeout=5).text)
                and "exported (1 attempt)" in text
                and text
            ),
            timeout=10,
            message="the admin does not show the export",
        )
        assert f"#{order_id}" in page or f">{order_id}<" in page
        assert stack.interrupt() == 0, stack.output()
    finally:
        stack.stop()
