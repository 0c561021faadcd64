"""`make run` as a new user meets it, in a fresh copy of the project (honcho on Procfile.dev,
from the Makefile): writes the development .env, sets up, prints a token that the README's lines
use verbatim from another terminal, serves, stops on Ctrl-C with exit 0, and stops everything
when a process dies."""

import codecs
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import urllib.request
from pathlib import Path

import pytest
import requests
from honcho.environ import parse_procfile

from config.env import BASE_DIR
from tests.support.helpers import wait_until
from tests.support.ports import free_port

# The stack runs on the development SQLite of its own checkout, whatever the suite's database.
pytestmark = pytest.mark.database_independent

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")
# Where a run's output shows each process started; honcho starts each in a process group of
# its own, led by the process it names.
STARTED = re.compile(r"(\w+)\.1 started \(pid=(\d+)\)")
# What a new user's shell holds besides where the broker is (the KAFKA_* variables).
MACHINE_VARIABLES = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TMPDIR", "JAVA_HOME")


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


class MakeRun:
    """`make run` in `folder`, in a session and a terminal of its own (a pseudo-terminal), where
    Ctrl-C is typed."""

    def __init__(self, folder: Path, env: dict[str, str]):
        self.chunks: list[str] = []
        self.terminal, follower = os.openpty()
        # Nested under `make test`, its flags (a jobserver) are not for this make.
        env = {k: v for k, v in env.items() if k not in {"MAKEFLAGS", "MFLAGS", "MAKELEVEL"}}
        # setsid --ctty: a session whose controlling terminal is the pseudo-terminal, as a shell's.
        self.process = subprocess.Popen(
            ["setsid", "--ctty", "--wait", "make", "--no-print-directory", "run"],
            cwd=folder,
            env=env,
            stdin=follower,
            stdout=follower,
            stderr=follower,
        )
        os.close(follower)
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

    def output(self) -> str:
        return ANSI_ESCAPE.sub("", "".join(self.chunks).replace("\r\n", "\n"))

    def started(self) -> dict[str, int]:
        """Process type -> the pid honcho started it with (the leader of its process group)."""
        return {name: int(pid) for name, pid in STARTED.findall(self.output())}

    def leftovers(self) -> list[int]:
        """Processes of this run still running: in its session (make, scripts/foreground.py,
        honcho) or in the process groups honcho started."""
        return live_processes(sessions={self.process.pid}, groups=set(self.started().values()))

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout=timeout)

    def ctrl_c(self) -> int:
        os.write(self.terminal, b"\x03")
        code = self.wait()
        self._reader.join(timeout=5)
        return code

    def stop(self) -> None:
        """The cleanup of a test that failed before its run ended: Ctrl-C, then killed with
        everything it started."""
        if self.process.poll() is None:
            try:
                self.ctrl_c()
            except (OSError, subprocess.TimeoutExpired):
                pass
        for pid in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.wait(timeout=10)


@pytest.fixture
def checkout(tmp_path) -> Path:
    """What a fresh clone of this tree holds, uncommitted changes included, and nothing git ignores
    (no .env, no database), with this tree's installed .venv. Files keep their times, so make finds
    that .venv up to date and installs nothing."""
    root = tmp_path / "orderflow"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=BASE_DIR,
        capture_output=True,
        check=True,
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (BASE_DIR / name).is_file():  # a file deleted but not yet staged is listed too
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(BASE_DIR / name, root / name)
    (root / ".venv").symlink_to(BASE_DIR / ".venv")
    return root


@pytest.fixture
def stack_env(event_topics, unique_name):
    """A new user's shell: no DJANGO_SETTINGS_MODULE, DATABASE_URL or other test setting (the
    copy's own .env and db.sqlite3), the suite's broker, names of this test's own on it, and a
    free port for the web server."""
    topic, dlt = event_topics
    port = free_port()
    env = {name: value for name, value in os.environ.items() if name in MACHINE_VARIABLES or name.startswith("KAFKA_")}
    env.update(
        ORDER_EXPORT_TOPIC=topic,
        ORDER_EXPORT_DLT_TOPIC=dlt,
        ORDER_EXPORT_CONSUMER_GROUP=unique_name("order-export-consumer"),
        WEB_ADDRESS=f"127.0.0.1:{port}",
    )
    return env, port


def readme_token_lines() -> str:
    """The README's lines for another terminal while `make run` runs: its block that sets TOKEN."""
    blocks = re.findall(r"^```sh\n(.*?)^```", (BASE_DIR / "README.md").read_text(), re.MULTILINE | re.DOTALL)
    [block] = [block for block in blocks if "export TOKEN=" in block]
    return block


