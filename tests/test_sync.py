"""Change detection for file sources (docs/design.md §6), on CSV files; the index on SQLite and
on PostgreSQL."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import age

from filepipe import BatchTransform, Catalog, Pipeline, Table, build_compute, run_steps
from filepipe.stores import TableStoreCSV
from filepipe.stores.csv import TableStoreCSV as CSVClass
from filepipe.sync import RACY_NS, sync_table

pytestmark = pytest.mark.backends("sqlite", "postgresql")


def _pipeline(ds, tmp_path: Path, calls: list | None = None):
    def totals(orders: pd.DataFrame) -> pd.DataFrame:
        if calls is not None:
            calls.append(sorted(orders["customer"].unique()))
        return orders.groupby("customer", as_index=False)["amount"].sum()

    catalog = Catalog({
        "orders": Table(TableStoreCSV(tmp_path / "orders.csv", primary_keys=["order_id"])),
        "totals": Table(TableStoreCSV(tmp_path / "out" / "totals.csv", primary_keys=["customer"])),
    })
    steps = build_compute(ds, catalog, Pipeline([
        BatchTransform(totals, inputs=["orders"], outputs=["totals"], transform_keys=["customer"])]))
    return catalog, steps


def _write(path: Path, rows: list[tuple]) -> None:
    pd.DataFrame(rows, columns=["order_id", "customer", "amount"]).to_csv(path, index=False)
    age(path)


ROWS = [(1, "a", 1.0), (2, "a", 2.0), (3, "b", 5.0), (4, "c", 7.0)]


def _totals(tmp_path: Path) -> dict:
    df = pd.read_csv(tmp_path / "out" / "totals.csv")
    return dict(zip(df["customer"], df["amount"]))


def test_unchanged_file_is_never_opened(ds, tmp_path, monkeypatch) -> None:
    _write(tmp_path / "orders.csv", ROWS)
    catalog, steps = _pipeline(ds, tmp_path)
    run_steps(ds, steps)
    opened = []
    original = CSVClass.read_file
    monkeypatch.setattr(CSVClass, "read_file", lambda self, p: opened.append(p) or original(self, p))
    out_mtime = (tmp_path / "out" / "totals.csv").stat().st_mtime_ns
    report = run_steps(ds, steps)
    assert opened == []
    assert not report.changed
    assert (tmp_path / "out" / "totals.csv").stat().st_mtime_ns == out_mtime


def test_one_changed_row_recomputes_one_group(ds, tmp_path) -> None:
    _write(tmp_path / "orders.csv", ROWS)
    calls: list = []
    catalog, steps = _pipeline(ds, tmp_path, calls)
    run_steps(ds, steps)
    calls.clear()
    _write(tmp_path / "orders.csv", [(1, "a", 1.0), (2, "a", 2.0), (3, "b", 6.0), (4, "c", 7.0)])
    report = run_steps(ds, steps)
    assert report.tables["orders"] == {"added": 0, "updated": 1, "deleted": 0}
    assert calls == [["b"]]
    assert _totals(tmp_path) == {"a": 3.0, "b": 6.0, "c": 7.0}


def test_moving_a_row_between_groups_recomputes_both(ds, tmp_path) -> None:
    _write(tmp_path / "orders.csv", ROWS)
    calls: list = []
    catalog, steps = _pipeline(ds, tmp_path, calls)
    run_steps(ds, steps)
    calls.clear()
    _write(tmp_path / "orders.csv", [(1, "a", 1.0), (2, "c", 2.0), (3, "b", 5.0), (4, "c", 7.0)])
    run_steps(ds, steps)
    assert sorted(c for batch in calls for c in batch) == ["a", "c"]
    assert _totals(tmp_path) == {"a": 1.0, "b": 5.0, "c": 9.0}


def test_resaved_identical_content_changes_nothing(ds, tmp_path) -> None:
    _write(tmp_path / "orders.csv", ROWS)
    calls: list = []
    catalog, steps = _pipeline(ds, tmp_path, calls)
    run_steps(ds, steps)
    calls.clear()
    (tmp_path / "orders.csv").write_text((tmp_path / "orders.csv").read_text())  # new mtime
    report = run_steps(ds, steps)
    assert calls == []
    assert not report.changed


def test_missing_file_deletes_its_rows_downstream_when_allowed(ds, tmp_path) -> None:
    """A source whose only file is gone is refused (all rows would go) unless allowed."""
    _write(tmp_path / "orders.csv", ROWS)
    catalog, steps = _pipeline(ds, tmp_path)
    run_steps(ds, steps)
    (tmp_path / "orders.csv").unlink()
    report = run_steps(ds, steps)
    assert str(tmp_path / "orders.csv") in report.refused["orders"] and not report.ok
    assert len(pd.read_csv(tmp_path / "out" / "totals.csv")) == 3
    report = run_steps(ds, steps, allow_deletes=True)
    assert report.missing_files == [str(tmp_path / "orders.csv")]
    assert report.tables["orders"]["deleted"] == 4
    assert pd.read_csv(tmp_path / "out" / "totals.csv").empty


def test_racy_file_is_rehashed_on_the_next_sync(ds, tmp_path) -> None:
    """A file modified within the timestamp granularity of its sync may change unseen."""
    path = tmp_path / "orders.csv"
    pd.DataFrame(ROWS, columns=["order_id", "customer", "amount"]).to_csv(path, index=False)
    catalog, steps = _pipeline(ds, tmp_path)
    run_steps(ds, steps)
    # same size and mtime, different content: what a coarse-mtime filesystem allows
    st = path.stat()
    path.write_text(path.read_text().replace("5.0", "9.0"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size
    run_steps(ds, steps)
    assert _totals(tmp_path)["b"] == 9.0
    # once the mtime is old enough, an untouched file is not re-read any more
    age(path, seconds=2 * RACY_NS / 1e9)
    orders = catalog.get_datatable(ds, "orders")
    assert sync_table(orders).opened == [str(path)]  # fingerprint changed by age()
    assert sync_table(orders).opened == []


def test_half_written_file_is_retried_then_reported(ds, tmp_path) -> None:
    path = tmp_path / "orders.csv"
    _write(path, ROWS)
    catalog, steps = _pipeline(ds, tmp_path)
    run_steps(ds, steps)
    path.write_bytes(b"order_id,customer,amount\n1,a,1.0\n2,\"a")  # unterminated quote
    t0 = time.perf_counter()
    report = run_steps(ds, steps)
    assert time.perf_counter() - t0 >= 0.5  # it retried with backoff
    assert list(report.source_errors) == [str(path)]
    assert not report.ok
    assert _totals(tmp_path) == {"a": 3.0, "b": 5.0, "c": 7.0}  # previous rows kept
    _write(path, ROWS[:2])
    report = run_steps(ds, steps)
    assert report.ok and _totals(tmp_path) == {"a": 3.0}


def test_duplicate_keys_in_a_source_file_name_the_file(ds, tmp_path) -> None:
    path = tmp_path / "orders.csv"
    _write(path, ROWS + [(3, "z", 1.0)])
    catalog, steps = _pipeline(ds, tmp_path)
    report = run_steps(ds, steps)
    assert str(path) in report.source_errors
    assert "order_id=3" in report.source_errors[str(path)]


def test_relative_paths_resolve_against_the_working_directory(ds, in_tmp) -> None:
    store = TableStoreCSV("data/x.csv", primary_keys=["id"])
    assert store.path == in_tmp / "data" / "x.csv"


@pytest.mark.parametrize("edit", ["hand", "other-program"])
def test_output_edited_by_hand_is_backed_up_and_rebuilt(ds, tmp_path, edit) -> None:
    _write(tmp_path / "orders.csv", ROWS)
    catalog, steps = _pipeline(ds, tmp_path)
    run_steps(ds, steps)
    out = tmp_path / "out" / "totals.csv"
    out.write_text(out.read_text().replace("5.0", "500.0"))
    report = run_steps(ds, steps)
    backups = list(out.parent.glob("totals.*.bak.csv"))
    assert len(backups) == 1 and "500.0" in backups[0].read_text()
    assert report.backups == {"totals": str(backups[0])}
    assert _totals(tmp_path) == {"a": 3.0, "b": 5.0, "c": 7.0}
    assert not run_steps(ds, steps).changed


def test_many_changed_files_are_read_in_chunks_with_progress(ds, tmp_path, monkeypatch) -> None:
    # a sync reads changed files a chunk at a time and reports progress after each; the
    # rows are those one read of every file gives (a file with a NaN included)
    import filepipe.sync as sync_module
    from filepipe.report import RunReport
    from filepipe.stores import TableStoreFiledir

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i in range(7):
        (inbox / f"{i}.json").write_text(f'{{"customer": "c{i % 3}", "amount": {"NaN" if i == 5 else i}}}')
        age(inbox / f"{i}.json")
    table = Catalog({"orders": Table(TableStoreFiledir(f"{inbox}/{{order_id}}.json"))}).get_datatable(ds, "orders")
    seen: list[tuple[str, int, int | None]] = []
    report = RunReport(trigger="test")
    report.on_read_progress = lambda name, done, total: seen.append((name, done, total))
    monkeypatch.setattr(sync_module, "READ_CHUNK", 3)
    with ds.recording(report):
        sync_table(table, report=report)
    assert seen == [("orders", 0, 7), ("orders", 3, 7), ("orders", 6, 7), ("orders", 7, 7)]
    got = table.get_data().sort_values("order_id").reset_index(drop=True)
    assert got["order_id"].tolist() == [str(i) for i in range(7)]
    assert got["customer"].tolist() == [f"c{i % 3}" for i in range(7)]
    assert got["amount"].isna().tolist() == [i == 5 for i in range(7)]
