"""scripts/postgres.sh from a clone anywhere: as root, PostgreSQL runs as the `postgres` user,
which cannot enter a folder only root may enter (/root, any `mktemp -d` folder). The script then
keeps the cluster's data where that user can reach it, with nothing to set by hand."""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from config.env import BASE_DIR

needs_root_and_postgres = pytest.mark.skipif(
    os.geteuid() != 0
    or shutil.which("runuser") is None
    or subprocess.run(["id", "postgres"], capture_output=True).returncode != 0,
    reason="the case only arises as root with Debian's postgresql package installed",
)


def datadir_of(clone: Path, **env: str) -> Path:
    result = subprocess.run(
        ["bash", str(clone / "scripts" / "postgres.sh"), "datadir"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip())


def postgres_can_write_to_parent_of(path: Path) -> bool:
    return subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(path.parent)]).returncode == 0


@pytest.fixture
def clone_in_a_root_only_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("root-only")
    folder.chmod(0o700)
    clone = folder / "orderflow"
    (clone / "scripts").mkdir(parents=True)
    shutil.copy2(BASE_DIR / "scripts" / "postgres.sh", clone / "scripts" / "postgres.sh")
    return clone


@needs_root_and_postgres
def test_a_clone_the_postgres_user_cannot_enter_keeps_its_cluster_where_that_user_can(clone_in_a_root_only_folder):
    clone = clone_in_a_root_only_folder
    env = {key: value for key, value in os.environ.items() if key != "PG_DATA_DIR"}

    datadir = datadir_of(clone, **env)

    assert not datadir.is_relative_to(clone)
    assert datadir.name.startswith("orderflow-")
    assert postgres_can_write_to_parent_of(datadir)
    # Two clones never share a cluster by accident: the name derives from the clone's path.
    other = clone.parent / "orderflow-2"
    shutil.copytree(clone, other)
    assert datadir_of(other, **env) != datadir


@pytest.fixture
def clone_in_an_open_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="orderflow-open-", dir="/tmp"))
    folder.chmod(0o755)
    clone = folder / "orderflow"
    (clone / "scripts").mkdir(parents=True)
    shutil.copy2(BASE_DIR / "scripts" / "postgres.sh", clone / "scripts" / "postgres.sh")
    yield clone
    shutil.rmtree(folder)


@needs_root_and_postgres
def test_a_clone_the_postgres_user_can_enter_keeps_its_cluster_in_pgdata(clone_in_an_open_folder):
    env = {key: value for key, value in os.environ.items() if key != "PG_DATA_DIR"}

    assert datadir_of(clone_in_an_open_folder, **env) == clone_in_an_open_folder / ".pgdata"


def test_pg_data_dir_wins_over_the_choice(tmp_path):
    assert datadir_of(BASE_DIR, PG_DATA_DIR=str(tmp_path / "mine")) == tmp_path / "mine"
