"""The package's layers, checked from its imports: dependencies point one way, and nothing is circular.

The rule (README, "Layout"): app -> nodes -> importers / wire / data -> models -> protocol -> infra
-> crypto -> base. A module may import its own package and any layer below its own, never a layer
above it nor a sibling layer, not even lazily inside a function or under TYPE_CHECKING. The test
walks every ``import`` statement of the installed package with :mod:`ast`, so a new module is
covered the day it is added.
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import blindscore

PACKAGE = Path(blindscore.__file__).resolve().parent
REPO = PACKAGE.parent

#: Layers from the bottom up; a layer is a tuple of sibling packages that may not import each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("blindscore.errors", "blindscore._files", "blindscore.v1"),
    ("blindscore.crypto",),
    ("blindscore.infra",),
    ("blindscore.protocol",),
    ("blindscore.models",),
    ("blindscore.importers", "blindscore.wire", "blindscore.data"),
    ("blindscore.bureau", "blindscore.bank_node", "blindscore.platform_node"),
    ("blindscore.app", "blindscore.testing"),
)
#: Top-level import names of this repository (the node folders only ever as blindscore.*).
OURS = {"blindscore", "bureau", "bank_node", "platform_node", "scripts", "tests"}
#: The package's own face: ``blindscore/__init__`` (the base exception) and ``python -m blindscore``.
ENTRY = {"blindscore": 0, "blindscore.__main__": len(LAYERS)}
#: The public API ``blindscore/__init__`` re-exports: loaded on first use by name (never imported
#: at module level; checked by test_import_blindscore_stays_light), named for type checkers only.
PUBLIC_FACE = {"blindscore.app.api", "blindscore.app.client", "blindscore.bank_node.client"}


def unit_of(module: str) -> tuple[int, str] | None:
    """(layer, sibling package) of a blindscore module, or None for a name outside the package."""
    if module in ENTRY:
        return ENTRY[module], module
    for level, siblings in enumerate(LAYERS):
        for unit in siblings:
            if module == unit or module.startswith(unit + "."):
                return level, unit
    return None


def package_modules() -> dict[str, Path]:
    """Every module of the package by dotted name (the nodes through their place in the package)."""
    out: dict[str, Path] = {}
    # os.walk, not Path.rglob: in a checkout the node folders are symlinks inside the package.
    paths = [
        Path(d, f) for d, _, files in os.walk(PACKAGE, followlinks=True) for f in files if f.endswith(".py")
    ]
    for path in sorted(paths):
        rel = path.relative_to(PACKAGE).with_suffix("")
        if rel.parts[0] == "v1":
            continue
        parts = ["blindscore", *rel.parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports_of(module: str, path: Path) -> Iterator[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import of a blindscore module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = set(map(id, tree.body))
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] in {
                "blindscore",
                "bureau",
                "bank_node",
                "platform_node",
                "scripts",
                "tests",
            }:
                yield name, node.lineno, id(node) in top


MODULES = package_modules()


def resolve(name: str) -> str | None:
    """The module an imported name lives in (``from a.b import c`` names module a.b or a.b.c)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def violations() -> list[str]:
    found = []
    for module, path in MODULES.items():
        here = unit_of(module)
        assert here is not None, f"{module} belongs to no layer: add it to LAYERS"
        for name, line, top in imports_of(module, path):
            where = f"{path.relative_to(REPO)}:{line}"
            if name.split(".")[0] != "blindscore":
                found.append(f"{where}: imports {name} (outside the installed package)")
                continue
            target = resolve(name)
            if target is None:
                continue
            there = unit_of(target)
            assert there is not None, target
            if there[1] == here[1] or target == "blindscore.errors":
                continue
            if module == "blindscore" and target in PUBLIC_FACE and not top:
                continue
            if there[0] >= here[0]:
                found.append(f"{where}: {module} (layer {here[1]}) imports {target} (layer {there[1]})")
    return found


def test_every_import_points_down() -> None:
    assert violations() == []


def cycles() -> list[list[str]]:
    """Import cycles among modules, lazy imports included (Tarjan's strongly connected sets)."""
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for module, path in MODULES.items():
        for name, _, _ in imports_of(module, path):
            target = resolve(name)
            if target is not None and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_module_imports_itself_in_a_circle() -> None:
    assert cycles() == []


def test_the_layer_check_catches_an_upward_and_a_sibling_import(tmp_path: Path) -> None:
    """Negative controls: the walk flags a lazy upward import and a sibling import it is shown."""
    crypto = tmp_path / "probe.py"
    crypto.write_text("def f():\n    from blindscore.bureau.flow import Bureau\n    return Bureau\n")
    found = [
        name
        for name, _, top in imports_of("blindscore.crypto.probe", crypto)
        if not top and unit_of(resolve(name) or "") == (6, "blindscore.bureau")
    ]
    assert found, "a lazy import of the bureau from crypto went unseen"
    assert {"blindscore.bureau.flow", "blindscore.bank_node.flow", "blindscore.platform_node.flow"} <= set(
        MODULES
    )
    sibling = tmp_path / "sibling.py"
    sibling.write_text("from blindscore.bank_node.store import ResultStore\n")
    assert [unit_of(resolve(n) or "") for n, _, top in imports_of("blindscore.bureau.sibling", sibling)] == [
        (6, "blindscore.bank_node")
    ] * 2


@pytest.mark.parametrize("root", ["scripts", "tests"])
def test_harnesses_and_tests_use_the_installed_names(root: str) -> None:
    """Nothing imports the node folders under their bare names (``import bureau``): one import name."""
    bad = []
    for path in sorted((REPO / root).rglob("*.py")):
        for name, line, _ in imports_of(f"{root}.{path.stem}", path):
            if name.split(".")[0] in {"bureau", "bank_node", "platform_node"}:
                bad.append(f"{path.relative_to(REPO)}:{line}: {name}")
    assert bad == []


def test_import_blindscore_stays_light() -> None:
    """``import blindscore`` loads neither gRPC nor the nodes; the public names load on first use.
    The face's imports of the public API sit under TYPE_CHECKING only (what the walk lets through)."""
    import subprocess
    import sys

    code = (
        "import sys, blindscore; heavy = [m for m in ('grpc', 'blindscore.app', 'blindscore.bank_node') "
        "if m in sys.modules]; print(heavy); blindscore.Client; print('grpc' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.split("\n")[:2] == ["[]", "True"]
    face = ast.parse((PACKAGE / "__init__.py").read_text())
    top_level = [n for n in face.body if isinstance(n, ast.Import | ast.ImportFrom)]
    assert all(n.module in ("__future__", "typing", "blindscore.errors") for n in top_level)  # type: ignore[union-attr]
