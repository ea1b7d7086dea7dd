"""Atomic file replacement for the run folder: a reader sees the old file or the new one."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one step: readers see the old file or the new one.

    The temporary file sits in the same folder (``os.replace`` is atomic only within one file
    system) and is removed when writing fails. No fsync: the crash guarded against is the
    process dying, not the machine losing power, and an fsync per file per round is slow on
    some disks.

    Parameters
    ----------
    path : Path
        The file to replace (or create).
    text : str
        Its new content, written as UTF-8 with newlines as given.
    """
    path = Path(path)
    temp_path = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with mode 0o666 lets the umask decide, like any new file (mkstemp would give
    # 0600); O_EXCL never reuses a file that is already there.
    handle = os.open(temp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as temp_file:
            temp_file.write(text)
        os.replace(temp_path, path)
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
