"""`make run`: migrate, ensure topics, make sure an admin can log in, then run the web server,
the export consumer and the outbox relay as child processes with prefixed log lines.

Ctrl-C (or SIGTERM) stops every child, gracefully first, and exits 0. If a child dies on its
own, the others are stopped and the exit code is 1, so a crash is never hidden in the noise.
"""
from __future__ import annotations

import atexit
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANAGE = [sys.executable, str(ROOT / "manage.py")]
COLORS = ["\033[36m", "\033[33m", "\033[35m", "\033[32m"]
RESET = "\033[0m"
STOP_GRACE_SECONDS = 20


@dataclass
class Child:
    name: str
    argv: list[str]
    color: str
    process: subprocess.Popen | None = field(default=None, repr=False)


def log(name: str, line: str, color: str = "") -> None:
    use_color = color and sys.stdout.isatty()
    prefix = f"{color}{name:<9}|{RESET}" if use_color else f"{name:<9}|"
    sys.stdout.write(f"{prefix} {line}\n")
    sys.stdout.flush()


def run_step(*args: str) -> None:
    log("setup", "manage.py " + " ".join(args))
    result = subprocess.run([*MANAGE, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in result.stdout.splitlines():
        log("setup", line)
    if result.returncode != 0:
        log("setup", f"manage.py {args[0]} failed (exit {result.returncode})")
        sys.exit(result.returncode)


def ensure_dev_superuser() -> None:
    """Create an `admin` superuser with a random password when no superuser exists yet, and
    print its credentials this once."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    User = get_user_model()
    if User.objects.filter(is_superuser=True).exists():
        return
    password = secrets.token_urlsafe(12)
    User.objects.create_superuser(username="admin", email="admin@example.com", password=password)
    log("setup", "created a development superuser (shown only this once):")
    log("setup", f"    username: admin    password: {password}")


def available_commands() -> set[str]:
    from django.core.management import get_commands

    return set(get_commands())


def pump(child: Child) -> None:
    assert child.process and child.process.stdout
    for raw in child.process.stdout:
        log(child.name, raw.rstrip("\n"), child.color)


def stop(children: list[Child]) -> None:
    running = [c for c in children if c.process and c.process.poll() is None]
    for child in running:
        # Each child leads its own process group, so the signal also reaches what it spawned
        # (runserver's autoreloader runs the server in a grandchild).
        os.killpg(child.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in running:
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log(child.name, f"still running {STOP_GRACE_SECONDS}s after SIGTERM; killing", child.color)
            os.killpg(child.process.pid, signal.SIGKILL)
            child.process.wait()


def own_the_terminal() -> None:
    """Become the terminal's foreground process group, so that Ctrl-C reaches this supervisor
    alone. Otherwise `make`, which shares the group, gets the SIGINT too and exits non-zero
    whatever the supervisor does."""
    if not sys.stdin.isatty():
        return
    fd = sys.stdin.fileno()
    original = os.tcgetpgrp(fd)
    os.setpgid(0, 0)
    # A background group writing to the terminal's settings gets SIGTTOU; ignore it while
    # the foreground group is handed over and back.
    signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    os.tcsetpgrp(fd, os.getpgrp())
    atexit.register(lambda: os.tcsetpgrp(fd, original))


def main() -> int:
    own_the_terminal()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_DEBUG", "true")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.path.insert(0, str(ROOT))
    web_address = os.environ.get("WEB_ADDRESS", "127.0.0.1:8000")

    run_step("migrate", "--noinput")
    run_step("ensure_topics")
    ensure_dev_superuser()

    commands = available_commands()
    candidates = [
        ("web", ["runserver", web_address]),
        ("consumer", ["run_export_consumer"]),
        ("relay", ["run_outbox_relay"]),
    ]
    children = [
        Child(name, [*MANAGE, *args], COLORS[i % len(COLORS)])
        for i, (name, args) in enumerate(candidates)
        if args[0] in commands
    ]

    stopping = threading.Event()

    def on_signal(signum, frame):
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    for child in children:
        child.process = subprocess.Popen(
            child.argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        threading.Thread(target=pump, args=(child,), daemon=True).start()

    log("run", f"API:   http://{web_address}/api/")
    log("run", f"admin: http://{web_address}/admin/")
    log("run", "running " + ", ".join(c.name for c in children) + "; Ctrl-C stops them all")

    exit_code = 0
    while not stopping.wait(0.2):
        dead = [c for c in children if c.process.poll() is not None]
        if dead:
            for child in dead:
                log("run", f"{child.name} exited with code {child.process.returncode}; stopping the rest")
            exit_code = 1
            break

    log("run", "stopping")
    stop(children)
    log("run", "stopped")
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
