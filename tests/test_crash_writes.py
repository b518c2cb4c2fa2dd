"""SIGKILL on the write path: a run writing an Excel output and a folder output is killed at
a random point (drawn from a seeded generator: the N-th call of one of the functions that
write files or meta), 30 times over a changing source folder, the index on SQLite or on
PostgreSQL. After each kill the next run must leave outputs equal to a fresh recompute of
the sources, no filepipe temp file behind, and no `.bak` copy (an interrupted write of
filepipe's own is not a hand edit).
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from conftest import age

from filepipe.app import load_app

PIPELINE = textwrap.dedent('''
    import pandas as pd
    from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
    from filepipe.stores import TableStoreExcel, TableStoreFiledir

    def copy_rows(orders):
        return orders[["order_id", "customer", "amount"]]

    def totals(orders):
        return orders.groupby("customer", as_index=False)["amount"].sum()

    META = None  # the index: None for .filepipe/meta.sqlite, or a PostgreSQL database's URL

    catalog = Catalog({
        "orders": Table(TableStoreFiledir("inbox/{order_id}.json"), max_delete_share=None),
        "copy": Table(TableStoreExcel("out/report.xlsx", sheet="Orders", primary_keys=["order_id"])),
        "totals": Table(TableStoreFiledir("out/totals/{customer}.json")),
    })
    app = FilepipeApp(catalog, Pipeline([
        BatchTransform(copy_rows, inputs=["orders"], outputs=["copy"], chunk_size=3),
        BatchTransform(totals, inputs=["orders"], outputs=["totals"],
                       transform_keys=["customer"], chunk_size=2),
    ]), meta=META)
''')

# the child kills itself at the N-th call of TARGET, then runs the pipeline
CHILD = textwrap.dedent('''
    import os, signal, sys
    import filepipe.meta.rows, filepipe.sync, filepipe.table, filepipe.xlsx
    import filepipe.stores.filedir, filepipe.stores.excel
    from filepipe.app import load_app

    target, n = sys.argv[2], int(sys.argv[3])
    owner, name = {
        "rename": (os, "replace"),
        "meta_write": (filepipe.meta.rows.RowMeta, "write"),
        "mark_files": (filepipe.table.DataTable, "mark_files"),
        "apply_chunk": (filepipe.table.DataTable, "apply_chunk"),
        "excel_write": (filepipe.stores.excel.TableStoreExcel, "write_file"),
        "folder_write": (filepipe.stores.filedir.TableStoreFiledir, "upsert_rows"),
        "folder_delete": (filepipe.stores.filedir.TableStoreFiledir, "delete_rows"),
    }[target]
    original, calls = getattr(owner, name), [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(owner, name, wrapped)
    load_app(sys.argv[1]).run()
''')

TARGETS = ["rename", "meta_write", "mark_files", "apply_chunk", "excel_write",
           "folder_write", "folder_delete"]


def _edit_sources(root: Path, rng: random.Random) -> None:
    inbox = root / "inbox"
    inbox.mkdir(exist_ok=True)
    present = sorted(inbox.glob("*.json"))
    for _ in range(rng.randint(1, 4)):
        action = rng.random()
        if action < 0.25 and present:
            victim = present.pop(rng.randrange(len(present)))
            victim.unlink()
            continue
        path = inbox / f"{rng.randint(1, 25)}.json"
        path.write_text(json.dumps({"customer": rng.choice("abcde"),
                                    "amount": float(rng.randint(1, 100))}))
        age(path)


def _assert_fresh(root: Path) -> None:
    rows = [{"order_id": p.stem, **json.loads(p.read_text())}
            for p in sorted((root / "inbox").glob("*.json"))]
    src = pd.DataFrame(rows, columns=["order_id", "customer", "amount"])
    got = pd.read_excel(root / "out/report.xlsx", sheet_name="Orders", engine="calamine")
    assert sorted(got["order_id"].astype(str)) == sorted(src["order_id"])
    merged = got.assign(order_id=got["order_id"].astype(str)).merge(src, on="order_id")
    assert (merged["amount_x"] == merged["amount_y"]).all()
    assert (merged["customer_x"] == merged["customer_y"]).all()
    sums = src.groupby("customer")["amount"].sum().to_dict()
    folder = {p.stem: json.loads(p.read_text())["amount"]
              for p in (root / "out/totals").glob("*.json")}
    assert folder == sums


@pytest.mark.backends("sqlite", "postgresql")
def test_sigkill_anywhere_on_the_write_path_leaves_nothing_wrong(tmp_path: Path, project_index: str | None) -> None:
    rng = random.Random(8)
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pipeline.py").write_text(PIPELINE.replace("META = None", f"META = {project_index!r}"))
    (root / "child.py").write_text(CHILD)
    _edit_sources(root, rng)
    # the write path is the same code on both: half the kills on PostgreSQL (a process start
    # and a server connection each) keep the suite within CI's time
    for i in range(30 if project_index is None else 15):
        _edit_sources(root, rng)
        target, n = rng.choice(TARGETS), rng.randint(1, 4)
        child = subprocess.run([sys.executable, str(root / "child.py"), str(root / "pipeline.py"),
                                target, str(n)], capture_output=True, text=True, timeout=120)
        assert child.returncode in (0, -signal.SIGKILL), child.stderr
        app = load_app(str(root / "pipeline.py"))
        try:
            report = app.run()
            where = f"iteration {i}: killed at call {n} of {target}"
            assert report.ok, f"{where}: {report.summary()}"
            assert report.backups == {} and report.kept == {}, where
            assert list(root.rglob(".~filepipe-*")) == [], where
            assert [p for p in root.rglob("*") if ".bak" in p.name] == [], where
            _assert_fresh(root)
            assert not app.run().changed, where
        finally:
            app.ds.meta_dbconn.dispose()
