"""Data versioning (issue #10): log, diff, history, show --as-of, tags, restore, the change
workbook and gc, through the `filepipe` command (click's CliRunner) and the library.

The sales example's pipeline (examples/sales/pipeline.py: prices.xlsx + inbox/{shop}/{id}.json
→ out/report.xlsx) runs on data the test writes; every edit goes both to the files and to
the test's own record (tests/versions_helpers.py), from which the state every table must
have after each run is computed with plain Python. Every answer of the versioning commands
is checked against those recorded states: the run log's counts, the daff-style diff, the
change workbook read back with openpyxl (fills, frozen header, filters, `old → new` cells),
the versions of one row, tables as of a run id, a tag and a time, and restores.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
import pytest
from cli_apps import close_apps, explain, recording_loaded_apps
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl.utils import get_column_letter
from sqlalchemy import Column, Integer, String
from versions_helpers import (
    COLUMNS,
    GREEN,
    KEYS,
    RED,
    TABLES,
    YELLOW,
    Sales,
    assert_state,
    cell_fill,
    changes,
    norm,
    read_sheet,
    row_versions,
    state,
)

import filepipe.app
from filepipe import (
    BatchTransform,
    Catalog,
    ChangeList,
    DataStore,
    DBConn,
    Pipeline,
    Table,
    build_compute,
    run_steps,
    run_steps_changelist,
    versions,
)
from filepipe.cli import main
from filepipe.errors import FilepipeError
from filepipe.report import RunReport
from filepipe.stores import TableStoreDB

runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def _record_loaded_apps() -> Iterator[None]:
    with recording_loaded_apps():
        yield


def fp(pipeline: str, *args: str, code: int = 0) -> Result:
    """`filepipe -p PIPELINE ARGS...`, asserting its exit code."""
    result = runner.invoke(main, ["-p", pipeline, *args])
    close_apps()
    assert result.exit_code == code, explain(result)
    return result


def one_line_error(result: Result, *fragments: str) -> None:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), explain(result)
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], explain(result)


def last_version(pipeline: str) -> int:
    return json.loads(fp(pipeline, "log", "--limit", "1", "--format", "json").stdout)[0]["run_id"]


def load(pipeline: str) -> filepipe.app.FilepipeApp:
    return filepipe.app.load_app(pipeline)  # recorded: closed by close_apps


def show_json(pipeline: str, table: str, ref: str) -> pd.DataFrame:
    out = fp(pipeline, "show", table, "--as-of", ref, "--format", "json", "--limit", "0").stdout
    return pd.DataFrame(json.loads(out)) if out.strip() not in ("", "[]") else pd.DataFrame()


def local_iso(ts: float, timespec: str = "microseconds") -> str:
    return dt.datetime.fromtimestamp(ts).isoformat(timespec=timespec)


# --- diffs: daff text and workbooks checked against two recorded states ---------------------

def cell_is(text: str, value: Any) -> bool:
    """Does the text of a diff cell show `value`?"""
    if value is None:
        return text in ("", "NULL")
    if isinstance(value, float):
        try:
            return math.isclose(float(text), value, rel_tol=0, abs_tol=1e-9)
        except ValueError:
            return False
    return text == str(value)


def diff_blocks(text: str) -> dict[str, tuple[dict[str, int], list[list[str]]]]:
    """`filepipe diff` text: per table its `# t: +a -d ~c` counts and its CSV rows."""
    blocks: dict[str, tuple[dict[str, int], list[str]]] = {}
    current = None
    for line in text.splitlines():
        m = re.fullmatch(r"# (.+): \+(\d+) -(\d+) ~(\d+)", line)
        if m:
            current = m[1]
            blocks[current] = ({"added": int(m[2]), "deleted": int(m[3]), "changed": int(m[4])}, [])
        elif current is not None and line.strip() and line != "(no change)" \
                and not line.startswith("diff written to "):
            blocks[current][1].append(line)
    return {t: (c, list(csv.reader(lines))) for t, (c, lines) in blocks.items()}


def diff_counts(old: Mapping[tuple, dict], new: Mapping[tuple, dict]) -> dict[str, int]:
    c = changes(old, new)
    return {"added": c["added"], "deleted": c["deleted"], "changed": c["updated"]}


def check_daff(rows: list[list[str]], old: Mapping[tuple, dict], new: Mapping[tuple, dict],
               table: str) -> None:
    """daff highlighter rows: `@@` header, `+++` added, `---` deleted, `->` changed with
    changed cells `old->new`; exactly the rows that differ, in key order."""
    keys = KEYS[table]
    nk = len(keys)
    header = rows[0]
    assert header[0] == "@@" and header[1:1 + nk] == keys, (table, header)
    columns = header[1 + nk:]
    assert sorted(columns) == sorted(c for c in COLUMNS[table] if c not in keys), (table, header)
    seen = []
    for r in rows[1:]:
        assert len(r) == len(header), (table, r)
        action, key, cells = r[0], tuple(r[1:1 + nk]), dict(zip(columns, r[1 + nk:]))
        if action == "+++":
            assert key in new and key not in old, (table, r)
            assert all(cell_is(cells[c], new[key][c]) for c in columns), (table, r, new[key])
        elif action == "---":
            assert key in old and key not in new, (table, r)
            assert all(cell_is(cells[c], old[key][c]) for c in columns), (table, r, old[key])
        else:
            assert action in ("->", "-->"), (table, r)
            assert key in old and key in new and old[key] != new[key], (table, r)
            for c in columns:
                o, n = old[key][c], new[key][c]
                if o == n:
                    assert cell_is(cells[c], n) and action not in cells[c], (table, r, c)
                else:
                    assert action in cells[c], (table, r, c, o, n)
                    left, right = cells[c].split(action, 1)
                    assert cell_is(left, o) and cell_is(right, n), (table, r, c, o, n)
        seen.append(key)
    assert seen == sorted(seen), f"{table}: rows not in key order: {seen}"
    differ = {k for k in set(old) | set(new) if old.get(k) != new.get(k)}
    assert len(seen) == len(set(seen)) and set(seen) == differ, (table, seen, differ)


def check_workbook(path: Path, title: str, diffs: Mapping[str, tuple[Mapping, Mapping]]) -> None:
    """The change workbook: Summary first (counts per table), then a sheet per table whose
    rows are the changes, added rows green, deleted red, changed cells yellow holding
    `old → new`; frozen header and an autofilter on every sheet."""
    book = openpyxl.load_workbook(path)
    assert book.sheetnames[0] == "Summary"
    assert sorted(book.sheetnames[1:]) == sorted(diffs), book.sheetnames
    summary = book["Summary"]
    rows = list(summary.iter_rows(values_only=True))
    assert list(rows[0]) == ["changes", "table", "added", "deleted", "changed"]
    assert {r[1]: {"added": r[2], "deleted": r[3], "changed": r[4]} for r in rows[1:]} == \
        {t: diff_counts(o, n) for t, (o, n) in diffs.items()}
    assert {r[0] for r in rows[1:]} == {title}
    assert summary.freeze_panes == "A2"
    assert summary.auto_filter.ref == f"A1:E{len(rows)}"
    for table, (old, new) in diffs.items():
        ws = book[table]
        keys = KEYS[table]
        header = [c.value for c in ws[1]]
        assert header[0] == "change" and header[1:1 + len(keys)] == keys, (table, header)
        assert sorted(header[1 + len(keys):]) == sorted(c for c in COLUMNS[table] if c not in keys)
        assert ws.freeze_panes == "A2", table
        assert ws.auto_filter.ref == f"A1:{get_column_letter(len(header))}{ws.max_row}", table
        assert all(cell_fill(c) == "FFD9D9D9" and c.font.b for c in ws[1]), table  # header
        seen = set()
        for cells in ws.iter_rows(min_row=2):
            values = dict(zip(header, cells))
            kind = values["change"].value
            key = tuple(values[k].value for k in keys)
            seen.add(key)
            if kind == "added":
                assert key in new and key not in old, (table, key)
                assert {cell_fill(c) for c in cells} == {GREEN}, (table, key)
                assert all(norm(values[c].value) == new[key][c] for c in new[key]), (table, key)
            elif kind == "deleted":
                assert key in old and key not in new, (table, key)
                assert {cell_fill(c) for c in cells} == {RED}, (table, key)
                assert all(norm(values[c].value) == old[key][c] for c in old[key]), (table, key)
            else:
                assert kind == "changed" and old.get(key) != new.get(key) and key in old and key in new
                assert cell_fill(values["change"]) == YELLOW
                for c in new[key]:
                    cell, o, n = values[c], old[key][c], new[key][c]
                    if o == n:
                        assert cell_fill(cell) is None and norm(cell.value) == n, (table, key, c)
                    else:
                        assert cell_fill(cell) == YELLOW, (table, key, c)
                        left, right = str(cell.value).split(" → ")
                        assert cell_is(left, o) and cell_is(right, n), (table, key, c, cell.value)
                for k in keys:
                    assert cell_fill(values[k]) is None
        assert seen == {k for k in set(old) | set(new) if old.get(k) != new.get(k)}, table


# --- the story: five versions of the sales project -----------------------------------------

@dataclass
class Story:
    sales: Sales
    states: dict[int, dict[str, dict[tuple, dict]]] = field(default_factory=dict)
    frames: dict[int, dict[str, pd.DataFrame]] = field(default_factory=dict)
    triggers: dict[int, str] = field(default_factory=dict)
    t0: float = 0.0
    t_mid: float = 0.0
    tag_output: str = ""
    noop: str = ""

    def record(self, run_id: int, trigger: str) -> None:
        assert run_id not in self.states and all(run_id > r for r in self.states), (run_id, list(self.states))
        self.states[run_id] = self.sales.expected_states()
        self.frames[run_id] = self.sales.expected()
        self.triggers[run_id] = trigger

    @property
    def ids(self) -> list[int]:
        return list(self.states)

    def table_states(self, table: str) -> dict[int, dict[tuple, dict]]:
        return {r: s[table] for r, s in self.states.items()}


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory, _record_loaded_apps: None) -> Story:
    """Five versions: CLI run; CLI run --report; (tag month-end); library app.run(); CLI
    run; a watch cycle (library); then a run with nothing to do. Read-only tests use it."""
    sales = Sales(tmp_path_factory.mktemp("story") / "sales")
    s = Story(sales, t0=time.time())
    p = sales.pipeline
    fp(p, "run")
    s.record(last_version(p), "run")

    # v2: a price changed, one deleted, one added; an order's qty changed, one deleted, one added
    sales.set_price("A-100", price=19.5)
    sales.drop_price("D-200")
    sales.set_price("E-100", "Kettle", 30.0)
    sales.put_order("lisbon", "1006", qty=5)
    sales.drop_order("berlin", "1003")
    sales.put_order("online", "2001", customer="Eve", sku="E-100", qty=2, date="2026-11-02")
    assert "changes written to" in fp(p, "run", "--report", str(sales.root / "run2.xlsx")).stdout
    s.record(last_version(p), "run")
    s.tag_output = fp(p, "tag", "month-end", "-m", "sent to finance").stdout
    time.sleep(1.02 - time.time() % 1)  # into the next second: t_mid's second starts after v2
    s.t_mid = time.time()
    time.sleep(0.02)

    # v3 (library): a product renamed; an order moves to another customer, another deleted
    sales.set_price("B-100", product="Green tea 125 g")
    sales.put_order("online", "1010", customer="Eve")
    sales.drop_order("lisbon", "1006")
    report = load(p).run()
    close_apps()
    assert report.ok and report.run_id is not None
    s.record(report.run_id, "run")

    # v4: a deleted order and a deleted price come back
    sales.put_order("berlin", "1003", customer="Chen", sku="B-100", qty=6, date="2026-10-03")
    sales.set_price("D-200", "Travel tumbler", 16.0)
    fp(p, "run")
    s.record(last_version(p), "run")

    # v5: a watch cycle
    sales.set_price("C-100", price=41.0)
    report = load(p).run_cycle()
    close_apps()
    assert report.ok and report.run_id is not None
    s.record(report.run_id, "watch")

    s.noop = fp(p, "run", "--report", str(sales.root / "noop.xlsx")).stdout  # nothing changed: no version
    return s


# --- log ------------------------------------------------------------------------------------

def test_log_lists_every_version_newest_first_with_its_counts(story: Story) -> None:
    p = story.sales.pipeline
    assert story.ids == [1, 2, 3, 4, 5]
    assert story.noop.startswith("nothing to do"), story.noop
    found = json.loads(fp(p, "log", "--format", "json", "--limit", "0").stdout)
    assert [v["run_id"] for v in found] == [5, 4, 3, 2, 1]
    assert {v["run_id"]: v["trigger"] for v in found} == story.triggers
    assert {v["run_id"]: v["tags"] for v in found} == {1: [], 2: ["month-end"], 3: [], 4: [], 5: []}
    previous = {t: {} for t in TABLES}
    for run_id, st_ in story.states.items():
        logged = next(v for v in found if v["run_id"] == run_id)
        expected = {t: changes(previous[t], st_[t]) for t in TABLES}
        assert {t: c for t, c in logged["tables"].items() if any(c.values())} == \
            {t: c for t, c in expected.items() if any(c.values())}, f"version {run_id}"
        assert logged["failed"] == 0
        started, finished = (dt.datetime.fromisoformat(logged[k]).timestamp() for k in ("started", "finished"))
        assert story.t0 - 1 <= started <= finished <= time.time()
        previous = st_
    # version 2 finished before the tag's moment, version 3 after
    assert dt.datetime.fromisoformat(found[3]["finished"]).timestamp() <= story.t_mid + 1

    text = fp(p, "log").stdout.splitlines()
    assert text[0].split() == ["version", "finished", "trigger", "changes", "failed", "tags"]
    row2 = next(line for line in text if line.split()[0] == "2")
    assert "prices +1 ~1 -1" in row2 and "orders +1 ~1 -1" in row2 and row2.rstrip().endswith("month-end")
    assert [line.split()[0] for line in text[1:]] == ["5", "4", "3", "2", "1"]

    only_prices = json.loads(fp(p, "log", "--table", "prices", "--format", "json").stdout)
    assert [v["run_id"] for v in only_prices] == [r for r in (5, 4, 3, 2, 1)
                                                  if story.states[r]["prices"] != story.states.get(r - 1, {}).get(
                                                      "prices", {})]
    assert [v["run_id"] for v in json.loads(fp(p, "log", "--limit", "2", "--format", "json").stdout)] == [5, 4]
    table = pd.read_csv(io.StringIO(fp(p, "log", "--format", "csv", "--limit", "0").stdout))
    assert list(table.columns) == ["version", "finished", "trigger", "changes", "failed", "tags"]
    assert table["version"].tolist() == [5, 4, 3, 2, 1]
    assert table["trigger"].tolist() == ["watch", "run", "run", "run", "run"]
    assert story.tag_output.strip() == "tagged version 2 as month-end"


# --- diff -----------------------------------------------------------------------------------

def test_diff_of_one_run_is_daff_text_of_exactly_the_edits(story: Story) -> None:
    p = story.sales.pipeline
    old, new = story.states[1], story.states[2]
    out = fp(p, "diff", "prices", "--run", "2").stdout
    assert out.splitlines()[:5] == [
        "# prices: +1 -1 ~1",
        "@@,sku,product,unit_price",
        "->,A-100,Espresso beans 1 kg,18.5->19.5",
        "---,D-200,Travel tumbler,15.0",
        "+++,E-100,Kettle,30.0",
    ], out
    blocks = diff_blocks(fp(p, "diff", "--run", "2").stdout)  # every table the run changed
    assert sorted(blocks) == sorted(TABLES)
    for t, (counts, rows) in blocks.items():
        assert counts == diff_counts(old[t], new[t]), t
        check_daff(rows, old[t], new[t], t)

    as_json = json.loads(fp(p, "diff", "orders", "customers", "--run", "3", "--format", "json").stdout)
    assert sorted(as_json) == ["customers", "orders"]
    for t, records in as_json.items():
        actions = {tuple(r[k] for k in KEYS[t]): r["@@"] for r in records}
        o, n = story.states[2][t], story.states[3][t]
        assert actions == {k: "+++" if k not in o else "---" if k not in n else "->"
                           for k in set(o) | set(n) if o.get(k) != n.get(k)}, t


def test_diff_between_refs_spans_several_runs(story: Story) -> None:
    p = story.sales.pipeline
    for args, old, new in [(["--from", "month-end", "--to", "4"], story.states[2], story.states[4]),
                           (["--from", "1"], story.states[1], story.states[5]),
                           (["--from", local_iso(story.t_mid), "--to", "month-end"], story.states[2],
                            story.states[2])]:
        blocks = diff_blocks(fp(p, "diff", *TABLES, *args).stdout)
        assert sorted(blocks) == sorted(TABLES), args
        for t, (counts, rows) in blocks.items():
            assert counts == diff_counts(old[t], new[t]), (args, t)
            if rows:
                check_daff(rows, old[t], new[t], t)
            else:
                assert old[t] == new[t], (args, t)
    # backwards: from a later version to an earlier one
    blocks = diff_blocks(fp(p, "diff", "orders", "--from", "4", "--to", "2").stdout)
    check_daff(blocks["orders"][1], story.states[4]["orders"], story.states[2]["orders"], "orders")
    # without TABLE: the tables that changed in between
    assert sorted(diff_blocks(fp(p, "diff", "--from", "4", "--to", "5").stdout)) == \
        sorted(t for t in TABLES if story.states[4][t] != story.states[5][t])
    one_line_error(fp(p, "diff", "prices", "--run", "99", code=2), "no version 99")
    one_line_error(fp(p, "diff", "prices", "--from", "soon", code=2), "'soon'")


def test_run_report_workbook_holds_the_runs_changes(story: Story) -> None:
    check_workbook(story.sales.root / "run2.xlsx", "run 2",
                   {t: (story.states[1][t], story.states[2][t]) for t in TABLES})


def test_run_report_of_a_run_that_changed_nothing_is_an_empty_summary(story: Story) -> None:
    book = openpyxl.load_workbook(story.sales.root / "noop.xlsx")
    assert book.sheetnames == ["Summary"]
    assert [[c.value for c in row] for row in book["Summary"].iter_rows()] == [
        ["changes", "table", "added", "deleted", "changed"]]
    assert book["Summary"].freeze_panes == "A2"


def test_diff_xlsx_workbook_between_a_tag_and_now(story: Story, tmp_path: Path) -> None:
    p = story.sales.pipeline
    path = tmp_path / "changes.xlsx"
    result = fp(p, "diff", "--from", "month-end", "--xlsx", str(path))
    assert f"diff written to {path}" in result.stdout
    changed = [t for t in TABLES if story.states[2][t] != story.states[5][t]]
    check_workbook(path, "month-end → now", {t: (story.states[2][t], story.states[5][t]) for t in changed})
    # the text printed alongside is the same diff
    blocks = diff_blocks(result.stdout)
    assert sorted(blocks) == sorted(changed)
    for t, (counts, rows) in blocks.items():
        assert counts == diff_counts(story.states[2][t], story.states[5][t]), t
        check_daff(rows, story.states[2][t], story.states[5][t], t)


# --- history of one row ---------------------------------------------------------------------

@pytest.mark.parametrize("table,key", [
    ("prices", {"sku": "A-100"}),                            # added, price changed
    ("prices", {"sku": "D-200"}),                            # added, deleted, added again
    ("orders", {"shop": "lisbon", "order_id": "1006"}),      # added, qty changed, deleted
    ("orders", {"shop": "online", "order_id": "1010"}),      # moved to another customer
    ("customers", {"customer": "Ben"}),                      # an output row
    ("products", {"sku": "E-100"}),                          # an output row added in v2
])
def test_history_of_a_row_lists_its_versions(story: Story, table: str, key: dict[str, str]) -> None:
    p = story.sales.pipeline
    args = [f"{k}={v}" for k, v in key.items()]
    found = json.loads(fp(p, "history", table, *args, "--format", "json").stdout)
    expected = row_versions(story.table_states(table), tuple(key[k] for k in KEYS[table]))
    assert [(v["run"], v["change"]) for v in found] == [(e["run"], e["change"]) for e in expected]
    for v, e in zip(found, expected):
        if e["change"] != "deleted":
            assert set(filter(None, v["changed"].split(", "))) == e["changed"], (v, e)
            assert {c: norm(v[c]) for c in e["row"]} == e["row"], (v, e)
        assert dt.datetime.fromisoformat(v["time"]).timestamp() >= story.t0 - 1

    text = fp(p, "history", table, *args).stdout
    sources = re.findall(r"^version (\d+): computed from (\w+) \((\d+) row\(s\)\)$", text, re.M)
    if table != "customers":
        if table in ("prices", "orders"):
            assert sources == [], text  # a source row: computed from nothing
        return
    # customers: each live version lists the priced orders of that customer then
    want = [(str(e["run"]), "priced_orders",
             str(sum(1 for r in story.states[e["run"]]["priced_orders"].values() if r["customer"] == key["customer"])))
            for e in expected if e["change"] != "deleted"]
    assert sources == want, text
    for block, (run, _, _) in zip(re.split(r"^version \d+: computed from .*$", text, flags=re.M)[1:], sources):
        ids = {k[1] for k, r in story.states[int(run)]["priced_orders"].items() if r["customer"] == key["customer"]}
        assert set(re.findall(r"\b(\d{4})\b", block)) >= ids, (run, block)


def test_history_of_an_output_row_lists_only_its_input_rows(story: Story) -> None:
    text = fp(story.sales.pipeline, "history", "priced_orders", "shop=online", "order_id=1011").stdout
    # order 1011 is an A-100 order: the step `price_orders` (transform keys: sku) read the
    # A-100 price and the A-100 orders for it
    at1 = story.states[1]
    n_orders = sum(1 for r in at1["orders"].values() if r["sku"] == "A-100")
    assert "version 1: computed from prices (1 row(s))" in text, text
    assert f"version 1: computed from orders ({n_orders} row(s))" in text, text


def test_history_asks_for_every_key_and_knows_no_unknown_row(story: Story) -> None:
    p = story.sales.pipeline
    one_line_error(fp(p, "history", "orders", "shop=lisbon", code=2), "order_id")
    assert fp(p, "history", "prices", "sku=Z-999").stdout.strip() == "no version of that row"
    one_line_error(fp(p, "history", "nope", "sku=A", code=2), "nope")


# --- show --as-of and restore -o ------------------------------------------------------------

def test_as_of_every_version_of_every_table_is_the_recorded_state(story: Story) -> None:
    app = load(story.sales.pipeline)
    try:
        for run_id, frames in story.frames.items():
            for t in TABLES:
                assert_state(versions.as_of(app.ds, t, run_id), frames[t], KEYS[t], f"{t} as of {run_id}")
                assert_state(versions.as_of(app.ds, t, str(run_id)), frames[t], KEYS[t], f"{t} as of '{run_id}'")
        for t in TABLES:  # now: the current data, as the tables hold it
            assert_state(versions.as_of(app.ds, t), story.frames[5][t], KEYS[t], f"{t} now")
            assert_state(app.table(t).get_data(), story.frames[5][t], KEYS[t], f"{t} stored")
    finally:
        close_apps()


def test_show_as_of_a_run_id_a_tag_and_a_time(story: Story, tmp_path: Path) -> None:
    p = story.sales.pipeline
    f = story.frames
    assert_state(show_json(p, "prices", "1"), f[1]["prices"], KEYS["prices"], "prices as of 1")
    assert_state(show_json(p, "customers", "3"), f[3]["customers"], KEYS["customers"], "customers as of 3")
    assert_state(show_json(p, "priced_orders", "month-end"), f[2]["priced_orders"], KEYS["priced_orders"],
                 "priced_orders as of month-end")
    # times: between v2 and v3 (to the microsecond), before the first run (a minute), a day later
    assert_state(show_json(p, "orders", local_iso(story.t_mid)), f[2]["orders"], KEYS["orders"], "orders at t_mid")
    assert_state(show_json(p, "orders", local_iso(story.t_mid, "seconds")), f[2]["orders"], KEYS["orders"],
                 "orders at t_mid (seconds)")
    before = dt.datetime.fromtimestamp(story.t0).strftime("%Y-%m-%dT%H:%M")
    assert fp(p, "show", "orders", "--as-of", before).stdout.strip() == "(no rows)"
    tomorrow = (dt.date.today() + dt.timedelta(days=1)).isoformat()
    assert_state(show_json(p, "products", tomorrow), f[5]["products"], KEYS["products"], "products tomorrow")
    yesterday = (dt.date.fromtimestamp(story.t0) - dt.timedelta(days=1)).isoformat()
    assert fp(p, "show", "prices", "--as-of", yesterday).stdout.strip() == "(no rows)"
    # --where on an old version
    ben = show_json(p, "priced_orders", "1").pipe(lambda d: d[d["customer"] == "Ben"])
    out = fp(p, "show", "priced_orders", "--as-of", "1", "--where", "customer=Ben", "--format", "json").stdout
    assert_state(pd.DataFrame(json.loads(out)), ben, KEYS["priced_orders"], "--where")
    # a workbook
    path = tmp_path / "customers-month-end.xlsx"
    result = fp(p, "show", "customers", "--as-of", "month-end", "--format", "xlsx", "-o", str(path))
    assert f"{len(f[2]['customers'])} row(s) written to" in result.stdout
    assert_state(read_sheet(path), f[2]["customers"], KEYS["customers"], "customers workbook")
    # refs that name nothing
    one_line_error(fp(p, "show", "prices", "--as-of", "99", code=2), "no version 99")
    one_line_error(fp(p, "show", "prices", "--as-of", "no-such-tag", code=2), "no-such-tag")


def test_restore_to_a_new_file(story: Story, tmp_path: Path) -> None:
    p = story.sales.pipeline
    xlsx = tmp_path / "prices-month-end.xlsx"
    assert fp(p, "restore", "prices", "--to", "month-end", "-o", str(xlsx)).stdout.strip() == \
        f"prices as of month-end written to {xlsx}"
    assert_state(read_sheet(xlsx), story.frames[2]["prices"], KEYS["prices"], "restored workbook")
    csv_path = tmp_path / "customers-1.csv"
    fp(p, "restore", "customers", "--to", "1", "-o", str(csv_path))
    assert_state(pd.read_csv(csv_path), story.frames[1]["customers"], KEYS["customers"], "restored csv")
    # never over an existing file
    before = xlsx.read_bytes()
    one_line_error(fp(p, "restore", "prices", "--to", "1", "-o", str(xlsx), code=2), "exists")
    assert xlsx.read_bytes() == before
    # the project's files did not move
    assert read_sheet(story.sales.root / "prices.xlsx").shape[0] == len(story.frames[5]["prices"])


def test_tags_list_and_refuse_names_that_read_as_refs(story: Story) -> None:
    p = story.sales.pipeline
    listed = pd.read_csv(io.StringIO(fp(p, "tags", "--format", "csv").stdout))
    assert listed["name"].tolist() == ["month-end"] and listed["run_id"].tolist() == [2]
    assert listed["message"].tolist() == ["sent to finance"]
    text = fp(p, "tags").stdout.splitlines()
    assert text[0].split() == ["tag", "version", "made", "message"]
    assert text[1].split()[:2] == ["month-end", "2"]
    for bad in ("12", "2026-11-30", "2026-11-30T14:00"):
        one_line_error(fp(p, "tag", bad, code=2), bad)


# --- restore --in-place ---------------------------------------------------------------------

def assert_outputs_fresh(sales: Sales) -> None:
    """out/report.xlsx, read with openpyxl, holds what the recorded sources give."""
    expected = sales.expected()
    for table, sheet in (("priced_orders", "Orders"), ("customers", "Customers"), ("products", "Products")):
        assert_state(read_sheet(sales.root / "out" / "report.xlsx", sheet), expected[table], KEYS[table], sheet)


def test_restore_in_place_backs_up_restores_the_source_and_recomputes(tmp_path: Path) -> None:
    sales = Sales(tmp_path / "sales")
    p = sales.pipeline
    fp(p, "run")
    v1_prices, v1_orders = dict(sales.prices), {k: dict(v) for k, v in sales.orders.items()}
    v1 = sales.expected()
    sales.set_price("A-100", price=21.0)
    sales.drop_price("B-200")
    sales.set_price("E-100", "Kettle", 30.0)
    sales.drop_order("berlin", "1003")
    sales.put_order("online", "2001", customer="Eve", sku="A-100", qty=2, date="2026-11-02")
    sales.put_order("lisbon", "1006", qty=4)
    fp(p, "run")
    v2 = sales.expected()
    v2_prices = dict(sales.prices)

    # an Excel source
    result = fp(p, "restore", "prices", "--to", "1", "--in-place")
    m = re.match(r"prices: current files kept as (.+); restored as of 1$", result.stdout.splitlines()[0])
    assert m, result.stdout
    backup = Path(m[1])
    assert backup.is_file() and backup.parent == sales.root and ".bak" in backup.name
    assert_state(read_sheet(backup), v2["prices"], KEYS["prices"], "backup")  # what was there
    assert_state(read_sheet(sales.root / "prices.xlsx"), v1["prices"], KEYS["prices"], "restored prices.xlsx")
    sales.prices = v1_prices  # the record follows
    assert_outputs_fresh(sales)
    log = json.loads(fp(p, "log", "--format", "json", "--limit", "1").stdout)[0]
    assert log["run_id"] == 3 and log["trigger"] == "restore"
    assert log["tables"]["prices"] == changes(state(v2["prices"], ["sku"]), state(v1["prices"], ["sku"]))
    assert_state(show_json(p, "prices", "3"), v1["prices"], KEYS["prices"], "prices as of 3")
    assert_state(show_json(p, "prices", "2"), pd.DataFrame(
        [{"sku": k, "product": a, "unit_price": b} for k, (a, b) in v2_prices.items()]), KEYS["prices"], "as of 2")

    # a folder source: deleted files come back, added ones go, edited ones are restored
    assert fp(p, "tag", "before-edits", "--at", "1").stdout.strip() == "tagged version 1 as before-edits"
    result = fp(p, "restore", "orders", "--to", "before-edits", "--in-place")
    m = re.match(r"orders: current files kept as (.+); restored as of before-edits$", result.stdout.splitlines()[0])
    assert m, result.stdout
    backup = Path(m[1])
    assert backup.is_dir() and (backup / "online" / "2001.json").is_file()
    assert not (backup / "berlin" / "1003.json").exists()
    files = {(f.parent.name, f.stem): json.loads(f.read_text()) for f in (sales.root / "inbox").rglob("*.json")}
    assert sorted(files) == sorted(v1_orders)
    for k, record in v1_orders.items():
        assert {c: norm(v) for c, v in files[k].items()} == {c: norm(v) for c, v in record.items()}, k
    sales.orders = v1_orders
    assert_outputs_fresh(sales)
    app = load(p)
    try:
        for t in TABLES:
            assert_state(versions.as_of(app.ds, t), v1[t], KEYS[t], f"{t} now")
            assert_state(app.table(t).get_data(), v1[t], KEYS[t], f"{t} stored")
    finally:
        close_apps()
    assert fp(p, "run").stdout.startswith("nothing to do")

    # an output is never restored in place
    one_line_error(fp(p, "restore", "customers", "--to", "1", "--in-place", code=2), "customer_totals")
    result = fp(p, "restore", "prices", "--to", "1", code=2)  # neither -o nor --in-place
    assert "give one of -o FILE or --in-place" in result.output


def test_integers_stay_integers_in_old_versions_and_restores(tmp_path: Path) -> None:
    sales = Sales(tmp_path / "sales")
    p = sales.pipeline
    fp(p, "run")
    before = {k: dict(v) for k, v in sales.orders.items()}
    sales.put_order("lisbon", "1006", qty=5)   # an update...
    sales.drop_order("berlin", "1003")         # ...and a deletion in the same run
    fp(p, "run")
    shown = json.loads(fp(p, "show", "orders", "--as-of", "1", "--format", "json", "--limit", "0").stdout)
    assert {type(r["qty"]) for r in shown} == {int}, shown[:2]
    fp(p, "restore", "orders", "--to", "1", "--in-place")
    for (shop, oid), record in before.items():
        written = json.loads(sales.order_path(shop, oid).read_text())
        assert written == record and type(written["qty"]) is int, (shop, oid, written)


# --- gc ---------------------------------------------------------------------------------------

def history_rows(app: filepipe.app.FilepipeApp) -> dict[str, int]:
    """Row versions per table in the history (all of it: what is in Parquet)."""
    for t in TABLES:
        versions.as_of(app.ds, t)  # a read moves versions of small runs to the Parquet history
    store = app.ds.meta.history.store
    return {t: len(store.read(t)) for t in store.tables()}


def history_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in (root / ".filepipe" / "history").rglob("*.parquet"))


def gc_project(tmp_path: Path) -> tuple[Sales, dict[int, dict[str, pd.DataFrame]]]:
    """Four versions of the sales project, version 2 tagged `keep-me`."""
    sales = Sales(tmp_path / "sales")
    p = sales.pipeline
    frames = {}
    fp(p, "run")
    frames[1] = sales.expected()
    sales.set_price("A-100", price=19.0)
    sales.drop_order("berlin", "1003")
    fp(p, "run")
    frames[2] = sales.expected()
    fp(p, "tag", "keep-me")
    sales.set_price("A-100", price=20.0)
    sales.set_price("B-100", price=6.0)
    sales.put_order("lisbon", "1006", qty=7)
    fp(p, "run")
    frames[3] = sales.expected()
    sales.set_price("A-100", price=21.0)
    sales.drop_price("C-200")
    fp(p, "run")
    frames[4] = sales.expected()
    assert last_version(p) == 4
    return sales, frames


def test_gc_keeps_now_and_tagged_states_and_drops_older_versions(tmp_path: Path) -> None:
    sales, frames = gc_project(tmp_path)
    p = sales.pipeline
    app = load(p)
    rows_before = history_rows(app)
    close_apps()
    bytes_before = history_bytes(sales.root)

    out = fp(p, "gc", "--keep-runs", "1").stdout.strip()
    m = re.fullmatch(r"dropped (\d+) old row version\(s\)(?: \((.*)\))?", out)
    assert m, out
    app = load(p)
    try:
        rows_after = history_rows(app)
        dropped = {t: rows_before[t] - rows_after.get(t, 0) for t in rows_before}
        assert int(m[1]) == sum(dropped.values()) > 0
        assert dict(re.findall(r"(\w+): (\d+)", m[2] or "")) == {t: str(n) for t, n in dropped.items() if n}
        assert dropped["prices"] > 0 and dropped["priced_orders"] > 0, dropped  # A-100's price of v1
        # every state still needed is exact: now, the one before the last run (v3), the tag (v2)
        for ref, v in (("4", 4), (None, 4), ("3", 3), ("keep-me", 2)):
            for t in TABLES:
                assert_state(versions.as_of(app.ds, t, ref), frames[v][t], KEYS[t], f"{t} as of {ref} after gc")
        for t in TABLES:
            assert_state(app.table(t).get_data(), frames[4][t], KEYS[t], f"{t} data after gc")
    finally:
        close_apps()
    assert history_bytes(sales.root) < bytes_before
    assert [v["run_id"] for v in json.loads(fp(p, "log", "--format", "json").stdout)] == [4, 3, 2, 1]

    # history goes on after gc
    sales.set_price("A-100", price=22.0)
    fp(p, "run")
    assert last_version(p) == 5
    assert_state(show_json(p, "prices", "5"), sales.expected()["prices"], KEYS["prices"], "as of 5")
    assert_state(show_json(p, "prices", "keep-me"), frames[2]["prices"], KEYS["prices"], "tag after gc+run")
    blocks = diff_blocks(fp(p, "diff", "prices", "--run", "5").stdout)
    check_daff(blocks["prices"][1], state(frames[4]["prices"], ["sku"]), state(sales.expected()["prices"], ["sku"]),
               "prices")
    # gc asks what to keep
    result = runner.invoke(main, ["-p", p, "gc"])
    close_apps()
    assert result.exit_code == 2 and "--keep-runs" in result.output, explain(result)


def test_as_of_a_version_dropped_by_gc_is_refused_not_made_up(tmp_path: Path) -> None:
    sales, frames = gc_project(tmp_path)
    p = sales.pipeline
    fp(p, "gc", "--keep-runs", "1")
    result = runner.invoke(main, ["-p", p, "show", "prices", "--as-of", "1", "--format", "json", "--limit", "0"])
    close_apps()
    if result.exit_code == 0:  # answering is fine only when the answer is right
        assert_state(pd.DataFrame(json.loads(result.stdout)), frames[1]["prices"], KEYS["prices"], "as of 1")
    else:
        one_line_error(result, "1")


# --- the library: versions of store_chunk, delete_by_idx, run_steps, run_steps_changelist ------

def per_user(events: pd.DataFrame) -> pd.DataFrame:
    return events.groupby("user", as_index=False).agg(n=("event_id", "count"), total=("v", "sum"))


def test_library_writes_are_versions_of_their_own(tmp_path: Path) -> None:
    db = DBConn(f"sqlite:///{tmp_path / 'index.sqlite'}")
    try:
        catalog = Catalog({
            "events": Table(TableStoreDB("events", db, [Column("user", String, primary_key=True),
                                                       Column("event_id", Integer, primary_key=True),
                                                       Column("v", Integer)])),
            "users": Table(TableStoreDB("users", db, [Column("user", String, primary_key=True),
                                                     Column("n", Integer), Column("total", Integer)])),
        })
        ds = DataStore(db)
        steps = build_compute(ds, catalog, Pipeline([BatchTransform(per_user, inputs=["events"],
                                                                    outputs=["users"], chunk_size=2)]))
        events = catalog.get_datatable(ds, "events")
        rows: dict[tuple, int] = {}
        states: dict[int, dict[str, dict]] = {}

        def expect() -> dict[str, pd.DataFrame]:
            ev = pd.DataFrame([{"user": u, "event_id": e, "v": v} for (u, e), v in sorted(rows.items())],
                              columns=["user", "event_id", "v"])
            return {"events": ev, "users": per_user(ev) if len(ev) else pd.DataFrame(columns=["user", "n", "total"])}

        def version(trigger: str) -> int:
            v = versions.log(ds, limit=1)[0]
            assert v.trigger == trigger and v.finished is not None
            assert v.run_id not in states
            states[v.run_id] = expect()
            return v.run_id

        # a bare store_chunk outside a run
        df = pd.DataFrame({"user": list("aabbc"), "event_id": [0, 1, 0, 1, 0], "v": [1, 2, 3, 4, 5]})
        events.store_chunk(df)
        rows.update({(u, e): v for u, e, v in df.itertuples(index=False)})
        assert version("store_chunk") == 1
        report = run_steps(ds, steps)
        assert report.run_id == 2 and version("run_steps") == 2
        assert run_steps(ds, steps).run_id is None  # nothing to do: no version
        events.delete_by_idx(pd.DataFrame({"user": ["b"], "event_id": [1]}))
        del rows[("b", 1)]
        assert version("store_chunk") == 3
        changed = events.store_chunk(pd.DataFrame({"user": ["a", "d"], "event_id": [0, 0], "v": [10, 7]}))
        rows.update({("a", 0): 10, ("d", 0): 7})
        assert version("store_chunk") == 4
        run_steps_changelist(ds, steps, ChangeList.create("events", changed))
        version("changelist")
        # users was stale after v3 (b lost an event): the changelist run did only a and d
        report = run_steps(ds, steps)
        assert report.run_id == 6
        version("run_steps")

        log = versions.log(ds)
        assert [v.run_id for v in log] == [6, 5, 4, 3, 2, 1]
        assert log[-1].tables == {"events": {"added": 5, "updated": 0, "deleted": 0}}
        assert log[3].tables == {"events": {"added": 0, "updated": 0, "deleted": 1}}
        assert set(log[1].tables) == {"users"}
        for run_id, frames in states.items():
            assert_state(versions.as_of(ds, "events", run_id), frames["events"], ["user", "event_id"],
                         f"events as of {run_id}")
        assert_state(versions.as_of(ds, "users", 2), states[2]["users"], ["user"], "users as of 2")
        assert_state(versions.as_of(ds, "users", 6), states[6]["users"], ["user"], "users as of 6")
        users_5 = versions.as_of(ds, "users", 5)
        assert state(users_5, ["user"])[("b",)] == {"n": 2.0, "total": 7.0}  # not yet recomputed at v5
        assert state(users_5, ["user"])[("d",)] == {"n": 1.0, "total": 7.0}
        diff = versions.diff(ds, "users", run=6)
        assert diff.counts == {"added": 0, "deleted": 0, "changed": 1}
        assert versions.diff(ds, "events", from_ref=1, to_ref=4).counts == {"added": 1, "deleted": 1, "changed": 1}
        hist = versions.row_history(ds, "events", {"user": "a", "event_id": "0"})  # text: coerced to the key
        assert hist["change"].tolist() == ["added", "updated"] and hist["run"].tolist() == [1, 4]
        # the history beside the index: <name>.history
        assert (tmp_path / "index.history").is_dir()
        assert {p.name for p in (tmp_path / "index.history").iterdir()} >= {"events", "users"}
    finally:
        db.dispose()


def test_an_index_without_history_logs_runs_but_keeps_no_versions(tmp_path: Path) -> None:
    db = DBConn(f"sqlite:///{tmp_path / 'index.sqlite'}")
    try:
        ds = DataStore(db, history=False)
        catalog = Catalog({"events": Table(TableStoreDB("events", db, [
            Column("user", String, primary_key=True), Column("event_id", Integer, primary_key=True),
            Column("v", Integer)]))})
        events = catalog.get_datatable(ds, "events")
        events.store_chunk(pd.DataFrame({"user": ["a"], "event_id": [0], "v": [1]}))
        assert [v.run_id for v in versions.log(ds)] == [1]
        with pytest.raises(FilepipeError, match="no history"):
            versions.as_of(ds, "events", 1)
        assert not (tmp_path / "index.history").exists()
    finally:
        db.dispose()


def test_history_in_a_folder_of_ones_choice(tmp_path: Path) -> None:
    db = DBConn(f"sqlite:///{tmp_path / 'index.sqlite'}")
    try:
        ds = DataStore(db, history=tmp_path / "elsewhere")
        catalog = Catalog({"events": Table(TableStoreDB("events", db, [
            Column("user", String, primary_key=True), Column("event_id", Integer, primary_key=True),
            Column("v", Integer)]))})
        events = catalog.get_datatable(ds, "events")
        events.store_chunk(pd.DataFrame({"user": ["a", "b"], "event_id": [0, 0], "v": [1, 2]}))
        events.store_chunk(pd.DataFrame({"user": ["a"], "event_id": [0], "v": [3]}))
        assert_state(versions.as_of(ds, "events", 1), pd.DataFrame({"user": ["a", "b"], "event_id": [0, 0],
                                                                    "v": [1, 2]}), ["user", "event_id"], "v1")
        assert list((tmp_path / "elsewhere" / "events").glob("*.parquet"))
        assert not (tmp_path / "index.history").exists()
    finally:
        db.dispose()


# --- property: every earlier version is the state recorded then ----------------------------

PROPERTY_PIPELINE = '''
from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
from filepipe.stores import TableStoreCSV


def per_group(items):
    return items.groupby("grp", as_index=False).agg(n=("id", "count"), qty=("qty", "sum"))


catalog = Catalog({
    "items": Table(TableStoreCSV("items.csv", primary_keys=["id"]), max_delete_share=None),
    "groups": Table(TableStoreCSV("out/groups.csv", primary_keys=["grp"])),
})
app = FilepipeApp(catalog, Pipeline([
    BatchTransform(per_group, inputs=["items"], outputs=["groups"], transform_keys=["grp"]),
]))
'''

ITEM_COLUMNS = ["id", "grp", "qty", "price", "name"]
put_op = st.tuples(st.just("put"), st.integers(0, 7), st.sampled_from("xyz"), st.integers(0, 9),
                   st.one_of(st.none(), st.sampled_from([0.5, 1.25, 2.0, 10.0])),
                   st.one_of(st.none(), st.sampled_from(["apple", "pear", "fig tree"])))
delete_op = st.tuples(st.just("delete"), st.integers(0, 7))
edit_batches = st.lists(st.lists(st.one_of(put_op, put_op, delete_op), min_size=1, max_size=4),
                        min_size=1, max_size=5)


def items_frame(rows: Mapping[int, tuple]) -> pd.DataFrame:
    return pd.DataFrame([(i, *r) for i, r in sorted(rows.items())], columns=ITEM_COLUMNS)


def groups_frame(rows: Mapping[int, tuple]) -> pd.DataFrame:
    out: dict[str, list[int]] = {}
    for grp, qty, *_ in rows.values():
        out.setdefault(grp, []).append(qty)
    return pd.DataFrame([(g, len(q), sum(q)) for g, q in sorted(out.items())], columns=["grp", "n", "qty"])


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=edit_batches, data=st.data())
def test_property_every_version_as_of_is_the_state_recorded_then(batches: list, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "pipeline.py").write_text(PROPERTY_PIPELINE)
        pipeline = str(root / "pipeline.py")
        rows: dict[int, tuple] = {0: ("x", 1, 2.0, "apple"), 1: ("y", 2, None, None)}
        items_frame(rows).to_csv(root / "items.csv", index=False)
        app = load(pipeline)
        recorded: dict[int, dict[int, tuple]] = {}
        try:
            report = app.run(allow_deletes=True)
            assert report.ok and report.run_id == 1
            recorded[1] = dict(rows)
            for batch in batches:
                for op in batch:
                    if op[0] == "put":
                        rows[op[1]] = op[2:]
                    else:
                        rows.pop(op[1], None)
                items_frame(rows).to_csv(root / "items.csv", index=False)
                report = app.run(allow_deletes=True)
                assert report.ok, report.summary()
                last = recorded[max(recorded)]
                if report.run_id is None:
                    assert rows == last, "a run that changed the source made no version"
                    continue
                assert report.run_id == max(recorded) + 1
                recorded[report.run_id] = dict(rows)
            previous: dict = {}
            for run_id, at in recorded.items():
                items, groups = items_frame(at), groups_frame(at)
                assert_state(versions.as_of(app.ds, "items", run_id), items, ["id"], f"items as of {run_id}")
                assert_state(versions.as_of(app.ds, "groups", run_id), groups, ["grp"], f"groups as of {run_id}")
                now = state(items, ["id"])
                assert versions.diff(app.ds, "items", run=run_id).counts == diff_counts(previous, now), run_id
                previous = now
            assert [v.run_id for v in versions.log(app.ds)] == sorted(recorded, reverse=True)
        finally:
            close_apps()
        sample = data.draw(st.sampled_from(sorted(recorded)), label="version shown through the CLI")
        shown = show_json(pipeline, "items", str(sample))
        if recorded[sample]:
            assert_state(shown, items_frame(recorded[sample]), ["id"], f"show items --as-of {sample}")
        else:
            assert shown.empty


def test_a_pending_segment_of_a_rolled_back_change_is_never_read_and_is_dropped(tmp_path: Path) -> None:
    # many versions of one change go to a pending Parquet file before their transaction
    # commits; if it rolls back, no read sees them and the next run removes the file
    import filepipe.meta.history as history_module

    db = DBConn(f"sqlite:///{tmp_path / 'index.sqlite'}")
    try:
        table = Catalog({"t": Table(TableStoreDB("t", db, [Column("k", Integer, primary_key=True),
                                                          Column("v", Integer)]))}).get_datatable(DataStore(db), "t")
        ds = table.ds
        table.store_chunk(pd.DataFrame({"k": range(5), "v": range(5)}))
        real = history_module.FILE_ROWS
        history_module.FILE_ROWS = 1
        try:
            with pytest.raises(RuntimeError, match="boom"), ds.recording(RunReport(trigger="test")):
                with ds.meta.begin() as conn:
                    table.store_chunk(pd.DataFrame({"k": range(5), "v": [9] * 5}), conn=conn)
                    assert ds.meta.history.store.pending_files()  # written before the commit
                    raise RuntimeError("boom")
        finally:
            history_module.FILE_ROWS = real
        assert table.get_data()["v"].tolist() == [0, 1, 2, 3, 4]
        assert versions.as_of(ds, "t")["v"].tolist() == [0, 1, 2, 3, 4]
        assert ds.meta.history.store.pending_files()  # not read, still there
        table.store_chunk(pd.DataFrame({"k": [0], "v": [7]}))  # a run: the writer cleans up
        assert ds.meta.history.store.pending_files() == []
        assert versions.as_of(ds, "t")["v"].tolist() == [7, 1, 2, 3, 4]
        assert [v.trigger for v in versions.log(ds)] == ["store_chunk", "store_chunk"]
    finally:
        db.dispose()


def test_log_of_a_table_the_index_does_not_know_is_an_error(tmp_path: Path) -> None:
    db = DBConn(f"sqlite:///{tmp_path / 'index.sqlite'}")
    try:
        ds = DataStore(db)
        with pytest.raises(FilepipeError, match="no table 'nope'"):
            versions.log(ds, table="nope")
    finally:
        db.dispose()


def _events_table(tmp_path: Path, history: bool | None = None) -> tuple[DBConn, DataStore, Any]:
    db = DBConn(f"sqlite:///{tmp_path / 'index.sqlite'}")
    ds = DataStore(db, history=history)
    table = Catalog({"t": Table(TableStoreDB("t", db, [Column("k", Integer, primary_key=True),
                                                      Column("v", Integer)]))}).get_datatable(ds, "t")
    return db, ds, table


def test_threads_writing_at_once_make_one_version_each(tmp_path: Path) -> None:
    import threading

    db, ds, table = _events_table(tmp_path)
    try:
        def work(i: int) -> None:
            for j in range(5):
                table.store_chunk(pd.DataFrame({"k": [i * 100 + j], "v": [j]}))

        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        log = versions.log(ds)
        assert len(log) == 30 and {v.trigger for v in log} == {"store_chunk"}
        assert all(v.tables == {"t": {"added": 1, "updated": 0, "deleted": 0}} for v in log)
        h = ds.history.read("t")
        spans = {v.run_id: (v.seq_from, v.seq_to) for v in log}
        assert all(spans[r][0] < s <= spans[r][1] for r, s in zip(h["_fp_run"], h["_fp_seq"]))
        assert len(versions.as_of(ds, "t")) == 30
    finally:
        db.dispose()


def test_a_reader_leaves_the_versions_of_a_run_in_progress_in_the_inbox(tmp_path: Path) -> None:
    db, ds, table = _events_table(tmp_path)
    try:
        table.store_chunk(pd.DataFrame({"k": [1], "v": [1]}))
        with ds.recording(RunReport(trigger="test")) as report:
            table.store_chunk(pd.DataFrame({"k": [2], "v": [2]}), report=report)
            reader = DataStore(db)  # another process would do the same: `filepipe show --as-of`
            assert versions.as_of(reader, "t")["k"].tolist() == [1]  # run 2 is not logged yet
            with ds.meta.begin() as conn:
                left = conn.exec_driver_sql("SELECT COUNT(*) FROM fp_history_inbox").scalar_one()
            assert left == 1  # still there for the writer to log (or a crash recovery)
        assert versions.as_of(reader, "t")["k"].tolist() == [1, 2]
        assert [v.run_id for v in versions.log(ds)] == [2, 1]
    finally:
        db.dispose()


def test_changes_made_without_history_are_in_the_next_first_version(tmp_path: Path) -> None:
    db, ds, table = _events_table(tmp_path)
    table.store_chunk(pd.DataFrame({"k": [1, 2], "v": [10, 20]}))
    db.dispose()
    db, _, off = _events_table(tmp_path, history=False)
    off.store_chunk(pd.DataFrame({"k": [3], "v": [30]}))
    db.dispose()
    db, ds, table = _events_table(tmp_path)
    try:
        table.store_chunk(pd.DataFrame({"k": [1], "v": [11]}))
        assert versions.as_of(ds, "t")[["k", "v"]].values.tolist() == [[1, 11], [2, 20], [3, 30]]
        assert "history begins" in [v.trigger for v in versions.log(ds)]
    finally:
        db.dispose()


def test_gc_by_days_after_gc_by_runs_and_diff_of_a_dropped_run(tmp_path: Path) -> None:
    db, ds, table = _events_table(tmp_path)
    try:
        for v in range(4):
            table.store_chunk(pd.DataFrame({"k": [1], "v": [v]}))
        versions.gc(ds, keep_runs=1)
        with pytest.raises(FilepipeError, match="older than the history"):
            versions.diff(ds, "t", run=2)
        versions.gc(ds, keep_days=30)  # its cutoff is older than what the first gc kept
        assert versions.diff(ds, "t", run=4).counts["changed"] == 1
    finally:
        db.dispose()
