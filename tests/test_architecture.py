"""The package's shape: no import circle, steps that import no other step, nothing that asks the task.

Imports are read from the source: module level, inside functions and under ``if TYPE_CHECKING:`` alike, so
neither a lazy import nor a type hint can hide a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import inspectflow

PACKAGE_ROOT = Path(inspectflow.__file__).resolve().parent
REPO = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE_ROOT.rglob("*.py")}


def imports_of(name: str) -> set[str]:
    """The inspectflow modules that module ``name`` imports, anywhere in it (type-hint imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
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


def test_a_type_hint_import_is_an_edge() -> None:
    assert "inspectflow.models.artifact" in GRAPH["inspectflow.tasks.base"]  # ModelSpec, under TYPE_CHECKING


#: The registered tasks' names: comparing anything with one outside ``tasks/`` is asking which task it is.
TASK_NAMES = {"classification", "segmentation"}
#: Where naming a task, probing for masks or reading a layout's ``has_masks`` is the code's own business:
#: the tasks; the layouts that read masks (the dataset artifact stores whatever masks it was given); the
#: networks, which declare the tasks they serve and shape their output to the one they are built for.
OWNERS = ("tasks/", "data/", "models/networks/")


def indirect_task_branches(source: str) -> list[str]:
    """Lines that ask which task is at work instead of calling it.

    Asking looks like: a comparison with a task's name (``config.task == "segmentation"``, ``in (...)``), an
    attribute probe (``hasattr(scores, "confusion")``), a look at whether masks exist (``masks is None``,
    ``layout.has_masks``) or at a concrete task's scores (``isinstance(scores, ClassificationScores)``,
    ``getattr(scores, "iou", None)``), and
    importing a concrete task's module instead of going through the registry.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        asked = False
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            names = {
                c.value
                for o in operands
                for c in ast.walk(o)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            }
            masks = any(
                isinstance(o, ast.Attribute | ast.Name) and ast.unparse(o).endswith("masks") for o in operands
            )
            asked = bool(names & TASK_NAMES) or (
                masks and any(isinstance(op, ast.Is | ast.IsNot) for op in node.ops)
            )
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            first = ast.unparse(node.args[0]) if node.args else ""
            asked = (
                node.func.id == "hasattr"
                or (node.func.id == "getattr" and len(node.args) == 3 and "score" in first)
                or (node.func.id == "isinstance" and "Scores" in ast.unparse(node.args[1:]))
            )
        elif isinstance(node, ast.Attribute):
            asked = node.attr == "has_masks"
        elif isinstance(node, ast.ImportFrom | ast.Import):
            modules = (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            )
            asked = any(
                m.startswith(("inspectflow.tasks.classification", "inspectflow.tasks.segmentation"))
                for m in modules
            )
        if asked:
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_the_branch_finder_finds_each_way_of_asking() -> None:
    planted = """
if hasattr(scores, "confusion"):
    pass
if config.task == "segmentation":
    pass
kind = "segmenter" if task in ("segmentation",) else "classifier"
if dataset.masks is not None:
    pass
crop = layout.has_masks
from inspectflow.tasks.classification import flagged
ok = isinstance(scores, ClassificationScores)
iou = getattr(scores, "iou", None)
"""
    assert len(indirect_task_branches(planted)) == 8
    assert indirect_task_branches("task = task_for(config)\nscores = task.evaluate(model, data)") == []


_CHECKED = sorted(
    [
        *(
            p
            for p in PACKAGE_ROOT.rglob("*.py")
            if not p.relative_to(PACKAGE_ROOT).as_posix().startswith(OWNERS)
        ),
        *(REPO / "components").glob("*.py"),
        *(REPO / "pipelines").glob("*.py"),
    ]
)


@pytest.mark.parametrize("path", _CHECKED, ids=lambda p: p.relative_to(p.parents[1]).as_posix())
def test_nothing_outside_the_tasks_asks_which_task_it_is(path: Path) -> None:
    """Steps, components, serving, the CLI, config...: each calls its task and never asks which it is."""
    assert indirect_task_branches(path.read_text()) == []


#: The longest a function may be, docstring included: a longer one does several things, each worth a name.
MAX_FUNCTION_LINES = 80


def long_functions(path: Path) -> list[str]:
    """The functions of a module longer than :data:`MAX_FUNCTION_LINES` lines."""
    return [
        f"{node.name}: {node.end_lineno - node.lineno + 1} lines"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]


@pytest.mark.parametrize(
    "path",
    sorted(
        [*PACKAGE_ROOT.rglob("*.py"), *(REPO / "components").glob("*.py"), *(REPO / "pipelines").glob("*.py")]
    ),
    ids=lambda p: p.relative_to(p.parents[1]).as_posix(),
)
def test_no_function_is_over_80_lines(path: Path) -> None:
    assert long_functions(path) == []
