"""The import graph of filepipe points one way: stores → sync → change list → steps →
outputs → app, with no circle and no import from a lower layer to a higher one (lazy
and type-only imports included). `python scripts/import_graph.py` prints the graph."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: lowest first; a module may import modules of its own layer or of lower ones
LAYERS = [
    ["errors", "report", "scaffold", "hashing", "frametypes", "stores.base", "stores"],
    ["frames", "fileutil", "codeversion", "executor"],
    ["sql", "types", "xlsx", "history"],
    ["meta.schema", "meta.files", "meta.rows", "meta.steps", "meta.history", "meta.index", "meta",
     "stores.files", "stores.csv", "stores.excel", "stores.parquet", "stores.filedir",
     "stores.db", "stores.memory"],
    ["table"],
    ["sync", "outputs", "catalog", "versions"],
    ["steps.base", "steps.generate", "steps.transform", "steps"],
    ["compute", "graph", "plan"],
    ["app"],
    ["watch"],
    ["cli"],
]


def _graph() -> dict[str, set[str]]:
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts/import_graph.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    g = module.graph(ROOT)
    g.pop("filepipe", None)
    for deps in g.values():
        deps.discard("filepipe")
    return g, module.circles


def test_no_import_circle() -> None:
    g, circles = _graph()
    assert circles(g) == []


def _layer_of(module: str) -> int | None:
    """The layer of `module`, or of the package it is part of (``xlsx.cells`` → ``xlsx``)."""
    name = module.removeprefix("filepipe.")
    while name:
        for i, members in enumerate(LAYERS):
            if name in members:
                return i
        name = name.rpartition(".")[0]
    return None


def test_imports_point_down_the_layers() -> None:
    g, _ = _graph()
    layer = {m: _layer_of(m) for m in g}
    assert [m for m, i in layer.items() if i is None] == [], "every module needs a layer"
    upward = [f"{m} (layer {layer[m]}) imports {d} (layer {layer[d]})"
              for m, deps in g.items() for d in deps if layer[d] > layer[m]]
    assert upward == []


def test_a_circle_is_found() -> None:
    _, circles = _graph()
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_app_does_not_probe_step_classes() -> None:
    """Steps declare reset(), status() and failed_keys(): the app and compute call them
    instead of checking for BatchTransformStep or a `meta` attribute (#9)."""
    for name in ("app.py", "compute.py"):
        text = (ROOT / "filepipe" / name).read_text()
        assert "isinstance(s, BatchTransformStep)" not in text
        assert 'getattr(step, "meta"' not in text and 'getattr(s, "meta"' not in text
