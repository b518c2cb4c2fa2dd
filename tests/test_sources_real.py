"""Sources people really have (issue 11, section 2), through real files and real runs:

* a folder of multi-row files as one table: ``TableStoreFiledir("exports/{month}.csv",
  adapter="csv" | "xlsx" | "parquet", primary_keys=["month", "id"])`` — keys from the path
  plus keys inside the files, one file re-read when it changes, a deleted file deleting its
  rows, a key in two files reported per file; the same store as an output, one file per
  path value; a glob in a single-file store refused at construction, pointing to it;
* declared column types (``dtypes={"day": "date", "at": "datetime64[ns]"}``) for JSON, CSV,
  sheets and Parquet, a value that does not fit named by file, column and row;
* every bad row of a source file in one run: empty and duplicate keys, bad values, each with
  its sheet row (CSV: line).
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pandas as pd
import pytest
from conftest import age
from orders_project import backups, close, write_json

from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
from filepipe.errors import BadRowsError, DuplicateKeysError, EmptyKeyError, FilepipeError
from filepipe.stores import (
    TableStoreCSV,
    TableStoreExcel,
    TableStoreFiledir,
    TableStoreParquet,
)
from filepipe.xlsx import read_sheet

# --- helpers ------------------------------------------------------------------------------


def write_csv(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    age(path)
    return path


def write_xlsx(path: Path, sheets: dict[str, pd.DataFrame]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with pd.ExcelWriter(path, engine="openpyxl") as writer:
        for name, df in sheets.items():
            df.to_excel(writer, sheet_name=name, index=False)
    age(path)
    return path


def write_parquet(path: Path, df: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path, index=False)
    age(path)
    return path


def count_reads(monkeypatch: pytest.MonkeyPatch, cls: type) -> list[str]:
    """Paths `cls.read_file` opens from now on."""
    opened: list[str] = []
    original = cls.read_file

    def read_file(self, path):
        opened.append(Path(path).name)
        return original(self, path)

    monkeypatch.setattr(cls, "read_file", read_file)
    return opened


def monthly_totals(sales: pd.DataFrame) -> pd.DataFrame:
    return sales.groupby("month", as_index=False).agg(amount=("amount", "sum"), n=("id", "count"))


# --- 1. a folder of multi-row files as one table ---------------------------------------------


def csv_app(root: Path) -> FilepipeApp:
    return FilepipeApp(Catalog({
        "sales": Table(TableStoreFiledir(root / "exports/{month}.csv", adapter="csv",
                                         primary_keys=["month", "id"])),
        "totals": Table(TableStoreCSV(root / "out/totals.csv", primary_keys=["month"])),
    }), Pipeline([BatchTransform(monthly_totals, inputs=["sales"], outputs=["totals"])]),
        root=root)


def read_totals(root: Path) -> dict[str, tuple[float, int]]:
    df = pd.read_csv(root / "out/totals.csv", dtype={"month": str})
    return {m: (float(a), int(n)) for m, a, n in zip(df["month"], df["amount"], df["n"])}


def test_a_folder_of_monthly_csv_exports_is_one_table(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    write_csv(tmp_path / "exports/2024-01.csv", "id,amount\n1,5.0\n2,6.0\n")
    write_csv(tmp_path / "exports/2024-02.csv", "id,amount\n1,7.0\n3,8.0\n4,1.5\n")
    write_csv(tmp_path / "exports/notes.txt", "not a table")
    app = csv_app(tmp_path)
    report = app.run()
    assert report.ok, report.summary()
    assert read_totals(tmp_path) == {"2024-01": (11.0, 2), "2024-02": (16.5, 3)}
    rows = app.table("sales").get_data()
    assert sorted(zip(rows["month"], rows["id"])) == [
        ("2024-01", 1), ("2024-01", 2), ("2024-02", 1), ("2024-02", 3), ("2024-02", 4)]

    # a changed file is the only file read again; only its month is recomputed
    from filepipe.stores.csv import TableStoreCSV as CSVClass

    opened = count_reads(monkeypatch, CSVClass)
    write_csv(tmp_path / "exports/2024-02.csv", "id,amount\n1,7.0\n3,9.0\n4,1.5\n")
    report = app.run()
    assert report.ok, report.summary()
    assert opened == ["2024-02.csv"]
    assert report.tables["sales"] == {"added": 0, "updated": 1, "deleted": 0}
    assert read_totals(tmp_path) == {"2024-01": (11.0, 2), "2024-02": (17.5, 3)}

    # a new month, then a deleted month: its rows go, and its total with them
    write_csv(tmp_path / "exports/2024-03.csv", "id,amount\n9,1.0\n")
    assert app.run().ok
    assert read_totals(tmp_path)["2024-03"] == (1.0, 1)
    (tmp_path / "exports/2024-01.csv").unlink()
    report = app.run()
    assert report.ok, report.summary()
    assert report.tables["sales"]["deleted"] == 2
    assert read_totals(tmp_path) == {"2024-02": (17.5, 3), "2024-03": (1.0, 1)}
    opened.clear()
    assert not app.run().changed and opened == []
    close(app)


def test_one_workbook_per_shop_with_a_sheet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def per_shop(sales: pd.DataFrame) -> pd.DataFrame:
        return sales.groupby("shop", as_index=False)["amount"].sum()

    for shop, amounts in (("north", [1.0, 2.0]), ("south", [10.0])):
        write_xlsx(tmp_path / f"shops/{shop}.xlsx", {
            "Notes": pd.DataFrame({"text": ["filled in by hand"]}),
            "Sales": pd.DataFrame({"order_id": range(1, len(amounts) + 1), "amount": amounts})})
    app = FilepipeApp(Catalog({
        "sales": Table(TableStoreFiledir(tmp_path / "shops/{shop}.xlsx", adapter="xlsx",
                                         sheet="Sales", primary_keys=["shop", "order_id"])),
        "totals": Table(TableStoreExcel(tmp_path / "out/totals.xlsx", sheet="Totals",
                                        primary_keys=["shop"])),
    }), Pipeline([BatchTransform(per_shop, inputs=["sales"], outputs=["totals"])]), root=tmp_path)
    assert app.run().ok
    got = read_sheet(tmp_path / "out/totals.xlsx", "Totals")
    assert dict(zip(got["shop"], got["amount"])) == {"north": 3.0, "south": 10.0}

    from filepipe.stores.excel import TableStoreExcel as ExcelClass

    opened = count_reads(monkeypatch, ExcelClass)
    write_xlsx(tmp_path / "shops/south.xlsx", {
        "Sales": pd.DataFrame({"order_id": [1, 2], "amount": [10.0, 5.0]})})
    report = app.run()
    assert report.ok, report.summary()
    assert [p for p in opened if p != "totals.xlsx"] == ["south.xlsx"]
    got = read_sheet(tmp_path / "out/totals.xlsx", "Totals")
    assert dict(zip(got["shop"], got["amount"])) == {"north": 3.0, "south": 15.0}

    # a workbook whose sheet was renamed is reported, keeps its rows; the rest goes on
    write_xlsx(tmp_path / "shops/north.xlsx", {"Sales 2024": pd.DataFrame({"order_id": [1]})})
    report = app.run()
    assert not report.ok
    assert list(report.source_errors) == [str(tmp_path / "shops/north.xlsx")]
    assert "'Sales' not found" in report.source_errors[str(tmp_path / "shops/north.xlsx")]
    got = read_sheet(tmp_path / "out/totals.xlsx", "Totals")
    assert dict(zip(got["shop"], got["amount"])) == {"north": 3.0, "south": 15.0}
    close(app)


def test_one_parquet_file_per_day_with_a_date_in_the_path(tmp_path: Path) -> None:
    seen: list[type] = []

    def per_day(events: pd.DataFrame) -> pd.DataFrame:
        seen.extend({type(v) for v in events["day"]})
        return events.groupby("day", as_index=False)["n"].sum()

    write_parquet(tmp_path / "days/2024-05-01.parquet", pd.DataFrame({"id": [1, 2], "n": [3, 4]}))
    write_parquet(tmp_path / "days/2024-05-02.parquet", pd.DataFrame({"id": [1], "n": [10]}))
    app = FilepipeApp(Catalog({
        "events": Table(TableStoreFiledir(tmp_path / "days/{day}.parquet", adapter="parquet",
                                          primary_keys=["day", "id"], dtypes={"day": "date"})),
        "daily": Table(TableStoreParquet(tmp_path / "out/daily.parquet", primary_keys=["day"])),
    }), Pipeline([BatchTransform(per_day, inputs=["events"], outputs=["daily"])]), root=tmp_path)
    report = app.run()
    assert report.ok, report.summary()
    assert set(seen) == {pd.Timestamp}  # a date key is a datetime at midnight, as the index keeps it
    daily = pd.read_parquet(tmp_path / "out/daily.parquet")
    assert dict(zip(daily["day"].dt.strftime("%Y-%m-%d"), daily["n"])) == {
        "2024-05-01": 7, "2024-05-02": 10}
    # a day named badly is reported by path; the others go on
    write_parquet(tmp_path / "days/yesterday.parquet", pd.DataFrame({"id": [1], "n": [1]}))
    write_parquet(tmp_path / "days/2024-05-03.parquet", pd.DataFrame({"id": [1], "n": [2]}))
    report = app.run()
    bad = str(tmp_path / "days/yesterday.parquet")
    assert list(report.source_errors) == [bad]
    assert "day='yesterday'" in report.source_errors[bad] and "date" in report.source_errors[bad]
    daily = pd.read_parquet(tmp_path / "out/daily.parquet")
    assert len(daily) == 3
    close(app)


def test_a_key_in_two_files_is_reported_per_file_and_the_rest_goes_on(tmp_path: Path) -> None:
    """The path may name a column that is not a key (order ids unique across shops)."""
    def copy(sales: pd.DataFrame) -> pd.DataFrame:
        return sales[["order_id", "shop", "amount"]]

    write_csv(tmp_path / "shops/north.csv", "order_id,amount\n1,5\n2,6\n")
    write_csv(tmp_path / "shops/south.csv", "order_id,amount\n3,7\n")
    app = FilepipeApp(Catalog({
        "sales": Table(TableStoreFiledir(tmp_path / "shops/{shop}.csv", adapter="csv",
                                         primary_keys=["order_id"])),
        "copy": Table(TableStoreCSV(tmp_path / "out/copy.csv", primary_keys=["order_id"])),
    }), Pipeline([BatchTransform(copy, inputs=["sales"], outputs=["copy"])]), root=tmp_path)
    assert app.run().ok
    write_csv(tmp_path / "shops/west.csv", "order_id,amount\n2,60\n8,1\n")
    write_csv(tmp_path / "shops/east.csv", "order_id,amount\n9,2\n")
    report = app.run()
    west = str(tmp_path / "shops/west.csv")
    assert list(report.source_errors) == [west]
    assert "north.csv" in report.source_errors[west] and "order_id=2" in report.source_errors[west]
    got = pd.read_csv(tmp_path / "out/copy.csv").set_index("order_id")
    assert got["shop"].to_dict() == {1: "north", 2: "north", 3: "south", 9: "east"}
    # a row moving to another shop's file is a move, not a clash
    write_csv(tmp_path / "shops/west.csv", "order_id,amount\n8,1\n")
    write_csv(tmp_path / "shops/north.csv", "order_id,amount\n1,5\n")
    write_csv(tmp_path / "shops/south.csv", "order_id,amount\n3,7\n2,6\n")
    report = app.run()
    assert report.ok, report.summary()
    got = pd.read_csv(tmp_path / "out/copy.csv").set_index("order_id")
    assert got["shop"].to_dict() == {1: "north", 2: "south", 3: "south", 8: "west", 9: "east"}
    close(app)


@pytest.mark.parametrize("adapter", ["csv", "xlsx", "parquet"])
def test_a_folder_of_files_as_an_output_one_file_per_path_value(tmp_path: Path, adapter: str) -> None:
    """filepipe writes one file per month with many rows; a change rewrites only its month's
    file; a month without rows loses its file; a no-op run writes nothing; a new process
    reads back what it wrote (no hand edit seen)."""
    ext = {"csv": "csv", "xlsx": "xlsx", "parquet": "parquet"}[adapter]
    sheet = {"sheet": "Orders"} if adapter == "xlsx" else {}

    def copy(orders: pd.DataFrame) -> pd.DataFrame:
        return orders.assign(month=orders["day"].str.slice(0, 7), net=orders["amount"] / 1.19,
                             code="0" + orders["order_id"])[
            ["month", "order_id", "amount", "net", "code"]]

    def make() -> FilepipeApp:
        return FilepipeApp(Catalog({
            "orders": Table(TableStoreFiledir(tmp_path / "inbox/{order_id}.json")),
            "by_month": Table(TableStoreFiledir(tmp_path / f"out/{{month}}.{ext}", adapter=adapter,
                                                primary_keys=["month", "order_id"], **sheet)),
        }), Pipeline([BatchTransform(copy, inputs=["orders"], outputs=["by_month"])]), root=tmp_path)

    for i, day in enumerate(["2024-01-03", "2024-01-09", "2024-02-01"], start=1):
        write_json(tmp_path / f"inbox/{i}.json", {"day": day, "amount": 10.0 * i})
    app = make()
    report = app.run()
    assert report.ok, report.summary()
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [f"2024-01.{ext}", f"2024-02.{ext}"]
    store = TableStoreFiledir(out / f"{{month}}.{ext}", adapter=adapter,
                              primary_keys=["month", "order_id"], **sheet)
    rows = store.read_rows().sort_values("order_id")
    assert rows["month"].tolist() == ["2024-01", "2024-01", "2024-02"]
    assert rows["amount"].tolist() == [10.0, 20.0, 30.0]
    assert "month" not in _columns_in_file(out / f"2024-01.{ext}", adapter)  # keys stay in the path
    feb = (out / f"2024-02.{ext}").stat().st_mtime_ns

    write_json(tmp_path / "inbox/2.json", {"day": "2024-01-09", "amount": 25.0})
    report = app.run()
    assert report.ok, report.summary()
    assert (out / f"2024-02.{ext}").stat().st_mtime_ns == feb
    assert sorted(store.read_rows()["amount"]) == [10.0, 25.0, 30.0]
    assert not app.run().changed
    close(app)

    app = make()  # a new process: what it wrote is not a hand edit
    report = app.run()
    assert report.ok and not report.changed and report.backups == {} and backups(tmp_path) == []
    (tmp_path / "inbox/3.json").unlink()
    report = app.run()
    assert report.ok, report.summary()
    assert sorted(p.name for p in out.iterdir()) == [f"2024-01.{ext}"]
    close(app)


def test_a_hand_edited_file_of_a_folder_output_is_backed_up_and_rebuilt(tmp_path: Path) -> None:
    def copy(orders: pd.DataFrame) -> pd.DataFrame:
        return orders.assign(month=orders["day"].str.slice(0, 7))[["month", "order_id", "amount"]]

    for i, day in enumerate(["2024-01-03", "2024-01-09", "2024-02-01"], start=1):
        write_json(tmp_path / f"inbox/{i}.json", {"day": day, "amount": 10.0 * i})
    app = FilepipeApp(Catalog({
        "orders": Table(TableStoreFiledir(tmp_path / "inbox/{order_id}.json")),
        "by_month": Table(TableStoreFiledir(tmp_path / "out/{month}.csv", adapter="csv",
                                            primary_keys=["month", "order_id"])),
    }), Pipeline([BatchTransform(copy, inputs=["orders"], outputs=["by_month"])]), root=tmp_path)
    assert app.run().ok
    jan = tmp_path / "out/2024-01.csv"
    written = jan.read_text()
    write_csv(jan, "order_id,amount\n1,999\n")
    report = app.run()
    assert report.ok, report.summary()
    assert list(report.backups) == ["by_month"]
    kept = Path(report.backups["by_month"])
    assert (kept / "2024-01.csv").read_text() == "order_id,amount\n1,999\n"
    assert jan.read_text() == written
    assert not app.run().changed
    close(app)


def _columns_in_file(path: Path, adapter: str) -> list[str]:
    if adapter == "csv":
        return list(pd.read_csv(path).columns)
    if adapter == "xlsx":
        return list(read_sheet(path, "Orders").columns)
    return list(pd.read_parquet(path).columns)


def test_an_output_row_moving_to_another_file_leaves_the_old_one(tmp_path: Path) -> None:
    """With a path field that is not a key, a key lives in one file: upserting it into
    another file takes it out of the first (and an emptied file is deleted)."""
    store = TableStoreFiledir(tmp_path / "out/{shop}.csv", adapter="csv", primary_keys=["order_id"])
    store.upsert_rows(pd.DataFrame({"shop": ["n", "n", "s"], "order_id": [1, 2, 3], "v": [1, 2, 3]}))
    store.flush()
    store.upsert_rows(pd.DataFrame({"shop": ["s", "s"], "order_id": [1, 2], "v": [5, 6]}))
    store.flush()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["s.csv"]
    back = TableStoreFiledir(tmp_path / "out/{shop}.csv", adapter="csv",
                             primary_keys=["order_id"]).read_rows()
    assert sorted(zip(back["order_id"], back["shop"], back["v"])) == [
        (1, "s", 5), (2, "s", 6), (3, "s", 3)]
    store.delete_rows(pd.DataFrame({"order_id": [3]}))
    store.flush()
    assert sorted(store.read_rows()["order_id"]) == [1, 2]


def test_an_output_workbook_holding_other_sheets_keeps_them_when_emptied(tmp_path: Path) -> None:
    store = TableStoreFiledir(tmp_path / "out/{shop}.xlsx", adapter="xlsx", sheet="Data",
                              primary_keys=["shop", "k"])
    store.upsert_rows(pd.DataFrame({"shop": ["n", "s"], "k": [1, 2], "v": [1.5, 2.5]}))
    store.flush()
    from filepipe.xlsx import sheet_names, write_sheet

    write_sheet(tmp_path / "out/n.xlsx", "Mine", pd.DataFrame({"note": ["keep me"]}))
    store.delete_rows(pd.DataFrame({"shop": ["n", "s"], "k": [1, 2]}))
    store.flush()
    assert not (tmp_path / "out/s.xlsx").exists()
    assert sheet_names(tmp_path / "out/n.xlsx") == ["Data", "Mine"]
    assert read_sheet(tmp_path / "out/n.xlsx", "Mine")["note"].tolist() == ["keep me"]


def test_a_key_column_inside_a_file_must_agree_with_its_path(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "exports/2024-01.csv",
                     "month,id,v\n2024-01,1,a\n,2,b\n2024-02,3,c\n")
    store = TableStoreFiledir(tmp_path / "exports/{month}.csv", adapter="csv",
                              primary_keys=["month", "id"])
    with pytest.raises(BadRowsError) as err:
        store.read_files([str(path)])
    assert "line 4: column 'month' holds '2024-02', but the file's path says month='2024-01'" \
        in str(err.value)
    write_csv(path, "month,id,v\n2024-01,1,a\n,2,b\n")
    df = store.read_files([str(path)])[str(path)]
    assert df["month"].tolist() == ["2024-01", "2024-01"] and df.columns.tolist() == ["month", "id", "v"]


def test_folder_store_arguments_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"primary_keys=\['month', 'id'\]"):
        TableStoreFiledir(tmp_path / "exports/{month}.csv", adapter="csv")
    with pytest.raises(ValueError, match="key column.*inside the files"):
        TableStoreFiledir(tmp_path / "exports/{month}.csv", adapter="csv", primary_keys=["month"])
    with pytest.raises(ValueError, match="sheet"):
        TableStoreFiledir(tmp_path / "exports/{month}.csv", adapter="csv", sheet="S",
                          primary_keys=["month", "id"])
    with pytest.raises(ValueError, match="adapter='csv'"):
        TableStoreFiledir(tmp_path / "exports/{month}.json", primary_keys=["month", "id"])
    store = TableStoreFiledir(tmp_path / "e/{m}.csv", adapter="csv", primary_keys=["m", "id"],
                              options={"sep": ";"})
    assert isinstance(store, TableStoreFiledir)
    assert repr(store) == f"TableStoreFiledir({str(tmp_path / 'e/{m}.csv')!r}, adapter='csv', " \
        "primary_keys=['m', 'id'])"
    write_csv(tmp_path / "e/x.csv", "id;v\n1;2,5\n")
    assert store.read_rows()["v"].tolist() == ["2,5"]


@pytest.mark.parametrize("make", [
    lambda: TableStoreCSV("exports/*.csv", primary_keys=["id"]),
    lambda: TableStoreExcel("shops/*.xlsx", sheet="Sales", primary_keys=["id"]),
    lambda: TableStoreParquet("days/{day}.parquet", primary_keys=["id"]),
])
def test_a_glob_in_a_single_file_store_is_refused_pointing_to_the_folder_store(in_tmp: Path, make) -> None:
    with pytest.raises(ValueError) as err:
        make()
    msg = str(err.value)
    assert "TableStoreFiledir(" in msg and "adapter=" in msg
    if "xlsx" in msg:
        assert "TableStoreFiledir('shops/{file}.xlsx', adapter='xlsx', sheet='Sales', " \
               "primary_keys=['file', 'id'])" in msg
    if "csv" in msg:
        assert "TableStoreFiledir('exports/{file}.csv', adapter='csv', primary_keys=['file', 'id'])" in msg
    if "parquet" in msg:
        assert "TableStoreFiledir('days/{day}.parquet', adapter='parquet', " \
               "primary_keys=['day', 'id'])" in msg
    # a file whose name really holds such characters is still one file
    (in_tmp / "odd*name.csv").write_text("id\n1\n")
    assert TableStoreCSV("odd*name.csv", primary_keys=["id"]).read_rows()["id"].tolist() == [1]


def test_a_glob_source_no_longer_deletes_the_rows_it_held(tmp_path: Path) -> None:
    """Today's trap: TableStoreCSV("exports/*.csv") ran, said 'not found' and deleted rows."""
    with pytest.raises(ValueError, match="TableStoreFiledir"):
        Catalog({"sales": Table(TableStoreCSV(tmp_path / "exports/*.csv", primary_keys=["id"]))})


