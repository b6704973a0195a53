"""Atomic file writes, with owner-only permissions for secrets."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from blindscore.errors import BlindscoreError, PreconditionError


def stage(path: Path, data: bytes, *, secret: bool = False) -> str:
    """Write ``data`` to a synced temporary file beside ``path``; the caller renames it into place.

    mkstemp creates the file 0600 before any byte is written, so a secret is never readable by
    others, not even for a moment; a public file then gets the usual 0644.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600 if secret else 0o644)
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
