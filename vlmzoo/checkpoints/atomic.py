"""Write a set of files into a directory so that a failed write never costs the files already there.

Saving straight into a checkpoint directory (often the one just loaded) deletes or truncates the old
files before the new ones exist; a full disk or a crash half way then leaves no checkpoint at all.
`staged_directory` writes everything into a fresh directory beside the target, flushes it to disk, and
only then moves the files in, one ``os.replace`` each (atomic per file), and finally removes the old
files the new set makes stale. Until the moves start the target is untouched; a failure while writing
leaves it exactly as it was.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["staged_directory"]


def _fsync(path: Path, directory: bool = False) -> None:
    """Flush a file (or a directory's entries) to disk; a no-op where the platform cannot."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for folder, _, files in os.walk(root):
        for name in files:
            _fsync(Path(folder) / name)
        _fsync(Path(folder), directory=True)


def _move_into(stage: Path, target: Path) -> set[str]:
    """Move every entry of ``stage`` into ``target`` (merging folders); the top-level names moved."""
    moved = set()
    for entry in sorted(stage.iterdir()):
        destination = target / entry.name
        if entry.is_dir() and not entry.is_symlink() and destination.is_dir():
            _move_into(entry, destination)
        else:
            os.replace(entry, destination)
        moved.add(entry.name)
    return moved


def _plain_name(name: str) -> bool:
    """A file name inside the directory itself: nothing that reaches elsewhere (``..``, ``/``)."""
    return bool(name) and name not in (".", "..") and Path(name).name == name and "\\" not in name


@contextlib.contextmanager
def staged_directory(target: str | os.PathLike, *, replaces: Iterable[str] = ()) -> Iterator[Path]:
    """Yield an empty directory to write into; on success its files replace those in ``target``.

    ``replaces`` names files in ``target`` that the new set makes stale (for a checkpoint: the shards
    its previous index listed). They are removed only after every new file is in place, and only if
    the new set did not write a file of the same name; other files in ``target`` are never touched.
    If the body raises, the staging directory is deleted and ``target`` is left as it was.

    Examples:
        >>> with staged_directory("ckpt", replaces=["model.safetensors"]) as stage:
        ...     save_file(tensors, stage / "model-00001-of-00002.safetensors")
    """
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.saving-", dir=target.parent))
    try:
        yield stage
        _fsync_tree(stage)
        written = _move_into(stage, target)
        for name in replaces:
            stale = target / name
            if _plain_name(name) and name not in written and (stale.is_file() or stale.is_symlink()):
                stale.unlink()
        _fsync(target, directory=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
