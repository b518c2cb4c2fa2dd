"""Helpers of the data-versioning tests (issue #10, tests/test_versions*.py).

* `Sales`: a project running the real examples/sales/pipeline.py on data the test writes
  itself (prices.xlsx written with openpyxl, one JSON file per order), keeping its own
  record of every source row; `Sales.expected()` computes what every table must hold from
  that record alone, with plain Python (no pandas groupby, no filepipe).
* `state` / `assert_state`: tables compared by value (key → row), numbers as numbers
  (an Excel or JSON integer and the same float are one value, as filepipe's hash says),
  every null alike.
* `changes`: the rows added / updated / deleted between two states, as `log` counts them.
* `read_sheet`, `cell_fill`: workbooks read back with openpyxl.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

SALES_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sales"

KEYS = {"orders": ["shop", "order_id"], "prices": ["sku"], "priced_orders": ["shop", "order_id"],
        "customers": ["customer"], "products": ["sku"]}
COLUMNS = {
    "orders": ["shop", "order_id", "customer", "sku", "qty", "date"],
    "prices": ["sku", "product", "unit_price"],
    "priced_orders": ["shop", "order_id", "date", "customer", "sku", "product", "qty", "unit_price", "amount"],
    "customers": ["customer", "orders", "items", "revenue"],
    "products": ["sku", "product", "units", "revenue"],
}
TABLES = list(KEYS)

PRICES = {"A-100": ("Espresso beans 1 kg", 18.5), "A-200": ("Filter coffee 500 g", 7.9),
          "B-100": ("Green tea 100 g", 5.2), "B-200": ("Earl Grey 250 g", 6.75),
          "C-100": ("Hand grinder", 39.0), "C-200": ("Moka pot 6 cups", 27.5),
          "D-100": ("Ceramic mug", 9.0), "D-200": ("Travel tumbler", 15.0)}
ORDERS = [  # shop, order_id, customer, sku, qty
    ("berlin", "1001", "Ana", "A-100", 2), ("berlin", "1002", "Ben", "D-200", 1),
    ("berlin", "1003", "Chen", "B-100", 3), ("berlin", "1004", "Dana", "C-100", 1),
    ("lisbon", "1005", "Ana", "D-200", 4), ("lisbon", "1006", "Ben", "A-100", 1),
    ("lisbon", "1007", "Chen", "B-200", 2), ("lisbon", "1008", "Dana", "A-200", 5),
    ("online", "1009", "Ana", "C-200", 1), ("online", "1010", "Ben", "D-100", 2),
    ("online", "1011", "Chen", "A-100", 3), ("online", "1012", "Dana", "B-100", 2),
]

GREEN, RED, YELLOW = "FFC6EFCE", "FFFFC7CE", "FFFFEB9C"


def age(path: Path, seconds: float = 10.0) -> None:
    """Move a file's mtime into the past (not 'racy': its fingerprint is trusted)."""
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


# --- values and states ---------------------------------------------------------------------

def norm(value: Any) -> Any:
    """A cell as a comparable value: None for every null, numbers as floats rounded to 6
    places (so 3 == 3.0), text as text."""
    if value is None:
        return None
    if isinstance(value, (bool,)):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):
        try:
            f = float(value)
        except (TypeError, ValueError):
            return str(value)
        return round(f, 6) if math.isfinite(f) else f
    if isinstance(value, (dt.date, dt.datetime, pd.Timestamp)):
        return pd.Timestamp(value).isoformat()
    return value if isinstance(value, str) else str(value)


def state(df: pd.DataFrame, keys: Sequence[str], columns: Sequence[str] | None = None) -> dict[tuple, dict]:
    """`df` as {key tuple: {column: value}} (values normalised by `norm`)."""
    columns = list(columns) if columns is not None else list(df.columns)
    out: dict[tuple, dict] = {}
    for rec in df.to_dict("records"):
        key = tuple(norm(rec[k]) if not isinstance(rec[k], str) else rec[k] for k in keys)
        assert key not in out, f"key {key} twice in {df}"
        out[key] = {c: norm(rec.get(c)) for c in columns if c not in keys}
    return out


def assert_state(got: pd.DataFrame, expected: pd.DataFrame, keys: Sequence[str], where: str) -> None:
    """`got` holds exactly `expected`'s columns and rows (by value)."""
    assert sorted(map(str, got.columns)) == sorted(expected.columns), \
        f"{where}: columns {list(got.columns)} != {list(expected.columns)}"
    a, b = state(got, keys, expected.columns), state(expected, keys)
    if a != b:
        missing = sorted(set(b) - set(a), key=str)
        extra = sorted(set(a) - set(b), key=str)
        differ = {k: (a[k], b[k]) for k in set(a) & set(b) if a[k] != b[k]}
        raise AssertionError(f"{where}: rows differ\n missing {missing}\n extra {extra}\n "
                             f"differ (got, expected) {differ}")


def changes(old: Mapping[tuple, dict], new: Mapping[tuple, dict]) -> dict[str, int]:
    """Rows added, updated (some value differs) and deleted from state `old` to `new`."""
    return {"added": len(set(new) - set(old)),
            "updated": sum(1 for k in set(new) & set(old) if new[k] != old[k]),
            "deleted": len(set(old) - set(new))}


