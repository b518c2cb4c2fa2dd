"""The `filepipe` command, every subcommand through click's CliRunner, on real projects.

Projects live in tmp_path: either made by `filepipe init` (5 order files, one step) or a
copy of examples/sales (60 order files in 3 shop folders + an Excel price list, three
steps). Outputs are read back from out/report.xlsx with pandas (calamine engine), and
"writes nothing" is checked on the bytes and mtimes of .filepipe/meta.sqlite and out/*.

Source files are aged by 10 s before they are first synced: files newer than ~2 s are
re-hashed on the next sync ("racy" rule), which would make a no-op run read them again.

Tests marked xfail(strict=True) pin down bugs outside these test files; each reason says
what goes wrong. When the bug is fixed the test XPASSes and the marker must go.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from cli_apps import close_apps, explain, recording_loaded_apps
from click.testing import CliRunner, Result

from filepipe.cli import main

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sales"
SALES_STEPS = ["price_orders", "customer_totals", "product_totals"]
INIT_TOTALS = {"ACME": 200.5, "Globex": 57.75, "Initech": 310.25}

runner = CliRunner()


# --- helpers ------------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _no_bytecode(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests edit pipeline.py: never let a stale __pycache__ entry stand in for the new text."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)


@pytest.fixture(autouse=True, scope="module")
def _record_loaded_apps() -> Iterator[None]:
    with recording_loaded_apps():
        yield


def invoke(args: list[str], code: int = 0) -> Result:
    result = runner.invoke(main, args)
    close_apps()
    assert result.exit_code == code, explain(result)
    return result


def fp(project: Path, *args: str, code: int = 0) -> Result:
    """`filepipe -p PROJECT/pipeline.py ARGS...`, asserting its exit code."""
    return invoke(["-p", str(project / "pipeline.py"), *args], code)


def one_line_error(result: Result, *fragments: str) -> str:
    """The command failed with a single `Error: ...` line on stderr naming every fragment."""
    assert "Traceback" not in result.output, explain(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), explain(result)
    for fragment in fragments:
        assert fragment in lines[0], explain(result)
    return lines[0]


def age(*roots: Path, seconds: float = 10.0) -> None:
    """Move the mtime of the files (or of every file under the folders) into the past."""
    for root in roots:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for p in files:
            st = p.stat()
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def cells(line: str) -> list[str]:
    return re.split(r" {2,}", line.strip()) if line.strip() else []


def table(text: str, first: str) -> dict[str, list]:
    """Rows of the aligned table whose header starts with `first`: {first cell: other cells}.

    Numeric cells become int/float. The table ends at the first line with another number
    of cells (a blank line, the next table's header, the `done in` line).
    """
    lines = text.splitlines()
    for i, line in enumerate(lines):  # noqa: B007 - i is the header line, used below
        header = cells(line)
        if header and header[0] == first:
            break
    else:
        raise AssertionError(f"no table with a {first!r} column in:\n{text}")
    rows: dict[str, list] = {}
    for line in lines[i + 1:]:
        row = cells(line)
        if len(row) != len(header):
            break
        rows[row[0]] = [_num(c) for c in row[1:]]
    return rows


def _num(cell: str) -> object:
    for kind in (int, float):
        try:
            return kind(cell)
        except ValueError:
            pass
    return cell


def last_line(result: Result) -> str:
    return result.stdout.rstrip("\n").splitlines()[-1]


def report_sheets(project: Path) -> dict[str, pd.DataFrame]:
    return pd.read_excel(project / "out" / "report.xlsx", sheet_name=None, engine="calamine")


def totals(project: Path) -> dict[str, float]:
    df = report_sheets(project)["Summary"]
    return {c: round(float(t), 2) for c, t in zip(df["customer"], df["total"])}


def snapshot(project: Path) -> dict[str, tuple[int, bytes]]:
    """mtime and bytes of the metadata index and of every output file.

    (meta.sqlite-shm, SQLite's shared-memory index of the WAL, changes on reads: left out.)
    """
    files = [p for p in sorted((project / ".filepipe").glob("meta.sqlite*"))
             if not p.name.endswith("-shm")] + sorted((project / "out").glob("*"))
    return {str(p.relative_to(project)): (p.stat().st_mtime_ns, p.read_bytes()) for p in files}


def write_order(project: Path, order_id: str, customer: str, amount: float) -> Path:
    path = project / "inbox" / f"{order_id}.json"
    path.write_text(json.dumps({"customer": customer, "amount": amount}, indent=2) + "\n")
    age(path)
    return path


def new_project(path: Path) -> Path:
    """A project made by `filepipe init PATH` (its order files aged)."""
    result = invoke(["init", str(path)])
    assert "Next: cd" in result.stdout
    age(path / "inbox")
    return path


def copy_sales(dest: Path) -> Path:
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(
        "out", ".filepipe", "__pycache__", "~$*"))
    age(dest)
    return dest


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return new_project(tmp_path / "proj")


@pytest.fixture
def sales(tmp_path: Path) -> Path:
    return copy_sales(tmp_path / "sales")


@pytest.fixture(scope="module")
def sales_done(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    """The sales example after one full run; only read-only commands may use it."""
    root = copy_sales(tmp_path_factory.mktemp("shared") / "sales")
    return root, fp(root, "run")


# --- init ---------------------------------------------------------------------------------

def test_init_creates_a_project_that_runs_from_its_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke(["init", "proj"])
    created = [line.removeprefix("created ") for line in result.stdout.splitlines()
               if line.startswith("created ")]
    assert sorted(created) == sorted(
        [f"proj/inbox/{n}.json" for n in range(1001, 1006)] + ["proj/pipeline.py", "proj/.gitignore"])
    assert last_line(result) == "Next: cd proj && filepipe run"
    assert (tmp_path / "proj" / "out").is_dir()
    assert ".filepipe/" in (tmp_path / "proj" / ".gitignore").read_text()

    age(tmp_path / "proj" / "inbox")
    monkeypatch.chdir(tmp_path / "proj")
    result = invoke(["run"])  # no -p: ./pipeline.py
    assert table(result.stdout, "table")["summary"] == [3, 0, 0, 0]
    assert totals(tmp_path / "proj") == INIT_TOTALS


@pytest.mark.parametrize("where", ["named", "here"])
def test_init_refuses_a_folder_with_a_pipeline(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    (tmp_path / "pipeline.py").write_text("# mine, hands off\n")
    monkeypatch.chdir(tmp_path)
    result = invoke(["init"] if where == "here" else ["init", str(tmp_path)], code=2)
    one_line_error(result, "pipeline.py already exists")
    assert (tmp_path / "pipeline.py").read_text() == "# mine, hands off\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipeline.py"]


# --- run ----------------------------------------------------------------------------------

def test_run_summarizes_what_it_did_and_a_second_run_does_nothing(project: Path) -> None:
    result = fp(project, "run")
    assert table(result.stdout, "table") == {"orders": [5, 0, 0, 0], "summary": [3, 0, 0, 0]}
    assert table(result.stdout, "step") == {"summarize": [3, 0]}
    assert re.fullmatch(r"done in \d+\.\d\ds", last_line(result))
    assert result.stderr == ""
    assert totals(project) == INIT_TOTALS
    assert report_sheets(project)["Summary"].set_index("customer")["orders"].to_dict() == {
        "ACME": 2, "Globex": 2, "Initech": 1}

    # the run after a writing run still moves the steps' high-water marks (BUG-1, see
    # test_first_noop_run_after_a_run_writes_nothing); the one after that writes nothing
    fp(project, "run")
    before = snapshot(project)
    result = fp(project, "run")
    assert re.fullmatch(r"nothing to do in \d+\.\d\ds", result.stdout.strip()), explain(result)
    assert snapshot(project) == before  # no meta rewrite, no output rewrite


def test_first_noop_run_after_a_run_writes_nothing(project: Path) -> None:
    fp(project, "run")
    before = snapshot(project)
    assert fp(project, "run").stdout.startswith("nothing to do")
    assert snapshot(project) == before


def test_run_after_edits_recomputes_only_the_touched_customers(project: Path) -> None:
    fp(project, "run")
    write_order(project, "1003", "Globex", 50.0)      # was 42.0
    write_order(project, "1006", "Umbrella", 99.0)    # new customer
    (project / "inbox" / "1005.json").unlink()        # Globex 15.75; Globex keeps 1003

    result = fp(project, "run")
    # unchanged = rows now - added - updated
    assert table(result.stdout, "table") == {"orders": [1, 1, 1, 3], "summary": [1, 1, 0, 2]}
    assert table(result.stdout, "step") == {"summarize": [2, 0]}
    missing = project.resolve() / "inbox" / "1005.json"
    assert result.stderr == f"MISSING {missing}: not found (rows it held are deleted)\n"
    assert totals(project) == {"ACME": 200.5, "Globex": 50.0, "Initech": 310.25, "Umbrella": 99.0}

    assert fp(project, "run").stdout.startswith("nothing to do")  # (BUG-1: moves the marks)
    before = snapshot(project)
    assert fp(project, "run").stdout.startswith("nothing to do")
    assert snapshot(project) == before


def test_run_step_runs_only_that_step(sales: Path) -> None:
    result = fp(sales, "run", "--step", "price_orders")
    assert table(result.stdout, "step") == {"price_orders": [8, 0]}
    assert table(result.stdout, "table") == {
        "orders": [60, 0, 0, 0], "prices": [8, 0, 0, 0], "priced_orders": [60, 0, 0, 0]}
    sheets = report_sheets(sales)
    assert len(sheets["Orders"]) == 60
    assert "Customers" not in sheets and "Products" not in sheets

    status = table(fp(sales, "status").stdout, "step")
    assert status["price_orders"][:2] == [0, 0]
    assert status["customer_totals"][:2] == [12, 0]
    assert status["product_totals"][:2] == [8, 0]

    result = fp(sales, "run")  # the rest: price_orders has nothing left to do
    assert table(result.stdout, "step") == {"customer_totals": [12, 0], "product_totals": [8, 0]}
    sheets = report_sheets(sales)
    assert len(sheets["Customers"]) == 12 and len(sheets["Products"]) == 8
    orders = sheets["Orders"]
    assert sheets["Customers"]["revenue"].sum() == pytest.approx(orders["amount"].sum())


def test_run_unknown_step_is_a_usage_error_listing_the_steps(sales_done) -> None:
    root, _ = sales_done
    result = fp(root, "run", "--step", "price_orders", "--step", "nope", code=2)
    one_line_error(result, "nope", "price_orders, customer_totals, product_totals")


def test_dry_run_unknown_step_is_a_usage_error(sales_done) -> None:
    root, _ = sales_done
    result = fp(root, "run", "--dry-run", "--step", "nope", code=2)
    one_line_error(result, "nope", "price_orders")


def test_run_full_recomputes_every_key_and_rewrites_nothing_unchanged(project: Path) -> None:
    fp(project, "run")
    before = snapshot(project)
    result = fp(project, "run", "--full")
    assert table(result.stdout, "step") == {"summarize": [3, 0]}
    assert not result.stdout.startswith("table")  # no row changed
    assert re.fullmatch(r"done in \d+\.\d\ds", last_line(result))
    assert totals(project) == INIT_TOTALS
    assert snapshot(project)["out/report.xlsx"] == before["out/report.xlsx"]
    assert fp(project, "run").stdout.startswith("nothing to do")


def test_dry_run_lists_changes_and_pending_steps_and_writes_nothing(project: Path) -> None:
    fp(project, "run")
    write_order(project, "1003", "Globex", 50.0)
    write_order(project, "1006", "Umbrella", 99.0)
    (project / "inbox" / "1005.json").unlink()
    fp(project, "reset", "summarize")  # so that the step has pending keys too
    inbox = project.resolve() / "inbox"
    files_before = sorted(p.relative_to(project) for p in project.rglob("*"))
    before = snapshot(project)

    result = fp(project, "run", "--dry-run")
    lines = result.stdout.splitlines()
    assert lines[:4] == ["Sources changed on disk since the last run:",
                         f"  orders: new {inbox / '1006.json'}",
                         f"  orders: changed {inbox / '1003.json'}",
                         f"  orders: missing {inbox / '1005.json'}"]
    # the three customers of the reset step, and Umbrella of the new file (read, not synced)
    assert table(result.stdout, "step")["summarize"][:2] == [4, 0]
    assert lines[-1] == "Dry run: nothing was written."
    assert result.stderr == ""

    assert snapshot(project) == before
    assert sorted(p.relative_to(project) for p in project.rglob("*")) == files_before
    assert totals(project) == INIT_TOTALS

    # still all to do for the real run
    result = fp(project, "run")
    assert table(result.stdout, "table")["orders"] == [1, 1, 1, 3]
    assert table(result.stdout, "step") == {"summarize": [4, 0]}
    assert totals(project)["Globex"] == 50.0


def test_dry_run_with_nothing_changed(project: Path) -> None:
    fp(project, "run")
    before = snapshot(project)
    result = fp(project, "run", "--dry-run")
    assert result.stdout.splitlines()[0] == "No source file changed since the last run."
    assert table(result.stdout, "step")["summarize"][:2] == [0, 0]
    assert snapshot(project) == before


# --- status, tables, show, steps, graph ----------------------------------------------------

def test_status_shows_tables_steps_and_changed_sources(project: Path) -> None:
    fp(project, "run")
    result = fp(project, "status")
    tables = table(result.stdout, "table")
    assert tables["orders"][:2] == ["source", 5]
    assert tables["summary"][:2] == ["output", 3]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", tables["orders"][2])
    assert tables["orders"][3] == f"{project.resolve()}/inbox/{{order_id}}.json"
    assert tables["summary"][3] == f"{project.resolve()}/out/report.xlsx[Summary]"
    assert table(result.stdout, "step") == {"summarize": [0, 0, "up to date"]}
    assert result.stdout.splitlines()[-1] == "Sources: no file changed since the last run."

    write_order(project, "1003", "Globex", 50.0)
    write_order(project, "1006", "Umbrella", 99.0)
    (project / "inbox" / "1005.json").unlink()
    before = snapshot(project)
    result = fp(project, "status")
    assert result.stdout.splitlines()[-1] == (
        "Source orders: 1 new, 1 changed, 1 missing file(s) since the last run; "
        "rows +1 ~1 -1 (run `filepipe run`)")
    assert snapshot(project) == before  # status reads the changed files, writes nothing


@pytest.mark.parametrize("command", [["status"], ["steps"], ["run", "--dry-run"]])
def test_inspecting_a_project_that_never_ran(project: Path, command: list[str]) -> None:
    result = fp(project, *command)
    assert "summarize" in result.stdout
    assert not (project / "out" / "report.xlsx").exists()


def test_tables(sales_done) -> None:
    root, _ = sales_done
    rows = table(fp(root, "tables").stdout, "table")
    assert {name: r[:2] for name, r in rows.items()} == {
        "orders": ["source", 60], "prices": ["source", 8], "priced_orders": ["output", 60],
        "customers": ["output", 12], "products": ["output", 8]}
    assert rows["orders"][2] == f"{root.resolve()}/inbox/{{shop}}/{{order_id}}.json"
    assert rows["prices"][2] == f"{root.resolve()}/prices.xlsx[Prices]"
    assert rows["customers"][2] == f"{root.resolve()}/out/report.xlsx[Customers]"


def test_run_summary_of_the_sales_example(sales_done) -> None:
    root, result = sales_done
    assert table(result.stdout, "table") == {
        "orders": [60, 0, 0, 0], "prices": [8, 0, 0, 0], "priced_orders": [60, 0, 0, 0],
        "customers": [12, 0, 0, 0], "products": [8, 0, 0, 0]}
    assert table(result.stdout, "step") == {
        "price_orders": [8, 0], "customer_totals": [12, 0], "product_totals": [8, 0]}
    sheets = report_sheets(root)
    assert sorted(sheets) == ["Customers", "Orders", "Products"]
    prices = pd.read_excel(root / "prices.xlsx", sheet_name="Prices", engine="calamine")
    orders = sheets["Orders"].merge(prices[["sku", "unit_price"]], on="sku", suffixes=("", "_src"))
    assert (orders["unit_price"] == orders["unit_price_src"]).all()
    assert orders["amount"].tolist() == pytest.approx((orders["qty"] * orders["unit_price"]).tolist())


def test_status_of_an_up_to_date_project(sales_done) -> None:
    root, _ = sales_done
    result = fp(root, "status")
    assert table(result.stdout, "step") == {s: [0, 0, "up to date"] for s in SALES_STEPS}
    assert result.stdout.splitlines()[-1] == "Sources: no file changed since the last run."


def test_show_formats_and_limit(sales_done) -> None:
    root, _ = sales_done
    out = fp(root, "show", "priced_orders").stdout.splitlines()
    assert out[0].split() == ["shop", "order_id", "date", "customer", "sku", "product", "qty",
                             "unit_price", "amount"]
    assert len(out) == 1 + 20  # default --limit 20
    assert len(fp(root, "show", "priced_orders", "--limit", "3").stdout.splitlines()) == 1 + 3
    assert len(fp(root, "show", "priced_orders", "--limit", "0").stdout.splitlines()) == 1 + 60

    records = json.loads(fp(root, "show", "customers", "--limit", "0", "--format", "json").stdout)
    sheet = report_sheets(root)["Customers"]
    assert {r["customer"]: (r["orders"], r["items"], round(r["revenue"], 2)) for r in records} == {
        r.customer: (r.orders, r.items, round(r.revenue, 2)) for r in sheet.itertuples()}

    csv = fp(root, "show", "products", "--limit", "0", "--format", "csv").stdout
    df = pd.read_csv(io.StringIO(csv))
    assert list(df.columns) == ["sku", "product", "units", "revenue"]
    assert sorted(df["sku"]) == sorted(report_sheets(root)["Products"]["sku"])


def test_show_where(sales_done) -> None:
    root, _ = sales_done
    orders = {(p.parent.name, p.stem): json.loads(p.read_text())
              for p in (root / "inbox").glob("*/*.json")}
    berlin = {oid for shop, oid in orders if shop == "berlin"}
    csv = fp(root, "show", "priced_orders", "--where", "shop=berlin", "--limit", "0",
             "--format", "csv").stdout
    df = pd.read_csv(io.StringIO(csv), dtype={"order_id": str})
    assert set(df["shop"]) == {"berlin"}
    assert set(df["order_id"]) == berlin

    expected = {oid for (shop, oid), o in orders.items() if shop == "berlin" and o["sku"] == "A-200"}
    records = json.loads(fp(root, "show", "priced_orders", "--where", "shop=berlin",
                            "--where", "sku=A-200", "--limit", "0", "--format", "json").stdout)
    assert expected and {str(r["order_id"]) for r in records} == expected

    assert fp(root, "show", "customers", "--where", "customer=Nobody").stdout == "(no rows)\n"


@pytest.mark.parametrize("where", ["nosuch=1", "shop"])
def test_show_bad_where_names_the_columns(sales_done, where: str) -> None:
    root, _ = sales_done
    result = fp(root, "show", "priced_orders", "--where", where, code=2)
    assert "Traceback" not in result.output
    assert f"Invalid value: '{where}': expected COLUMN=VALUE with a column of priced_orders " \
           "(shop, order_id, date, customer, sku, product, qty, unit_price, amount)" in result.stderr


def test_show_unknown_table(sales_done) -> None:
    root, _ = sales_done
    line = one_line_error(fp(root, "show", "nope", code=2), "unknown table 'nope'")
    for name in ("orders", "prices", "priced_orders", "customers", "products"):
        assert name in line


def test_steps(sales_done) -> None:
    root, _ = sales_done
    assert table(fp(root, "steps").stdout, "step") == {
        "price_orders": ["orders, prices", "priced_orders", "sku"],
        "customer_totals": ["priced_orders", "customers", "customer"],
        "product_totals": ["priced_orders", "products", "sku"]}


def test_graph_text(sales_done) -> None:
    root, _ = sales_done
    assert fp(root, "graph").stdout.splitlines() == [
        "orders, prices --[price_orders]--> priced_orders",
        "priced_orders --[customer_totals]--> customers",
        "priced_orders --[product_totals]--> products"]


def test_graph_mermaid(sales_done) -> None:
    root, _ = sales_done
    out = fp(root, "graph", "--format", "mermaid").stdout
    assert out.startswith("flowchart")
    lines = [line.strip() for line in out.splitlines()]
    for line in ["step_price_orders{{price_orders}}",
                 "t_orders[(orders)] --> step_price_orders",
                 "t_prices[(prices)] --> step_price_orders",
                 "step_price_orders --> t_priced_orders[(priced_orders)]",
                 "t_priced_orders[(priced_orders)] --> step_customer_totals",
                 "step_product_totals --> t_products[(products)]"]:
        assert line in lines, out


def test_graph_dot(sales_done) -> None:
    root, _ = sales_done
    out = fp(root, "graph", "--format", "dot").stdout
    assert out.startswith("digraph")
    assert out.rstrip().endswith("}")
    lines = [line.strip() for line in out.splitlines()]
    for line in ['"orders" -> "step:price_orders";', '"prices" -> "step:price_orders";',
                 '"step:price_orders" -> "priced_orders";',
                 '"priced_orders" -> "step:customer_totals";',
                 '"step:customer_totals" -> "customers";']:
        assert line in lines, out
    assert out.count("{") == out.count("}")


def test_graph_unknown_format_is_a_usage_error(sales_done) -> None:
    root, _ = sales_done
    result = fp(root, "graph", "--format", "png", code=2)
    assert "'png' is not one of 'text', 'mermaid', 'dot'" in result.stderr


# --- reset --------------------------------------------------------------------------------

def test_reset_makes_the_next_run_recompute_every_key(project: Path) -> None:
    fp(project, "run")
    before = snapshot(project)
    result = fp(project, "reset", "summarize")
    assert result.stdout == "summarize: every key will be recomputed by the next `filepipe run`\n"
    assert table(fp(project, "status").stdout, "step")["summarize"][:2] == [3, 0]

    result = fp(project, "run")
    assert table(result.stdout, "step") == {"summarize": [3, 0]}
    assert totals(project) == INIT_TOTALS
    assert snapshot(project)["out/report.xlsx"] == before["out/report.xlsx"]  # same rows
    assert fp(project, "run").stdout.startswith("nothing to do")


def test_reset_unknown_step(project: Path) -> None:
    one_line_error(fp(project, "reset", "nope", code=2), "nope", "summarize")


# --- pipeline loading errors ------------------------------------------------------------------

def test_missing_pipeline_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "nowhere" / "pipeline.py"
    one_line_error(invoke(["-p", str(target), "status"], code=2),
                   f"pipeline file not found: {target}", "filepipe init")
    monkeypatch.chdir(tmp_path)
    one_line_error(invoke(["run"], code=2), "pipeline file not found: pipeline.py")
    assert list(tmp_path.iterdir()) == []  # nothing created


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.py"
    path.write_text("import pandas as pd\n\ndef broken(:\n    pass\n")
    one_line_error(invoke(["-p", str(path), "run"], code=2),
                   "syntax error", f"{path.resolve()}:3")


def test_pipeline_that_raises_while_loading(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.py"
    path.write_text("x = 1\nraise RuntimeError('config.ini not found')\n")
    one_line_error(invoke(["-p", str(path), "status"], code=2),
                   str(path.resolve()), "RuntimeError: config.ini not found")


def test_pipeline_without_app(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.py"
    path.write_text("from filepipe import FilepipeApp\n\napplication = None\n")
    one_line_error(invoke(["-p", str(path), "run"], code=2),
                   "no FilepipeApp named 'app'", "app = FilepipeApp(catalog, pipeline)")


def test_app_under_another_name(project: Path) -> None:
    path = project / "pipeline.py"
    path.write_text(path.read_text().replace("\napp = FilepipeApp(", "\nmy_app = FilepipeApp("))
    one_line_error(fp(project, "tables", code=2), "no FilepipeApp named 'app'",
                   f"-p {path}:my_app")
    rows = table(invoke(["-p", f"{path}:my_app", "tables"]).stdout, "table")
    assert sorted(rows) == ["orders", "summary"]


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_xyz", "cannot import pipeline module 'no_such_module_xyz'"),
    ("json", "json has no FilepipeApp named 'app'"),
])
def test_pipeline_module_errors(spec: str, message: str) -> None:
    one_line_error(invoke(["-p", spec, "tables"], code=2), message)


def test_debug_raises_the_error_with_its_traceback(tmp_path: Path) -> None:
    from filepipe.errors import PipelineLoadError

    target = tmp_path / "pipeline.py"
    result = runner.invoke(main, ["--debug", "-p", str(target), "status"])
    assert isinstance(result.exception, PipelineLoadError), explain(result)
    assert result.exit_code == 1  # an uncaught exception; without --debug it is 2
    assert "Error: pipeline file not found" not in result.output
    tb = "".join(traceback.format_exception(*result.exc_info))
    assert "load_app" in tb and "pipeline file not found" in tb

    with pytest.raises(PipelineLoadError):
        runner.invoke(main, ["--debug", "-p", str(target), "status"], catch_exceptions=False)


# --- failing steps -------------------------------------------------------------------------

FAILING_PIPELINE = '''
import pandas as pd

from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
from filepipe.stores import TableStoreExcel, TableStoreFiledir

BLOCKED = {"Globex"}


def check(orders):
    blocked = sorted(set(orders["customer"]) & BLOCKED)
    if blocked:
        raise ValueError(f"no credit limit for {blocked[0]}\\nsecond line of the message")


def summarize(orders: pd.DataFrame) -> pd.DataFrame:
    %(body_check)s
    return (orders.groupby("customer", as_index=False)
            .agg(orders=("order_id", "count"), total=("amount", "sum")))


catalog = Catalog({
    "orders": Table(TableStoreFiledir("inbox/{order_id}.json")),
    "summary": Table(TableStoreExcel("out/report.xlsx", sheet="Summary",
                                     primary_keys=["customer"])),
})
app = FilepipeApp(catalog, Pipeline([
    BatchTransform(summarize, inputs=["orders"], outputs=["summary"],
                   transform_keys=["customer"], chunk_size=1),
]))
'''


def failing_run(project: Path, body_check: str) -> None:
    (project / "pipeline.py").write_text(FAILING_PIPELINE % {"body_check": body_check})
    result = fp(project, "run", code=1)
    assert table(result.stdout, "table") == {"orders": [5, 0, 0, 0], "summary": [2, 0, 0, 0]}
    assert table(result.stdout, "step") == {"summarize": [3, 1]}
    assert re.fullmatch(r"finished with errors in \d+\.\d\ds", last_line(result))
    # one line: the message's first line and where in the user's code it was raised
    assert re.fullmatch(r"FAILED summarize: ValueError: no credit limit for Globex "
                        r"\(at .*pipeline\.py:\d+ in check\)\n", result.stderr), result.stderr
    assert totals(project) == {"ACME": 200.5, "Initech": 310.25}  # the other keys committed

    result = fp(project, "status")
    assert table(result.stdout, "step") == {"summarize": [1, 1, "1 key(s) failed last time"]}
    assert any(re.fullmatch(r"  summarize failed: ValueError: no credit limit for Globex "
                            r"\(at .*pipeline\.py:\d+ in check\)", line)
               for line in result.stdout.splitlines()), result.stdout
    assert "second line" not in result.stdout


def test_failing_keys_exit_1_and_are_retried_after_the_fix(project: Path) -> None:
    failing_run(project, body_check="check(orders)")
    path = project / "pipeline.py"
    path.write_text(path.read_text().replace('BLOCKED = {"Globex"}', "BLOCKED = set()"))

    result = fp(project, "run")
    # BLOCKED is a module constant the step reads: part of its code version, so every
    # key is redone; only Globex's total was missing from the output
    assert table(result.stdout, "step") == {"summarize": [3, 0]}
    assert table(result.stdout, "table") == {"summary": [1, 0, 0, 2]}
    assert result.stderr == ""
    assert totals(project) == INIT_TOTALS
    result = fp(project, "status")
    assert table(result.stdout, "step") == {"summarize": [0, 0, "up to date"]}
    assert "failed:" not in result.stdout


def test_fixing_the_step_body_recomputes_every_key(project: Path) -> None:
    """Editing the step function's own source changes its code version: every key reruns."""
    failing_run(project, body_check="check(orders)  # the bug is here")
    path = project / "pipeline.py"
    path.write_text(path.read_text().replace("check(orders)  # the bug is here", "pass"))

    status = table(fp(project, "status").stdout, "step")
    assert status["summarize"][1:] == [1, "code or parameters changed"]
    result = fp(project, "run")
    assert table(result.stdout, "step") == {"summarize": [3, 0]}
    assert totals(project) == INIT_TOTALS


def test_failing_rerun_without_a_fix_retries_only_the_failed_key(project: Path) -> None:
    failing_run(project, body_check="check(orders)")
    result = fp(project, "run", code=1)
    assert table(result.stdout, "step") == {"summarize": [1, 1]}
    assert not result.stdout.startswith("table")  # nothing new was written


# --- missing and unreadable sources -----------------------------------------------------------

def test_deleted_order_file_is_reported_and_its_rows_removed(project: Path) -> None:
    fp(project, "run")
    (project / "inbox" / "1002.json").unlink()  # ACME 80.5; ACME keeps 1001
    result = fp(project, "run")  # exit 0: deleting a file is a normal change
    gone = project.resolve() / "inbox" / "1002.json"
    assert result.stderr == f"MISSING {gone}: not found (rows it held are deleted)\n"
    assert table(result.stdout, "table") == {"orders": [0, 0, 1, 4], "summary": [0, 1, 0, 2]}
    assert totals(project)["ACME"] == 120.0


def test_deleting_a_customers_last_order_deletes_its_total(project: Path) -> None:
    fp(project, "run")
    (project / "inbox" / "1004.json").unlink()  # Initech's only order
    result = fp(project, "run")
    assert table(result.stdout, "table")["summary"] == [0, 0, 1, 2]
    assert totals(project) == {"ACME": 200.5, "Globex": 57.75}


def test_source_folder_deleted_after_a_run(project: Path) -> None:
    """A vanished folder is refused, outputs kept; --allow-deletes deletes its rows."""
    fp(project, "run")
    shutil.rmtree(project / "inbox")
    result = fp(project, "run", code=1)
    assert "NOT SYNCED orders: its folder" in result.stderr and "does not exist" in result.stderr
    assert "--allow-deletes" in result.stderr
    assert totals(project) == INIT_TOTALS
    result = fp(project, "run", "--allow-deletes")
    assert result.stderr.count("MISSING") == 5
    assert table(result.stdout, "table") == {"orders": [0, 0, 5, 0], "summary": [0, 0, 3, 0]}
    assert report_sheets(project)["Summary"].empty
    assert fp(project, "run").stdout.startswith("nothing to do")


def remove_source(tmp_path: Path, kind: str) -> tuple[Path, str]:
    if kind == "folder":
        root = new_project(tmp_path / "proj")
        shutil.rmtree(root / "inbox")
        return root, "inbox"
    root = copy_sales(tmp_path / "sales")
    (root / "prices.xlsx").unlink()
    for shop in ("lisbon", "online"):  # fewer files: a quicker test
        shutil.rmtree(root / "inbox" / shop)
    return root, "prices.xlsx"


def test_missing_source_folder_on_the_first_run_is_not_synced(tmp_path: Path) -> None:
    """A source whose folder is missing is an error naming it (exit 1); the step reading it
    waits instead of failing every key; status still works."""
    root, missing = remove_source(tmp_path, "folder")
    result = fp(root, "run", code=1)
    assert "Traceback" not in result.output
    assert not any(line.startswith("Error:") for line in result.output.splitlines())
    assert "NOT SYNCED" in result.stderr and missing in result.stderr
    assert "WAITING summarize: the sync of" in result.stderr
    assert "FAILED" not in result.stderr
    fp(root, "status")


def test_missing_source_workbook_on_the_first_run_does_not_crash(tmp_path: Path) -> None:
    """A workbook not there yet (its folder is) is an empty table: price_orders fails every
    key on its own KeyError, and says so."""
    root, _ = remove_source(tmp_path, "excel")
    result = fp(root, "run", code=1)
    assert "Traceback" not in result.output
    assert table(result.stdout, "step") == {"price_orders": [8, 8]}
    assert "FAILED price_orders: KeyError: 'unit_price'" in result.stderr
    fp(root, "status")


@pytest.mark.parametrize("kind", ["folder", "excel"])
def test_missing_source_on_the_first_run_is_named(tmp_path: Path, kind: str) -> None:
    root, missing = remove_source(tmp_path, kind)
    result = runner.invoke(main, ["-p", str(root / "pipeline.py"), "run"])
    close_apps()
    assert missing in result.output, explain(result)


def test_unreadable_file_is_reported_and_the_rest_goes_on(project: Path) -> None:
    fp(project, "run")
    bad = project / "inbox" / "1006.json"
    bad.write_text("{not json")
    age(bad)
    write_order(project, "1007", "Umbrella", 99.0)
    result = fp(project, "run", code=1)
    assert f"UNREADABLE {bad.resolve()}: " in result.stderr
    assert "not valid JSON" in result.stderr
    assert table(result.stdout, "table")["summary"] == [1, 0, 0, 3]
    assert totals(project) == {**INIT_TOTALS, "Umbrella": 99.0}
    assert last_line(result).startswith("finished with errors")

    bad.unlink()
    assert fp(project, "run").stdout.startswith("nothing to do")


def test_unreadable_file_on_the_first_run(project: Path) -> None:
    bad = project / "inbox" / "1006.json"
    bad.write_text("{not json")
    age(bad)
    result = fp(project, "run", code=1)
    assert f"UNREADABLE {bad.resolve()}: " in result.stderr
    assert totals(project) == INIT_TOTALS


# --- the writer lock -----------------------------------------------------------------------

def test_commands_that_write_refuse_while_another_holds_the_lock(project: Path) -> None:
    from filepipe.app import load_app

    fp(project, "run")
    write_order(project, "1006", "Umbrella", 99.0)
    app = load_app(str(project / "pipeline.py"))
    before = snapshot(project)
    with app.lock():
        for command in (["run"], ["run", "--full"], ["reset", "summarize"], ["watch"]):
            line = one_line_error(fp(project, *command, code=2), "another filepipe is already running")
            assert str(project.resolve()) in line and f"pid {os.getpid()}" in line
        # read-only commands still work
        assert "1 new file(s)" in fp(project, "status").stdout
        assert "summarize" in fp(project, "run", "--dry-run").stdout
    assert snapshot(project) == before
    result = fp(project, "run")
    assert table(result.stdout, "step") == {"summarize": [1, 0]}
    assert totals(project)["Umbrella"] == 99.0


# --- misc ----------------------------------------------------------------------------------

def test_help_and_version() -> None:
    out = invoke(["--help"]).stdout
    for command in ("run", "watch", "status", "tables", "show", "steps", "graph", "reset", "init"):
        assert re.search(rf"^  {command}\s", out, re.M), out
    assert "0.1.0" in invoke(["--version"]).stdout
    assert "--dry-run" in invoke(["run", "--help"]).stdout
