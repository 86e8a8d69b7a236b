"""The architecture, checked on the source: the components (data, models, train, evaluate, deploy, synth, fairness,
serve, text, ...) never import the studies, the command line or the report, the report never imports the studies
or the command line, and no two modules import each other when loaded."""

from __future__ import annotations

import ast
from pathlib import Path

import medassist

ROOT = Path(medassist.__file__).parent
TOP = ("studies", "cli", "report", "bench")  # the layers that compose the components; nothing below imports them


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The medassist modules ``path`` imports (only those run when it is loaded, with ``top_level_only``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m == "medassist" or m.startswith("medassist.")}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in ROOT.rglob("*.py")}


def _layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def test_components_never_import_the_studies_the_cli_or_the_report() -> None:
    wrong = []
    for name, path in MODULES.items():
        layer = _layer(name)
        if layer in TOP or name == "medassist.__main__":
            continue
        wrong += [f"{name} -> {m}" for m in _imports(path, top_level_only=False) if _layer(m) in TOP]
    assert not wrong, "a component imports a study, the CLI or the report:\n" + "\n".join(sorted(wrong))


def test_the_report_reads_files_and_never_imports_the_studies_or_the_cli() -> None:
    wrong = []
    for name, path in MODULES.items():
        if _layer(name) == "report":
            wrong += [f"{name} -> {m}" for m in _imports(path, top_level_only=False) if _layer(m) in ("studies", "cli")]
    assert not wrong, "\n".join(sorted(wrong))


def test_no_import_cycle_between_modules() -> None:
    graph = {
        name: {m for m in _imports(path, top_level_only=True) if m in MODULES and m != name}
        for name, path in MODULES.items()
    }
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # A package's __init__ re-exporting its own modules is how Python packages are built, not a cycle to remove.
    cycles = [c for c in cycles if not _within_one_package(c)]
    assert not cycles, "\n".join(cycles)


def _within_one_package(cycle: str) -> bool:
    names = cycle.split(" -> ")
    return len({_layer(n) for n in names}) == 1 and any(MODULES[n].name == "__init__.py" for n in names)


def test_the_checks_see_a_violation(tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from medassist.studies.text import run_text_study\n")
    assert "medassist.studies.text" in _imports(bad, top_level_only=False)
    assert not _imports(bad, top_level_only=True)  # a function-level import runs only when called
