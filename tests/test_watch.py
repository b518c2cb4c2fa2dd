"""The watch daemon: the pure pieces (Debouncer, PathFilter, OutputWrites, watch targets,
log lines) with an injected clock, then the daemon itself with a REAL watchdog observer on
a small CSV pipeline in tmp_path, and once as a real `filepipe watch` subprocess.

Every wait is bounded: the daemon runs in a thread, each cycle's report goes through
`on_cycle` into a Condition, and tests wait on it with a timeout. Negative checks ("this
file triggers no cycle") use a sentinel: inotify delivers events in order, so once the
event of a file written *after* the lock file has been seen, the lock file's was too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from filepipe.app import FilepipeApp, load_app
from filepipe.compute import RunReport, StepStats
from filepipe.fileutil import TEMP_PREFIX, fingerprint_of
from filepipe.watch import (
    DEFAULT_DEBOUNCE,
    Debouncer,
    OutputWrites,
    PathFilter,
    Symlinks,
    Watcher,
    default_max_delay,
    describe_paths,
    find_symlinks,
    format_cycle,
    watch_targets,
)

DEBOUNCE = 0.2      # for the daemon tests: fast, but far above inotify's ~1 ms latency
WAIT = 20.0         # upper bound for any single wait (the machine may be busy)

PIPELINE = '''
from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
from filepipe.stores import TableStoreCSV


def summarize(orders):
    if (orders["amount"] < 0).any():
        raise ValueError("negative amount for " + ", ".join(orders["customer"].unique()))
    return orders.groupby("customer", as_index=False)["amount"].sum()


catalog = Catalog({
    "orders": Table(TableStoreCSV("data/orders.csv", primary_keys=["order_id"])),
    "summary": Table(TableStoreCSV("data/summary.csv", primary_keys=["customer"])),
})
app = FilepipeApp(catalog, Pipeline([BatchTransform(summarize, inputs=["orders"],
                                                    outputs=["summary"],
                                                    transform_keys=["customer"])]))
'''


# --- helpers ------------------------------------------------------------------------------

def write_orders(path: Path, rows: list[tuple[int, str, int]]) -> None:
    text = "order_id,customer,amount\n" + "".join(f"{i},{c},{a}\n" for i, c, a in rows)
    path.write_text(text)


def totals(path: Path) -> dict[str, int] | None:
    try:
        df = pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None
    return dict(zip(df["customer"], df["amount"].astype(int)))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """pipeline.py + data/orders.csv; the output data/summary.csv sits in the watched folder."""
    (tmp_path / "pipeline.py").write_text(PIPELINE)
    (tmp_path / "data").mkdir()
    write_orders(tmp_path / "data" / "orders.csv", [(1, "a", 10), (2, "b", 5), (3, "a", 1)])
    return tmp_path


class Daemon:
    """The daemon (`Watcher.run`, what `watch()` calls) in a thread; its reports, log lines
    and the paths its filter let through, collected under one Condition."""

    def __init__(self, app: FilepipeApp, **kwargs) -> None:
        self.app = app
        self.cond = threading.Condition()
        self.reports: list[RunReport] = []
        self.lines: list[str] = []
        self.stop = threading.Event()
        self.log_file: Path | None = kwargs.pop("log_file", None)  # echo appends here too
        self.watcher = Watcher(app, debounce=kwargs.pop("debounce", DEBOUNCE),
                               rescan_every=kwargs.pop("rescan_every", None), echo=self._echo,
                               stop=self.stop, on_cycle=self._on_cycle, **kwargs)
        self.accepted: list[str] = []   # every path the filter let into the debouncer
        add = self.watcher.debouncer.add

        def recording_add(path, now=None):
            with self.cond:
                self.accepted.append(path)
                self.cond.notify_all()
            add(path, now)

        self.watcher.debouncer.add = recording_add
        self.seen: list[str] = []       # every path of every event the observer delivered
        on_event = self.watcher.on_event

        def recording_on_event(event) -> None:
            on_event(event)
            with self.cond:
                self.seen.append(os.fsdecode(event.src_path))
                if getattr(event, "dest_path", None):
                    self.seen.append(os.fsdecode(event.dest_path))
                self.cond.notify_all()

        self.watcher.on_event = recording_on_event
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="watch-under-test", daemon=True)

    def _run(self) -> None:
        try:
            self.watcher.run()
        except BaseException as exc:  # noqa: BLE001 - surfaced by stop_and_join
            self.error = exc
        finally:
            with self.cond:
                self.cond.notify_all()

    def _echo(self, line: str) -> None:
        if self.log_file is not None:      # as `filepipe watch > watch.log` does
            with self.log_file.open("a") as f:
                f.write(line + "\n")
        with self.cond:
            self.lines.append(line)
            self.cond.notify_all()

    def _on_cycle(self, report: RunReport) -> None:
        with self.cond:
            self.reports.append(report)
            self.cond.notify_all()

    def __enter__(self) -> Daemon:
        self.thread.start()
        self.wait_for(lambda: any("startup: full sync" in ln for ln in self.lines),
                      "the startup full sync")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_and_join()

    def stop_and_join(self) -> None:
        self.stop.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), "watch() did not return after stop.set()"
        if self.error is not None:
            raise self.error

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
        with self.cond:
            self.cond.wait_for(lambda: predicate() or not self.thread.is_alive(), timeout)
            if not predicate():
                state = "died" if not self.thread.is_alive() else "is still running"
                raise AssertionError(f"waited {timeout}s for {what} in vain (the daemon {state}); "
                                     "log:\n" + "\n".join(self.lines))

    def wait_cycles(self, n: int, what: str = "") -> list[RunReport]:
        self.wait_for(lambda: len(self.reports) >= n, what or f"{n} cycle(s)")
        return self.reports

    def wait_accepted(self, path: Path) -> None:
        self.wait_for(lambda: str(path) in self.accepted, f"an event for {path.name}")

    def wait_seen(self, path: Path) -> None:
        """Until the observer delivered an event for `path` (filtered out or not): inotify
        keeps the order of events, so the events of files written before it were handled."""
        self.wait_for(lambda: str(path) in self.seen, f"the observer's event for {path.name}")

    def wait_idle(self, quiet: float = 3 * DEBOUNCE, timeout: float = WAIT) -> None:
        """Until nothing is pending and no event or cycle came for `quiet` seconds (bounded)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                seen = (len(self.reports), len(self.accepted))
                settle = time.monotonic() + quiet
                while time.monotonic() < settle:
                    self.cond.wait(settle - time.monotonic())
                if seen == (len(self.reports), len(self.accepted)) and \
                        not self.watcher.debouncer.pending and not self.watcher.busy:
                    return
                if time.monotonic() > deadline:
                    raise AssertionError("the daemon never went idle; log:\n" + "\n".join(self.lines))

    def cycle_lines(self) -> list[str]:
        return [ln for ln in self.lines if " file(s) changed: " in ln]