# --- 2. declared column types ----------------------------------------------------------------


def test_json_dates_become_dates_in_a_run(tmp_path: Path) -> None:
    seen: dict[str, set] = {}

    def copy(orders: pd.DataFrame) -> pd.DataFrame:
        seen["day"] = {type(v) for v in orders["day"]}
        seen["at"] = {str(orders["at"].dtype)}
        return orders[["order_id", "day", "at", "amount"]]

    write_json(tmp_path / "inbox/1.json", {"day": "2024-03-01", "at": "2024-03-01T10:30:00", "amount": 1})
    write_json(tmp_path / "inbox/2.json", {"day": None, "at": "2024-03-02 08:00", "amount": 2})
    app = FilepipeApp(Catalog({
        "orders": Table(TableStoreFiledir(tmp_path / "inbox/{order_id}.json",
                                          dtypes={"day": "date", "at": "datetime64[ns]"})),
        "copy": Table(TableStoreParquet(tmp_path / "out/copy.parquet", primary_keys=["order_id"])),
    }), Pipeline([BatchTransform(copy, inputs=["orders"], outputs=["copy"])]), root=tmp_path)
    report = app.run()
    assert report.ok, report.summary()
    assert seen == {"day": {dt.date, type(None)}, "at": {"datetime64[ns]"}}
    out = pd.read_parquet(tmp_path / "out/copy.parquet").sort_values("order_id")
    assert out["day"].tolist()[0] == dt.date(2024, 3, 1)
    import pyarrow.parquet as pq

    assert str(pq.read_schema(tmp_path / "out/copy.parquet").field("day").type) == "date32[day]"
    assert not app.run().changed

    # a value that is no date: named by file and column; the file keeps its row
    write_json(tmp_path / "inbox/1.json", {"day": "1st of March", "at": "2024-03-01T10:30:00", "amount": 5})
    report = app.run()
    bad = str(tmp_path / "inbox/1.json")
    assert list(report.source_errors) == [bad]
    assert "column 'day' holds '1st of March', which cannot be read as date" in report.source_errors[bad]
    close(app)


