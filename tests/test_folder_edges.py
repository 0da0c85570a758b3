"""The edges of the output folder, through the CLI: a disk that fills mid-run, an unwritable or
wrong `--out`, and a folder that is moved or copied. Each is one line saying what happened,
nothing stored is lost, and the rerun finishes with the numbers of an uninterrupted run."""

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from transferlab import study
from transferlab.api import load_study
from transferlab.store import Store

STUDY = """
name = "edges"
seed = 3
repeats = 6
source_repeats = 6

[source]
kind = "blobs"
seed = 1
n_samples = 200
n_train = 100

[target]
kind = "blobs"
seed = 2
n_samples = 200
n_train = 100

[training]
epochs = 3

[execution]
shard_size = 2

[[strategies]]
name = "standalone"

[[strategies]]
name = "transfer"
freeze = 1
"""

# the CLI with every results database limited to MAX_PAGES pages: SQLite's own SQLITE_FULL,
# what a disk that fills gives, without a special mount
FULL_DISK = """
import os, sqlite3, sys, types
import transferlab.store as store

limited = types.ModuleType("sqlite3")
limited.__dict__.update(sqlite3.__dict__)

def connect(*args, **kwargs):
    connection = sqlite3.connect(*args, **kwargs)
    connection.execute(f"PRAGMA max_page_count = {int(os.environ['MAX_PAGES'])}")
    return connection

limited.connect = connect
store.sqlite3 = limited
from transferlab.cli import main
sys.argv = ["transferlab", *sys.argv[1:]]
main()
"""


def _cli(*args, cwd, pages=None):
    command = [sys.executable, "-c", FULL_DISK] if pages else [sys.executable, "-m", "transferlab.cli"]
    env = dict(os.environ, **({"MAX_PAGES": str(pages)} if pages else {}))
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def _digest(folder: Path) -> str:
    with Store.in_folder(folder, readonly=True) as store:
        return store.numbers_digest()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("edges")
    (root / "study.toml").write_text(STUDY)
    study.run_study(load_study(root / "study.toml"), root / "whole")
    return root


def test_a_disk_that_fills_mid_run_is_one_line_and_the_rerun_finishes_it(finished):
    done = _cli("run", "study.toml", "--out", "full", "--quiet", cwd=finished, pages=32)
    assert done.returncode == 2
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith("error: full/results.sqlite: the disk is full"), line
    assert "nothing stored was lost" in line and "rerun the same command" in line
    assert not (finished / "full" / ".transferlab.lock").exists()  # a refused run leaves no new lock file
    with Store.in_folder(finished / "full", readonly=True) as store:
        statuses = {run.status for run in store.runs(store.stored_plan()[0])}
    assert statuses == {"done", "planned"}  # it filled mid-run: some shards were committed
    again = study.run_study(load_study(finished / "study.toml"), finished / "full")  # space freed
    assert again.skipped_runs > 0 and again.trained_runs > 0  # the shards committed before the disk filled are kept
    assert again.skipped_runs + again.trained_runs == 48
    assert _digest(finished / "full") == _digest(finished / "whole")


def test_a_moved_and_a_copied_folder_keep_working(finished):
    """Source models are stored relative to the folder: `mv` and `cp -r` keep it readable and
    resumable, and a copy reads its own files, not the original's."""
    from transferlab.errors import ModelFileError
    from transferlab.reports import build_report

    moved, copied = finished / "moved", finished / "copied"
    shutil.copytree(finished / "whole", finished / "before-move")
    (finished / "before-move").rename(moved)
    resumed = study.run_study(load_study(finished / "study.toml"), moved)
    assert resumed.trained_runs == 0 and resumed.skipped_runs == 48
    shutil.copytree(moved, copied)
    shutil.rmtree(moved / "sources")
    assert build_report(copied).directions[0].runs_done == 42  # every target run
    assert _digest(copied) == _digest(finished / "whole")
    with pytest.raises(ModelFileError, match="moved/sources/source_000.keras: this study.s model file is missing"):
        build_report(moved)


def test_an_unusable_out_is_one_line_and_nothing_is_written(finished):
    from transferlab.errors import FolderError
    from transferlab.folder import prepare_output_path
    from transferlab.frames import export

    (finished / "a-file.txt").write_text("mine")
    with pytest.raises(FolderError, match="a-file.txt: is a file, not a folder"):
        export(finished / "whole", out=finished / "a-file.txt")
    with pytest.raises(FolderError, match="/proc/no/such: cannot write there"):
        export(finished / "whole", out="/proc/no/such")
    assert (finished / "a-file.txt").read_text() == "mine"
    done = _cli("compare", "whole", "whole", "--out", "/proc/no/such.csv", cwd=finished)
    line = done.stderr.strip()
    assert done.returncode == 2 and "\n" not in line, line
    assert line.startswith("error: /proc/no/such.csv: cannot write there"), line
    with pytest.raises(FolderError, match="whole: is a folder; give --out a file name"):
        prepare_output_path(finished / "whole", folder=False)


