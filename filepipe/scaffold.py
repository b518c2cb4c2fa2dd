"""`filepipe init`: a small working project to start from."""

from __future__ import annotations

import json
from pathlib import Path

PIPELINE = '''"""A filepipe project: order files in inbox/ -> totals per customer in out/report.xlsx.

Run `filepipe run` here, then drop or edit a file in inbox/ and run again (or keep
`filepipe watch` running): only the customers whose orders changed are recomputed.
"""

import pandas as pd

from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
from filepipe.stores import TableStoreExcel, TableStoreFiledir


def summarize(orders: pd.DataFrame) -> pd.DataFrame:
    """Orders (one JSON file each) -> number of orders and total amount per customer."""
    return (orders.groupby("customer", as_index=False)
            .agg(orders=("order_id", "count"), total=("amount", "sum")))


catalog = Catalog({
    "orders": Table(TableStoreFiledir("inbox/{order_id}.json")),
    "summary": Table(TableStoreExcel("out/report.xlsx", sheet="Summary",
                                     primary_keys=["customer"])),
})

pipeline = Pipeline([
    # transform_keys=["customer"]: a changed order recomputes only its customer's total
    BatchTransform(summarize, inputs=["orders"], outputs=["summary"],
                   transform_keys=["customer"]),
])

app = FilepipeApp(catalog, pipeline)
'''

ORDERS = {
    "1001": {"customer": "ACME", "amount": 120.0},
    "1002": {"customer": "ACME", "amount": 80.5},
    "1003": {"customer": "Globex", "amount": 42.0},
    "1004": {"customer": "Initech", "amount": 310.25},
    "1005": {"customer": "Globex", "amount": 15.75},
}


def scaffold(directory: str | Path) -> list[Path]:
    """Write the project into `directory`; refuses to overwrite an existing pipeline.py."""
    root = Path(directory)
    if (root / "pipeline.py").exists():
        raise FileExistsError(f"{root / 'pipeline.py'} already exists; choose an empty folder")
    created = []
    (root / "inbox").mkdir(parents=True, exist_ok=True)
    (root / "out").mkdir(exist_ok=True)
    for order_id, order in ORDERS.items():
        path = root / "inbox" / f"{order_id}.json"
        path.write_text(json.dumps(order, indent=2) + "\n", encoding="utf-8")
        created.append(path)
    (root / "pipeline.py").write_text(PIPELINE, encoding="utf-8")
    created.append(root / "pipeline.py")
    (root / ".gitignore").write_text(".filepipe/\n", encoding="utf-8")
    created.append(root / ".gitignore")
    return created
