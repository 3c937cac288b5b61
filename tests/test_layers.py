"""The layers of docs/architecture.md hold in the code: a layer imports only itself, the
layers below it and the shared leaf modules (pylog.errors, pylog.util).

The layer order is read from the architecture page's layer list, so the page and the
code cannot drift apart silently.  Every import statement counts, module-level or
inside a function (a lazy import is still a dependency).
"""
from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "pylog"
#: Modules outside the layers that every layer may use; they import only each other.
LEAVES = {"errors": set(), "util": {"errors"}}


def layer_order() -> List[str]:
    """Layer packages from the architecture page's list, lowest first."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Layers", 1)[1]
    block = section.split("```", 2)[1]
    names = re.findall(r"^pylog\.(\w+)\s", block, flags=re.MULTILINE)
    assert names, "no layer list found under '## Layers' in docs/architecture.md"
    return list(reversed(names))


def imports(path: Path) -> Iterator[Tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``: relative imports are
    resolved, and ``from pylog import x`` names pylog.x if x is a module of pylog, else
    the package itself (a name its __init__ exports)."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                name = ".".join(base + ((node.module,) if node.module else ()))
            else:
                name = node.module or ""
            if name != "pylog":
                yield node.lineno, name
                continue
            for alias in node.names:
                is_module = (PKG / alias.name).is_dir() or (PKG / f"{alias.name}.py").exists()
                yield node.lineno, f"pylog.{alias.name}" if is_module else "pylog"


def target(name: str) -> str:
    """The top-level part of pylog that module ``name`` belongs to ("" for pylog itself)."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_page_lists_every_package_of_pylog():
    packages = {p.name for p in PKG.iterdir() if (p / "__init__.py").exists()}
    assert set(layer_order()) == packages


def test_no_layer_imports_upward():
    order = layer_order()
    rank: Dict[str, int] = {name: i for i, name in enumerate(order)}
    # `import pylog` runs the package's __init__, which imports some layers: only a
    # layer above all of them may import the package itself.
    facade = max(rank[target(n)] for _, n in imports(PKG / "__init__.py")
                 if n.startswith("pylog.") and target(n) in rank)
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        src = path.relative_to(PKG).parts[0].removesuffix(".py")
        for line, name in imports(path):
            if name != "pylog" and not name.startswith("pylog."):
                continue
            dst = target(name)
            where = f"{path.relative_to(ROOT)}:{line} imports {name}"
            if src in LEAVES:
                if dst != src and dst not in LEAVES[src]:
                    bad.append(f"{where} (a leaf module imports only {sorted(LEAVES[src]) or 'nothing'})")
            elif src in rank:
                if dst == "":
                    if rank[src] <= facade:
                        bad.append(f"{where} (the package imports layers up to pylog.{order[facade]})")
                elif dst in rank and rank[dst] > rank[src]:
                    bad.append(f"{where} (pylog.{dst} is above pylog.{src})")
                elif dst not in rank and dst not in LEAVES:
                    bad.append(f"{where} (not a layer nor a leaf module)")
    assert not bad, "upward imports:\n" + "\n".join(bad)


@pytest.mark.parametrize("layer,forbidden", [
    ("records", {"storage", "broker", "replication", "protocol"}),
    ("storage", {"broker", "replication", "cluster"}),
    ("protocol", {"storage", "broker"}),
])
def test_lower_layers_know_nothing_of_the_broker(layer, forbidden):
    """Spelled out for the pairs issue 11 names, in case the page's order changes."""
    found = {(str(p.relative_to(ROOT)), line, name) for p in (PKG / layer).rglob("*.py")
             for line, name in imports(p) if target(name) in forbidden and name.startswith("pylog.")}
    assert not found
