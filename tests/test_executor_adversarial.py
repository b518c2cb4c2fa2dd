"""`--executor` as an adversarial user meets it: real `filepipe run` and `filepipe watch`
processes on real files, with local worker processes and a local dask cluster.

* A pipeline of failing, wrongly returning and chained steps (a helper module beside the
  pipeline file, a partial, a callable object, a lambda; CSV, Parquet and workbook outputs)
  gives on workers what it gives in-process: the outputs' bytes, each key's status and error
  text (with the place it names), the run's summary; then again after an edit that deletes rows.
* A step function or kwargs that cannot be sent to a worker fail that step's batches, clearly,
  and nothing else; nothing of that step is written.
* `filepipe watch` on worker processes (chosen by FILEPIPE_EXECUTOR) keeps the sales report
  equal to an in-process run through edits and a deleted order file, stops on SIGINT and
  leaves no process behind.
* Ctrl-C in a terminal signals the whole foreground process group, workers included: a watch
  cycle under way must still finish (as in-process), and `run` must stop promptly, leaving an
  index the next plain run completes from.
* A coordinator killed with SIGKILL leaves no process behind.

Processes are found through /proc (Linux). Every wait is bounded; every process a test
started is killed at its end if it is still there.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from test_cli import age, copy_sales
from test_cli_subprocess import FILEPIPE

pytest.importorskip("distributed")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not Path("/proc/self/stat").exists(),
                                reason="finds worker processes through /proc, signals process groups")

WAIT = 60  # seconds a command, a startup or a cycle may take before the test fails
PROCESSES, DASK = "processes:2", "dask:local:2"


# --- processes ----------------------------------------------------------------------------

def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def descendants(pid: int) -> dict[int, str]:
    """Every process below `pid` (children of its children too): {pid: start time}."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields is not None:
                children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            fields = _stat(child)
            if fields is not None:
                found[child] = fields[19]  # its start time: a reused pid is another process
                todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def alive(procs: dict[int, str]) -> list[int]:
    """Those of `procs` still running (a zombie has exited)."""
    left = []
    for pid, start in procs.items():
        fields = _stat(pid)
        if fields is not None and fields[0] != "Z" and fields[19] == start:
            left.append(pid)
    return left