@pytest.fixture
def app(project: Path) -> FilepipeApp:
    return load_app(str(project / "pipeline.py"))


# --- Debouncer (injected clock) -------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_debouncer_waits_for_a_quiet_period() -> None:
    clock = FakeClock()
    d = Debouncer(0.3, max_delay=2.0, clock=clock)
    assert d.due_in() is None and d.pop() is None and not d.pending
    d.add("/x/a.csv")
    clock.t += 0.2
    d.add("/x/b.csv")
    d.add("/x/a.csv")
    assert d.due_in() == pytest.approx(0.3)
    clock.t += 0.29
    assert d.pop() is None
    clock.t += 0.01
    batch = d.pop()
    assert batch is not None and batch.paths == ["/x/a.csv", "/x/b.csv"] and not batch.full
    assert batch.events == 3
    assert d.pop() is None and d.due_in() is None and not d.pending


def test_debouncer_max_delay_caps_an_event_storm() -> None:
    clock = FakeClock()
    d = Debouncer(0.3, max_delay=2.0, clock=clock)
    popped = []
    for i in range(1000):              # one event every 10 ms for 10 s: never quiet
        d.add(f"/x/{i % 7}.csv")
        clock.t += 0.01
        batch = d.pop()
        if batch is not None:
            popped.append((clock.t, batch))
    assert 4 <= len(popped) <= 5      # one batch per 2 s, not zero and not 1000
    assert all(len(b.paths) == 7 for _, b in popped)
    gaps = [b - a for (a, _), (b, _) in zip(popped, popped[1:])]
    assert all(g == pytest.approx(2.0, abs=0.02) for g in gaps)


def test_debouncer_full_sync_request_and_defaults() -> None:
    clock = FakeClock()
    d = Debouncer(0.3, clock=clock)
    assert d.max_delay == default_max_delay(0.3) == 2.0
    assert Debouncer(1.0).max_delay == 5.0
    assert Debouncer(0.5, max_delay=0.1).max_delay == 0.5   # never below the quiet period
    d.add(None)
    d.add("/x/a.csv", now=clock.t + 0.1)
    clock.t += 0.4
    batch = d.pop()
    assert batch is not None and batch.full and batch.paths == ["/x/a.csv"]
    with pytest.raises(ValueError):
        Debouncer(-1)


def test_default_debounce_is_sub_second() -> None:
    assert 0.1 <= DEFAULT_DEBOUNCE <= 0.5


# --- filters ------------------------------------------------------------------------------

