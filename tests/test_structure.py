"""Structure guards over ``src/``: short functions, no import cycle, a pinned public API.

The first two read the source with :mod:`ast` only (nothing is imported, no TensorFlow); the
third imports :mod:`evergreen`, which loads no TensorFlow either.

Each allowlist below is checked both ways: what it lists must still exist and still be a
problem, so that fixing a debt fails this test until its entry is removed too.
"""

from __future__ import annotations

import ast
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import evergreen

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "evergreen"
MAX_FUNCTION_LINES = 60

# Functions that are declarative tables (a list of settings, a mapping written out): long by
# nature, and easier to read whole than split. ``path::qualname`` -> lines at most.
DECLARATIVE_TABLES: dict[str, int] = {}

# Known debt, not a licence: functions over MAX_FUNCTION_LINES on main when these guards were
# written (issue 11). Other changes are shortening them; each entry is the length it had then,
# which it may not exceed. When a function is fixed, delete its entry (this test says which).
LONG_FUNCTION_DEBT: dict[str, int] = {
    "evergreen/loop.py::TrainingLoop._one_span": 131,
    "evergreen/components/train.py::TrainModel._execute": 112,
    "evergreen/loop.py::TrainingLoop._adopt": 87,
    "evergreen/models/family.py::export_serving_model": 82,
    "evergreen/components/evaluate.py::EvaluateCandidate.execute": 76,
    "evergreen/models/text.py::export_serving_model": 72,
    "evergreen/components/train.py::featurized_dataset": 62,
    "evergreen/cli.py::predict": 62,
}

# Known debt: import cycles (strongly connected components of the import graph) on main when
# these guards were written. A cycle found must lie inside one entry (no new cycle, no cycle
# grown); an entry that no longer holds any cycle must be deleted (this test says which).
CYCLE_DEBT: list[frozenset[str]] = [
    frozenset(
        {
            "evergreen.models.adopted",
            "evergreen.models.custom",
            "evergreen.models.family",
            "evergreen.models.image",
            "evergreen.models.tabular",
            "evergreen.models.text",
        }
    ),
    frozenset({"evergreen.components.evaluate", "evergreen.components.slices"}),
    frozenset(
        {
            "evergreen.components.train",
            "evergreen.training.multi_worker",
            "evergreen.training.worker",
        }
    ),
    frozenset(
        {"evergreen.tracking", "evergreen.tracking.mlflow_sink", "evergreen.tracking.tensorboard"}
    ),
    frozenset({"evergreen.cli", "evergreen.demo"}),
]


# ------------------------------------------------------------------------------ the source