def test_csv_dates_and_a_bad_value_named_by_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "sales.csv",
                     'id,day,at,note\n1,2024-01-05,2024-01-05 10:00,"two\nlines"\n'
                     "2,2024-01-06,2024-01-06 11:00,x\n3,06.01.2024,2024-01-06 12:00,y\n")
    store = TableStoreCSV(path, primary_keys=["id"], dtypes={"day": "date", "at": "datetime64[ns]"})
    with pytest.raises(BadRowsError) as err:
        store.read_files([str(path)])
    msg = str(err.value)
    assert msg.startswith(f"{path}: line 5: column 'day' holds '06.01.2024', which cannot be read as date")
    write_csv(path, "id,day,at\n1,2024-01-05,2024-01-05 10:00\n2,,2024-01-06 11:00\n")
    df = store.read_files([str(path)])[str(path)]
    assert df["day"].tolist() == [dt.date(2024, 1, 5), None]
    assert str(df["at"].dtype) == "datetime64[ns]"
    assert store.empty()["day"].dtype == object


def test_declared_types_in_folders_of_sheets_and_parquet_files(tmp_path: Path) -> None:
    write_xlsx(tmp_path / "shops/n.xlsx", {"S": pd.DataFrame({
        "k": ["007", "8"], "day": [pd.Timestamp("2024-01-05"), "2024-01-06"]})})
    xl = TableStoreFiledir(tmp_path / "shops/{shop}.xlsx", adapter="xlsx", sheet="S",
                           primary_keys=["shop", "k"], dtypes={"k": "str", "day": "date"})
    df = xl.read_rows()
    assert df["k"].tolist() == ["007", "8"]
    assert df["day"].tolist() == [dt.date(2024, 1, 5), dt.date(2024, 1, 6)]
    write_parquet(tmp_path / "days/1.parquet", pd.DataFrame({"id": [1], "at": ["2024-01-05T10:00"]}))
    pq = TableStoreFiledir(tmp_path / "days/{n}.parquet", adapter="parquet", primary_keys=["n", "id"],
                           dtypes={"n": "int64", "at": "datetime64[ns]"})
    df = pq.read_rows()
    assert df["n"].tolist() == [1] and str(df["at"].dtype) == "datetime64[ns]"
    # a date key: kept as a datetime in the index, matched against the rows read
    write_csv(tmp_path / "d/x.csv", "day,v\n2024-01-05,1\n")
    typed = TableStoreFiledir(tmp_path / "d/{f}.csv", adapter="csv", primary_keys=["f", "day"],
                              dtypes={"day": "date"})
    assert str(typed.key_types()["day"]) == "DATETIME"