def test_path_filter(tmp_path: Path) -> None:
    state = tmp_path / ".filepipe"
    f = PathFilter([state], [tmp_path / "data" / "meta.sqlite"])
    d = tmp_path / "data"
    for name in ["orders.csv", "report.xlsx", "2024/01.json", "A1B2C3D4"]:
        assert f.accepts(str(d / name)), name
    for name in ["~$orders.xlsx", ".~lock.orders.xlsx#", "orders.xlsx.osl-tmp", ".orders.csv.swp",
                 "orders.csv~", f"{TEMP_PREFIX}abc123.csv", "x.tmp", ".DS_Store",
                 "meta.sqlite", "meta.sqlite-journal", "meta.sqlite-wal"]:
        assert not f.accepts(str(d / name)), name
    assert not f.accepts(str(state / "meta.sqlite"))
    assert not f.accepts(str(state / "lock.lck"))
    assert f.accepts(str(tmp_path / ".filepipe-other" / "x.csv"))
    assert not f.accepts_dir(str(state / "sub")) and f.accepts_dir(str(d / "2024"))


def test_output_writes_remembers_only_what_the_cycle_changed(tmp_path: Path) -> None:
    out, other = tmp_path / "summary.csv", tmp_path / "other.csv"
    out.write_text("v1")
    other.write_text("x")
    files = {"paths": [out, other]}
    writes = OutputWrites(lambda: {str(p): fingerprint_of(str(p)) for p in files["paths"]})
    before = writes.snapshot()
    tmp = tmp_path / f"{TEMP_PREFIX}1.csv"       # an atomic rewrite: new inode, new size
    tmp.write_text("version 2")
    os.replace(tmp, out)
    writes.remember(before, writes.snapshot())
    assert writes.is_own(str(out))               # filepipe's own write: drop its events
    assert not writes.is_own(str(other))         # untouched by the cycle
    out.write_text("edited by hand!")            # someone else writes afterwards
    assert not writes.is_own(str(out))
    assert not writes.is_own(str(tmp_path / "missing.csv"))
    # a listing that fails does not break anything
    broken = OutputWrites(lambda: 1 / 0)
    broken.remember(broken.snapshot(), broken.snapshot())
    assert not broken.is_own(str(out))


def test_watch_targets(tmp_path: Path) -> None:
    (tmp_path / "data" / "sub").mkdir(parents=True)
    (tmp_path / "other").mkdir()
    got = watch_targets([tmp_path / "data" / "sub", tmp_path / "other", tmp_path / "data"])
    assert [t.path for t in got] == [tmp_path / "other", tmp_path / "data"]
    assert not got[1].missing and set(got[1].wanted) == {tmp_path / "data", tmp_path / "data" / "sub"}
    # inbox/2024 does not exist: its nearest existing parent (tmp_path) is watched, and
    # since that holds data/ too, one recursive watch covers everything
    got = watch_targets([tmp_path / "inbox" / "2024", tmp_path / "data"])
    assert [t.path for t in got] == [tmp_path] and got[0].missing


def test_log_lines_name_a_refused_sync() -> None:
    r = RunReport()
    r.refused["orders"] = "it would delete 80 of its 100 rows at once"
    lines = format_cycle(r, "1 file(s) changed: a.csv", 5)
    assert "1 problem(s)" in lines[0]
    assert len(lines) == 2 and lines[1].endswith(
        " |   NOT SYNCED orders: it would delete 80 of its 100 rows at once")


def test_find_symlinks_maps_link_targets_and_skips_loops(tmp_path: Path) -> None:
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    (inbox / "local").mkdir(parents=True)
    (elsewhere / "deeper").mkdir(parents=True)
    (inbox / "linked").symlink_to(elsewhere, target_is_directory=True)
    (elsewhere / "nested").symlink_to(tmp_path / "third", target_is_directory=True)
    (tmp_path / "third").mkdir()
    (inbox / "again").symlink_to(inbox / "local", target_is_directory=True)  # already watched
    (elsewhere / "back").symlink_to(inbox, target_is_directory=True)         # loops
    (inbox / "up").symlink_to(tmp_path, target_is_directory=True)
    (inbox / "self").symlink_to(inbox / "self", target_is_directory=True)    # ELOOP
    (inbox / ".hidden").symlink_to(tmp_path / "third", target_is_directory=True)
    found = find_symlinks([inbox], lambda path: True)
    assert found.follow == [str(elsewhere), str(tmp_path / "third")]
    assert sorted(found.loops) == [str(inbox / "linked" / "back"), str(inbox / "up")]
    assert found.links == {str(inbox / "linked"): str(elsewhere),
                           str(inbox / "linked" / "nested"): str(tmp_path / "third"),
                           str(inbox / "again"): str(inbox / "local")}
    assert found.spellings(str(elsewhere / "x.json")) == [str(elsewhere / "x.json"),
                                                         str(inbox / "linked" / "x.json")]
    assert found.spellings(str(tmp_path / "third" / "y.json"))[1:] == \
        [str(inbox / "linked" / "nested" / "y.json")]
    assert found.spellings(str(inbox / "local" / "1.json")) == \
        [str(inbox / "local" / "1.json"), str(inbox / "again" / "1.json")]
    assert found.spellings(str(elsewhere) + "-not" + os.sep + "x.json") == \
        [str(elsewhere) + "-not" + os.sep + "x.json"]
    # a watched folder that is itself a symlink: inotify would watch the link only
    root = find_symlinks([inbox / "linked"], lambda path: True)
    assert root.follow[0] == str(elsewhere) and str(tmp_path) not in root.follow
    assert root.spellings(str(elsewhere / "x.json"))[1:] == [str(inbox / "linked" / "x.json")]
    assert find_symlinks([tmp_path / "nowhere"], lambda path: True) == \
        Symlinks(real={str(tmp_path / "nowhere"): str(tmp_path / "nowhere")})


