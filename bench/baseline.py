"""`python -m bench --baseline REF`: REF's own bench, run in a temporary git worktree of REF with
the options the user gave, against the same broker and PostgreSQL; its figures and targets go
into today's results as `baseline`, and the markdown shows them beside today's.

REF's bench runs AFTER today's, not before: today's figures are what the run is for, so
nothing that goes wrong in REF's run (an old bug, an option its bench lacks, the length of a run
of slower code, a Ctrl-C) can cost them; they are measured first, and the results file is
written with whatever REF's run gave. The two runs are not interleaved figure by figure: each is
a bench of its own, with its own setup and cleanup.

The worktree borrows from this checkout, as symbolic links, what git ignores and REF's bench
needs: `.venv` (REF's requirements are a subset of today's), `.env` (the same settings, so the
same broker) and `kafka/lib` (Kafka's own tools, for the Java ceilings). The links are removed
before the worktree is, so nothing behind them is ever deleted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bench.harness import ROOT

# What the worktree links to in this checkout, when this checkout has it.
SHARED = (".venv", ".env", "kafka/lib")
# How long REF's bench gets to clean up (its workers, topics, database) after a Ctrl-C.
CLEANUP_SECONDS = 120.0


class BaselineError(Exception):
    """REF could not be checked out or its bench not started; the message says why."""


@dataclass(frozen=True)
class BaselineRun:
    entry: dict  # the results' `baseline` object
    interrupted: bool = False


# --- the pure parts ----------------------------------------------------------------------


def known_options(*, help_text: str) -> set[str]:
    """The long options a bench's `--help` names."""
    return set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", help_text))


def bench_argv(
    *, args: argparse.Namespace, known: set[str], out: Path, postgres_url: str | None
) -> tuple[list[str], list[str]]:
    """(argv, left out): the options of today's run that REF's bench gets, with `--no-plots` and
    `--out`; `left out` names those the user gave that REF's bench does not know."""
    wanted: list[tuple[str, str | None]] = [("--db", args.db)]
    if args.only:
        wanted.append(("--only", args.only))
    for option, value in (
        ("--repeats", args.repeats),
        ("--records", args.records),
        ("--e2e-processes", args.e2e_processes),
        ("--postgres-url", postgres_url),
    ):
        if value is not None:
            wanted.append((option, str(value)))
    if args.quick:
        wanted.append(("--quick", None))
    if getattr(args, "no_debezium", False):
        wanted.append(("--no-debezium", None))
    wanted += [("--no-plots", None), ("--out", str(out))]
    argv, left_out = [], []
    for option, value in wanted:
        if option not in known:
            left_out.append(option)
        else:
            argv += [option] if value is None else [option, value]
    return argv, left_out


def failures(*, returncode: int, results: dict | None, tail: list[str]) -> list[str]:
    """What went wrong in REF's run, [] when nothing did: its own errors (a measurement that
    failed), or why it left no results, with its last line on stderr."""
    if results is None:
        last = next((line.strip() for line in reversed(tail) if line.strip()), "")
        return [f"its bench exited with {returncode} and wrote no results{f': {last}' if last else ''}"]
    errors = [str(error) for error in results.get("errors", [])]
    if returncode != 0 and not errors:
        errors.append(f"its bench exited with {returncode}")
    return errors


def entry(*, ref: str, commit: str, results: dict | None, errors: list[str]) -> dict:
    """The results' `baseline` object: REF's figures and targets as its own JSON holds them (its
    targets are its own definitions'; the markdown applies today's to its figures)."""
    results = results or {}
    return {
        "ref": ref,
        "commit": commit,
        "figures": results.get("figures", []),
        "targets": results.get("targets", {}),
        "errors": errors,
    }


# --- git, the worktree, REF's bench --------------------------------------------------------