def test_a_declared_type_the_values_do_not_fit_names_every_row(tmp_path: Path) -> None:
    path = write_xlsx(tmp_path / "prices.xlsx", {"Prices": pd.DataFrame({
        "sku": ["a", "b", "c", "d"], "qty": [1, "two", 3, "four"], "day": ["2024-01-01", "x", None, "y"]})})
    store = TableStoreExcel(path, sheet="Prices", primary_keys=["sku"],
                            dtypes={"qty": "int64", "day": "date"})
    with pytest.raises(BadRowsError) as err:
        store.read_files([str(path)])
    msg = str(err.value)
    assert f"{path}[Prices]: 4 bad rows" in msg
    for text in ("row 3: column 'qty' holds 'two', which cannot be read as int64",
                 "row 3: column 'day' holds 'x', which cannot be read as date",
                 "row 5: column 'qty' holds 'four'", "row 5: column 'day' holds 'y'"):
        assert text in msg


# --- 3. all bad rows at once ------------------------------------------------------------------


def test_empty_and_duplicate_keys_of_a_sheet_in_one_run(tmp_path: Path) -> None:
    def copy(orders: pd.DataFrame) -> pd.DataFrame:
        return orders

    path = write_xlsx(tmp_path / "orders.xlsx", {"Orders": pd.DataFrame({
        "order_id": [1, 2, 3], "amount": [1.0, 2.0, 3.0]})})
    app = FilepipeApp(Catalog({
        "orders": Table(TableStoreExcel(path, sheet="Orders", primary_keys=["order_id"])),
        "copy": Table(TableStoreCSV(tmp_path / "out/copy.csv", primary_keys=["order_id"])),
    }), Pipeline([BatchTransform(copy, inputs=["orders"], outputs=["copy"])]), root=tmp_path)
    assert app.run().ok
    write_xlsx(path, {"Orders": pd.DataFrame({
        "order_id": [1, 2, None, 2, 5, 1], "amount": [1.0, 2.0, 99.0, 4.0, 5.0, 6.0]})})
    report = app.run()
    assert not report.ok
    msg = report.source_errors[str(path)]
    assert "[Orders]" in msg and "3 bad rows" in msg
    assert "row 3: duplicate primary key order_id=2 (again in row 5)" in msg
    assert "row 4: empty key cell in 'order_id' ({order_id: (empty), amount: 99})" in msg
    assert "row 2: duplicate primary key order_id=1 (again in row 7)" in msg
    # the file keeps its previous rows; fixed, it syncs
    assert pd.read_csv(tmp_path / "out/copy.csv")["amount"].tolist() == [1.0, 2.0, 3.0]
    write_xlsx(path, {"Orders": pd.DataFrame({"order_id": [1, 2, 5], "amount": [1.0, 2.0, 5.0]})})
    report = app.run()
    assert report.ok, report.summary()
    assert sorted(pd.read_csv(tmp_path / "out/copy.csv")["order_id"]) == [1, 2, 5]
    close(app)