def test_log_lines_name_changes_and_failures() -> None:
    r = RunReport()
    r.table_changed("summary", 1, 2, 0)
    r.table_changed("orders", 0, 0, 0)
    r.steps["summarize"] = StepStats(keys=3, processed=3, failed=1,
                                     errors=["ValueError: negative amount for a\nTraceback..."])
    r.source_errors["/d/orders.csv"] = "DuplicateKeysError: duplicate primary key order_id=1"
    r.missing_files.append("/d/old.csv")
    lines = format_cycle(r, describe_paths([f"/d/{i}.csv" for i in range(5)]), 12.3)
    assert "5 file(s) changed: 0.csv, 1.csv, 2.csv +2 more" in lines[0]
    assert "summary +1 ~2 -0" in lines[0] and "orders" not in lines[0]
    assert "summarize 3 key(s) (1 FAILED)" in lines[0] and "12 ms" in lines[0]
    assert any("UNREADABLE /d/orders.csv: DuplicateKeysError" in ln for ln in lines[1:])
    assert any("FAILED summarize" in ln and "negative amount for a" in ln
               and "Traceback" not in ln for ln in lines[1:])
    assert any("MISSING /d/old.csv" in ln for ln in lines[1:])


# --- the daemon, with a real observer --------------------------------------------------------

def test_edit_reaches_the_output(project: Path, app: FilepipeApp) -> None:
    src, out = project / "data" / "orders.csv", project / "data" / "summary.csv"
    with Daemon(app) as d:
        assert totals(out) == {"a": 11, "b": 5}          # the startup catch-up
        assert any(f"watching {project / 'data'}" in ln for ln in d.lines)
        t0 = time.monotonic()
        write_orders(src, [(1, "a", 10), (2, "b", 7), (3, "a", 1)])
        d.wait_for(lambda: totals(out) == {"a": 11, "b": 7}, "the output to change")
        assert time.monotonic() - t0 < 10
        d.wait_cycles(2)                                  # its log line comes just after
        assert any("1 file(s) changed: orders.csv" in ln and "summary +0 ~1 -0" in ln
                   and "summarize 1 key(s)" in ln for ln in d.lines)
    assert d.lines[-1].endswith("stopped after 2 cycle(s)")


def test_burst_of_200_writes_makes_few_cycles(project: Path, app: FilepipeApp) -> None:
    src, out = project / "data" / "orders.csv", project / "data" / "summary.csv"
    with Daemon(app) as d:
        n0 = len(d.reports)
        t0 = time.monotonic()
        for i in range(200):
            write_orders(src, [(1, "a", 10), (2, "b", i), (3, "a", 1)])
            time.sleep(0.004)
        burst = time.monotonic() - t0
        d.wait_for(lambda: totals(out) == {"a": 11, "b": 199}, "the final output")
        d.wait_idle()
        cycles = len(d.reports) - n0
    assert 1 <= cycles <= 5, (cycles, f"burst took {burst:.2f}s", d.lines)
    assert totals(out) == {"a": 11, "b": 199}


def test_broken_source_is_reported_and_the_daemon_recovers(project: Path, app: FilepipeApp) -> None:
    src, out = project / "data" / "orders.csv", project / "data" / "summary.csv"
    with Daemon(app) as d:
        src.write_text("order_id,customer,amount\n1,a,10\n1,b,99\n")     # duplicated key
        d.wait_for(lambda: any(str(src) in r.source_errors for r in d.reports), "the error")
        assert any(f"UNREADABLE {src}" in ln and "duplicate" in ln for ln in d.lines)
        assert totals(out) == {"a": 11, "b": 5}                          # left as it was
        write_orders(src, [(1, "a", 10), (2, "b", -1)])                  # the step fails
        d.wait_for(lambda: any(r.failed for r in d.reports), "the failed step")
        assert any("FAILED summarize" in ln and "ValueError: negative amount for" in ln
                   for ln in d.lines)
        write_orders(src, [(1, "a", 10), (2, "b", 8)])                   # fixed
        d.wait_for(lambda: totals(out) == {"a": 10, "b": 8} and d.reports[-1].ok, "the recovery")
        assert d.thread.is_alive()
        n = len(d.reports)
        src.unlink()     # the source's only file is gone: its rows are kept, and it is said
        d.wait_for(lambda: len(d.reports) > n and not d.reports[-1].ok, "the cycle's report")
        assert totals(out) == {"a": 10, "b": 8}
        assert any(str(src) in ln for ln in d.lines[-2:]), d.lines