def row_versions(states: Mapping[int, Mapping[tuple, dict]], key: tuple) -> list[dict]:
    """The versions of one row over `states` (run id → state, in order): run, change and
    the columns that changed from the previous live version (all for an added row)."""
    out: list[dict] = []
    previous: dict | None = None
    for run, st in states.items():
        row = st.get(key)
        if row == previous:
            continue
        if row is None:
            out.append({"run": run, "change": "deleted", "changed": set(), "row": None})
        else:
            changed = {c for c, v in row.items() if previous is None or previous.get(c) != v}
            out.append({"run": run, "change": "added" if previous is None else "updated",
                        "changed": changed, "row": row})
        previous = row
    return out


# --- the sales project ---------------------------------------------------------------------

class Sales:
    """examples/sales/pipeline.py on the data in `PRICES` and `ORDERS`, with the test's own
    record of the sources (`prices`: sku → (product, unit price); `orders`: (shop, id) →
    fields)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        shutil.copy(SALES_EXAMPLE / "pipeline.py", root / "pipeline.py")
        self.prices: dict[str, tuple[str, float]] = dict(PRICES)
        self.orders: dict[tuple[str, str], dict[str, Any]] = {}
        for n, (shop, oid, customer, sku, qty) in enumerate(ORDERS):
            self.put_order(shop, oid, customer=customer, sku=sku, qty=qty, date=f"2026-10-{n + 1:02d}")
        self.write_prices()

    @property
    def pipeline(self) -> str:
        return str(self.root / "pipeline.py")

    # edits: the file and the record together
    def write_prices(self) -> None:
        import openpyxl

        book = openpyxl.Workbook()
        sheet = book.active
        sheet.title = "Prices"
        sheet.append(["sku", "product", "unit_price"])
        for sku, (product, price) in self.prices.items():
            sheet.append([sku, product, price])
        path = self.root / "prices.xlsx"
        book.save(path)
        age(path)

    def set_price(self, sku: str, product: str | None = None, price: float | None = None) -> None:
        old = self.prices.get(sku, (None, None))
        self.prices[sku] = (product if product is not None else old[0], price if price is not None else old[1])
        self.write_prices()

    def drop_price(self, sku: str) -> None:
        del self.prices[sku]
        self.write_prices()

    def order_path(self, shop: str, oid: str) -> Path:
        return self.root / "inbox" / shop / f"{oid}.json"

    def put_order(self, shop: str, oid: str, **fields: Any) -> None:
        record = {**self.orders.get((shop, oid), {}), **fields}
        self.orders[(shop, oid)] = record
        path = self.order_path(shop, oid)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2) + "\n")
        age(path)

    def drop_order(self, shop: str, oid: str) -> None:
        del self.orders[(shop, oid)]
        self.order_path(shop, oid).unlink()

    # what every table must hold
    def expected(self) -> dict[str, pd.DataFrame]:
        orders = [{"shop": s, "order_id": o, **r} for (s, o), r in sorted(self.orders.items())]
        prices = [{"sku": k, "product": p, "unit_price": u} for k, (p, u) in sorted(self.prices.items())]
        priced = []
        for o in orders:
            product, unit = self.prices.get(o["sku"], (None, None))
            priced.append({"shop": o["shop"], "order_id": o["order_id"], "date": o["date"],
                           "customer": o["customer"], "sku": o["sku"], "product": product,
                           "qty": o["qty"], "unit_price": unit,
                           "amount": None if unit is None else round(o["qty"] * unit, 2)})
        customers: dict[str, dict] = {}
        products: dict[str, dict] = {}
        for p in priced:
            c = customers.setdefault(p["customer"], {"customer": p["customer"], "orders": 0, "items": 0,
                                                     "revenue": 0.0})
            c["orders"] += 1
            c["items"] += p["qty"]
            c["revenue"] += p["amount"] or 0.0
            q = products.setdefault(p["sku"], {"sku": p["sku"], "product": p["product"], "units": 0,
                                               "revenue": 0.0})
            q["units"] += p["qty"]
            q["revenue"] += p["amount"] or 0.0
        for row in [*customers.values(), *products.values()]:
            row["revenue"] = round(row["revenue"], 2)
        frames = {"orders": orders, "prices": prices, "priced_orders": priced,
                  "customers": list(customers.values()), "products": list(products.values())}
        return {t: pd.DataFrame(rows, columns=COLUMNS[t]) for t, rows in frames.items()}

    def expected_states(self) -> dict[str, dict[tuple, dict]]:
        return {t: state(df, KEYS[t]) for t, df in self.expected().items()}


# --- workbooks -----------------------------------------------------------------------------

def cell_fill(cell: Any) -> str | None:
    """The solid fill colour of an openpyxl cell (ARGB), None when unfilled."""
    if cell.fill is None or cell.fill.fill_type is None:
        return None
    return cell.fill.fgColor.rgb


def read_sheet(path: Path, sheet: str | None = None) -> pd.DataFrame:
    """A sheet read with openpyxl: the first row as header."""
    import openpyxl

    book = openpyxl.load_workbook(path)
    ws = book[sheet] if sheet else book.worksheets[0]
    rows = list(ws.iter_rows(values_only=True))
    return pd.DataFrame(rows[1:], columns=rows[0]) if rows else pd.DataFrame()
