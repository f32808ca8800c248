"""The house rules, checked: imports point one way, no import cycle, modules and functions stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hfstream"

#: module prefix -> layer. A module may import modules of lower layers, and of its own package.
LAYERS = {
    "hfstream.errors": -1, "hfstream.native": 0, "hfstream.progress": 0, "hfstream.rundir": 0,
    "hfstream.typed_config": 0, "hfstream._shuffle": 0, "hfstream._packing": 0,
    "hfstream.eir.protocol": 1, "hfstream.eir.client": 1,     # the EIR wire: the ws:// reader's and the server's
    "hfstream.source": 2,
    "hfstream.worker": 3,                                    # the child process, above what it reads
    "hfstream.mixing": 4,
    "hfstream.sources": 5,                                   # the one door
    "hfstream.tokens": 6,
    "hfstream.loader": 7,
    "hfstream.train": 8, "hfstream.eir": 8, "hfstream.testing": 8,
    "hfstream.bench": 9, "hfstream.cli": 10,
}
#: hfstream modules imported inside a function, on purpose (each says why).
LAZY_ALLOWED = {
    ("hfstream.worker.main", "hfstream.worker.ws"): "websockets costs every worker 40 ms; only ws:// needs it",
    ("hfstream.cli.train", "hfstream.train.trainer"): "torch, only when training (not for --print-config)",
    ("hfstream.cli.train", "hfstream.train.report"): "torch, only when training",
}
MAX_MODULE_LINES = 420
#: modules over the limit, each with the reason (to be split, not to grow)
TOO_LONG_FOR_NOW: dict[str, str] = {}
MAX_FUNCTION_LINES = 85


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _layer(module: str) -> int | None:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len, default=None)
    return None if best is None else LAYERS[best]


def _imports(module: str, path: Path) -> list[tuple[str, bool]]:
    """(imported hfstream module, at module top?) for every import in the file."""
    tree = ast.parse(path.read_text())
    inside_functions = {id(inner) for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                        for inner in ast.walk(node)}
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names]  # a submodule, else resolved to ``base``
        else:
            continue
        for name in names:
            if name.startswith("hfstream"):
                found.append((name, id(node) not in inside_functions))
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return name or None


def _graph() -> dict[str, list[tuple[str, bool]]]:
    modules = _modules()
    graph = {}
    for module, path in modules.items():
        edges = []
        for name, at_top in _imports(module, path):
            target = _resolve(name, modules)
            if target is not None and target != module and target != "hfstream":
                edges.append((target, at_top))
        graph[module] = edges
    return graph


def test_imports_point_down_the_layers():
    wrong = []
    for module, edges in _graph().items():
        here = _layer(module)
        if here is None:
            continue
        for target, _ in edges:
            there = _layer(target)
            same_package = target.split(".")[:2] == module.split(".")[:2]
            if there is not None and there >= here and not same_package:
                wrong.append(f"{module} (layer {here}) imports {target} (layer {there})")
    assert not wrong, "\n".join(wrong)


def test_every_module_has_a_layer():
    assert [m for m in _modules() if m != "hfstream" and _layer(m) is None] == []


def test_no_import_cycle_at_module_top():
    graph = {m: [t for t, top in edges if top] for m, edges in _graph().items()}
    seen, stack, cycles = set(), [], []

    def visit(module: str) -> None:
        if module in stack:
            cycles.append(stack[stack.index(module):] + [module])
            return
        if module in seen:
            return
        seen.add(module)
        stack.append(module)
        for target in graph.get(module, []):
            visit(target)
        stack.pop()

    for module in graph:
        visit(module)
    assert not cycles, cycles


def test_hfstream_imports_are_at_module_top():
    lazy = sorted({(m, t) for m, edges in _graph().items() for t, top in edges
                   if not top and not m.startswith(("hfstream.bench", "hfstream.testing"))
                   and m not in ("hfstream", "hfstream.eir") and (m, t) not in LAZY_ALLOWED})
    assert not lazy, lazy


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_and_functions_stay_small(path):
    source = path.read_text()
    if str(path.relative_to(PACKAGE)) not in TOO_LONG_FOR_NOW:
        assert len(source.splitlines()) <= MAX_MODULE_LINES, f"{path.name}: {len(source.splitlines())} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, long


def test_every_package_is_listed_for_the_wheel():
    import tomllib

    listed = set(tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(PACKAGE.parent).parts) for p in PACKAGE.rglob("__init__.py")}
    assert found - listed == set(), "add them to [tool.setuptools] packages in pyproject.toml"
    assert listed - found == {"hfstream.configs"}   # configs/ at the top, shipped as package data
