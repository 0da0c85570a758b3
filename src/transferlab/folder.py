"""The output folder: one writer at a time, files that appear whole or not at all.

A run holds an OS lock (`flock`) on `FOLDER/.transferlab.lock` for its whole life; the
kernel releases it when the process ends, however it ends, so `kill -9` leaves no stale
lock. Every file under the folder is written to a temporary name and renamed into place,
so a reader (a concurrent `report`, a resumed run) never sees half a file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from transferlab.errors import FolderError

LOCK_NAME = ".transferlab.lock"
_TEMPORARY_MARK = ".partial-"




def prepare_output_folder(folder: str | Path) -> Path:
    """Create the folder (and parents) or say, in one line, why it cannot be one."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FolderError(f"{folder}: exists and is not a folder; choose another --out")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise FolderError(f"{folder}: a parent of this path is a file; choose another --out") from None
    except OSError as error:
        raise FolderError(f"{folder}: cannot create the output folder ({error.strerror}); choose another --out") from None
    check_writable(folder, "choose a writable --out")
    return folder


def check_writable(folder: Path, advice: str) -> None:
    """Can files be created in `folder`? Asked before anything is written there."""
    probe = folder / f"{_TEMPORARY_MARK}{os.getpid()}-probe"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise FolderError(f"{folder}: cannot write in the output folder ({error.strerror}); {advice}") from None


def prepare_output_path(path: str | Path, *, folder: bool) -> Path:
    """Check, before anything is computed or written, that `--out` can take what will be
    written there: a folder of files (`folder=True`) or one file. One `FolderError` line
    otherwise; nothing a study stored is touched either way."""
    path = Path(path)
    advice = "choose another --out (nothing stored was changed)"
    try:
        if folder and path.exists() and not path.is_dir():
            raise FolderError(f"{path}: is a file, not a folder; give --out a folder to write the tables into "
                              "(nothing stored was changed)")
        if not folder and path.is_dir():
            raise FolderError(f"{path}: is a folder; give --out a file name such as {path / 'compare.csv'}")
        target = path if folder else path.parent
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FolderError(f"{path}: cannot write there ({error.strerror}); {advice}") from None
    check_writable(target, advice)
    return path


class FolderLock:
    """Exclusive right to write a folder, held until `release` (or the process ends).

    A run that is refused while it holds the lock (a full disk, a changed source file)
    removes the lock file it created, so a refusal leaves no new file behind. The file is
    removed while still locked, and a process that locked a file since removed tries again
    on the new one, so two writers never both hold a lock."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_NAME
        self._handle = None
        self._created = False

    def acquire(self) -> FolderLock:
        while True:
            created = not self.path.exists()
            handle = open(self.path, "a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                raise FolderError(
                    f"{self.path.parent}: {holder} is writing to this folder; wait for it to finish "
                    "or choose another --out (`transferlab report` can read it meanwhile)"
                ) from None
            if _same_file(handle, self.path):
                break
            handle.close()  # its owner removed it before we locked it: lock the current file
        handle.seek(0)
        handle.truncate()
        handle.write(f"transferlab run (pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')})")
        handle.flush()
        self._handle, self._created = handle, created
        return self

    def release(self, remove: bool = False) -> None:
        """Unlock; with `remove`, delete the lock file first (while still holding it)."""
        if self._handle is not None:
            if remove:
                self.path.unlink(missing_ok=True)
            else:
                self._handle.truncate(0)
            self._handle.close()  # closing the descriptor releases the flock
            self._handle = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.release(remove=exc_type is not None and self._created)


def _same_file(handle, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers that look at it work);
    rename it onto `path` when the block succeeds, remove it when it fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f"{_TEMPORARY_MARK}{os.getpid()}-{path.name}")
    try:
        yield temporary
        os.replace(temporary, path)
    except Exception as error:
        problem = _unwritable(path, error)
        if problem is None:
            raise
        raise problem from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()


def disk_full(path: Path, detail: str, kept: str) -> str:
    """The one line for a write a full disk refused (the database's or a file's)."""
    return (f"{path}: the disk is full ({detail}); nothing stored was lost ({kept}); free some space and rerun "
            "the same command to finish")


def _unwritable(path: Path, error: BaseException) -> FolderError | None:
    """The one line for a file that could not be written because the disk is full or the
    place is read-only (however deep in a writer, e.g. Keras' or h5py's, the OSError was),
    or None for any other error."""
    while error is not None:
        number = getattr(error, "errno", None)
        if number in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(error):
            return FolderError(disk_full(path, "No space left on device",
                                         "this file was not written, every shard committed before is kept"))
        if number in (errno.EROFS, errno.EACCES, errno.EPERM):
            return FolderError(f"{path}: cannot write here ({os.strerror(number)}); make the folder writable or "
                               "choose another --out (nothing stored was changed)")
        error = error.__cause__ or error.__context__
    return None


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def remove_stale_temporaries(folder: str | Path) -> None:
    """Remove what an interrupted writer left half-written (call while holding the lock)."""
    for pattern in (f"{_TEMPORARY_MARK}*", f"*/{_TEMPORARY_MARK}*"):
        for leftover in Path(folder).glob(pattern):
            pid = leftover.name[len(_TEMPORARY_MARK):].split("-", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
                continue  # a concurrent `report` is writing it
            with contextlib.suppress(OSError):
                leftover.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
