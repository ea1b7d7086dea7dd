"""Hostile ``--out`` paths: refused before anything starts, with what the path is.

Before: ``--out FILE`` or ``--out FILE/sub`` failed after the engine started with a
``FileExistsError``/``NotADirectoryError`` traceback, and ``--out`` at a folder holding the
user's own files (``--out .``, a symlink to ``/etc``) wrote the run into it, replacing any
report.html, clients.csv or final_model.npz there.
"""

from __future__ import annotations

import os
import re

import pytest
from typer.testing import CliRunner

from simulations.cli import app as cli_app
from simulations.run_folder import RunFolderError, check_run_folder


def _make(tmp_path, case: str):
    """Build the case's path under ``tmp_path``; return (path, regex of the refusal or None)."""
    a_file = tmp_path / "a-file"
    a_file.write_text("mine")
    user_folder = tmp_path / "home"
    user_folder.mkdir()
    (user_folder / "report.html").write_text("the user's own page")
    run_folder = tmp_path / "old-run"
    (run_folder / "checkpoints").mkdir(parents=True)
    if case == "a file":
        return a_file, r"--out .*a-file: a file; expected a folder"
    if case == "under a file":
        return a_file / "sub" / "run", r"its parent .*a-file is a file"
    if case == "a broken symlink":
        os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
        return tmp_path / "dangling", "a symlink to a path that does not exist"
    if case == "a symlink to a file":
        os.symlink(a_file, tmp_path / "link")
        return tmp_path / "link", "a file; expected a folder"
    if case == "a fifo":
        os.mkfifo(tmp_path / "fifo")
        return tmp_path / "fifo", "not a regular file or a folder"
    if case == "a folder of the user's files":
        return user_folder, r"the folder is not empty \('report.html'\) and holds no run"
    if case == "a symlink to a folder of the user's files":
        os.symlink(user_folder, tmp_path / "to-home")
        return tmp_path / "to-home", r"not empty \('report.html'\)"
    if case == "a run folder":
        return run_folder, "already holds a run; continue it with --resume .*or overwrite it"
    if case == "new":
        return tmp_path / "runs" / "new", None
    if case == "an empty folder":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty", None
    raise AssertionError(case)


CASES = [
    "a file",
    "under a file",
    "a broken symlink",
    "a symlink to a file",
    "a fifo",
    "a folder of the user's files",
    "a symlink to a folder of the user's files",
    "a run folder",
    "new",
    "an empty folder",
]


@pytest.mark.parametrize("case", CASES)
def test_a_run_folder_is_refused_unless_a_run_may_be_written_there(tmp_path, case):
    path, refusal = _make(tmp_path, case)
    if refusal is None:
        check_run_folder(path)
        return
    with pytest.raises(RunFolderError, match=refusal):
        check_run_folder(path)


@pytest.mark.parametrize("case", ["a folder of the user's files", "a run folder"])
def test_force_and_resuming_in_place_allow_an_occupied_folder(tmp_path, case):
    path, _ = _make(tmp_path, case)
    check_run_folder(path, force=True)
    check_run_folder(path, resuming=True)


@pytest.mark.parametrize("case", ["a file", "under a file", "a broken symlink"])
def test_force_does_not_make_a_file_a_folder(tmp_path, case):
    path, refusal = _make(tmp_path, case)
    with pytest.raises(RunFolderError, match=refusal):
        check_run_folder(path, force=True)


@pytest.mark.parametrize("command", [["simulate"], ["deploy", "local"]])
@pytest.mark.parametrize("case", ["a file", "under a file", "a folder of the user's files"])
def test_the_clis_refuse_it_before_starting_and_touch_nothing(tmp_path, command, case):
    path, refusal = _make(tmp_path, case)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    result = CliRunner().invoke(cli_app, [*command, "--rounds", "1", "--out", str(path)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2, text
    assert "Traceback" not in text
    assert re.search(refusal, text.replace(" ", "")) or re.search(refusal, text), text
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