def test_empty_and_duplicate_keys_of_a_csv_file_by_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "orders.csv",
                     'id,note\n1,"a\nb"\n\n2,x\n,total\n1,again\n')
    store = TableStoreCSV(path, primary_keys=["id"])
    with pytest.raises(BadRowsError) as err:
        store.read_files([str(path)])
    msg = str(err.value)
    assert "line 2: duplicate primary key id=1 (again in line 7)" in msg
    assert "line 6: empty key cell in 'id' ({id: (empty), note: 'total'})" in msg
    assert err.value.problems == [
        "line 2: duplicate primary key id=1 (again in line 7)",
        "line 6: empty key cell in 'id' ({id: (empty), note: 'total'})"]


def test_bad_rows_of_a_file_in_a_folder_are_reported_and_the_other_files_sync(tmp_path: Path) -> None:
    write_csv(tmp_path / "exports/a.csv", "id,amount\n1,5\n")
    write_csv(tmp_path / "exports/b.csv", "id,amount\n1,5\n")
    app = FilepipeApp(Catalog({
        "sales": Table(TableStoreFiledir(tmp_path / "exports/{month}.csv", adapter="csv",
                                         primary_keys=["month", "id"], dtypes={"amount": "float64"})),
        "totals": Table(TableStoreCSV(tmp_path / "out/totals.csv", primary_keys=["month"])),
    }), Pipeline([BatchTransform(monthly_totals, inputs=["sales"], outputs=["totals"])]),
        root=tmp_path)
    assert app.run().ok
    write_csv(tmp_path / "exports/a.csv", "id,amount\n1,5\n1,6\n,7\n3,lots\n")
    write_csv(tmp_path / "exports/b.csv", "id,amount\n1,50\n")
    report = app.run()
    a = str(tmp_path / "exports/a.csv")
    assert list(report.source_errors) == [a]
    msg = report.source_errors[a]
    assert "3 bad rows" in msg
    assert "line 2: duplicate primary key id=1 (again in line 3)" in msg
    assert "line 4: empty key cell in 'id'" in msg
    assert "line 5: column 'amount' holds 'lots', which cannot be read as float64" in msg
    assert read_totals(tmp_path) == {"a": (5.0, 1), "b": (50.0, 1)}
    close(app)