def _modules() -> dict[str, Path]:
    """Every module under ``src/`` by dotted name (a package by its own name)."""
    modules = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _functions(tree: ast.AST) -> Iterator[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    """Every function and method of a module with its qualified name (``Class.method``)."""

    def walk(node: ast.AST, prefix: str) -> Iterator[tuple[str, Any]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                yield prefix + child.name, child
                yield from walk(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from walk(child, f"{prefix}{child.name}.")
            else:
                yield from walk(child, prefix)

    yield from walk(tree, "")


def _function_lengths() -> dict[str, int]:
    """``path::qualname`` -> lines, from the ``def`` line to the last line of the body."""
    lengths = {}
    for path in _modules().values():
        relative = path.relative_to(SRC).as_posix()
        for qualname, node in _functions(ast.parse(path.read_text(encoding="utf-8"))):
            assert node.end_lineno is not None
            lengths[f"{relative}::{qualname}"] = node.end_lineno - node.lineno + 1
    return lengths


# ------------------------------------------------------------------------------ functions


def test_no_long_functions() -> None:
    allowed = {**DECLARATIVE_TABLES, **LONG_FUNCTION_DEBT}
    too_long = [
        f"{name}: {lines} lines" + (f" (allowlisted at {allowed[name]})" if name in allowed else "")
        for name, lines in sorted(_function_lengths().items())
        if lines > MAX_FUNCTION_LINES and lines > allowed.get(name, 0)
    ]
    assert not too_long, (
        f"functions over {MAX_FUNCTION_LINES} lines: split them into named steps\n  "
        + "\n  ".join(too_long)
    )


def test_long_function_allowlists_are_current() -> None:
    lengths = _function_lengths()
    stale = [
        f"{name}: " + ("no such function" if name not in lengths else f"{lengths[name]} lines")
        for name in sorted({**DECLARATIVE_TABLES, **LONG_FUNCTION_DEBT})
        if lengths.get(name, 0) <= MAX_FUNCTION_LINES
    ]
    assert not stale, (
        "allowlisted functions that are gone or short now: delete their entries\n  "
        + "\n  ".join(stale)
    )


# ------------------------------------------------------------------------------ imports


def _imported(module: str, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    """The modules of ``src/`` an import statement names (a name from a package: the package).

    ``from evergreen import signing`` names the module ``evergreen.signing``; ``from evergreen
    import ConfigError`` names the package ``evergreen`` itself, whose ``__init__`` runs.
    """
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".")
            if modules[module].name != "__init__.py":
                package = package[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([base] if base else []))
        targets = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
            for alias in node.names
        ]
    found = set()
    for target in targets:
        while target and target not in modules:  # `import a.b.c` of a name inside a.b
            target = target.rpartition(".")[0]
        if target and target != module and target.split(".")[0] == PACKAGE:
            found.add(target)
    return found


def _import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports, at the top or inside functions alike."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                graph[name] |= _imported(name, node, modules)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[frozenset[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(frozenset(component))
    return components


def test_cycle_finder() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}, "f": set()}
    assert sorted(map(sorted, _cycles(graph))) == [["a", "b", "c"], ["d", "e"]]


def test_package_import_counts_when_the_package_imports_back() -> None:
    modules = {"evergreen": SRC / "evergreen/__init__.py", "evergreen.x": SRC / "evergreen/x.py"}
    node = ast.parse("from evergreen import ConfigError").body[0]
    assert _imported("evergreen.x", node, modules) == {"evergreen"}  # type: ignore[arg-type]
    node = ast.parse("from . import x").body[0]
    assert _imported("evergreen", node, modules) == {"evergreen.x"}  # type: ignore[arg-type]


def test_no_import_cycles() -> None:
    found = _cycles(_import_graph())
    new = [sorted(c) for c in found if not any(c <= known for known in CYCLE_DEBT)]
    assert not new, (
        "import cycles (function-level imports included): move what both sides need into a "
        "lower module\n  " + "\n  ".join(" <-> ".join(c) for c in new)
    )


def test_cycle_allowlist_is_current() -> None:
    found = _cycles(_import_graph())
    stale = [sorted(known) for known in CYCLE_DEBT if not any(c <= known for c in found)]
    assert not stale, "allowlisted import cycles that are gone: delete their entries\n  " + (
        "\n  ".join(", ".join(c) for c in stale)
    )


# ------------------------------------------------------------------------------ public API


def test_all_is_sorted_and_complete() -> None:
    """Every public name of the package is in ``__all__``, sorted (as httpx pins its API).

    Submodules are left out: Python sets them on the package as a side effect of importing
    them, so which ones are there depends on what ran before, not on the API.
    """
    public = sorted(
        name
        for name, value in vars(evergreen).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    )
    assert evergreen.__all__ == public


if __name__ == "__main__":  # `python tests/test_structure.py`: today's debt, as the lists above
    print("LONG_FUNCTION_DEBT = {")
    for name, lines in sorted(_function_lengths().items(), key=lambda item: -item[1]):
        if lines > MAX_FUNCTION_LINES and name not in DECLARATIVE_TABLES:
            print(f"    {name!r}: {lines},")
    print("}\nCYCLE_DEBT = [")
    for cycle in _cycles(_import_graph()):
        print(f"    frozenset({sorted(cycle)!r}),")
    print("]")
