"""``--out``: whether a path may become a run folder, checked before anything is started.

A run writes report.html, report.json, rounds.csv, clients.csv, final_model.npz and a
checkpoints/ folder into its run folder, replacing files of those names. So a run starts only
in a folder that is new, empty, the run being resumed, or (``--force``) a folder the user
gave up; everything else is refused with what the path is and what was expected:

- a path that is a file, a broken symlink, or lies under a file: the run would fail after its
  engine started (``FileExistsError``/``NotADirectoryError`` from ``mkdir``, a traceback);
- a folder that holds a run: that run's report and checkpoints would be overwritten;
- a folder that holds anything else (``--out .``, ``--out ~``, a symlink to ``/etc``): the
  user's own files named like a run's would be overwritten, and the run mixed into theirs.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from simulations.resume import is_run_folder


class RunFolderError(ValueError):
    """A path that cannot become the run folder (the message names it and says why)."""


def check_run_folder(path: Path, *, force: bool = False, resuming: bool = False) -> None:
    """Refuse ``path`` as a run folder unless a run may be written there.

    Parameters
    ----------
    path : the ``--out`` folder (it may not exist yet).
    force : the user asked to overwrite a folder that holds a run or other files.
    resuming : ``path`` is the run folder being resumed in place (its run continues).

    Raises
    ------
    RunFolderError
        ``path`` or one of its parents is not a folder, or it holds a run or other files
        and neither ``force`` nor ``resuming`` allows writing there.
    """
    problem = _not_a_folder(path)
    if problem:
        raise RunFolderError(f"--out {path}: {problem}; expected a folder (new or empty)")
    if not path.is_dir() or resuming or force:
        return
    if is_run_folder(path):
        raise RunFolderError(
            f"{path} already holds a run; continue it with --resume {path}, "
            "or overwrite it with --force"
        )
    entries = _some_entries(path)
    if entries:
        shown = ", ".join(repr(name) for name in entries[:3])
        more = ", ..." if len(entries) > 3 else ""
        raise RunFolderError(
            f"--out {path}: the folder is not empty ({shown}{more}) and holds no run; a run "
            "writes report.html, report.json, rounds.csv, clients.csv, final_model.npz and "
            "checkpoints/ there, replacing files of those names: give a new or empty folder, "
            "or --force"
        )


def _not_a_folder(path: Path) -> str:
    """Why ``path`` (or the first of its parents that exists) is not a folder ('' if it is)."""
    for candidate in (path, *path.parents):
        try:
            mode = os.stat(candidate).st_mode
        except FileNotFoundError:
            if candidate == path and os.path.islink(candidate):
                return "a symlink to a path that does not exist"
            continue
        except NotADirectoryError:
            continue  # a parent is a file: named when the loop reaches it
        except OSError as error:
            return f"cannot be checked ({error.strerror or error})"
        if stat.S_ISDIR(mode):
            return ""
        what = "a file" if stat.S_ISREG(mode) else "not a regular file or a folder"
        return what if candidate == path else f"its parent {candidate} is {what}"
    return ""


def _some_entries(path: Path, limit: int = 4) -> list[str]:
    # A few names are enough to say it is not empty; a huge folder is not listed whole.
    names: list[str] = []
    try:
        with os.scandir(path) as entries:
            for entry in entries:
                names.append(entry.name)
                if len(names) >= limit:
                    break
    except OSError as error:
        raise RunFolderError(
            f"--out {path}: cannot be listed ({error.strerror or error})"
        ) from None
    return sorted(names)
