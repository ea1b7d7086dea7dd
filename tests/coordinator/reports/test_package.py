"""coordinator/reports/: its modules import each other at the top and without a circle."""

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import coordinator.reports

PACKAGE_DIR = Path(coordinator.reports.__file__).parent


def _imports(path: Path) -> tuple[set[str], list[int]]:
    """Return the package modules ``path`` imports, and the lines of function-level imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.module == "coordinator.reports":
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
            "coordinator.reports."
        ):
            imported.add(node.module.rsplit(".", 1)[1])
    nested = [
        inner.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for inner in ast.walk(node)
        if isinstance(inner, ast.Import | ast.ImportFrom) and not _lazy_by_design(inner)
    ]
    return imported, nested


# The one import allowed inside a function: plots.py imports matplotlib only when it draws a
# plot with data (a report with no rounds, written before round 1 of every run, needs none;
# the import cost ~1 s of start-up). Nothing of this package may be imported that way.
LAZY_BY_DESIGN = {"matplotlib", "matplotlib.figure"}


def _lazy_by_design(node: ast.Import | ast.ImportFrom) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level == 0 and node.module in LAZY_BY_DESIGN
    return all(alias.name in LAZY_BY_DESIGN for alias in node.names)


def test_the_report_modules_import_each_other_without_a_circle():
    graph = {}
    for path in sorted(PACKAGE_DIR.glob("*.py")):
        imported, nested = _imports(path)
        assert nested == [], f"{path.name}: imports inside a function at lines {nested}"
        graph[path.stem] = imported
    assert {"writer", "run_page", "comparison_page", "atomic", "report_json"} <= set(graph)
    assert "run_page" in graph["writer"] and "atomic" in graph["comparison_page"]
    try:
        order = list(TopologicalSorter(graph).static_order())
    except CycleError as error:  # pragma: no cover - the failure message is the point
        raise AssertionError(f"import circle in coordinator/reports: {error.args[1]}") from None
    assert order.index("run_page") < order.index("writer")
