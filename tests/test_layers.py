"""The layers hold (DESIGN.md, README "Architecture in brief").

protos/ and kernels/ import nothing of ours; client/ imports only them; coordinator/ never
imports simulations/; and the packages a device runs import no library of the coordinator or
simulation roles. import-linter checks the contracts in pyproject.toml ([tool.importlinter]):
every import statement counts, those inside functions too. What no linter can follow, an import
by a string (``importlib.import_module``, ``__import__``), is refused in the lower layers.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("client", "coordinator", "kernels", "protos", "simulations")
LOWER_LAYERS = ("client", "coordinator", "kernels", "protos")
DYNAMIC_IMPORTS = frozenset({"import_module", "__import__"})


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    # The console script of this interpreter's environment (the dev extra installs it). It puts
    # its working directory first on sys.path, so a copy in tmp_path is what it reads.
    command = Path(sys.executable).parent / "lint-imports"
    return subprocess.run(
        [str(command), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(cwd)},
        timeout=300,
    )


def test_the_packages_keep_their_layers():
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout, result.stdout


@pytest.fixture(scope="module")
def packages_copy(tmp_path_factory) -> Path:
    """The Python files of the five packages and pyproject.toml (its contracts), copied."""
    root = tmp_path_factory.mktemp("layers")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            target = root / path.relative_to(REPO)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
    return root


@pytest.mark.parametrize(
    "module, source, broken",
    [
        # The import this issue removed, as a plain (lazy) import statement.
        (
            "client/bad_layer.py",
            "def load(config, partition_id):\n"
            "    from simulations.federated_data import load_client_data\n"
            "    return load_client_data(config, partition_id)\n",
            "client.bad_layer -> simulations.federated_data",
        ),
        ("client/bad_layer.py", "import coordinator.config\n", "client.bad_layer -> coordinator"),
        (
            "coordinator/bad_layer.py",
            "from simulations import scenario\n",
            "coordinator.bad_layer -> simulations.scenario",
        ),
        ("protos/bad_layer.py", "from client.delta import delta\n", "protos.bad_layer -> client"),
        ("kernels/bad_layer.py", "import protos.contract\n", "kernels.bad_layer -> protos"),
        ("client/bad_layer.py", "def plot():\n    import matplotlib\n", "-> matplotlib"),
    ],
)
def test_a_bad_import_breaks_a_contract(packages_copy, module, source, broken):
    bad = packages_copy / module
    bad.write_text(source)
    try:
        result = _lint_imports(packages_copy)
    finally:
        bad.unlink()
    assert result.returncode == 1, result.stdout + result.stderr
    # The import this issue removed breaks both contracts (a layer, and sklearn via
    # simulations.federated_data); every case breaks at least one.
    summary = re.search(r"Contracts: (\d+) kept, (\d+) broken\.", result.stdout)
    assert summary is not None and int(summary[2]) >= 1, result.stdout
    assert broken in result.stdout, result.stdout


def dynamic_imports(source: str) -> list[str]:
    """The calls in ``source`` that import a module named by a string, as source text."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        function = node.func
        name = (
            function.attr
            if isinstance(function, ast.Attribute)
            else function.id
            if isinstance(function, ast.Name)
            else ""
        )
        if name in DYNAMIC_IMPORTS:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_lower_layers_import_nothing_by_a_string():
    found = {
        str(path.relative_to(REPO)): calls
        for package in LOWER_LAYERS
        for path in sorted((REPO / package).rglob("*.py"))
        if (calls := dynamic_imports(path.read_text()))
    }
    assert found == {}


def test_the_string_import_check_sees_the_old_data_import():
    # What client/client_app.py did before issue 11, and the other spellings.
    source = (
        "import importlib\n"
        "from importlib import import_module\n"
        "def load(config):\n"
        "    partitions = importlib.import_module('simulations.federated_data')\n"
        "    scenario = import_module('simulations.scenario')\n"
        "    return __import__('coordinator.config')\n"
    )
    assert dynamic_imports(source) == [
        "line 4: importlib.import_module('simulations.federated_data')",
        "line 5: import_module('simulations.scenario')",
        "line 6: __import__('coordinator.config')",
    ]