def _git(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def resolve(*, ref: str) -> str:
    """REF's full commit hash; BaselineError when it names no commit."""
    done = _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    if done.returncode != 0 or not done.stdout.strip():
        raise BaselineError(f"{ref!r} names no commit of this repository")
    return done.stdout.strip()


@contextlib.contextmanager
def worktree(*, commit: str, parent: Path) -> Iterator[Path]:
    """A detached worktree of `commit` in `parent`, with the links of SHARED; removed on the way
    out, also after an error or a Ctrl-C."""
    path = parent / "worktree"
    try:
        done = _git("worktree", "add", "--detach", str(path), commit)
        if done.returncode != 0:
            raise BaselineError(f"git worktree add failed: {done.stderr.strip()}")
        for name in SHARED:
            source, link = ROOT / name, path / name
            if source.exists() and link.parent.is_dir() and not link.exists() and not link.is_symlink():
                link.symlink_to(source)
        yield path
    finally:
        _remove(path)


def _remove(path: Path) -> None:
    for name in SHARED:
        link = path / name
        if link.is_symlink():
            link.unlink()
    if path.exists() and _git("worktree", "remove", "--force", str(path)).returncode != 0:
        shutil.rmtree(path, ignore_errors=True)
    _git("worktree", "prune")


def _python(tree: Path) -> str:
    """The worktree's .venv interpreter (this one's, linked), else the one running today's bench."""
    linked = tree / ".venv" / "bin" / "python"
    return str(linked) if linked.exists() else sys.executable


def read_help(*, tree: Path) -> str:
    done = subprocess.run(
        [_python(tree), "-m", "bench", "--help"],
        cwd=tree,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BaselineError(f"`python -m bench --help` failed in its checkout: {last}")
    return done.stdout


def run_bench(*, tree: Path, argv: list[str], prefix: str) -> tuple[int, list[str], bool]:
    """Run `python -m bench argv` in `tree`, its stderr (the progress) shown with `prefix`:
    (exit status, its last lines on stderr, interrupted). It runs in a process group of its own,
    so that a Ctrl-C reaches it once, from here: it then stops its workers and removes its
    topics and database as after a Ctrl-C of its own, within CLEANUP_SECONDS; a second Ctrl-C
    kills it."""
    process = subprocess.Popen(
        [_python(tree), "-m", "bench", *argv],
        cwd=tree,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,  # its table: the markdown of today's run shows its figures
        stderr=subprocess.PIPE,
        text=True,
        process_group=0,
    )
    tail: deque[str] = deque(maxlen=20)
    forwarding = threading.Thread(target=_forward, args=(process.stderr, prefix, tail), daemon=True)
    forwarding.start()
    interrupted = False
    try:
        process.wait()
    except KeyboardInterrupt:
        interrupted = True
        _stop(process)
    forwarding.join(timeout=5)
    return process.returncode, list(tail), interrupted


def _forward(stream: IO[str], prefix: str, tail: deque[str]) -> None:
    for line in stream:
        tail.append(line.rstrip("\n"))
        sys.stderr.write(prefix + line)
        sys.stderr.flush()


def _stop(process: subprocess.Popen) -> None:
    _signal_group(process, signal.SIGINT)
    try:
        process.wait(timeout=CLEANUP_SECONDS)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        _signal_group(process, signal.SIGKILL)
        process.wait()


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, sig)


def _shown(argv: list[str]) -> list[str]:
    """`argv` to print: the PostgreSQL URL (it may hold a password) left out."""
    return ["…" if i and argv[i - 1] == "--postgres-url" else arg for i, arg in enumerate(argv)]


def read_results(*, out: Path) -> dict | None:
    """The results JSON REF's bench wrote in `out`, None when it wrote none."""
    written = sorted(out.glob("*.json"))
    return json.loads(written[-1].read_text()) if written else None


# --- the whole of it ------------------------------------------------------------------------


def measure(
    *, ref: str, commit: str, args: argparse.Namespace, postgres_url: str | None, note: Callable[[str], None]
) -> BaselineRun:
    """Check REF out, run its bench with the user's options, read its results, remove the
    worktree. What REF's bench skipped, left out or failed at is noted with `note`; a failure
    is also in the entry's `errors`."""
    name = f"baseline {ref}"
    parent = Path(tempfile.mkdtemp(prefix="orderflow-baseline-"))
    try:
        with worktree(commit=commit, parent=parent) as tree:
            argv, left_out = bench_argv(
                args=args,
                known=known_options(help_text=read_help(tree=tree)),
                out=parent / "out",
                postgres_url=postgres_url,
            )
            for option in left_out:
                note(f"{name}: its bench has no {option}, not given to it")
            print(f"bench: {name} ({commit[:12]}): python -m bench {' '.join(_shown(argv))} in {tree}", file=sys.stderr)
            returncode, tail, interrupted = run_bench(tree=tree, argv=argv, prefix=f"[{name}] ")
        results = read_results(out=parent / "out")
        errors = failures(returncode=returncode, results=results, tail=tail)
        if interrupted and "interrupted" not in errors:
            errors.insert(0, "interrupted")
    except BaselineError as exc:
        results, errors, interrupted = None, [str(exc)], False
    except KeyboardInterrupt:
        results, errors, interrupted = None, ["interrupted"], True
    finally:
        shutil.rmtree(parent, ignore_errors=True)
    for text in (results or {}).get("notes", []):
        note(f"{name}: {text}")
    for error in errors:
        note(f"{name} failed: {error.splitlines()[0]}")
    return BaselineRun(entry=entry(ref=ref, commit=commit, results=results, errors=errors), interrupted=interrupted)
