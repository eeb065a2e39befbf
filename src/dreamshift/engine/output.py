"""Holding an output folder for one run: a lock against a second run, clear disk errors.

The lock is ``<out>.lock`` beside the folder, not in it: the dataset directory keeps exactly
the files of the data contract, and a folder that is not a dataset is never written into (only
when the parent cannot be written does it go inside, as ``<out>/.lock``). It
holds the pid and command line of the run, is removed when the run ends, and a lock left by a
killed run is simply taken over (the kernel drops a ``flock`` with its process).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dreamshift.data import dataset as ds
from dreamshift.errors import DreamshiftError

FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)


def lock_path(root: Path) -> Path:
    """``<out>.lock`` beside the folder; inside it (``<out>/.lock``) when the folder exists and
    its parent is not ours to write (``--out /scratch/$USER`` under a root-owned ``/scratch``)."""
    root = root.resolve()
    if root.is_dir() and not os.access(root.parent, os.W_OK | os.X_OK):
        return root / ds.LOCK
    return root.with_name(root.name + ".lock")


@contextmanager
def claim_output(root: Path) -> Iterator[None]:
    """Hold ``root`` for the run inside the block: a second run into it stops at once, naming
    this one, and a disk that is read-only or full ends the run in one clear error."""
    try:
        if root.is_dir() and not os.access(root, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(root))
        with _locked(root):
            yield
    except OSError as exc:
        error = _disk_error(root, exc)
        if error is None:
            raise
        raise error from exc


@contextmanager
def _locked(root: Path) -> Iterator[None]:
    path = lock_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DreamshiftError(_busy(root, path)) from None
        try:  # a run ending since the open removed that file: lock the one there now
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        holder = {"pid": os.getpid(), "command": shlex.join(sys.orig_argv)}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder) + "\n").encode())
        yield
    finally:
        path.unlink(missing_ok=True)  # while still locked: no one else holds this file
        os.close(fd)


def _busy(root: Path, path: Path) -> str:
    try:
        holder = json.loads(path.read_text())
        who = f"pid {holder['pid']}: {holder['command']}"
    except (OSError, ValueError, KeyError, TypeError):  # written in a moment
        who = "pid not recorded yet"
    return (
        f"{root} is being written by another run ({who}); wait for it to end or stop it, or "
        f"choose another --out (lock file {path})"
    )


def _disk_error(root: Path, exc: OSError) -> DreamshiftError | None:
    """The clear error for an OSError that says ``root`` cannot be written, else None."""
    if exc.errno in FULL:
        return DreamshiftError(
            f"cannot write to {root}: the disk is full ({os.strerror(exc.errno)}): free some "
            "space, then run the same command again to continue"
        )
    name = exc.filename
    inside = isinstance(name, (str, bytes, os.PathLike)) and _within(Path(os.fsdecode(name)), root)
    if exc.errno in NOT_WRITABLE and inside:
        return DreamshiftError(
            f"cannot write to {root}: {os.strerror(exc.errno)} (a read-only disk, or no write "
            "permission): make it writable or choose another --out"
        )
    return None


def _within(path: Path, root: Path) -> bool:
    path, root = path.resolve(), root.resolve()
    return path == lock_path(root) or path == root or root in path.parents