def test_single_kind_errors_keep_their_classes(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "id\n1\n1\n")
    with pytest.raises(DuplicateKeysError):
        TableStoreCSV(path, primary_keys=["id"]).read_files([str(path)])
    write_csv(path, "id,v\n,1\n")
    with pytest.raises(EmptyKeyError):
        TableStoreCSV(path, primary_keys=["id"]).read_files([str(path)])
    write_csv(path, "id,v\n1,x\n")
    with pytest.raises(BadRowsError) as err:
        TableStoreCSV(path, primary_keys=["id"], dtypes={"v": "int64"}).read_files([str(path)])
    assert isinstance(err.value, FilepipeError) and not err.value.retryable


def test_a_parquet_source_names_rows_by_number(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "t.parquet", pd.DataFrame({"id": [1.0, None, 1.0], "v": [1, 2, 3]}))
    with pytest.raises(BadRowsError) as err:
        TableStoreParquet(path, primary_keys=["id"]).read_files([str(path)])
    assert "row 1: duplicate primary key id=1 (again in row 3)" in str(err.value)
    assert "row 2: empty key cell in 'id'" in str(err.value)
    assert os.path.exists(path)


def test_json_source_reports_every_bad_column_of_a_file(tmp_path: Path) -> None:
    path = tmp_path / "inbox/1.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"qty": "many", "day": "soon"}))
    store = TableStoreFiledir(tmp_path / "inbox/{id}.json", dtypes={"qty": "int64", "day": "date"})
    with pytest.raises(BadRowsError) as err:
        store.read_files([str(path)])
    msg = str(err.value)
    assert msg.startswith(f"{path}: 2 bad rows")
    assert "'qty' holds 'many'" in msg and "'day' holds 'soon'" in msg