def wait_gone(procs: dict[int, str], timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while alive(procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(procs)


def kill(procs: dict[int, str]) -> None:
    """SIGKILL those of `procs` (started by this test) still running."""
    for pid in alive(procs):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FILEPIPE_")}
    return {**env, "PYTHONDONTWRITEBYTECODE": "1", **extra}


def filepipe(root: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`filepipe -p ROOT/pipeline.py ARGS` as a process (in-process unless ARGS say otherwise)."""
    return subprocess.run([*FILEPIPE, "-p", str(root / "pipeline.py"), *args], cwd=root,
                          env=env or environment(), capture_output=True, text=True, timeout=2 * WAIT)


def explain(proc: Any, what: str = "") -> str:
    return (f"{what} exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n"
            f"{proc.stderr[-4000:]}")


class Command:
    """A `filepipe` process in a session of its own (so that a signal can go to its whole
    process group, as Ctrl-C in a terminal does, without reaching pytest), its output read
    as it comes, its descendants noted while it runs."""

    def __init__(self, root: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([*FILEPIPE, "-p", str(root / "pipeline.py"), *args], cwd=root,
                                     env=env or environment(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self.errors: list[str] = []
        self.seen: dict[int, str] = {}  # every descendant noted so far
        self._cond = threading.Condition()
        self._readers = [threading.Thread(target=self._read, args=(s, t), daemon=True)
                         for s, t in ((self.proc.stdout, self.lines), (self.proc.stderr, self.errors))]
        for reader in self._readers:
            reader.start()

    def _read(self, stream: Any, into: list[str]) -> None:
        for line in stream:
            with self._cond:
                into.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def stdout(self) -> str:
        return "\n".join(self.lines)

    @property
    def stderr(self) -> str:
        return "\n".join(self.errors)

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    def note_descendants(self) -> dict[int, str]:
        self.seen.update(descendants(self.pid))
        return self.seen

    def wait_line(self, text: str, timeout: float = WAIT) -> None:
        with self._cond:
            self._cond.wait_for(lambda: any(text in ln for ln in self.lines) or self.proc.poll() is not None,
                                timeout)
        assert any(text in ln for ln in self.lines), explain(self, f"no line with {text!r}:")

    def wait(self, timeout: float) -> tuple[int | None, float]:
        """The exit status (None if still running after `timeout`) and the seconds waited."""
        start = time.monotonic()
        try:
            code: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None, time.monotonic() - start
        waited = time.monotonic() - start
        for reader in self._readers:  # all its output, once it has ended
            reader.join(5)
        return code, waited

    def close(self) -> None:
        """Kill what is left: the command and every descendant it had."""
        if self.proc.poll() is None:
            self.note_descendants()
            self.proc.kill()
            self.proc.wait(10)
        kill(self.seen)
        for reader in self._readers:
            reader.join(5)


@pytest.fixture
def commands() -> Iterator[Callable[..., Command]]:
    started: list[Command] = []

    def start(root: Path, *args: str, env: dict[str, str] | None = None) -> Command:
        started.append(Command(root, *args, env=env))
        return started[-1]

    yield start
    for command in started:
        command.close()


def wait_until(predicate: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return predicate()


# --- what a project looks like after a run -----------------------------------------------

def workbook_parts(path: Path) -> dict[str, bytes]:
    """A workbook's members (the zip's own timestamps aside)."""
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def outputs(root: Path) -> dict[str, Any]:
    """Every file under out/: a workbook's members, a Parquet file's frame, other files' bytes."""
    found: dict[str, Any] = {}
    for path in sorted((root / "out").rglob("*")):
        if not path.is_file():
            continue
        name = str(path.relative_to(root))
        if path.suffix == ".xlsx":
            found[name] = workbook_parts(path)
        elif path.suffix == ".parquet":
            found[name] = pd.read_parquet(path).to_dict("split")
        else:
            found[name] = path.read_bytes()
    return found


def settled_outputs(root: Path) -> dict[str, Any] | None:
    """`outputs`, or None while a file in out/ is being replaced."""
    try:
        return outputs(root)
    except (OSError, zipfile.BadZipFile):
        return None


PLACE = re.compile(r" \(at [^()]*\)")


def keys(root: Path, strip_places: bool = False) -> dict[str, list[tuple[Any, ...]]]:
    """Each step's keys: key, status, error text, attempts, done_seq (not the time), with the
    project's folder in error texts as <root> (and the places they name cut, if asked)."""
    con = sqlite3.connect(root / ".filepipe" / "meta.sqlite")
    try:
        names = [n for (n,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                           "AND name LIKE 'fp_keys__%' ORDER BY name")]
        found = {}
        for name in names:
            cursor = con.execute(f"SELECT * FROM {name} ORDER BY 1")
            columns = [d[0] for d in cursor.description]
            rows = [dict(zip(columns, row)) for row in cursor]
            found[name] = [tuple(normalized(v, root, strip_places) if k == "error" else v
                                 for k, v in row.items() if k != "update_ts") for row in rows]
        return found
    finally:
        con.close()


def normalized(text: str | None, root: Path, strip_places: bool = False) -> str | None:
    if text is None:
        return None
    for folder in {str(root.resolve()), str(root)}:
        text = text.replace(folder, "<root>")
    return PLACE.sub("", text) if strip_places else text


def summary(proc: Any, root: Path, strip_places: bool = False) -> tuple[list[str], list[str]]:
    """A run's summary table (its timing line aside) and its FAILED lines."""
    table = [ln for ln in proc.stdout.splitlines() if not re.search(r"\bin \d+(\.\d+)?s$", ln)]
    failed = [normalized(ln, root, strip_places) or "" for ln in proc.stderr.splitlines()
              if ln.startswith("FAILED")]
    return table, failed


# --- a pipeline of steps that go wrong in every way a result can -----------------------------

HELPERS = '''
RATE = 3


def scale(values):
    return values * RATE


def check(items):
    bad = sorted(items.loc[items["value"] < 0, "item"])
    if bad:
        raise ValueError(f"negative value for {', '.join(bad)}")
'''

PARITY = '''
import functools
import os

import pandas as pd

import helpers
from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
from filepipe.stores import TableStoreCSV, TableStoreExcel, TableStoreFiledir, TableStoreParquet
from helpers import check, scale

PIDS = os.environ.get("FP_TEST_PIDS")
if PIDS:  # module-level code runs where the pipeline is loaded: the coordinator
    with open(PIDS, "a") as f:
        f.write(f"coordinator {os.getpid()}\\n")


def scaled(items):
    if PIDS:
        with open(PIDS, "a") as f:
            f.write(f"function {os.getpid()}\\n")
    check(items)  # raises in helpers.py for a negative value
    return items.assign(scaled=scale(items["value"]))[["item", "group", "scaled"]]


def by_group(scaled):  # reads the output of `scaled`
    return scaled.groupby("group", as_index=False).agg(total=("scaled", "sum"), n=("item", "count"))


def lookup(items):
    if (items["group"] == "g3").any():
        return items[["item", "no_such_column"]]  # a KeyError from pandas, placed here
    return items[["item", "value"]]


def not_a_frame(items):
    if (items["group"] == "g1").any():
        return items.to_dict()
    return items[["item", "value"]]


def lacks_key(items):
    if (items["group"] == "g2").any():
        return items[["value"]]
    return items[["item", "value"]]


def dup_keys(items):
    out = items[["item", "value"]]
    return pd.concat([out, out]) if (items["group"] == "g0").any() else out


def too_many(items):
    return items[["item", "value"]], items[["item"]]


def times(items, factor):
    return items.assign(v=helpers.scale(items["value"]) * factor)[["item", "v"]]


class Offset:
    def __init__(self, by):
        self.by = by

    def __call__(self, items):
        return items.assign(v=items["value"] + self.by)[["item", "v"]]


def sheet(name):
    return Table(TableStoreExcel("out/report.xlsx", sheet=name, primary_keys=["item"]))


catalog = Catalog({
    "items": Table(TableStoreFiledir("inbox/{item}.json")),
    "scaled": Table(TableStoreCSV("out/scaled.csv", primary_keys=["item"])),
    "groups": Table(TableStoreParquet("out/groups.parquet", primary_keys=["group"])),
    **{name: sheet(name) for name in ("looked", "t1", "t2", "t3", "t4", "p", "o", "lam")},
})


def step(func, output, **kw):
    return BatchTransform(func, inputs=["items"], outputs=[output], chunk_size=2, **kw)


app = FilepipeApp(catalog, Pipeline([
    step(scaled, "scaled"),
    BatchTransform(by_group, inputs=["scaled"], outputs=["groups"], transform_keys=["group"]),
    step(lookup, "looked"),
    step(not_a_frame, "t1"),
    step(lacks_key, "t2"),
    step(dup_keys, "t3"),
    step(too_many, "t4"),
    step(functools.partial(times, factor=10), "p", name="partial"),
    step(Offset(100), "o", name="offset"),
    step(lambda items: items.assign(v=scale(items["value"]) - 1)[["item", "v"]], "lam", name="lam"),
]))
'''


def write_items(root: Path, values: dict[str, tuple[str, int]]) -> None:
    (root / "inbox").mkdir(parents=True, exist_ok=True)
    for item, (group, value) in values.items():
        (root / "inbox" / f"{item}.json").write_text(json.dumps({"group": group, "value": value}))


def parity_project(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "helpers.py").write_text(HELPERS)
    (root / "pipeline.py").write_text(PARITY)
    write_items(root, {f"i{i:02d}": (f"g{i % 4}", -1 if i == 5 else i) for i in range(12)})
    age(root)
    return root


def parity_edit(root: Path) -> None:
    """Fix the negative value, delete two items (their rows must go), change one, add one."""
    write_items(root, {"i05": ("g1", 5), "i02": ("g2", 20), "i12": ("g0", 12)})
    for item in ("i00", "i01"):
        (root / "inbox" / f"{item}.json").unlink()
    age(root / "inbox")


def parity_rounds(root: Path, *extra: str) -> list[dict[str, Any]]:
    """Run, edit, run again; what each run left."""
    pids = root / "pids.log"
    rounds = []
    for edit in (None, parity_edit):
        if edit is not None:
            edit(root)
        proc = filepipe(root, "run", *extra, env=environment(FP_TEST_PIDS=str(pids)))
        assert proc.returncode == 1, explain(proc, f"run {' '.join(extra)}:")  # some keys failed
        rounds.append({"outputs": outputs(root), "keys": keys(root), "bare_keys": keys(root, True),
                       "summary": summary(proc, root), "bare_summary": summary(proc, root, True)})
    rounds[0]["pids"] = pids.read_text().split("\n")
    return rounds


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return parity_rounds(parity_project(tmp_path_factory.mktemp("inline") / "project"))


class ErrorPlacesDiffer(AssertionError):
    """The error texts recorded differ only in the place (file:line) they name."""


@pytest.mark.parametrize("spec", [
    PROCESSES,
    DASK,
])
def test_failing_and_wrong_results_are_recorded_as_in_process(tmp_path: Path, spec: str,
                                                              in_process: list[dict[str, Any]]) -> None:
    elsewhere = parity_rounds(parity_project(tmp_path / "project"), "--executor", spec)
    pids = [ln.split() for ln in elsewhere[0]["pids"] if ln]
    coordinator = {pid for kind, pid in pids if kind == "coordinator"}
    workers = {pid for kind, pid in pids if kind == "function"}
    assert coordinator and workers and not workers & coordinator, pids  # really elsewhere
    inline_pids = [ln.split() for ln in in_process[0]["pids"] if ln]  # the control
    assert {pid for kind, pid in inline_pids if kind == "function"} <= {
        pid for kind, pid in inline_pids if kind == "coordinator"}, inline_pids
    for n, (expected, got) in enumerate(zip(in_process, elsewhere), 1):
        assert got["outputs"].keys() == expected["outputs"].keys(), f"run {n}"
        for name in expected["outputs"]:
            assert got["outputs"][name] == expected["outputs"][name], f"run {n}: {name} differs"
        assert got["bare_keys"] == expected["bare_keys"], f"run {n}: keys, statuses or errors differ"
        assert got["bare_summary"] == expected["bare_summary"], f"run {n}: the run's summary differs"
    failed = {row[2] for rows in in_process[0]["keys"].values() for row in rows if row[1] == "failed"}
    assert any("helpers.py:" in e for e in failed) and any("pipeline.py:" in e for e in failed), failed
    assert any(e.startswith("StepOutputError") for e in failed), failed
    for n, (expected, got) in enumerate(zip(in_process, elsewhere), 1):
        if got["keys"] != expected["keys"] or got["summary"] != expected["summary"]:
            places = sorted({e for rows in got["keys"].values() for _, _, e, *_ in rows if e} - failed)
            raise ErrorPlacesDiffer(f"run {n}: error texts name other places: {places}")


# --- what cannot be sent to a worker ----------------------------------------------------------

UNPICKLABLE = '''
import threading

from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
from filepipe.stores import TableStoreCSV, TableStoreExcel, TableStoreFiledir

AUDIT = open(__file__ + ".audit", "a")  # an open file the function writes to


def locked(items, *, lock):
    with lock:
        return items[["item", "value"]]


def audited(items):
    AUDIT.write(f"{len(items)}\\n")
    AUDIT.flush()
    return items[["item", "value"]]


def fine(items):
    return items.assign(double=items["value"] * 2)[["item", "double"]]


catalog = Catalog({
    "items": Table(TableStoreFiledir("inbox/{item}.json")),
    "a": Table(TableStoreCSV("out/a.csv", primary_keys=["item"])),
    "b": Table(TableStoreExcel("out/b.xlsx", sheet="B", primary_keys=["item"])),
    "c": Table(TableStoreCSV("out/c.csv", primary_keys=["item"])),
})
app = FilepipeApp(catalog, Pipeline([
    BatchTransform(locked, inputs=["items"], outputs=["a"], chunk_size=3, kwargs={"lock": threading.Lock()}),
    BatchTransform(audited, inputs=["items"], outputs=["b"], chunk_size=3),
    BatchTransform(fine, inputs=["items"], outputs=["c"], chunk_size=3),
]))
'''


def test_what_cannot_be_sent_fails_its_step_clearly_and_only_it(tmp_path: Path) -> None:
    root = tmp_path / "project"
    root.mkdir()
    (root / "pipeline.py").write_text(UNPICKLABLE)
    write_items(root, {f"i{i:02d}": (f"g{i % 4}", i) for i in range(12)})
    age(root)
    proc = filepipe(root, "run", "--executor", PROCESSES)
    assert proc.returncode == 1, explain(proc)
    table, failed = summary(proc, root)
    assert [ln.split()[:3] for ln in table if ln.split()[:1] in (["locked"], ["audited"], ["fine"])] == [
        ["locked", "12", "12"], ["audited", "12", "12"], ["fine", "12", "0"]], proc.stdout
    assert len(failed) == 2, proc.stderr
    assert "locked" in failed[0] and "cannot be sent to a worker process" in failed[0] and "lock" in failed[0]
    assert "audited" in failed[1] and "cannot be sent to a worker process" in failed[1] \
        and "file" in failed[1], failed[1]
    state = keys(root)
    for step, text in (("locked", failed[0]), ("audited", failed[1])):
        rows = state[f"fp_keys__{step}"]
        assert len(rows) == 12 and {r[1] for r in rows} == {"failed"}, rows
        assert {r[2] for r in rows} == {text.removeprefix(f"FAILED {step}: ")}
    assert {r[1] for r in state["fp_keys__fine"]} == {"ok"}
    # nothing of the failed steps is written, the other step's output is whole
    assert sorted(p.name for p in (root / "out").iterdir()) == ["c.csv"]
    assert (root / "pipeline.py.audit").read_text() == ""  # `audited` never ran anywhere
    c = pd.read_csv(root / "out" / "c.csv")
    assert dict(zip(c["item"], c["double"])) == {f"i{i:02d}": 2 * i for i in range(12)}


# --- watch --------------------------------------------------------------------------------------

PAUSE = '''    pause = os.environ.get("FP_TEST_PAUSE")
    if pause and os.path.exists(pause):
        Path(pause + ".started").touch()
        time.sleep(float(Path(pause).read_text()))
'''


def sales(root: Path) -> Path:
    """A copy of examples/sales whose price_orders waits while the file $FP_TEST_PAUSE exists
    (as many seconds as it says), after touching that file's name + ".started"."""
    copy_sales(root)
    text = (root / "pipeline.py").read_text()
    text = text.replace("import pandas as pd\n", "import os\nimport time\nfrom pathlib import Path\n\n"
                        "import pandas as pd\n", 1)
    anchor = '    """Orders joined with the price of their product."""\n'
    assert anchor in text, "examples/sales/pipeline.py changed: adapt this test"
    (root / "pipeline.py").write_text(text.replace(anchor, anchor + PAUSE, 1))
    age(root / "pipeline.py")
    return root


def sales_edit(root: Path) -> None:
    """One order changes, one is deleted (its rows must go), a new customer orders."""
    order = root / "inbox" / "berlin" / "1003.json"
    data = json.loads(order.read_text())
    data["qty"] = int(data["qty"]) + 4
    order.write_text(json.dumps(data))
    (root / "inbox" / "berlin" / "1006.json").unlink()
    (root / "inbox" / "online" / "9001.json").write_text(json.dumps(
        {"customer": "Zed Adversary", "sku": "C-100", "qty": 2, "date": "2026-11-30"}))


def test_watch_on_worker_processes_matches_in_process_and_leaves_no_process(
        tmp_path: Path, commands: Callable[..., Command]) -> None:
    ref = sales(tmp_path / "ref")
    for edit in (None, sales_edit):
        if edit is not None:
            edit(ref)
        proc = filepipe(ref, "run")
        assert proc.returncode == 0, explain(proc)
    expected = outputs(ref)

    root = sales(tmp_path / "watched")
    watch = commands(root, "watch", "--debounce", "0.2", env=environment(FILEPIPE_EXECUTOR=PROCESSES))
    watch.wait_line("startup: full sync")
    workers = watch.note_descendants()
    assert any("forkserver" in cmdline(pid) for pid in workers), \
        f"FILEPIPE_EXECUTOR={PROCESSES} started no worker process: {[cmdline(p) for p in workers]}"
    sales_edit(root)
    assert wait_until(lambda: settled_outputs(root) == expected), explain(watch, "the report never matched:")
    watch.wait_line("file(s) changed")
    watch.note_descendants()
    watch.proc.send_signal(signal.SIGINT)
    code, _ = watch.wait(WAIT)
    assert code == 0, explain(watch)
    assert "stopped after" in watch.lines[-1], watch.stdout
    assert "Traceback" not in watch.stderr, watch.stderr
    assert not wait_gone(watch.seen, 10), [cmdline(p) for p in alive(watch.seen)]
    proc = filepipe(root, "run")
    assert proc.returncode == 0 and proc.stdout.startswith("nothing to do"), explain(proc)
    assert outputs(root) == expected


@pytest.mark.parametrize("spec", [
    "inline",  # the control: what Ctrl-C does without workers
    PROCESSES,
    DASK,
])
def test_ctrl_c_during_a_watch_cycle_lets_the_cycle_finish(tmp_path: Path, spec: str,
                                                           commands: Callable[..., Command]) -> None:
    root = sales(tmp_path / "sales")
    pause = tmp_path / "pause"
    watch = commands(root, "watch", "--debounce", "0.2", "--executor", spec,
                     env=environment(FP_TEST_PAUSE=str(pause)))
    watch.wait_line("startup: full sync")
    pause.write_text("2")
    sales_edit(root)
    assert wait_until(lambda: Path(f"{pause}.started").exists()), explain(watch, "no cycle started:")
    watch.note_descendants()
    os.killpg(watch.pid, signal.SIGINT)  # as Ctrl-C in the terminal running `filepipe watch`
    code, waited = watch.wait(12)  # the cycle has under 2 s of work left
    assert code == 0, explain(watch, f"after {waited:.1f} s:")
    assert any("file(s) changed" in ln for ln in watch.lines), watch.stdout  # the cycle finished
    assert "Traceback" not in watch.stderr, watch.stderr[-3000:]
    assert not wait_gone(watch.seen, 10), [cmdline(p) for p in alive(watch.seen)]
    proc = filepipe(root, "run")
    assert proc.returncode == 0 and proc.stdout.startswith("nothing to do"), explain(proc)


# --- run, interrupted or killed ---------------------------------------------------------------

SLOW = '''
import os
import time
from pathlib import Path

from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
from filepipe.stores import TableStoreCSV, TableStoreExcel, TableStoreFiledir

PAUSE = os.environ.get("FP_TEST_PAUSE")


def slow_double(items):
    if PAUSE and os.path.exists(PAUSE):
        for item in items["item"]:
            Path(f"{PAUSE}.started.{item}").touch()
        time.sleep(float(Path(PAUSE).read_text()))
    return items.assign(double=items["value"] * 2)[["item", "group", "double"]]


def group_sum(doubled):
    return doubled.groupby("group", as_index=False).agg(total=("double", "sum"), n=("item", "count"))


catalog = Catalog({
    "items": Table(TableStoreFiledir("inbox/{item}.json")),
    "doubled": Table(TableStoreCSV("out/doubled.csv", primary_keys=["item"])),
    "groups": Table(TableStoreExcel("out/groups.xlsx", sheet="Groups", primary_keys=["group"])),
})
app = FilepipeApp(catalog, Pipeline([
    BatchTransform(slow_double, inputs=["items"], outputs=["doubled"], chunk_size=1),
    BatchTransform(group_sum, inputs=["doubled"], outputs=["groups"], transform_keys=["group"]),
]))
'''


def slow_project(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "pipeline.py").write_text(SLOW)
    write_items(root, {f"i{i:02d}": (f"g{i % 3}", i) for i in range(12)})
    age(root)
    return root


def slow_outputs(root: Path) -> dict[str, pd.DataFrame]:
    """The outputs' rows, in key order (which batches a run got through first may differ)."""
    doubled = pd.read_csv(root / "out" / "doubled.csv").sort_values("item", ignore_index=True)
    groups = pd.read_excel(root / "out" / "groups.xlsx", sheet_name="Groups", engine="calamine")
    return {"doubled": doubled, "groups": groups.sort_values("group", ignore_index=True)}


@pytest.fixture(scope="module")
def slow_expected(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    root = slow_project(tmp_path_factory.mktemp("slow") / "project")
    proc = filepipe(root, "run")
    assert proc.returncode == 0, explain(proc)
    return slow_outputs(root)


def started(pause: Path) -> int:
    return len(list(pause.parent.glob(pause.name + ".started.*")))


class NotPrompt(AssertionError):
    """The command took much longer to stop than the same command in-process."""


BATCH_SECONDS = 10  # each batch of the interrupted run; in-process, Ctrl-C stops one at once
PROMPT = 5  # seconds within which an interrupted run must have exited


@pytest.mark.parametrize("spec", [
    PROCESSES,
    DASK,
])
def test_ctrl_c_during_run_stops_promptly_and_the_next_run_completes(
        tmp_path: Path, spec: str, commands: Callable[..., Command],
        slow_expected: dict[str, pd.DataFrame]) -> None:
    root = slow_project(tmp_path / "project")
    pause = tmp_path / "pause"
    pause.write_text(str(BATCH_SECONDS))
    run = commands(root, "run", "--executor", spec, env=environment(FP_TEST_PAUSE=str(pause)))
    assert wait_until(lambda: started(pause) >= 2 or run.proc.poll() is not None), explain(run)
    assert started(pause) >= 2, explain(run, "the batches never started:")
    run.note_descendants()
    os.killpg(run.pid, signal.SIGINT)  # Ctrl-C in its terminal
    code, waited = run.wait(3 * BATCH_SECONDS)
    assert code == 1 and "Aborted!" in run.stderr, explain(run)  # as in-process (click's Abort)
    assert not wait_gone(run.seen, 10), [cmdline(p) for p in alive(run.seen)]

    pause.unlink()
    proc = filepipe(root, "run")
    assert proc.returncode == 0, explain(proc, "the run after the interrupted one:")
    got = slow_outputs(root)
    for name, frame in slow_expected.items():
        pd.testing.assert_frame_equal(got[name], frame, obj=name)
    proc = filepipe(root, "run")
    assert proc.returncode == 0 and proc.stdout.startswith("nothing to do"), explain(proc)
    if waited > PROMPT:
        raise NotPrompt(f"{spec}: exited {waited:.1f} s after Ctrl-C (batches of {BATCH_SECONDS} s)")


@pytest.mark.parametrize("spec", [PROCESSES, DASK])
def test_coordinator_killed_hard_leaves_no_process(tmp_path: Path, spec: str,
                                                   commands: Callable[..., Command]) -> None:
    root = slow_project(tmp_path / "project")
    pause = tmp_path / "pause"
    pause.write_text("60")
    run = commands(root, "run", "--executor", spec, env=environment(FP_TEST_PAUSE=str(pause)))
    assert wait_until(lambda: started(pause) >= 2 or run.proc.poll() is not None), explain(run)
    assert started(pause) >= 2, explain(run, "the batches never started:")
    below = dict(run.note_descendants())
    assert len(below) >= 2, [cmdline(p) for p in below]
    run.proc.kill()
    run.wait(10)
    left = wait_gone(below, 10)
    assert not left, f"still running 10 s after the coordinator was killed: {[cmdline(p) for p in left]}"

