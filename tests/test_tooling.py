"""The linters CI runs (.ci/run): ruff check (with pydocstyle), ruff format, mypy.

They run here too, so the README's test command (`pytest`) covers them. Each runs the tool's
real command line on the whole project, configured by pyproject.toml, as CI does.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    # The tool of this interpreter's environment (the dev extra), else the one on PATH.
    path = BIN / name
    if path.is_file():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]'")
    return found


def _run(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_ruff_check_is_clean():
    result = _run(_tool("ruff"), "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_check_enforces_numpy_docstrings():
    # The D rules are on: a public function without a docstring is a finding.
    probe = subprocess.run(
        [_tool("ruff"), "check", "--no-cache", "--stdin-filename", "simulations/probe.py", "-"],
        cwd=ROOT,
        input='"""A module."""\n\n\ndef public(value: int) -> int:\n    return value\n',
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 1
    assert "D103" in probe.stdout


def test_ruff_format_is_clean():
    result = _run(_tool("ruff"), "format", "--check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean():
    # `mypy` with no arguments: the packages and settings of [tool.mypy] in pyproject.toml.
    result = _run(_tool("mypy"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout


def test_mypy_leaves_no_module_of_ours_unchecked():
    # Issue 11: every module of the five packages is checked; an override may only make a
    # third-party library without type information Any (ignore_missing_imports), never switch
    # off the errors of our code (ignore_errors) or its checking (follow_imports = skip).
    import tomllib

    mypy = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    ours = ("coordinator", "client", "kernels", "protos", "simulations")
    assert sorted(mypy["files"]) == sorted(ours)
    for override in mypy.get("overrides", []):
        modules = override["module"]
        modules = [modules] if isinstance(modules, str) else modules
        assert set(override) == {"module", "ignore_missing_imports"}, override
        assert not [m for m in modules if m.split(".")[0] in ours], override
    assert "ignore_errors" not in mypy and "follow_imports" not in mypy