def json_documents(text: str) -> list:
    """The JSON values printed one after the other (curl ends none with a newline)."""
    decoder, documents, at = json.JSONDecoder(), [], 0
    text = text.strip()
    while at < len(text):
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
        while at < len(text) and text[at].isspace():
            at += 1
    return documents


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
def test_make_run_on_a_fresh_clone_prints_a_token_the_readmes_lines_use_and_stops_on_ctrl_c_with_exit_0(
    checkout, stack_env, kafka_admin
):
    env, port = stack_env
    login = f"http://127.0.0.1:{port}/admin/login/"

    run = MakeRun(checkout, env)
    try:
        wait_until(lambda: http_status(login) == 200, timeout=90, message=lambda: f"admin not served:\n{run.output()}")
        # The README's lines verbatim, in another shell of the same user, but for the port: 8000 is
        # not this test's to take.
        lines = readme_token_lines().replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        readme = subprocess.run(
            ["bash", "-e", "-c", lines + 'echo "TOKEN=$TOKEN"\n'],
            cwd=checkout,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert readme.returncode == 0, readme.stdout + readme.stderr
        answers, token = readme.stdout.rsplit("TOKEN=", 1)
        token = token.strip()
        created, confirmed = json_documents(answers)
        assert (created["id"], created["status"]) == (1, "pending"), readme.stdout
        assert (confirmed["id"], confirmed["status"]) == (1, "confirmed"), readme.stdout
        exported = re.compile(r"export: order 1 event \S+ partition \d+ offset \d+: exported")
        wait_until(lambda: exported.search(run.output()), timeout=30, message=run.output)

        # Those manage.py lines ran with the .env's DEBUG and key: without it, they would not run.
        without_dot_env = subprocess.run(
            [".venv/bin/python", "manage.py", "check"],
            cwd=checkout,
            env={**env, "DJANGO_READ_DOT_ENV_FILE": "false"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert "ImproperlyConfigured: DJANGO_SECRET_KEY is the development default" in without_dot_env.stderr

        started = run.started()
        assert run.ctrl_c() == 0, run.output()
    finally:
        run.stop()

    output = run.output()
    assert set(started) == {"release", "web", "consumer", "relay"}, output
    assert run.leftovers() == [], "processes outlived make run"
    assert http_status(login) is None, "the web server outlived make run"
    assert "Wrote .env: development settings" in output
    dot_env = (checkout / ".env").read_text()
    assert "DJANGO_DEBUG=true" in dot_env.splitlines()
    assert len(re.search(r"^DJANGO_SECRET_KEY=(\S+)$", dot_env, re.MULTILINE).group(1)) >= 50
    assert subprocess.run(["git", "check-ignore", "--quiet", ".env"], cwd=BASE_DIR).returncode == 0
    assert f"admin: http://127.0.0.1:{port}/admin/" in output
    assert f"API:   http://127.0.0.1:{port}/api/" in output
    assert "username: admin    password: " in output
    assert f"API token for admin: {token}" in output and f"export TOKEN={token}" in output
    assert re.search(r"consumer\.1 +\| ", output) and re.search(r"relay\.1 +\| ", output), output
    assert f"{env['ORDER_EXPORT_TOPIC']}: created with 3 partition(s)" in output
    topics = {t["name"] for t in kafka_admin.describe_topics([env["ORDER_EXPORT_TOPIC"]]) if t["error_code"] == 0}
    assert topics == {env["ORDER_EXPORT_TOPIC"]}

    # A second start keeps the .env and the superuser: no password, the same token.
    again = MakeRun(checkout, env)
    try:
        wait_until(lambda: http_status(login) == 200, timeout=60, message=again.output)
        assert again.ctrl_c() == 0, again.output()
    finally:
        again.stop()
    assert (checkout / ".env").read_text() == dot_env
    assert "Wrote .env" not in again.output()
    assert "password:" not in again.output()
    assert f"export TOKEN={token}" in again.output()
    assert f"{env['ORDER_EXPORT_TOPIC']}: unchanged, 3 partition(s)" in again.output()
    assert again.leftovers() == []


@pytest.mark.kafka
def test_a_process_that_dies_stops_the_others_and_the_run_fails(checkout, stack_env):
    env, port = stack_env
    login = f"http://127.0.0.1:{port}/admin/login/"
    run = MakeRun(checkout, env)
    try:
        wait_until(lambda: http_status(login) == 200 and "consumer" in run.started(), timeout=90, message=run.output)
        os.kill(run.started()["consumer"], signal.SIGKILL)
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
def test_an_order_confirmed_in_the_admin_reaches_the_fake_platform(checkout, stack_env):
    env, port = stack_env
    base = f"http://127.0.0.1:{port}"
    stack = MakeRun(checkout, env)
    try:
        wait_until(lambda: http_status(f"{base}/admin/login/") == 200, timeout=90, message=stack.output)
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
        assert stack.ctrl_c() == 0, stack.output()
    finally:
        stack.stop()
