"""The package's shape: no import circle, steps that import no other step, steps that never ask the task.

Imports are read from the source (module level and inside functions alike; ``if TYPE_CHECKING:`` blocks
aside, since they never run), so a lazy import cannot hide a circle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import inspectflow

PACKAGE_ROOT = Path(inspectflow.__file__).resolve().parent
REPO = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE_ROOT.rglob("*.py")}


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node outside ``if TYPE_CHECKING:`` blocks."""
    nodes: list[ast.AST] = []
    pending = [tree]
    while pending:
        node = pending.pop()
        nodes.append(node)
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                pending.extend(child.orelse)
                continue
            pending.append(child)
    return nodes


def imports_of(name: str) -> set[str]:
    """The inspectflow modules that module ``name`` imports when it runs."""
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from a import b`` imports module a.b when there is one, else names of module a.
            targets = [
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in MODULES else node.module
                for alias in node.names
            ]
        else:
            continue
        found.update(t for t in targets if t in MODULES and t != name)
    return found


GRAPH = {name: imports_of(name) for name in MODULES}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_is_read() -> None:
    assert "inspectflow.tasks" in GRAPH["inspectflow.steps.train"]
    assert "inspectflow.imaging" in GRAPH["inspectflow.serving.predict"]


def test_the_package_has_no_import_circle() -> None:
    assert cycles(GRAPH) == []


def test_the_cycle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("step", sorted(n for n in MODULES if n.startswith("inspectflow.steps.")))
def test_a_step_imports_no_other_step(step: str) -> None:
    assert {m for m in GRAPH[step] if m.startswith("inspectflow.steps.")} == set()


# What asking "is this segmentation?" looked like before the task modules: the steps must call the task.
_TASK_BRANCH = re.compile(r"segmentation|masks is None|\.task\b")


@pytest.mark.parametrize(
    "path",
    sorted([*(PACKAGE_ROOT / "steps").glob("*.py"), *(REPO / "components").glob("*.py")]),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_steps_and_components_never_ask_for_the_task(path: Path) -> None:
    """The issue's grep, imports, docstrings and comments aside."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            skipped.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        if (
            isinstance(node, ast.Module | ast.FunctionDef | ast.ClassDef)
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        ):
            first = node.body[0]
            skipped.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    lines = path.read_text().splitlines()
    code = [
        f"{number}: {line.strip()}"
        for number, line in enumerate(lines, 1)
        if number not in skipped and _TASK_BRANCH.search(line.split("#", 1)[0])
    ]
    assert code == []