def test_a_cycle_that_raises_does_not_kill_the_daemon(project: Path, app: FilepipeApp,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    src, out = project / "data" / "orders.csv", project / "data" / "summary.csv"
    real = app.run_cycle
    calls = {"n": 0}

    def flaky(paths=None, trigger="watch"):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("disk on fire\nsecond line")
        return real(paths, trigger)

    monkeypatch.setattr(app, "run_cycle", flaky)
    with Daemon(app) as d:
        write_orders(src, [(1, "a", 10), (2, "b", 6), (3, "a", 1)])
        d.wait_for(lambda: any("cycle failed" in ln for ln in d.lines), "the failure line")
        line = next(ln for ln in d.lines if "cycle failed" in ln)
        assert "RuntimeError: disk on fire" in line and "second line" not in line
        # the retry (a full sync after a short backoff) brings the output up to date
        d.wait_for(lambda: totals(out) == {"a": 11, "b": 6}, "the retry")
        d.wait_for(lambda: any("retry: full sync" in ln for ln in d.lines), "the retry's line")
        assert calls["n"] == 3 and d.thread.is_alive()


LOCKS = ["~$orders.csv", ".~lock.orders.csv#", ".orders.csv.swp", "orders.csv.osl-tmp"]


def test_lock_and_temp_files_trigger_no_cycle(project: Path, app: FilepipeApp) -> None:
    data = project / "data"
    with Daemon(app) as d:
        d.wait_idle()
        n0 = len(d.reports)
        for name in LOCKS:
            (data / name).write_text("someone,somehost,now")
        (data / "~$orders.csv").unlink()
        sentinel = data / "sentinel.txt"       # not a source: its event only marks the order
        sentinel.write_text("x")
        d.wait_seen(sentinel)                  # so the lock files' events were handled too
        assert not [p for p in d.accepted if p and os.path.basename(p) in LOCKS]
        d.wait_idle()
        assert len(d.reports) == n0            # no cycle
    assert not any(name in ln for ln in d.lines for name in LOCKS)


def test_an_excel_style_save_makes_one_cycle(project: Path, app: FilepipeApp) -> None:
    """Lock file, temp file, original renamed away, temp renamed onto the target (which gets
    only a `moved` event), lock deleted: one cycle, never one that sees orders.csv missing."""
    data, src, out = project / "data", project / "data" / "orders.csv", project / "data" / "summary.csv"
    with Daemon(app) as d:
        d.wait_idle()
        n0 = len(d.reports)
        (data / "~$orders.csv").write_text("someone")
        write_orders(data / "3A4B5C6D", [(1, "a", 10), (2, "b", 42), (3, "a", 1)])
        os.rename(src, data / "7E8F9A0B")
        time.sleep(0.02)
        os.rename(data / "3A4B5C6D", src)
        (data / "7E8F9A0B").unlink()
        (data / "~$orders.csv").unlink()
        d.wait_for(lambda: totals(out) == {"a": 11, "b": 42}, "the output")
        d.wait_idle()
        assert len(d.reports) == n0 + 1, d.lines
        assert not d.reports[-1].missing_files


def test_own_writes_trigger_no_cycle(tmp_path: Path) -> None:
    """Source, output and .filepipe/ all in the one watched folder."""
    (tmp_path / "pipeline.py").write_text(PIPELINE.replace("data/", ""))
    src, out = tmp_path / "orders.csv", tmp_path / "summary.csv"
    write_orders(src, [(1, "a", 10), (2, "b", 5)])
    app = load_app(str(tmp_path / "pipeline.py"))
    with Daemon(app) as d:
        assert (tmp_path / ".filepipe" / "meta.sqlite").exists()
        d.wait_idle()
        n0 = len(d.reports)
        write_orders(src, [(1, "a", 10), (2, "b", 9)])
        d.wait_for(lambda: totals(out) == {"a": 10, "b": 9}, "the output")
        d.wait_cycles(n0 + 1)
        d.wait_accepted(out)                   # its rewrite did produce events...
        sentinel = tmp_path / "sentinel.txt"   # not a source: its event only marks the order
        sentinel.write_text("x")
        d.wait_seen(sentinel)
        d.wait_idle()
        labels = d.cycle_lines()
        # ...but no cycle ran for them: one cycle for orders.csv, none for the sentinel
        assert not any("summary.csv" in ln for ln in labels), d.lines
        assert len(d.reports) - n0 == 1, d.lines
        assert not [p for p in d.accepted if p and ".filepipe" in p]
        # a hand edit of the output is not filepipe's write: it does reach a cycle
        out.write_text("customer,amount\na,1000\nb,9\n")
        d.wait_cycles(n0 + 2, "a cycle for the hand-edited output")
        assert "summary.csv" in d.cycle_lines()[-1]


def test_a_hand_edited_output_is_rebuilt_by_its_cycle(tmp_path: Path) -> None:
    (tmp_path / "pipeline.py").write_text(PIPELINE.replace("data/", ""))
    src, out = tmp_path / "orders.csv", tmp_path / "summary.csv"
    write_orders(src, [(1, "a", 10), (2, "b", 5)])
    app = load_app(str(tmp_path / "pipeline.py"))
    with Daemon(app) as d:
        d.wait_idle()
        out.write_text("customer,amount\na,1000\nb,9\n")
        d.wait_cycles(2, "a cycle for the hand-edited output")
        d.wait_for(lambda: totals(out) == {"a": 10, "b": 5}, "the output rebuilt", timeout=2)
        assert "summary" in d.reports[-1].backups


def test_poll_mode(project: Path, app: FilepipeApp) -> None:
    src, out = project / "data" / "orders.csv", project / "data" / "summary.csv"
    with Daemon(app, poll=True) as d:
        assert any("polling" in ln for ln in d.lines)
        write_orders(src, [(1, "a", 10), (2, "b", 2), (3, "a", 1)])
        d.wait_for(lambda: totals(out) == {"a": 11, "b": 2}, "the output")


def test_a_dead_observer_is_restarted(project: Path, app: FilepipeApp,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import filepipe.watch as watch_module

    monkeypatch.setattr(watch_module, "HEALTH_EVERY", 0.2)
    src, out = project / "data" / "orders.csv", project / "data" / "summary.csv"
    with Daemon(app) as d:
        dead = d.watcher.observer
        dead.stop()                           # as if its emitter thread had died
        dead.join(5)
        d.wait_for(lambda: any("full sync (the observer was restarted)" in ln for ln in d.lines),
                   "the restart and its full sync")
        assert d.watcher.observer is not dead and d.watcher.observer_alive()
        write_orders(src, [(1, "a", 10), (2, "b", 12), (3, "a", 1)])
        d.wait_for(lambda: totals(out) == {"a": 11, "b": 12}, "the output")


def test_stop_finishes_the_current_cycle(project: Path, app: FilepipeApp,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    src, out = project / "data" / "orders.csv", project / "data" / "summary.csv"
    real = app.run_cycle
    inside = threading.Event()

    def slow(paths=None, trigger="watch"):
        if paths is not None:
            inside.set()
            time.sleep(0.3)  # a cycle in progress when stop arrives
        return real(paths, trigger)

    monkeypatch.setattr(app, "run_cycle", slow)
    d = Daemon(app).__enter__()
    write_orders(src, [(1, "a", 10), (2, "b", 3), (3, "a", 1)])
    assert inside.wait(WAIT)
    d.stop_and_join()                  # returns only after the cycle has finished
    assert totals(out) == {"a": 11, "b": 3}
    assert len(d.reports) == 2 and d.reports[-1].ok
    assert d.watcher.observer is None
    assert d.lines[-1].endswith("stopped after 2 cycle(s)")


def test_missing_source_folder_watches_its_parent(tmp_path: Path) -> None:
    """data/ does not exist yet (nor has orders.csv ever): the parent is watched instead."""
    (tmp_path / "pipeline.py").write_text(PIPELINE)
    app = load_app(str(tmp_path / "pipeline.py"))
    with Daemon(app) as d:
        assert any("does not exist yet" in ln and f"parent {tmp_path} instead" in ln
                   for ln in d.lines), d.lines
        (tmp_path / "data").mkdir()
        write_orders(tmp_path / "data" / "orders.csv", [(1, "a", 4)])
        d.wait_for(lambda: totals(tmp_path / "data" / "summary.csv") == {"a": 4}, "the output")
        assert not [p for p in d.accepted if p and ".filepipe" in p]


def test_full_sync_before_the_first_source_file(tmp_path: Path) -> None:
    """An empty source folder is fine; a missing one is reported (and the daemon goes on)."""
    (tmp_path / "pipeline.py").write_text(PIPELINE)
    app = load_app(str(tmp_path / "pipeline.py"))
    report = app.run_cycle(None)
    assert not report.ok and str(tmp_path / "data") in report.refused["orders"]
    (tmp_path / "data").mkdir()
    assert app.run_cycle(None).ok


def test_cycle_report_counts_source_rows(project: Path, app: FilepipeApp) -> None:
    app.run_cycle(None)
    src = project / "data" / "orders.csv"
    write_orders(src, [(1, "a", 10), (2, "b", 7), (3, "a", 1), (4, "c", 1)])
    report = app.run_cycle({str(src)})
    assert report.tables.get("summary") == {"added": 1, "updated": 1, "deleted": 0}
    assert report.tables.get("orders") == {"added": 1, "updated": 1, "deleted": 0}


def test_sigterm_in_the_main_thread_stops_cleanly(project: Path, app: FilepipeApp) -> None:
    """watch() called from the main thread installs SIGINT/SIGTERM handlers, and restores them."""
    lines: list[str] = []
    started, stop = threading.Event(), threading.Event()
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    def echo(line: str) -> None:
        lines.append(line)
        if "startup: full sync" in line:
            started.set()

    def killer() -> None:
        if started.wait(WAIT):
            os.kill(os.getpid(), signal.SIGTERM)
        if not stop.wait(WAIT):   # safety net: never hang the test run
            stop.set()

    helper = threading.Thread(target=killer, daemon=True)
    helper.start()
    from filepipe.watch import watch
    watch(app, debounce=DEBOUNCE, rescan_every=None, echo=echo, stop=stop)
    assert started.is_set() and stop.is_set()
    assert lines[-1].endswith("stopped after 1 cycle(s)")
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    helper.join(5)


# --- the real command --------------------------------------------------------------------------

def _filepipe_cmd() -> list[str]:
    exe = shutil.which("filepipe")
    if exe:
        return [exe]
    return [sys.executable, "-c", "from filepipe.cli import main; main()"]


def test_filepipe_watch_subprocess_sigint(project: Path) -> None:
    src, out = project / "data" / "orders.csv", project / "data" / "summary.csv"
    cmd = _filepipe_cmd() + ["-p", str(project / "pipeline.py")]
    proc = subprocess.Popen(cmd + ["watch", "--debounce", "0.2"], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    cond = threading.Condition()

    def read() -> None:
        for line in proc.stdout:
            with cond:
                lines.append(line.rstrip("\n"))
                cond.notify_all()
        with cond:
            cond.notify_all()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def wait_line(text: str) -> None:
        with cond:
            ok = cond.wait_for(lambda: any(text in ln for ln in lines) or proc.poll() is not None,
                               WAIT + 10)
        assert ok and any(text in ln for ln in lines), (text, lines, proc.poll())

    try:
        wait_line("startup: full sync")
        assert totals(out) == {"a": 11, "b": 5}
        write_orders(src, [(1, "a", 10), (2, "b", 70), (3, "a", 1)])
        wait_line("1 file(s) changed: orders.csv")
        assert totals(out) == {"a": 11, "b": 70}
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=WAIT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    reader.join(5)
    stderr = proc.stderr.read()
    assert code == 0, (code, lines, stderr)
    assert "stopped after" in lines[-1]
    again = subprocess.run(cmd + ["run"], cwd=project, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert "nothing to do" in again.stdout, again.stdout


# --- which events count: only paths a source (or an output) can own (issue #8, item 15) ------

BOOK_PIPELINE = '''
from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
from filepipe.stores import TableStoreCSV, TableStoreExcel


def doubled(prices):
    return prices.assign(price=prices["price"] * 2)


catalog = Catalog({
    "prices": Table(TableStoreExcel("prices.xlsx", sheet="Prices", primary_keys=["sku"])),
    "doubled": Table(TableStoreCSV("out/doubled.csv", primary_keys=["sku"])),
})
app = FilepipeApp(catalog, Pipeline([BatchTransform(doubled, inputs=["prices"],
                                                    outputs=["doubled"])]))
'''


def write_prices(path: Path, prices: dict[str, int]) -> None:
    """A real .xlsx with the sheet Prices (sku, price), as a spreadsheet program saves it."""
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Prices"
    ws.append(["sku", "price"])
    for sku, price in prices.items():
        ws.append([sku, price])
    wb.save(path)


def doubled_prices(path: Path) -> dict[str, int] | None:
    try:
        df = pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None
    return dict(zip(df["sku"], df["price"].astype(int)))


def test_files_of_no_source_start_no_cycle(tmp_path: Path) -> None:
    """`filepipe watch > watch.log` with a workbook source at the project root: the daemon's
    own log lines and 25 more appends to the log start no cycle (they used to feed the
    daemon a cycle per line, forever); an Excel-style save of the workbook (temp file
    renamed onto it: only a `moved` event names it) starts exactly one."""
    (tmp_path / "pipeline.py").write_text(BOOK_PIPELINE)
    book, out, log_file = tmp_path / "prices.xlsx", tmp_path / "out" / "doubled.csv", \
        tmp_path / "watch.log"
    write_prices(book, {"a": 1, "b": 2})
    app = load_app(str(tmp_path / "pipeline.py"))
    with Daemon(app, log_file=log_file) as d:
        assert doubled_prices(out) == {"a": 2, "b": 4}
        with log_file.open("a") as f:
            for i in range(25):
                f.write(f"another line {i}\n")
                f.flush()
                time.sleep(0.01)
        sentinel = tmp_path / "notes.txt"           # not a source either
        sentinel.write_text("x")
        d.wait_seen(sentinel)                      # the log's events were handled before it
        d.wait_idle()
        assert len(d.reports) == 1, d.lines        # the startup sync only
        assert not [p for p in d.accepted if p and p.endswith((".log", ".txt"))], d.accepted
        (tmp_path / "~$prices.xlsx").write_text("someone")
        write_prices(tmp_path / "A1B2C3D4", {"a": 1, "b": 5})
        os.replace(tmp_path / "A1B2C3D4", book)
        (tmp_path / "~$prices.xlsx").unlink()
        d.wait_for(lambda: doubled_prices(out) == {"a": 2, "b": 10}, "the output")
        d.wait_idle()
        assert len(d.reports) == 2, d.lines
        assert "1 file(s) changed: prices.xlsx" in d.cycle_lines()[-1]
    assert log_file.read_text().count("file(s) changed") == 1


def test_libreoffice_style_save_of_a_root_workbook_makes_one_cycle(tmp_path: Path) -> None:
    """LibreOffice renames `name` to `name.osl-tmp`, then writes `name`: one cycle."""
    (tmp_path / "pipeline.py").write_text(BOOK_PIPELINE)
    book, out = tmp_path / "prices.xlsx", tmp_path / "out" / "doubled.csv"
    write_prices(book, {"a": 1, "b": 2})
    app = load_app(str(tmp_path / "pipeline.py"))
    with Daemon(app) as d:
        d.wait_idle()
        os.rename(book, tmp_path / "prices.xlsx.osl-tmp")
        write_prices(book, {"a": 3, "b": 2})
        (tmp_path / "prices.xlsx.osl-tmp").unlink()
        d.wait_for(lambda: doubled_prices(out) == {"a": 6, "b": 4}, "the output")
        d.wait_idle()
        assert len(d.reports) == 2, d.lines
        assert not d.reports[-1].missing_files


# --- symlinked folders inside a source (issue #8, item 16) ---------------------------------

LINK_PIPELINE = '''
from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
from filepipe.stores import TableStoreCSV, TableStoreFiledir


def per_shop(orders):
    return orders.groupby("shop", as_index=False)["amount"].sum()


catalog = Catalog({
    "orders": Table(TableStoreFiledir("inbox/{shop}/{order_id}.json")),
    "shops": Table(TableStoreCSV("out/shops.csv", primary_keys=["shop"])),
})
app = FilepipeApp(catalog, Pipeline([BatchTransform(per_shop, inputs=["orders"],
                                                    outputs=["shops"], transform_keys=["shop"])]))
'''


def write_order(path: Path, amount: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'{{"amount": {amount}}}')


def shop_totals(path: Path) -> dict[str, int] | None:
    try:
        df = pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None
    return dict(zip(df["shop"], df["amount"].astype(int)))


def test_edits_in_a_symlinked_folder_reach_the_output(tmp_path: Path) -> None:
    """inbox/linked -> ../elsewhere: an edit of elsewhere/x.json makes one cycle that syncs
    inbox/linked/x.json. Loops (elsewhere/back -> ../inbox, inbox/up -> ..) are not
    followed, and a symlinked folder created while watching is watched from then on."""
    (tmp_path / "pipeline.py").write_text(LINK_PIPELINE)
    inbox, out = tmp_path / "inbox", tmp_path / "out" / "shops.csv"
    write_order(inbox / "local" / "1.json", 1)
    write_order(tmp_path / "elsewhere" / "x.json", 2)
    (inbox / "linked").symlink_to("../elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere" / "back").symlink_to("../inbox", target_is_directory=True)
    (inbox / "up").symlink_to("..", target_is_directory=True)
    app = load_app(str(tmp_path / "pipeline.py"))
    with Daemon(app) as d:
        assert shop_totals(out) == {"local": 1, "linked": 2}
        d.wait_idle()
        n0 = len(d.reports)
        write_order(tmp_path / "elsewhere" / "x.json", 7)
        d.wait_for(lambda: shop_totals(out) == {"local": 1, "linked": 7}, "the output", timeout=5)
        d.wait_idle()
        assert len(d.reports) == n0 + 1, d.lines
        assert "1 file(s) changed: x.json" in d.cycle_lines()[-1]
        # a symlinked folder appears while watching: its files are synced, then watched
        write_order(tmp_path / "third" / "y.json", 3)
        (inbox / "later").symlink_to(tmp_path / "third", target_is_directory=True)
        d.wait_for(lambda: shop_totals(out) == {"local": 1, "linked": 7, "later": 3},
                   "the new linked folder's rows", timeout=5)
        d.wait_idle()
        write_order(tmp_path / "third" / "y.json", 9)
        d.wait_for(lambda: shop_totals(out) == {"local": 1, "linked": 7, "later": 9},
                   "the edit in the new linked folder", timeout=5)
