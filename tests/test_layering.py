"""The import graph of `estimator_lab`: layers that import only downward, and no cycles.

Every `import` in the package counts, function-level and `TYPE_CHECKING` ones included (they
hide an edge from the interpreter, not from the design). A subpackage imports only from lower
floors; two subpackages on one floor do not import each other. The lists of known exceptions
below are empty (issue #21 removed the last upward arrow and the last cycle): a new arrow or
cycle fails the test, and so would a listed one that is gone, so the lists only shrink.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import estimator_lab

PACKAGE = Path(estimator_lab.__file__).parent

LAYERS = {
    "arguments": 0, "atomic": 0, "configurations": 0, "noise": 0, "serialization": 0,
    "device": 0, "data": 0,
    "graphs": 1,
    "estimators": 2,
    "montecarlo": 3,
    "exact": 4,
    "stats": 5,
    "plotting": 6, "reporting": 6,
    "testing": 7, "train": 7,
    "studies": 8, "validation": 8,
    "cli": 9,
}
"""The floor of each subpackage (or top-level module); higher floors build on lower ones.

`exact` stands on `montecarlo`: exact moments push every configuration through the engine's own
per-draw gradients (`gradient_draws`), so the exact and the Monte Carlo answers share one code
path for what a draw is."""

KNOWN_UPWARD: set[tuple[str, str]] = set()
"""`(file, imported module)` arrows to a floor not below today's (measured, not wanted)."""

KNOWN_CYCLES: set[tuple[str, ...]] = set()
"""Sets of modules that import each other in a circle today (measured, not wanted)."""


def _module_name(path: Path, package: Path) -> str:
    parts = ("estimator_lab", *path.relative_to(package).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, names: bool) -> list[str]:
    """The absolute `estimator_lab` modules `path` imports, at any depth of its code; with
    `names`, also `module.name` for each `from module import name` (a submodule, perhaps)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            if names:
                found += [f"{node.module}.{alias.name}" for alias in node.names]
    return [name for name in found if name.startswith("estimator_lab.")]


def _floor(module: str) -> str:
    return module.split(".")[1]


def _sources(package: Path) -> dict[str, Path]:
    return {_module_name(path, package): path for path in sorted(package.rglob("*.py"))}


def upward_imports(package: Path = PACKAGE) -> set[tuple[str, str]]:
    """`(file relative to the package, imported module)` for each import of a floor not below."""
    upward = set()
    for module, path in _sources(package).items():
        if module == "estimator_lab":
            continue
        for name in _imports(path, names=False):
            floor, home = _floor(name), _floor(module)
            if floor != home and LAYERS[floor] >= LAYERS[home]:
                upward.add((path.relative_to(package).as_posix(), name))
    return upward


def module_cycles(package: Path = PACKAGE) -> set[tuple[str, ...]]:
    """Strongly connected sets of more than one module in the import graph (Tarjan)."""
    sources = _sources(package)
    graph = {module: {name for name in _imports(path, names=True)
                      if name in sources and name != module}
             for module, path in sources.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = set()

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in sorted(graph[module]):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            members = [stack.pop()]
            while members[-1] != module:
                members.append(stack.pop())
            if len(members) > 1:
                cycles.add(tuple(sorted(members)))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return cycles


def test_every_subpackage_has_a_floor():
    floors = {_floor(module) for module in _sources(PACKAGE) if module != "estimator_lab"}
    assert floors <= set(LAYERS), f"give these a floor in LAYERS: {sorted(floors - set(LAYERS))}"


def test_no_new_import_points_up_and_the_known_list_is_current():
    found = upward_imports()
    assert found - KNOWN_UPWARD == set(), "new imports of a higher floor"
    assert KNOWN_UPWARD - found == set(), "gone: remove them from KNOWN_UPWARD"


def test_no_new_import_cycle_and_the_known_list_is_current():
    found = module_cycles()
    assert found - KNOWN_CYCLES == set(), "new import cycles"
    assert KNOWN_CYCLES - found == set(), "gone: remove them from KNOWN_CYCLES"


def _package(root: Path, files: dict[str, str]) -> Path:
    for name, source in files.items():
        (root / "estimator_lab" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "estimator_lab" / name).write_text(source)
    return root / "estimator_lab"


@pytest.mark.parametrize("source, upward", [
    ("from estimator_lab.cli import main\n", {"estimator_lab.cli"}),
    ("def f():\n    import estimator_lab.exact.moments\n", {"estimator_lab.exact.moments"}),
    ("if False:\n    from estimator_lab.exact import moments\n", {"estimator_lab.exact"}),
    ("from estimator_lab.graphs import toy\nimport estimator_lab.data\n", set()),
])
def test_the_scan_sees_every_upward_import_and_only_those(tmp_path, source, upward):
    """A module of `estimators` (floor 2): imports of floors 3 and 9 point up, at module level,
    in a function or under a condition; `graphs` (1) and `data` (0) are below it."""
    package = _package(tmp_path, {"estimators/mine.py": source})
    assert upward_imports(package) == {("estimators/mine.py", name) for name in upward}


def test_the_scan_finds_a_cycle_hidden_in_a_function(tmp_path):
    package = _package(tmp_path, {
        "exact/a.py": "from estimator_lab.exact import b\n",
        "exact/b.py": "def f():\n    from estimator_lab.exact.c import g\n",
        "exact/c.py": "import estimator_lab.exact.a\n",
        "exact/d.py": "import estimator_lab.exact.a\n"})
    assert module_cycles(package) == {
        ("estimator_lab.exact.a", "estimator_lab.exact.b", "estimator_lab.exact.c")}
