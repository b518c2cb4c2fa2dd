"""`filepipe` as a real process: the installed console script, its exit codes and streams.

The script is the one installed beside this interpreter (a pyenv shim or another
environment's script found on PATH would measure something else); without one, the
same entry point is run with ``python -c``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "sales"


def _command() -> list[str]:
    beside = Path(sys.executable).parent / "filepipe"
    if beside.is_file() and os.access(beside, os.X_OK):
        return [str(beside)]
    found = shutil.which("filepipe")
    if found:
        return [found]
    return [sys.executable, "-c", "from filepipe.cli import main; main()"]


FILEPIPE = _command()


def filepipe(*args: str, cwd: Path, code: int = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run([*FILEPIPE, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == code, (f"{' '.join(args)}: exit {proc.returncode}\n--- stdout\n"
                                     f"{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


def age(root: Path, seconds: float = 10.0) -> None:
    """Source files older than the 2 s "racy" window, so that a no-op run reads nothing."""
    for p in [root] if root.is_file() else root.rglob("*"):
        if p.is_file():
            st = p.stat()
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns - int(seconds * 1e9)))


def rows(text: str, first: str) -> dict[str, list[str]]:
    """{first cell: other cells} of the whitespace-separated lines that start a table row."""
    return {line.split()[0]: line.split()[1:] for line in text.splitlines()
            if line.split() and line.split()[0] == first}


def test_help_is_quick_and_imports_no_heavy_library() -> None:
    times = []
    for _ in range(2):
        start = time.perf_counter()
        proc = filepipe("--help", cwd=Path.cwd())
        times.append(time.perf_counter() - start)
        assert proc.stdout.startswith("Usage: filepipe [OPTIONS] COMMAND [ARGS]...")
        assert proc.stderr == ""
    print(f"\n`{' '.join(FILEPIPE)} --help`: {times[0]:.2f}s cold, {times[1]:.2f}s warm")
    assert min(times) < 2.0, times

    probe = ("import sys\nfrom filepipe.cli import main\ntry:\n    main(['--help'])\n"
             "except SystemExit:\n    pass\n"
             "print('LOADED', sorted(m for m in ('pandas', 'numpy', 'sqlalchemy', 'openpyxl', "
             "'pyarrow', 'watchdog') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "LOADED []"


def test_run_and_status_in_the_project_folder(tmp_path: Path) -> None:
    from filepipe.scaffold import scaffold

    project = tmp_path / "proj"
    scaffold(project)
    age(project / "inbox")

    proc = filepipe("run", cwd=project)
    assert proc.stderr == ""  # no progress bar when stderr is not a terminal
    assert rows(proc.stdout, "orders") == {"orders": ["5", "0", "0", "0"]}
    assert rows(proc.stdout, "summary") == {"summary": ["3", "0", "0", "0"]}
    assert rows(proc.stdout, "summarize") == {"summarize": ["3", "0"]}
    assert proc.stdout.splitlines()[-1].startswith("done in ")
    summary = pd.read_excel(project / "out" / "report.xlsx", sheet_name="Summary", engine="calamine")
    assert dict(zip(summary["customer"], summary["total"])) == {
        "ACME": 200.5, "Globex": 57.75, "Initech": 310.25}

    proc = filepipe("status", cwd=project)
    assert rows(proc.stdout, "summarize") == {"summarize": ["0", "0", "up", "to", "date"]}
    assert proc.stdout.splitlines()[-1] == "Sources: no file changed since the last run."
    assert filepipe("run", cwd=project).stdout.startswith("nothing to do in ")


def test_run_from_another_folder_resolves_stores_beside_the_pipeline(tmp_path: Path) -> None:
    sales = tmp_path / "work" / "sales"
    shutil.copytree(EXAMPLE, sales, ignore=shutil.ignore_patterns("out", ".filepipe", "__pycache__"))
    age(sales)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    proc = filepipe("-p", "../work/sales/pipeline.py", "run", cwd=elsewhere)
    assert rows(proc.stdout, "priced_orders") == {"priced_orders": ["60", "0", "0", "0"]}
    assert rows(proc.stdout, "customer_totals") == {"customer_totals": ["12", "0"]}
    assert list(elsewhere.iterdir()) == []  # no out/, no .filepipe/ in the working folder
    assert (sales / ".filepipe" / "meta.sqlite").is_file()
    sheets = pd.read_excel(sales / "out" / "report.xlsx", sheet_name=None, engine="calamine")
    assert {name: len(df) for name, df in sheets.items()} == {
        "Orders": 60, "Customers": 12, "Products": 8}

    # the same index, whichever folder the pipeline is named from
    proc = filepipe("-p", "sales/pipeline.py", "status", cwd=tmp_path / "work")
    assert rows(proc.stdout, "prices")["prices"][:2] == ["source", "8"]
    assert rows(proc.stdout, "prices")["prices"][-1] == f"{sales.resolve()}/prices.xlsx[Prices]"
    for step in ("price_orders", "customer_totals", "product_totals"):
        assert rows(proc.stdout, step)[step] == ["0", "0", "up", "to", "date"]
    proc = filepipe("-p", str(sales / "pipeline.py"), "run", cwd=elsewhere)
    assert proc.stdout.startswith("nothing to do in ")


def test_locked_index_exit_2(tmp_path: Path) -> None:
    from filepipe.app import load_app
    from filepipe.scaffold import scaffold

    scaffold(tmp_path / "proj")
    project = tmp_path / "proj"
    app = load_app(str(project / "pipeline.py"))
    with app.lock():
        proc = filepipe("run", cwd=project, code=2)
    assert proc.stdout == ""
    assert proc.stderr == (f"Error: another filepipe is already running on {project.resolve()} "
                           f"(pid {os.getpid()} on {os.uname().nodename}); wait for it to finish "
                           "or stop it\n")
    assert not (project / "out" / "report.xlsx").exists()


def test_errors_are_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = filepipe("status", cwd=tmp_path, code=2)
    assert proc.stderr == ("Error: pipeline file not found: pipeline.py (give one with -p PATH, "
                           "or run `filepipe init` to start one)\n")
    proc = filepipe("--debug", "status", cwd=tmp_path, code=1)
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.rstrip().splitlines()[-1] == (
        "filepipe.errors.PipelineLoadError: pipeline file not found: pipeline.py (give one with "
        "-p PATH, or run `filepipe init` to start one)")
