"""A CLI that tells the truth and fits people's habits (issue 11, section 3).

`run --dry-run` and `status` count the keys each step would recompute from the changed
source files (read and hashed, nothing committed, nothing written); `status --format json`
and `status --check`; -q/-v on every command; colours on a terminal only (NO_COLOR);
progress bars on a terminal only; dbt-like step selection; a quiet `watch`; exact floats
in JSON. Real files, the real index, click's CliRunner (a pseudo-terminal for progress).
"""

from __future__ import annotations

import io
import json
import os
import pty
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_cli import (  # noqa: F401 - the two fixtures close the apps each command loads
    _no_bytecode,
    _record_loaded_apps,
    age,
    close_apps,
    copy_sales,
    explain,
    fp,
    new_project,
    report_sheets,
    snapshot,
    table,
    write_order,
)

from filepipe.cli import main


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """`filepipe init` (orders 1001-1005 of ACME, Globex, Initech → Summary), run once."""
    root = new_project(tmp_path / "proj")
    fp(root, "run")
    return root


@pytest.fixture
def sales(tmp_path: Path) -> Path:
    return copy_sales(tmp_path / "sales")


def everything(root: Path) -> dict[str, tuple[int, bytes]]:
    """mtime and bytes of every file of the project: sources, outputs, the index
    (but SQLite's -shm, which reads change)."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith("-shm")
            and "__pycache__" not in p.parts}


def keys_line(text: str, step: str) -> str:
    """The values listed for `step` in the keys section: ``step (columns): a, b``."""
    for line in text.splitlines():
        if line.strip().startswith(f"{step} ("):
            return line.split("): ", 1)[1]
    raise AssertionError(f"no keys listed for {step}:\n{text}")


def order_file(root: Path, shop: str, order_id: str) -> Path:
    return root / "inbox" / shop / f"{order_id}.json"


def edit_json(path: Path, **changes: object) -> None:
    record = json.loads(path.read_text())
    record.update(changes)
    path.write_text(json.dumps(record, indent=2))
    age(path)


# --- run --dry-run and status count the keys from the changed files ---------------------------

def test_dry_run_counts_the_keys_of_edited_added_and_deleted_files_and_writes_nothing(
        project: Path) -> None:
    write_order(project, "1003", "Globex", 50.0)      # an edited row
    write_order(project, "1006", "Umbrella", 99.0)    # an added file
    (project / "inbox" / "1002.json").unlink()        # a deleted file: ACME's row goes
    before = everything(project)

    result = fp(project, "run", "--dry-run")
    assert table(result.stdout, "step")["summarize"][:2] == [3, 0]
    assert keys_line(result.stdout, "summarize") == "ACME, Globex, Umbrella"
    assert "  orders: a sync would add 1 row(s), change 1, delete 1" in result.stdout
    assert result.stdout.splitlines()[-1] == "Dry run: nothing was written."
    status = fp(project, "status")
    assert table(status.stdout, "step")["summarize"][:2] == [3, 0]
    assert keys_line(status.stdout, "summarize") == "ACME, Globex, Umbrella"
    assert everything(project) == before  # the index, the outputs, the sources: untouched

    # the run does exactly that
    result = fp(project, "run")
    assert table(result.stdout, "step") == {"summarize": [3, 0]}
    assert table(fp(project, "status").stdout, "step")["summarize"][:2] == [0, 0]


def test_a_row_moving_between_groups_counts_its_old_and_new_group(project: Path) -> None:
    write_order(project, "1003", "Initech", 42.0)     # was Globex's
    result = fp(project, "status")
    assert table(result.stdout, "step")["summarize"][:3] == [2, 0, "source files changed"]
    assert keys_line(result.stdout, "summarize") == "Globex, Initech"
    assert table(fp(project, "run").stdout, "step") == {"summarize": [2, 0]}


def test_a_file_saved_again_with_the_same_rows_is_not_pending(project: Path) -> None:
    path = project / "inbox" / "1003.json"
    path.write_text(json.dumps(json.loads(path.read_text())))  # other bytes, same row
    age(path)
    result = fp(project, "status", "--check")
    assert table(result.stdout, "step")["summarize"] == [0, 0, "up to date"]
    assert "Source orders: 1 changed file(s) since the last run; rows +0 ~0 -0" in result.stdout


def test_status_counts_keys_through_two_inputs_and_says_what_steps_below_wait_for(
        sales: Path) -> None:
    import openpyxl

    fp(sales, "run")
    edit_json(order_file(sales, "berlin", "1003"), qty=7)
    book = openpyxl.load_workbook(sales / "prices.xlsx")
    sheet = book["Prices"]
    skus = [sheet.cell(row=r, column=1).value for r in range(2, sheet.max_row + 1)]
    sheet.cell(row=2 + skus.index("C-100"), column=3).value = 99.5   # a price edited
    book.save(sales / "prices.xlsx")
    age(sales / "prices.xlsx")
    before = everything(sales)

    result = fp(sales, "status")
    steps = table(result.stdout, "step")
    assert steps["price_orders"][:2] == [2, 0]
    assert keys_line(result.stdout, "price_orders") == "A-200, C-100"  # the order's, the price's
    # what the steps below recompute depends on the rows price_orders writes
    for below in ("customer_totals", "product_totals"):
        assert steps[below] == ["0+", 0, "+ what price_orders changes"]
    fp(sales, "status", "--check", code=1)
    assert everything(sales) == before

    result = fp(sales, "run")
    assert table(result.stdout, "step")["price_orders"] == steps["price_orders"][:2]
    fp(sales, "status", "--check")


def test_dry_run_full_and_a_selection(sales: Path) -> None:
    fp(sales, "run")
    result = fp(sales, "run", "--dry-run", "--full", "--step", "customer_totals+")
    assert table(result.stdout, "step") == {"customer_totals": [12, 0, "recomputes every key (--full)"]}
    assert "(+2 more)" in keys_line(result.stdout, "customer_totals")
    assert len(keys_line(fp(sales, "-v", "run", "--dry-run", "--full").stdout,
                         "customer_totals").split(", ")) == 12


def test_status_of_a_project_that_never_ran(tmp_path: Path) -> None:
    root = new_project(tmp_path / "proj")
    result = fp(root, "status", "--check", code=1)
    assert table(result.stdout, "step")["summarize"][:2] == [3, 0]
    assert keys_line(result.stdout, "summarize") == "ACME, Globex, Initech"
    assert not (root / "out" / "report.xlsx").exists()


# --- status --format json, status --check ----------------------------------------------------

def test_status_json_and_check(project: Path) -> None:
    result = fp(project, "status", "--format", "json", "--check")
    found = json.loads(result.stdout)
    assert found["up_to_date"] is True and found["pending"] is False and found["failed"] == 0
    assert {t["table"]: t["rows"] for t in found["tables"]} == {"orders": 5, "summary": 3}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d",
                        found["tables"][0]["last_change"])
    [step] = found["steps"]
    assert (step["name"], step["pending"], step["keys"], step["state"]) == \
        ("summarize", 0, [], "up to date")

    write_order(project, "1006", "Umbrella", 99.0)
    result = fp(project, "status", "--format", "json", "--check", code=1)
    found = json.loads(result.stdout)
    assert found["up_to_date"] is False and found["pending"] is True
    [step] = found["steps"]
    assert step["pending"] == 1 and step["keys"] == [{"customer": "Umbrella"}]
    assert step["keys_complete"] and not step["pending_is_lower_bound"]
    [source] = found["sources"]
    assert source["new"] == [str(project.resolve() / "inbox" / "1006.json")]
    assert source["rows"] == {"added": 1, "updated": 0, "deleted": 0}
    assert fp(project, "status", "-q", "--check", code=1).stdout.startswith("step")

    fp(project, "run")
    assert fp(project, "status", "-q", "--check").stdout == ""


def test_status_check_fails_on_failed_keys_and_unreadable_files(project: Path) -> None:
    bad = project / "inbox" / "1007.json"
    bad.write_text("{not json")
    age(bad)
    result = fp(project, "status", "--check", code=1)
    assert f"UNREADABLE {bad.resolve()}" in result.stderr
    bad.unlink()

    path = project / "pipeline.py"
    path.write_text(path.read_text().replace(
        "def summarize(orders: pd.DataFrame) -> pd.DataFrame:\n",
        "def summarize(orders: pd.DataFrame) -> pd.DataFrame:\n"
        "    if (orders['customer'] == 'Globex').any():\n"
        "        raise ValueError('no Globex')\n"))
    fp(project, "run", code=1)  # one batch of the three customers: all three fail
    found = json.loads(fp(project, "status", "--format", "json", "--check", code=1).stdout)
    assert found["failed"] == 3 and found["steps"][0]["pending"] == 3
    assert found["steps"][0]["keys"] == [{"customer": c} for c in ("ACME", "Globex", "Initech")]
    assert "ValueError: no Globex" in found["steps"][0]["errors"][0]


# --- -q and -v on every command ----------------------------------------------------------------

def test_every_command_takes_quiet_and_verbose() -> None:
    for name, command in main.commands.items():
        flags = {opt for p in command.params for opt in p.opts}
        assert {"-q", "--quiet", "-v", "--verbose"} <= flags, name
    result = CliRunner().invoke(main, ["status", "-q", "-v"])
    assert result.exit_code == 2 and "not both" in result.stderr


def test_quiet_and_verbose_run_and_status(project: Path) -> None:
    write_order(project, "1006", "Umbrella", 99.0)
    assert fp(project, "run", "-q").stdout == ""
    assert fp(project, "-q", "status").stdout == ""           # up to date: nothing to say
    write_order(project, "1007", "Umbrella", 1.0)
    result = fp(project, "-v", "run")
    assert list(table(result.stdout, "step")) == ["summarize"]
    assert re.search(r"^step\s+keys processed\s+failed\s+seconds$", result.stdout, re.M)
    reset = fp(project, "reset", "summarize", "--quiet")
    assert reset.stdout == ""
    created = fp(project.parent, "init", str(project.parent / "other"), "-q")
    assert created.stdout == ""


# --- colours -------------------------------------------------------------------------------------

def test_colours_on_a_terminal_only_and_never_with_no_color(project: Path) -> None:
    bad = project / "inbox" / "1007.json"
    bad.write_text("{not json")
    age(bad)
    args = ["-p", str(project / "pipeline.py"), "status"]
    coloured = CliRunner().invoke(main, args, color=True)   # as on a terminal
    close_apps()
    assert "\x1b[" in coloured.output, explain(coloured)
    assert "\x1b[" not in CliRunner().invoke(main, args).output  # not a terminal
    close_apps()
    plain = CliRunner(env={"NO_COLOR": "1"}).invoke(main, args, color=True)
    close_apps()
    assert "UNREADABLE" in plain.stderr and "\x1b[" not in plain.output, explain(plain)


# --- progress on a terminal ----------------------------------------------------------------------

class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_shows_position_rate_and_time_left() -> None:
    from filepipe.cli import _Progress

    screen = Terminal()
    progress = _Progress(screen)
    progress.step("totals", 10, 1000)
    time.sleep(1.05)  # click shows the time left once a second has passed
    progress.step("totals", 500, 1000)
    progress.read("orders", 3, 10)  # a new bar for reading a source: the first one ends
    progress.close()
    text = screen.getvalue()
    assert re.search(r"totals\s+\[#+-+\]\s+500/1000\s+50%\s+00:00:0\d\s+[\d,]+ keys/s", text), text
    assert re.search(r"reading orders\s+\[#+-+\]\s+3/10\s+30%\s+[\d,]+ files/s", text), text


def run_on_a_terminal(root: Path, *args: str) -> tuple[int, str, str]:
    """`filepipe ARGS` with stderr on a pseudo-terminal (stdout piped): code, stdout, screen."""
    master, slave = pty.openpty()
    cmd = [sys.executable, "-c", "from filepipe.cli import main; main()", "-p",
           str(root / "pipeline.py"), *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, text=True,
                            env={**os.environ, "NO_COLOR": ""})
    os.close(slave)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the process closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    out, _ = proc.communicate(timeout=120)
    reader.join(10)
    os.close(master)
    return proc.returncode, out, b"".join(chunks).decode(errors="replace")


def test_run_on_a_terminal_shows_a_bar_per_step_and_keeps_stdout_clean(sales: Path) -> None:
    code, out, screen = run_on_a_terminal(sales, "run")
    assert code == 0, screen
    for step, total in (("price_orders", 8), ("customer_totals", 12), ("product_totals", 8)):
        assert re.search(rf"{step}\s+\[#+\]\s+{total}/{total}\s+100%.*keys/s", screen), screen
    assert "\r" not in out and "keys/s" not in out
    assert table(out, "step")["price_orders"] == [8, 0]
    edit_json(order_file(sales, "berlin", "1003"), qty=2)
    code, out, screen = run_on_a_terminal(sales, "run", "-q")
    assert (code, out, screen.strip()) == (0, "", "")


def test_run_on_a_terminal_shows_a_bar_while_reading_sources(sales: Path) -> None:
    code, _, screen = run_on_a_terminal(sales, "run")
    assert code == 0, screen
    assert re.search(r"reading orders\s+\[#+\]\s+60/60\s+100%.*files/s", screen), screen


# --- step selection like dbt -----------------------------------------------------------------------

def test_step_selection_with_plus(sales: Path) -> None:
    result = fp(sales, "run", "--step", "+customer_totals")  # it and what it needs
    assert table(result.stdout, "step") == {"price_orders": [8, 0], "customer_totals": [12, 0]}
    assert "Products" not in report_sheets(sales)

    edit_json(order_file(sales, "berlin", "1003"), qty=5)
    result = fp(sales, "run", "--dry-run", "--step", "product_totals+")
    assert list(table(result.stdout, "step")) == ["product_totals"]
    result = fp(sales, "run", "--step", "price_orders+")     # it and every step below
    assert list(table(result.stdout, "step")) == ["price_orders", "customer_totals", "product_totals"]
    assert "Products" in report_sheets(sales)

    edit_json(order_file(sales, "berlin", "1003"), qty=6)
    result = fp(sales, "run", "--step", "price_orders", "--step", "product_totals")
    assert list(table(result.stdout, "step")) == ["price_orders", "product_totals"]
    status = table(fp(sales, "status").stdout, "step")
    assert status["customer_totals"][:2] == [1, 0]

    line = fp(sales, "run", "--step", "nope+", code=2).stderr
    assert "unknown step(s) nope+" in line and "NAME+ selects a step" in line


def test_reset_takes_a_selection(sales: Path) -> None:
    fp(sales, "run")
    result = fp(sales, "reset", "customer_totals+")
    assert result.stdout.startswith("customer_totals: every key")
    result = fp(sales, "reset", "+customer_totals")
    assert result.stdout.startswith("price_orders, customer_totals: every key")


# --- watch: quiet unless something happened ---------------------------------------------------------

WATCH_PIPELINE = '''
from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
from filepipe.stores import TableStoreCSV


def summarize(orders):
    return orders.groupby("customer", as_index=False)["amount"].sum()


catalog = Catalog({
    "orders": Table(TableStoreCSV("data/orders.csv", primary_keys=["order_id"])),
    "summary": Table(TableStoreCSV("data/summary.csv", primary_keys=["customer"])),
})
app = FilepipeApp(catalog, Pipeline([BatchTransform(summarize, inputs=["orders"],
                                                    outputs=["summary"],
                                                    transform_keys=["customer"])]))
'''


def watch_lines(tmp_path: Path, verbosity: int, rescans: int = 3) -> list[str]:
    """Log lines of `watch` with a full sync every 0.2 s, until `rescans` of them ran."""
    from filepipe.app import load_app
    from filepipe.watch import watch

    root = tmp_path / f"v{verbosity + 1}"
    (root / "data").mkdir(parents=True)
    (root / "pipeline.py").write_text(WATCH_PIPELINE)
    (root / "data" / "orders.csv").write_text("order_id,customer,amount\n1,a,10\n2,b,5\n")
    age(root / "data" / "orders.csv")
    app = load_app(str(root / "pipeline.py"))
    lines: list[str] = []
    cycles: list[object] = []
    stop = threading.Event()

    def on_cycle(report: object) -> None:
        cycles.append(report)
        if len(cycles) > rescans:
            stop.set()

    thread = threading.Thread(target=watch, kwargs=dict(
        app=app, rescan_every=0.2, echo=lines.append, stop=stop, on_cycle=on_cycle,
        verbosity=verbosity), daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive() and len(cycles) > rescans
    app.ds.meta_dbconn.dispose()
    return lines


def test_watch_logs_a_periodic_full_sync_only_when_it_did_something_or_with_v(
        tmp_path: Path) -> None:
    lines = watch_lines(tmp_path, verbosity=0)
    assert any("startup: full sync" in ln and "summary +2" in ln for ln in lines), lines
    assert not any("periodic full sync" in ln for ln in lines), lines
    assert lines[-1].endswith("stopped after 4 cycle(s)")

    lines = watch_lines(tmp_path, verbosity=1)
    assert sum("periodic full sync | rows: no change" in ln for ln in lines) == 3, lines

    lines = watch_lines(tmp_path, verbosity=-1)
    assert lines == [], lines


def test_watch_command_passes_verbosity(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import filepipe.watch

    seen: dict[str, object] = {}
    monkeypatch.setattr(filepipe.watch, "watch", lambda app, **kw: seen.update(kw))
    fp(project, "watch", "-v")
    assert seen["verbosity"] == 1
    fp(project, "-q", "watch")
    assert seen["verbosity"] == -1


# --- show --format json keeps every digit --------------------------------------------------------------

def test_show_json_keeps_full_float_precision(project: Path) -> None:
    values = {"2001": 0.1 + 0.2, "2002": 2 / 3, "2003": 1e-20, "2004": 123456789.12345679}
    for order_id, amount in values.items():
        write_order(project, order_id, "Precise", amount)
    fp(project, "run")
    records = json.loads(fp(project, "show", "orders", "--limit", "0", "--format", "json").stdout)
    got = {str(r["order_id"]): r["amount"] for r in records if r["customer"] == "Precise"}
    assert got == values  # exactly: 0.30000000000000004, not 0.3
