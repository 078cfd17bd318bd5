"""The package's layering (docs/decisions.md, shared DESIGN.md): imports only run downward, no circles,
and no library module imports the command line. Read from the source with `ast`, function-level imports
included."""

from __future__ import annotations

import ast
from pathlib import Path

import mixatlas

PACKAGE = Path(mixatlas.__file__).parent
# Bottom (1) to top (8); a module may import its own layer or a lower one. "__init__" is the root package
# (its version string).
LAYERS = {
    "__init__": 1, "errors": 1, "console": 1, "yaml_io": 1, "publish": 1, "processes": 1, "space": 1,
    "corpus": 1,
    "atlas": 2,
    "objectives": 3, "executors": 3, "tracking": 3,
    "search": 4,
    "recipe": 5, "analyze": 5,
    "report": 6,
    "demo": 7,
    "cli": 8,
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        found[".".join(parts).removesuffix(".__init__")] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, module) of every `mixatlas` import in a file; `from pkg import sub` names the submodule."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mixatlas"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.append((node.lineno, sub if sub in modules else node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("mixatlas")]
    return found


def _stage(module: str) -> str:
    return module.split(".")[1] if "." in module else "__init__"


def test_every_import_runs_downward_and_no_library_module_imports_the_cli() -> None:
    modules = _modules()
    upward, unplaced = [], []
    for module, path in modules.items():
        if module == "mixatlas":
            continue
        source = _stage(module)
        if source not in LAYERS:
            unplaced.append(module)
            continue
        for line, target in _imports(path, modules):
            if LAYERS.get(_stage(target), 99) > LAYERS[source]:
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    assert not unplaced, f"modules outside every layer (add them to LAYERS and DESIGN.md): {unplaced}"
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)


def test_no_import_circles() -> None:
    modules = _modules()
    graph = {m: {t for _, t in _imports(p, modules) if t in modules and t != m} for m, p in modules.items()}
    # Importing a.b.c imports the package a.b first (unless a.b is the importer's own package).
    for module, targets in graph.items():
        for target in list(targets):
            parts = target.split(".")
            for i in range(2, len(parts)):
                parent = ".".join(parts[:i])
                if parent in modules and parent != module and not module.startswith(parent + "."):
                    targets.add(parent)
    circles, state = [], dict.fromkeys(graph, 0)  # 0 new, 1 on the path, 2 done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state[target] == 1:
                circles.append(" -> ".join([*path[path.index(target):], target]))
            elif state[target] == 0:
                visit(target, [*path, target])
        state[module] = 2

    for module in graph:
        if state[module] == 0:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(circles)
