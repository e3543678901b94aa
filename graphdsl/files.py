"""Writing files so that nothing a user had is ever half-overwritten.

``atomic_write(path, write)`` calls ``write(tmp_path)`` on a temporary sibling of ``path``, syncs
it to disk and renames it into place (``os.replace``, atomic on POSIX): a crash or a kill leaves
either the old file or the new one, never a torn mix, and nothing else in the directory is
touched. An overwritten file keeps its permissions; a new one gets 0666 less the umask.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable


def atomic_write(path, write: Callable[[str], None]) -> Path:
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask())
        with open(tmp, "rb+") as f:          # on disk before the rename makes it visible
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def _umask() -> int:
    mask = os.umask(0o022)       # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def digest(path) -> str:
    """The sha256 of a file's bytes, as hex (what manifests record)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fsync(path) -> None:
    """Flush a file, or a directory's entries, to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