def test_a_refused_run_removes_only_a_lock_file_it_created(tmp_path):
    from transferlab.errors import StoreError
    from transferlab.folder import LOCK_NAME, FolderLock

    with pytest.raises(StoreError):
        with FolderLock(tmp_path):
            raise StoreError("refused")
    assert not (tmp_path / LOCK_NAME).exists()
    with FolderLock(tmp_path):
        pass  # a finished run keeps its (empty) lock file
    assert (tmp_path / LOCK_NAME).read_text() == ""
    with pytest.raises(StoreError):
        with FolderLock(tmp_path):
            raise StoreError("refused")
    assert (tmp_path / LOCK_NAME).exists()  # there before this run: left as it was


def _read_only(path: Path) -> None:
    """Make `path` read-only even for root (the immutable attribute), else skip."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        return
    try:
        done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("cannot make a file read-only for root here (no chattr)")
    if done.returncode != 0:
        pytest.skip(f"cannot make a file read-only for root here ({done.stderr.strip() or 'no chattr'})")


def _writable(path: Path) -> None:
    if os.geteuid() != 0:
        path.chmod(0o644)
    else:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_database_is_one_line_and_nothing_changes(finished):
    folder = finished / "read-only"
    shutil.copytree(finished / "whole", folder)
    with Store.in_folder(folder, readonly=True) as store:  # a run into it adds a shard: make it half-finished
        study_id = store.stored_plan()[0]
    import sqlite3

    db = sqlite3.connect(folder / "results.sqlite")
    db.execute("UPDATE runs SET status = 'planned' WHERE id IN (SELECT id FROM runs WHERE role = 'target' LIMIT 4)")
    db.execute("DELETE FROM curves WHERE run_id IN (SELECT id FROM runs WHERE status = 'planned')")
    db.execute("DELETE FROM final_metrics WHERE run_id IN (SELECT id FROM runs WHERE status = 'planned')")
    db.commit()
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    for extra in folder.glob("results.sqlite-*"):
        extra.unlink()
    database = folder / "results.sqlite"
    before = database.read_bytes()
    _read_only(database)
    try:
        done = _cli("run", "study.toml", "--out", "read-only", "--quiet", cwd=finished)
        line = done.stderr.strip()
        assert done.returncode == 2 and "\n" not in line, line
        assert line.startswith("error: read-only/results.sqlite: the results database is read-only"), line
        assert "nothing stored was changed" in line
        assert database.read_bytes() == before
    finally:
        _writable(database)
    again = _cli("run", "study.toml", "--out", "read-only", "--quiet", cwd=finished)
    assert again.returncode == 0, again.stderr
    assert _digest(folder) == _digest(finished / "whole") and study_id == 1


@pytest.fixture
def small_disk(tmp_path):
    """A tmpfs of a few hundred KiB mounted at a fresh folder (root only), and a way to grow it."""
    mount = tmp_path / "disk"
    mount.mkdir()

    def mounted(size: str):
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                                  capture_output=True, text=True)
        except FileNotFoundError:
            pytest.skip("cannot mount a small tmpfs here (no mount command)")
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()})")
        return mount

    yield mounted
    with contextlib.suppress(FileNotFoundError):
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.parametrize("size", ["300k", "600k"])
def test_a_real_disk_that_fills_is_one_line_for_any_file_and_the_rerun_finishes(finished, small_disk, size):
    """A real full file system (not SQLite's page limit): whichever write meets it (the
    database, a source model's `.keras` file, a figure of the report) says so in one line."""
    disk = small_disk(size)
    done = _cli("run", str(finished / "study.toml"), "--out", str(disk / "out"), "--quiet", cwd=finished)
    line = done.stderr.strip()
    assert done.returncode in (0, 2), line
    if done.returncode == 2:
        assert "\n" not in line and ": the disk is full (" in line and "nothing stored was lost" in line, line
        assert "rerun the same command to finish" in line
    subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
    study.run_study(load_study(finished / "study.toml"), disk / "out")
    assert _digest(disk / "out") == _digest(finished / "whole")
