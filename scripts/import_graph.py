"""Who imports whom inside filepipe, and the import circles.

    python scripts/import_graph.py          # one line per module: its filepipe imports
    python scripts/import_graph.py --check  # exit 1 if any circle exists

Every import counts: at module level, inside functions (lazy) and under TYPE_CHECKING.
A package counts as its ``__init__``; ``from . import x`` counts as importing ``x``.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

PACKAGE = "filepipe"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The filepipe modules `path` (module `name`) imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    base = name.split(".") if is_package else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[:len(base) - (node.level - 1)]
                mod = ".".join(stem + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name and t.startswith(PACKAGE):
                found.add(t)
    return found


def graph(root: Path) -> dict[str, set[str]]:
    files = {module_name(p, root): p for p in sorted((root / PACKAGE).rglob("*.py"))}
    known = set(files)
    return {m: imports_of(p, m, known) for m, p in files.items()}


def circles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if any import circle exists")
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[1]
    g = graph(root)
    # the package __init__ re-exports the public API: it imports from everything, and
    # nothing inside the package imports it
    g.pop(PACKAGE, None)
    for deps in g.values():
        deps.discard(PACKAGE)
    found = circles(g)
    if not args.check:
        for m in sorted(g):
            print(f"{m:<28} <- {', '.join(sorted(d.removeprefix(PACKAGE + '.') for d in g[m])) or '-'}")
    for group in found:
        print("circle: " + " <-> ".join(group))
    return 1 if args.check and found else 0


if __name__ == "__main__":
    sys.exit(main())
