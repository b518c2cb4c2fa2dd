"""Never a silently wrong output (issue #8): races, failed writes, lost or damaged metadata,
vanishing sources, clashing files, types lost by CSV, hand-edit false alarms.

Each test builds a real project in tmp_path (JSON folders, CSV files, real .xlsx workbooks,
a real SQLite index in `.filepipe/`, or a PostgreSQL one) and checks the outputs against what
a fresh recompute of the current sources gives.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import age
from orders_project import (
    assert_fresh,
    backups,
    close,
    copy_rows,
    expected,
    orders_app,
    read_copy,
    read_totals,
    run_then_lose_the_index,
    seed_orders,
    totals,
    write_json,
)

from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
from filepipe.errors import FilepipeError
from filepipe.stores import TableStoreCSV, TableStoreExcel, TableStoreFiledir

# apps built without meta= keep their index on the test's backend (conftest.project_index)
pytestmark = [pytest.mark.backends("sqlite", "postgresql"), pytest.mark.usefixtures("project_index")]

# --- 1. an edit during a run, then undone -------------------------------------------------

def _editing_app(root: Path, source: str) -> FilepipeApp:
    """Step `edit` (reading a side table) rewrites a source row after the sync; step
    `copy_rows` reads that source afterwards. Once, then the edit is undone by hand."""
    if source == "folder":
        store = TableStoreFiledir(root / "inbox/{order_id}.json")
    else:
        store = TableStoreExcel(root / "orders.xlsx", sheet="Orders", primary_keys=["order_id"])

    def edit(side: pd.DataFrame) -> pd.DataFrame:
        flag = root / "edited"
        if not flag.exists():
            flag.touch()
            if source == "folder":
                (root / "inbox/1.json").write_text(json.dumps({"customer": "a", "amount": 99.0}))
            else:
                _write_orders_xlsx(root, amount_of_1=99.0)
        return side

    catalog = Catalog({
        "side": Table(TableStoreCSV(root / "side.csv", primary_keys=["id"])),
        "side_out": Table(TableStoreCSV(root / "out/side.csv", primary_keys=["id"])),
        "orders": Table(store),
        "copy": Table(TableStoreExcel(root / "out/report.xlsx", sheet="Orders",
                                      primary_keys=["order_id"])),
    })
    return FilepipeApp(catalog, Pipeline([
        BatchTransform(edit, inputs=["side"], outputs=["side_out"]),
        BatchTransform(copy_rows, inputs=["orders"], outputs=["copy"]),
    ]), root=root)


def _write_orders_xlsx(root: Path, amount_of_1: float) -> None:
    df = pd.DataFrame({"order_id": ["1", "2"], "customer": ["a", "b"], "amount": [amount_of_1, 2.0]})
    df.to_excel(root / "orders.xlsx", sheet_name="Orders", index=False)
    age(root / "orders.xlsx")


@pytest.mark.parametrize("how", ["run", "watch_cycle"])
@pytest.mark.parametrize("source", ["folder", "excel"])
def test_a_source_edited_during_a_run_and_undone_after_it_leaves_no_stale_output(
        tmp_path: Path, source: str, how: str) -> None:
    pd.DataFrame({"id": [1]}).to_csv(tmp_path / "side.csv", index=False)
    age(tmp_path / "side.csv")
    if source == "folder":
        write_json(tmp_path / "inbox/1.json", {"customer": "a", "amount": 1.0})
        write_json(tmp_path / "inbox/2.json", {"customer": "b", "amount": 2.0})
    else:
        _write_orders_xlsx(tmp_path, amount_of_1=1.0)
    app = _editing_app(tmp_path, source)
    run = app.run if how == "run" else lambda: app.run_cycle(None)
    report = run()
    assert report.ok, report.summary()
    # the run saw the edited file (A -> B during the run): the output holds B
    assert read_copy(tmp_path).set_index("order_id")["amount"].to_dict() == {1: 99.0, 2: 2.0}
    # undo the edit (B -> A): the output must follow
    if source == "folder":
        write_json(tmp_path / "inbox/1.json", {"customer": "a", "amount": 1.0})
    else:
        _write_orders_xlsx(tmp_path, amount_of_1=1.0)
    report = run()
    assert report.ok, report.summary()
    assert read_copy(tmp_path).set_index("order_id")["amount"].to_dict() == {1: 1.0, 2: 2.0}
    assert run().changed is False
    close(app)


# --- 2 and 7. a failed write of an output -------------------------------------------------

def _two_step_app(root: Path) -> FilepipeApp:
    catalog = Catalog({
        "orders": Table(TableStoreFiledir(root / "inbox/{order_id}.json")),
        "copy": Table(TableStoreExcel(root / "out/report.xlsx", sheet="Orders",
                                      primary_keys=["order_id"])),
        "totals": Table(TableStoreFiledir(root / "out/totals/{customer}.json")),
    })
    return FilepipeApp(catalog, Pipeline([
        BatchTransform(copy_rows, inputs=["orders"], outputs=["copy"], chunk_size=2),
        BatchTransform(totals, inputs=["orders"], outputs=["totals"], transform_keys=["customer"]),
    ]), root=root)


def test_a_flush_that_fails_fails_only_its_step_and_is_redone_in_full(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed_orders(tmp_path, 5)
    app = _two_step_app(tmp_path)
    real = TableStoreExcel.write_file
    monkeypatch.setattr(TableStoreExcel, "write_file",
                        lambda self, df: (_ for _ in ()).throw(OSError("disk full")))
    report = app.run()
    assert not report.ok
    assert report.steps["copy_rows"].failed == 5
    assert "disk full" in report.steps["copy_rows"].errors[0]
    assert read_totals(tmp_path) == expected(tmp_path)[1]  # the other step ran
    assert not (tmp_path / "out/report.xlsx").exists()
    plan = {p.name: p for p in app.step_plan()}
    assert plan["copy_rows"].failed == 5
    monkeypatch.setattr(TableStoreExcel, "write_file", real)
    report = app.run()
    assert report.ok, report.summary()
    assert_fresh(tmp_path)
    assert backups(tmp_path) == []
    assert not app.run().changed
    close(app)


def test_a_cell_too_long_for_excel_fails_only_its_keys(tmp_path: Path) -> None:
    seed_orders(tmp_path, 4)
    write_json(tmp_path / "inbox/3.json", {"customer": "b", "amount": 3.0, "note": "x" * 40_000})
    app = _two_step_app(tmp_path)
    report = app.run()
    assert not report.ok
    assert report.steps["copy_rows"].failed == 2  # the batch holding order 3 (chunk_size=2)
    error = report.steps["copy_rows"].errors[0]
    assert "32,767" in error and "note" in error and "contextlib" not in error
    got = read_copy(tmp_path)
    assert 3 not in got["order_id"].tolist() and len(got) == 2
    # run 2: still failing, still said so, no backup made of filepipe's own workbook
    report = app.run()
    assert not report.ok and report.steps["copy_rows"].failed == 2
    assert backups(tmp_path) == []
    # fixed: every row is there
    write_json(tmp_path / "inbox/3.json", {"customer": "b", "amount": 3.0, "note": "short"})
    report = app.run()
    assert report.ok, report.summary()
    assert_fresh(tmp_path)
    assert backups(tmp_path) == []
    close(app)


# --- 3. lost or damaged metadata ------------------------------------------------------------

@pytest.mark.backends("sqlite", reason="loses or damages the index file, .filepipe/meta.sqlite")
@pytest.mark.parametrize("how", ["removed", "empty", "full"])
def test_a_lost_index_makes_outputs_equal_a_fresh_recompute(tmp_path: Path, how: str) -> None:
    seed_orders(tmp_path, 4)
    app = orders_app(tmp_path)
    assert app.run().ok
    close(app)
    (tmp_path / "inbox/4.json").unlink()  # deleted while filepipe was not looking...
    shutil.rmtree(tmp_path / ".filepipe")   # ...and the index is gone
    if how == "empty":
        (tmp_path / ".filepipe").mkdir()
        (tmp_path / ".filepipe/meta.sqlite").write_bytes(b"")
    app = orders_app(tmp_path)
    report = app.run(full=how == "full")
    assert report.ok, report.summary()
    assert_fresh(tmp_path)
    assert not app.run().changed
    close(app)


@pytest.mark.backends("sqlite", reason="loses or damages the index file, .filepipe/meta.sqlite")
def test_an_output_holding_rows_nobody_produced_is_backed_up_before_they_go(tmp_path: Path) -> None:
    seed_orders(tmp_path, 2)
    run_then_lose_the_index(orders_app(tmp_path))
    (tmp_path / "inbox/2.json").unlink()
    app = orders_app(tmp_path)
    report = app.run()
    assert report.ok
    assert_fresh(tmp_path)
    kept = report.kept
    assert set(kept) == {"copy", "totals"} and report.backups == {}
    old = pd.read_excel(kept["copy"], sheet_name="Orders", engine="calamine")
    assert sorted(old["order_id"]) == [1, 2]  # the user's file as it was
    close(app)


@pytest.mark.backends("sqlite", reason="loses or damages the index file, .filepipe/meta.sqlite")
def test_a_lost_index_with_unchanged_sources_makes_no_backup(tmp_path: Path) -> None:
    seed_orders(tmp_path, 3)
    run_then_lose_the_index(orders_app(tmp_path))
    app = orders_app(tmp_path)
    report = app.run()
    assert report.ok and report.backups == {} and report.kept == {}
    assert_fresh(tmp_path)
    assert backups(tmp_path) == []
    close(app)


@pytest.mark.backends("sqlite", reason="loses or damages the index file, .filepipe/meta.sqlite")
def test_a_damaged_index_names_its_path_and_the_way_back(tmp_path: Path) -> None:
    from filepipe.cli import main

    seed_orders(tmp_path, 2)
    app = orders_app(tmp_path)
    assert app.run().ok
    close(app)
    index = tmp_path / ".filepipe/meta.sqlite"
    index.write_bytes(b"this is not a database" * 100)
    app = orders_app(tmp_path)
    with pytest.raises(FilepipeError) as err:
        app.run()
    assert str(index) in str(err.value) and "filepipe reset --all" in str(err.value)
    (tmp_path / "pipeline.py").write_text(_PIPELINE_SOURCE)
    result = CliRunner().invoke(main, ["-p", str(tmp_path / "pipeline.py"), "reset", "--all"])
    assert result.exit_code == 0, result.output
    assert "kept" in result.output and list((tmp_path / ".filepipe").glob("meta.*.bak.sqlite"))
    result = CliRunner().invoke(main, ["-p", str(tmp_path / "pipeline.py"), "run"])
    assert result.exit_code == 0, result.output
    assert_fresh(tmp_path)


_PIPELINE_SOURCE = '''
import pandas as pd
from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
from filepipe.stores import TableStoreExcel, TableStoreFiledir

def copy_rows(orders):
    return orders[["order_id", "customer", "amount"]]

def totals(orders):
    return orders.groupby("customer", as_index=False)["amount"].sum()

catalog = Catalog({
    "orders": Table(TableStoreFiledir("inbox/{order_id}.json")),
    "copy": Table(TableStoreExcel("out/report.xlsx", sheet="Orders", primary_keys=["order_id"])),
    "totals": Table(TableStoreFiledir("out/totals/{customer}.json")),
})
app = FilepipeApp(catalog, Pipeline([
    BatchTransform(copy_rows, inputs=["orders"], outputs=["copy"]),
    BatchTransform(totals, inputs=["orders"], outputs=["totals"], transform_keys=["customer"]),
]))
'''


# --- 4. a source that vanishes, mass deletes ----------------------------------------------

def test_a_vanished_source_folder_is_an_error_and_outputs_stay(tmp_path: Path) -> None:
    seed_orders(tmp_path, 3)
    app = orders_app(tmp_path)
    assert app.run().ok
    before = read_copy(tmp_path)
    (tmp_path / "inbox").rename(tmp_path / "inbox-moved")
    report = app.run()
    assert not report.ok
    message = report.refused["orders"]
    assert str(tmp_path / "inbox") in message and "--allow-deletes" in message
    pd.testing.assert_frame_equal(read_copy(tmp_path), before)
    assert len(read_totals(tmp_path)) == 2
    # the folder comes back: nothing to do
    (tmp_path / "inbox-moved").rename(tmp_path / "inbox")
    report = app.run()
    assert report.ok and not report.changed
    # deleting everything on purpose needs the explicit choice
    shutil.rmtree(tmp_path / "inbox")
    (tmp_path / "inbox").mkdir()
    assert not app.run().ok
    report = app.run(allow_deletes=True)
    assert report.ok
    assert read_totals(tmp_path) == {}
    close(app)


def test_a_mass_delete_stops_the_sync_of_that_table(tmp_path: Path) -> None:
    seed_orders(tmp_path, 30)
    app = orders_app(tmp_path)
    assert app.run().ok
    for i in range(1, 17):  # 16 of 30: over half
        (tmp_path / f"inbox/{i}.json").unlink()
    report = app.run()
    assert not report.ok
    text = report.refused["orders"]
    assert "16 of 30" in text and str(tmp_path / "inbox") in text
    assert len(read_copy(tmp_path)) == 30
    # one more deletion below the share goes through once confirmed
    report = app.run(allow_deletes=True)
    assert report.ok
    assert_fresh(tmp_path)
    (tmp_path / "inbox/17.json").unlink()
    assert app.run().ok
    assert_fresh(tmp_path)
    close(app)


def test_the_mass_delete_share_is_set_per_table(tmp_path: Path) -> None:
    seed_orders(tmp_path, 30)
    app = orders_app(tmp_path, max_delete_share=0.9)
    assert app.run().ok
    for i in range(1, 21):
        (tmp_path / f"inbox/{i}.json").unlink()
    assert app.run().ok
    assert_fresh(tmp_path)
    close(app)


def csv_totals_app(root: Path, customers: list[str]) -> FilepipeApp:
    """orders.csv (one order per customer) → out/totals.csv per customer, run once."""
    src = root / "orders.csv"
    pd.DataFrame({"order_id": range(1, len(customers) + 1), "customer": customers,
                  "amount": [float(i) for i in range(1, len(customers) + 1)]}).to_csv(src, index=False)
    age(src)
    app = FilepipeApp(Catalog({
        "orders": Table(TableStoreCSV(src, primary_keys=["order_id"])),
        "totals": Table(TableStoreCSV(root / "out/totals.csv", primary_keys=["customer"])),
    }), Pipeline([BatchTransform(totals, inputs=["orders"], outputs=["totals"],
                                 transform_keys=["customer"])]), root=root)
    assert app.run().ok
    return app


# --- 5. a 0-byte CSV ------------------------------------------------------------------------

def test_a_zero_byte_csv_source_is_unreadable_and_keeps_its_rows(tmp_path: Path) -> None:
    src = tmp_path / "orders.csv"
    app = csv_totals_app(tmp_path, customers=["a", "b"])
    src.write_bytes(b"")
    age(src)
    report = app.run()
    assert not report.ok
    assert str(src) in report.source_errors and "empty" in report.source_errors[str(src)]
    assert len(pd.read_csv(tmp_path / "out/totals.csv")) == 2
    close(app)


# --- 6. CSV outputs read back with the types filepipe wrote ---------------------------------

def test_csv_output_text_keys_that_look_like_numbers_survive_a_new_process(tmp_path: Path) -> None:
    def label(codes: pd.DataFrame) -> pd.DataFrame:
        return codes.assign(label="L" + codes["code"], note=codes["note"])

    def make() -> FilepipeApp:
        return FilepipeApp(Catalog({
            "codes": Table(TableStoreFiledir(tmp_path / "codes/{code}.json")),
            "labels": Table(TableStoreCSV(tmp_path / "out/labels.csv", primary_keys=["code"])),
            "counts": Table(TableStoreCSV(tmp_path / "out/counts.csv", primary_keys=["code"])),
        }), Pipeline([
            BatchTransform(label, inputs=["codes"], outputs=["labels"]),
            BatchTransform(lambda labels: labels[["code", "label"]], inputs=["labels"],
                           outputs=["counts"], name="counts"),
        ]), root=tmp_path)

    for code, note in [("007", "0012"), ("7", "1"), ("1", "2"), ("x", "3")]:
        write_json(tmp_path / f"codes/{code}.json", {"note": note})
    app = make()
    assert app.run().ok
    close(app)
    write_json(tmp_path / "codes/x.json", {"note": "4"})
    write_json(tmp_path / "codes/0.json", {"note": "5"})
    app = make()  # a new process: stores and index read afresh
    report = app.run()
    assert report.ok, report.summary()
    assert report.backups == {}
    got = pd.read_csv(tmp_path / "out/labels.csv", dtype=str)
    assert sorted(got["code"]) == ["0", "007", "1", "7", "x"]
    assert dict(zip(got["code"], got["note"]))["007"] == "0012"
    assert sorted(pd.read_csv(tmp_path / "out/counts.csv", dtype=str)["code"]) == ["0", "007", "1", "7", "x"]
    assert not app.run().changed
    close(app)


# --- 8. two files, one key ------------------------------------------------------------------

def test_two_files_with_the_same_typed_key_are_reported_and_the_rest_goes_on(tmp_path: Path) -> None:
    def double(items: pd.DataFrame) -> pd.DataFrame:
        return items.assign(v=items["v"] * 2)

    def make() -> FilepipeApp:
        return FilepipeApp(Catalog({
            "items": Table(TableStoreFiledir(tmp_path / "items/{n}.json", dtypes={"n": "int64"})),
            "out": Table(TableStoreCSV(tmp_path / "out/items.csv", primary_keys=["n"])),
        }), Pipeline([BatchTransform(double, inputs=["items"], outputs=["out"])]), root=tmp_path)

    write_json(tmp_path / "items/7.json", {"v": 1})
    write_json(tmp_path / "items/8.json", {"v": 2})
    app = make()
    assert app.run().ok
    write_json(tmp_path / "items/007.json", {"v": 100})
    write_json(tmp_path / "items/9.json", {"v": 3})
    report = app.run()
    assert not report.ok
    text = " ".join(report.source_errors.values())
    assert "7.json" in text and "007.json" in text
    got = pd.read_csv(tmp_path / "out/items.csv").set_index("n")["v"].to_dict()
    assert got == {7: 2, 8: 4, 9: 6}
    close(app)


# --- 12. hand-edit checks compare what was written with what is read back -------------------

def test_resaving_an_output_workbook_unchanged_is_not_a_hand_edit(tmp_path: Path) -> None:
    import openpyxl

    def values(src: pd.DataFrame) -> pd.DataFrame:
        return src.assign(price=src["a"] * 0.1 + 29.7, text="ctl\x01char " + src["k"])

    src = tmp_path / "src.csv"
    pd.DataFrame({"k": ["a", "b"], "a": [1.0, 2.0]}).to_csv(src, index=False)
    age(src)
    app = FilepipeApp(Catalog({
        "src": Table(TableStoreCSV(src, primary_keys=["k"])),
        "out": Table(TableStoreExcel(tmp_path / "out/report.xlsx", sheet="Out", primary_keys=["k"])),
    }), Pipeline([BatchTransform(values, inputs=["src"], outputs=["out"])]), root=tmp_path)
    assert app.run().ok
    book = openpyxl.load_workbook(tmp_path / "out/report.xlsx")
    book.create_sheet("Mine")["A1"] = "my notes"
    book.save(tmp_path / "out/report.xlsx")
    report = app.run()
    assert report.backups == {} and backups(tmp_path) == []
    assert not report.changed
    close(app)


# --- 13. an interrupted own write is not a hand edit ---------------------------------------

def test_own_temp_files_are_cleaned_and_a_dirty_unchanged_output_is_not_a_hand_edit(
        tmp_path: Path) -> None:
    seed_orders(tmp_path, 3)
    app = orders_app(tmp_path)
    assert app.run().ok
    # what a SIGKILL in the middle of a write leaves: temp files and a 'dirty' mark
    (tmp_path / "out/totals/.~filepipe-abc123.json").write_text("{")
    (tmp_path / "out/.~filepipe-def456.xlsx").write_bytes(b"PK")
    with app.ds.meta.begin() as conn:
        conn.exec_driver_sql("UPDATE fp_files SET state = 'dirty'")
    write_json(tmp_path / "inbox/9.json", {"customer": "a", "amount": 9.0})
    report = app.run()
    assert report.ok and report.backups == {}
    assert backups(tmp_path) == []
    assert list(tmp_path.rglob(".~filepipe-*")) == []
    assert_fresh(tmp_path)
    close(app)


# --- 17. status shows changed outputs ---------------------------------------------------

def test_status_lists_output_files_changed_on_disk(tmp_path: Path) -> None:
    from filepipe.cli import main

    seed_orders(tmp_path, 2)
    (tmp_path / "pipeline.py").write_text(_PIPELINE_SOURCE)
    cli = CliRunner()
    assert cli.invoke(main, ["-p", str(tmp_path / "pipeline.py"), "run"]).exit_code == 0
    edited = tmp_path / "out/totals/a.json"
    edited.write_text('{"amount": 1000}')
    app = orders_app(tmp_path)
    plans = app.output_plan()
    assert [(p.table, p.changed) for p in plans] == [("totals", [str(edited)])]
    close(app)
    result = cli.invoke(main, ["-p", str(tmp_path / "pipeline.py"), "status"])
    assert result.exit_code == 0, result.output
    assert "Output totals: 1 file(s) changed on disk" in result.output
    assert str(edited) in result.output


def test_a_hand_edit_is_backed_up_once_as_the_user_left_it(tmp_path: Path) -> None:
    import openpyxl

    seed_orders(tmp_path, 3)
    app = orders_app(tmp_path)
    assert app.run().ok
    book = openpyxl.load_workbook(tmp_path / "out/report.xlsx")
    book["Orders"]["C2"] = 12345.0  # a hand edit of filepipe's sheet
    book.save(tmp_path / "out/report.xlsx")
    report = app.run()
    assert report.ok and set(report.backups) == {"copy"}
    kept = pd.read_excel(report.backups["copy"], sheet_name="Orders", engine="calamine")
    assert 12345.0 in kept["amount"].tolist() and len(kept) == 3  # the user's file as it was
    assert_fresh(tmp_path)
    report = app.run()
    assert report.backups == {} and not report.changed
    assert len(backups(tmp_path)) == 1
    close(app)


# --- 10. a FIFO where a single-file source should be ---------------------------------------

def test_a_fifo_at_a_source_path_is_reported_not_opened(tmp_path: Path) -> None:
    import os
    import threading

    src = tmp_path / "orders.csv"
    app = csv_totals_app(tmp_path, customers=["a"])
    src.unlink()
    os.mkfifo(src)
    result: list = []
    worker = threading.Thread(target=lambda: result.append(app.run()), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert result, "the run blocked on the FIFO"
    report = result[0]
    assert not report.ok and "not a regular file" in report.source_errors[str(src)]
    assert len(pd.read_csv(tmp_path / "out/totals.csv")) == 1  # rows kept
    close(app)


# --- the library's store_chunk on a file output ----------------------------------------------

@pytest.mark.parametrize("kind", ["csv", "excel", "parquet_dataset"])
def test_store_chunk_on_a_file_output_writes_it_after_its_meta(tmp_path: Path, meta_url: str, kind: str) -> None:
    """store_chunk straight to a file-backed table (no step around it) used to flush inside
    its own transaction, and the file's clean mark then waited on that transaction: SQLite
    said "database is locked" after the 60 s busy timeout (benchmarks/bench_parquet.py)."""
    from filepipe import DataStore, DBConn
    from filepipe.stores import TableStoreParquetDataset

    store = {"csv": lambda: TableStoreCSV(tmp_path / "out.csv", primary_keys=["k"]),
             "excel": lambda: TableStoreExcel(tmp_path / "out.xlsx", sheet="Out", primary_keys=["k"]),
             "parquet_dataset": lambda: TableStoreParquetDataset(tmp_path / "ds", primary_keys=["k"],
                                                                partition_cols=["g"])}[kind]()
    ds = DataStore(DBConn(meta_url))
    out = Catalog({"out": Table(store)}).get_datatable(ds, "out")
    changed = out.store_chunk(pd.DataFrame({"k": [1, 2], "g": ["x", "y"], "v": [1.5, 2.5]}))
    assert sorted(changed["k"]) == [1, 2]
    assert sorted(out.store.read_rows()["k"]) == [1, 2] and len(out.store.list_files())
    assert not ds.meta.file_meta.is_dirty("out")
    with ds.meta.begin() as conn:
        assert set(ds.meta.file_meta.stored(conn, "out")["state"]) == {"clean"}
    ds.meta_dbconn.dispose()


@pytest.mark.backends("sqlite", reason="the advice, `filepipe reset --all`, works on an SQLite index only")
def test_changed_primary_keys_give_advice_that_works(tmp_path: Path) -> None:
    """`filepipe reset STEP` clears step meta only, so it cannot be the way out."""
    from filepipe import DataStore, DBConn
    from filepipe.errors import MissingColumnsError

    ds = DataStore(DBConn(f"sqlite:///{tmp_path / 'meta.sqlite'}"))
    Catalog({"t": Table(TableStoreCSV(tmp_path / "t.csv", primary_keys=["a"]))}).get_datatable(ds, "t") \
        .store_chunk(pd.DataFrame({"a": [1], "b": [2]}))
    fresh = DataStore(DBConn(f"sqlite:///{tmp_path / 'meta.sqlite'}"))
    with pytest.raises(MissingColumnsError, match=r"new name in the catalog.*filepipe reset --all"):
        Catalog({"t": Table(TableStoreCSV(tmp_path / "t.csv", primary_keys=["a", "b"]))}).get_datatable(fresh, "t")
    ds.meta_dbconn.dispose()
    fresh.meta_dbconn.dispose()
