"""Atomic file writes, owner-only files and directories for secrets."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from blindscore.errors import BlindscoreError, PreconditionError


def private_dir(path: Path) -> Path:
    """Create directory ``path`` and its missing parents owner-only (0700); returns ``path``.

    Directories that exist are left as they are (a node's start-up check tightens its own data
    directory: blindscore.infra.lock)."""
    missing = []
    step = path
    while not os.path.lexists(step) and step != step.parent:
        missing.append(step)
        step = step.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process
            directory.mkdir(mode=0o700)
    return path


def umask() -> int:
    """This process's umask, read without changing it (os.umask sets it, racing other threads)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    # No /proc: set it to the strictest value for a moment, so a racing thread errs on the safe side.
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def stage(path: Path, data: bytes, *, secret: bool = False) -> str:
    """Write ``data`` to a synced temporary file beside ``path``; the caller renames it into place.

    mkstemp creates the file 0600 before any byte is written, so a secret is never readable by
    others, not even for a moment; a secret's missing directories are made 0700. Other files get
    0644 less the process umask (so 0600 in a node process, whose umask is 077).
    """
    if secret:
        private_dir(path.parent)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600 if secret else 0o644 & ~umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return tmp


def write_atomic(path: Path, data: bytes, *, secret: bool = False) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    tmp = stage(path, data, secret=secret)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, obj: Any, *, secret: bool = False) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    write_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode(), secret=secret)


def read_json(path: Path, *, secret: bool = False) -> Any:
    """Read a JSON file; a secret file readable by group or others is refused."""
    try:
        if secret:
            mode = path.stat().st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise PreconditionError(
                    f"{path}: secret key file is accessible by other users "
                    f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {path}"
                )
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except json.JSONDecodeError as exc:
        raise BlindscoreError(f"{path}: not valid JSON ({exc})") from exc
