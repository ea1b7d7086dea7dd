"""Reading a file someone else wrote: a regular file, opened without blocking, read bounded.

``Path.stat()`` then ``Path.read_bytes()`` trusts the path twice. A fifo makes the read wait
forever for a writer (the run stalls); a symlink to ``/dev/zero`` or ``/dev/urandom`` has
``st_size`` 0, passes any size bound, and is then read until memory runs out; a file swapped
or grown between the two calls is read whole. Here the file is opened first (``O_NONBLOCK``:
opening a fifo does not wait), the OPEN file is checked (``fstat``: a regular file, at most
``max_bytes``), and at most ``max_bytes + 1`` bytes are read from it, so what is checked is
what is read. Shared by every loader of a file from outside (run folders, scenario files,
kernels), so it sits in protos/, which every layer may import.

Refusals are :class:`UntrustedFileError`, an ``OSError`` whose ``strerror`` says what was
given and what was expected: a caller that already reports ``OSError``s reports these too.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a fifo",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
}


class UntrustedFileError(OSError):
    """A file refused before it was read: not a regular file, or larger than allowed."""

    def __init__(self, code: int, reason: str, path: str | os.PathLike) -> None:
        super().__init__(code, reason, str(path))


def open_regular_file(path: str | os.PathLike, max_bytes: int | None = None) -> BinaryIO:
    """Open ``path`` for reading once it is known to be a regular file of at most ``max_bytes``.

    Raises
    ------
    FileNotFoundError, PermissionError, OSError
        As ``open`` raises them.
    UntrustedFileError
        ``path`` is a fifo, device, socket or directory, or has more than ``max_bytes`` bytes.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
            raise UntrustedFileError(
                errno.EINVAL, f"not a regular file ({kind}), expected a regular file", path
            )
        if max_bytes is not None and info.st_size > max_bytes:
            raise UntrustedFileError(
                errno.EFBIG, f"{info.st_size} bytes, expected at most {max_bytes}", path
            )
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    """Return the bytes of the regular file ``path``, refusing more than ``max_bytes``.

    Raises
    ------
    FileNotFoundError, PermissionError, OSError
        As ``open`` raises them.
    UntrustedFileError
        Not a regular file, or more than ``max_bytes`` bytes (also when it grew while read).
    """
    with open_regular_file(path, max_bytes) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UntrustedFileError(
            errno.EFBIG, f"more than {max_bytes} bytes (it grew while read)", Path(path)
        )
    return data


__all__ = ["UntrustedFileError", "open_regular_file", "read_regular_file"]
