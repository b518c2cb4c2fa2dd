"""A small orders project shared by the reliability tests: a folder of order files,
an Excel copy of them and a folder of per-customer totals, with what a fresh recompute of
the current sources gives."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
from conftest import age

from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
from filepipe.stores import TableStoreExcel, TableStoreFiledir


def write_json(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    age(path)


def copy_rows(orders: pd.DataFrame) -> pd.DataFrame:
    return orders[[c for c in ("order_id", "customer", "amount", "note") if c in orders.columns]]


def totals(orders: pd.DataFrame) -> pd.DataFrame:
    return orders.groupby("customer", as_index=False)["amount"].sum()


def orders_app(root: Path, **table_options) -> FilepipeApp:
    """inbox/{order_id}.json → out/report.xlsx[Orders] (copy) and out/totals/{customer}.json."""
    catalog = Catalog({
        "orders": Table(TableStoreFiledir(root / "inbox/{order_id}.json"), **table_options),
        "copy": Table(TableStoreExcel(root / "out/report.xlsx", sheet="Orders",
                                      primary_keys=["order_id"])),
        "totals": Table(TableStoreFiledir(root / "out/totals/{customer}.json")),
    })
    return FilepipeApp(catalog, Pipeline([
        BatchTransform(copy_rows, inputs=["orders"], outputs=["copy"]),
        BatchTransform(totals, inputs=["orders"], outputs=["totals"], transform_keys=["customer"]),
    ]), root=root)


def seed_orders(root: Path, n: int = 4) -> None:
    for i in range(1, n + 1):
        write_json(root / "inbox" / f"{i}.json",
                   {"customer": "ab"[i % 2], "amount": float(i)})


def read_copy(root: Path) -> pd.DataFrame:
    df = pd.read_excel(root / "out/report.xlsx", sheet_name="Orders", engine="calamine")
    return df.sort_values("order_id").reset_index(drop=True)


def read_totals(root: Path) -> dict[str, float]:
    return {p.stem: json.loads(p.read_text())["amount"]
            for p in sorted((root / "out/totals").glob("*.json"))}


def expected(root: Path) -> tuple[pd.DataFrame, dict[str, float]]:
    """What a fresh recompute of the current sources gives."""
    rows = [{"order_id": p.stem, **json.loads(p.read_text())}
            for p in sorted((root / "inbox").glob("*.json"))]
    df = pd.DataFrame(rows)
    copy = df[["order_id", "customer", "amount"]].sort_values("order_id").reset_index(drop=True)
    return copy, df.groupby("customer")["amount"].sum().to_dict()


def assert_fresh(root: Path) -> None:
    copy, sums = expected(root)
    got = read_copy(root)
    assert got["order_id"].astype(str).tolist() == copy["order_id"].tolist()
    assert got["amount"].tolist() == copy["amount"].tolist()
    assert read_totals(root) == sums


def backups(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if ".bak" in p.name)


def close(app: FilepipeApp) -> None:
    if app._ds is not None:
        app.ds.meta_dbconn.dispose()


def run_then_lose_the_index(app: FilepipeApp) -> None:
    """Run `app` once, close its index, then delete `.filepipe/`: the index is lost."""
    assert app.run().ok
    close(app)
    shutil.rmtree(app.state_dir)
