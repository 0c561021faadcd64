"""`make run`: Procfile.dev's `release` (migrations, topics), a development superuser, then its
web, consumer and relay processes under honcho.

honcho prefixes their lines, stops them all when one exits (and exits with its code), and stops
them all on Ctrl-C or SIGTERM, exiting 130 or 143: this script makes that 0, since stopping on
request is how `make run` is meant to end.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROCFILE = ROOT / "Procfile.dev"
PROCESSES = ("web", "consumer", "relay")
STOPPED_ON_REQUEST = {128 + signal.SIGINT, 128 + signal.SIGTERM}


class Honcho:
    """Runs `honcho start` on Procfile.dev, one at a time, and passes on the signals this script
    gets, so that `kill <this pid>` stops everything as Ctrl-C does."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.stop_requested = False
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.stop_requested = True
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    def start(self, *process_types: str) -> int:
        argv = [
            sys.executable,
            "-m",
            "honcho",
            "--procfile",
            str(PROCFILE),
            "--app-root",
            str(ROOT),
            # Django reads .env itself, where the environment wins; honcho's .env would win over it.
            "--env",
            os.devnull,
            "start",
            *process_types,
        ]
        # A process group of its own, which the terminal's Ctrl-C can reach alone.
        self.process = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, process_group=0)
        with terminal_foreground(self.process.pid):
            return self.process.wait()


@contextmanager
def terminal_foreground(pgid: int) -> Iterator[None]:
    """Make `pgid` the terminal's foreground job meanwhile, as a shell does for a job, so that
    Ctrl-C goes to honcho alone: `make` would exit non-zero on it whatever its recipe returned.
    Only when this script is in the foreground (a `make run &` takes nothing)."""
    try:
        in_foreground = os.tcgetpgrp(0) == os.getpgrp()
    except OSError:  # stdin is not a terminal
        in_foreground = False
    if not in_foreground:
        yield
        return
    # A background job that changes the terminal's foreground gets SIGTTOU: ignored, as shells do.
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(0, pgid)
    except OSError:  # honcho is gone already (it failed at once): nothing to hand over
        pass
    try:
        yield
    finally:
        os.tcsetpgrp(0, os.getpgrp())
        signal.signal(signal.SIGTTOU, previous)


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
    print("Created a development superuser (shown only this once):")
    print(f"    username: admin    password: {password}", flush=True)


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DJANGO_DEBUG", "true")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    web_address = os.environ.setdefault("WEB_ADDRESS", "127.0.0.1:8000")
    # Procfile.dev says `python`: this virtualenv's.
    os.environ["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    sys.path.insert(0, str(ROOT))

    honcho = Honcho()
    code = honcho.start("release")
    if honcho.stop_requested or code in STOPPED_ON_REQUEST:
        return 0
    if code != 0:
        return code
    ensure_dev_superuser()
    if honcho.stop_requested:
        return 0

    print(f"API:   http://{web_address}/api/")
    print(f"admin: http://{web_address}/admin/")
    print(f"Starting {', '.join(PROCESSES)}; Ctrl-C stops them all.", flush=True)
    code = honcho.start(*PROCESSES)
    return 0 if code in STOPPED_ON_REQUEST else code


if __name__ == "__main__":
    sys.exit(main())
