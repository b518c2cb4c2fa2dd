"""The watch daemon (docs/design.md §8): file events → filter → debounce → one incremental cycle.

``watch(app)`` starts a watchdog observer on the folders of the pipeline's file sources,
runs a catch-up full sync, then loops: events are filtered (lock, temp and swap files,
``.filepipe/``, and the writes filepipe itself just made to its outputs), collected by a
:class:`Debouncer` (a quiet period after the last event, capped by a maximum delay so an
event storm cannot starve cycles), and each due batch of paths becomes one
``app.run_cycle(paths)``: only the sources holding those files are synced and only the
steps below them run. Only paths a source or an output owns (`TableStore.owns_path`) count:
a log file written next to a workbook source starts no cycle. inotify does not follow
symlinks, so the targets of symlinked folders inside the watched folders are watched too
(:func:`find_symlinks`), their events mapped back to the paths the stores list. A cycle
that changed something or met a problem logs one line (and one per problem); one that did
nothing stays quiet unless `verbosity` > 0 (the startup sync and full syncs with a reason
always log), and with `verbosity` < 0 only problems are logged. A full sync runs every
`rescan_every` seconds (and after an inotify overflow, a dead observer or a symlinked folder
coming or going) to catch missed events.
Nothing a cycle raises stops the daemon; SIGINT/SIGTERM or `stop.set()` end it cleanly
after the current cycle.

The small pieces (:class:`Debouncer`, :class:`PathFilter`, :class:`OutputWrites`) hold the
logic and are tested on their own; :class:`Watcher` wires them to threads and the app.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .fileutil import Fingerprint, fingerprint_of, is_temp_name

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver

    from .app import FilepipeApp
    from .report import RunReport
    from .stores.base import TableStore

log = logging.getLogger("filepipe")

#: Quiet period (seconds) after the last file event before a cycle starts. An edit reaches
#: the output in about debounce + one cycle. benchmarks/bench_watch.py: simulated Excel
#: saves spread over 400 ms (gaps of 100 ms between their steps) made 3 cycles per save at
#: 0.05 s, 1-3 at 0.1 s, always 1 at 0.3 s (a split save can run a cycle while the file is
#: renamed away); saves within 100 ms made 1 cycle at any value from 0.05 s up.
DEFAULT_DEBOUNCE = 0.3
MIN_MAX_DELAY = 2.0          # the default cap on total delay is max(5 × debounce, this)
HEALTH_EVERY = 5.0           # seconds between checks that the observer threads are alive
RETRY_FIRST, RETRY_MAX = 2.0, 60.0   # backoff before a full sync retries a cycle that raised
MAX_NAMES = 3                # file names shown in a cycle's log line


# --- debouncing -------------------------------------------------------------------------

@dataclass
class Batch:
    """Paths that changed (in arrival order) and whether a full sync is wanted instead."""

    paths: list[str] = field(default_factory=list)
    full: bool = False
    first: float = 0.0
    events: int = 0


class Debouncer:
    """Collects changed paths; a batch is due after `quiet` seconds without an event, or
    `max_delay` seconds after the first pending event, whichever comes first.

    Not thread-safe by itself (the :class:`Watcher` holds a lock around it); `clock`
    is injectable for tests. ``add(None)`` asks for a full sync.
    """

    def __init__(self, quiet: float, max_delay: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if quiet < 0:
            raise ValueError("quiet period must be >= 0")
        self.quiet = quiet
        self.max_delay = default_max_delay(quiet) if max_delay is None else max(max_delay, quiet)
        self.clock = clock
        self._paths: dict[str, None] = {}
        self._full = False
        self._first: float | None = None
        self._last: float | None = None
        self._events = 0

    def add(self, path: str | None, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        if path is None:
            self._full = True
        else:
            self._paths[path] = None
        if self._first is None:
            self._first = now
        self._last = now
        self._events += 1

    @property
    def pending(self) -> bool:
        return self._first is not None

    def due_in(self, now: float | None = None) -> float | None:
        """Seconds until the pending batch is due (0 when due); None when nothing is pending."""
        if self._first is None or self._last is None:
            return None
        now = self.clock() if now is None else now
        due_at = min(self._last + self.quiet, self._first + self.max_delay)
        return max(0.0, due_at - now)

    def pop(self, now: float | None = None) -> Batch | None:
        """The pending batch if it is due (and forget it), else None."""
        wait = self.due_in(now)
        if wait is None or wait > 0:
            return None
        batch = Batch(list(self._paths), self._full, self._first or 0.0, self._events)
        self._paths, self._full, self._first, self._last, self._events = {}, False, None, None, 0
        return batch


def default_max_delay(debounce: float) -> float:
    return max(5 * debounce, MIN_MAX_DELAY)


# --- filtering --------------------------------------------------------------------------

class PathFilter:
    """Which event paths can matter: not lock/temp/swap files, nothing under `ignore_dirs`
    (``.filepipe/``), not the metadata database files (`ignore_files` and their
    ``-journal``/``-wal``/``-shm`` siblings)."""

    def __init__(self, ignore_dirs: Iterable[str | os.PathLike] = (),
                 ignore_files: Iterable[str | os.PathLike] = ()) -> None:
        self.dirs = [_norm(d) for d in ignore_dirs]
        self.files = [_norm(f) for f in ignore_files]

    def accepts(self, path: str) -> bool:
        if is_temp_name(os.path.basename(path)):
            return False
        norm = _norm(path)
        if any(norm == d or norm.startswith(d + os.sep) for d in self.dirs):
            return False
        return not any(norm.startswith(f) and norm[len(f):] in ("", "-journal", "-wal", "-shm")
                       for f in self.files)

    def accepts_dir(self, path: str) -> bool:
        norm = _norm(path)
        return not any(norm == d or norm.startswith(d + os.sep) for d in self.dirs)


def _norm(path: str | os.PathLike) -> str:
    return os.path.normpath(os.path.abspath(os.fspath(path)))




class OutputWrites:
    """Remembers the fingerprints of the output files filepipe itself wrote.

    Take a :meth:`snapshot` before and after a cycle and :meth:`remember` the files whose
    fingerprint the cycle changed; an event for a path whose current fingerprint equals
    the remembered one came from filepipe's own write and :meth:`is_own` says so.
    """

    def __init__(self, list_outputs: Callable[[], dict[str, Fingerprint]]) -> None:
        self._list = list_outputs
        self._mine: dict[str, Fingerprint] = {}

    def snapshot(self) -> dict[str, Fingerprint]:
        try:
            return {_norm(p): fp for p, fp in self._list().items()}
        except Exception as exc:  # noqa: BLE001 - a broken output store must not stop watching
            log.debug("cannot list output files: %s", exc)
            return {}

    def remember(self, before: dict[str, Fingerprint], after: dict[str, Fingerprint]) -> None:
        for path, fp in after.items():
            if before.get(path) != fp:
                self._mine[path] = fp
        for path in list(self._mine):
            if path not in after and path in before:  # the cycle deleted it
                del self._mine[path]

    def is_own(self, path: str) -> bool:
        mine = self._mine.get(_norm(path))
        return mine is not None and fingerprint_of(path) == mine


def output_fingerprints(app: FilepipeApp) -> dict[str, Fingerprint]:
    """Current fingerprints of the files of every table a step writes (file-backed stores)."""
    found: dict[str, Fingerprint] = {}
    seen: set[str] = set()
    for step in app.steps:
        for t in step.outputs:
            if t.name in seen:
                continue
            seen.add(t.name)
            try:
                listed = t.store.list_files()
            except Exception as exc:  # noqa: BLE001
                log.debug("cannot list files of output %s: %s", t.name, exc)
                continue
            if listed is None:
                continue
            for p, size, mtime, ino in zip(listed["path"], listed["size"], listed["mtime_ns"],
                                           listed["inode"]):
                found[str(p)] = Fingerprint(int(size), int(mtime), int(ino))
    return found


def owning_stores(app: FilepipeApp) -> list[TableStore]:
    """Stores of the file sources and file outputs: an event counts only for a path one of
    them owns (a source's file, or an output's for the check of hand edits)."""
    tables = {t.name: t for t in app.sources()}
    for step in app.steps:
        tables.update({t.name: t for t in step.outputs if t.is_file_backed})
    return [t.store for t in tables.values()]


# --- which folders -----------------------------------------------------------------------

@dataclass
class WatchTarget:
    path: Path          # the folder scheduled (recursively)
    wanted: list[Path]  # the source folders it stands for
    missing: bool       # True when `wanted` does not exist yet and a parent is watched


def watch_targets(paths: Iterable[Path]) -> list[WatchTarget]:
    """Folders to schedule: each source folder, or its nearest existing parent when it does
    not exist yet; folders inside another scheduled folder are dropped (watches are
    recursive). Paths keep their spelling so event paths match the stores' paths."""
    chosen: list[WatchTarget] = []
    for wanted in paths:
        p, missing = Path(wanted), False
        while not p.is_dir() and p != p.parent:
            p, missing = p.parent, True
        for t in chosen:
            if t.path == p or _inside(p, t.path):
                t.wanted.append(Path(wanted))
                t.missing = t.missing or missing
                break
        else:
            inner = [t for t in chosen if _inside(t.path, p)]
            chosen = [t for t in chosen if t not in inner]
            chosen.append(WatchTarget(p, [Path(wanted)] + [w for t in inner for w in t.wanted],
                                      missing or any(t.missing for t in inner)))
    return chosen


def _inside(child: Path, parent: Path) -> bool:
    """`child` strictly below `parent`, by spelling (so event paths keep the same prefix)."""
    c, p = str(child), str(parent).rstrip(os.sep)
    return c.startswith(p + os.sep)


@dataclass
class Symlinks:
    """Symlinked folders under the watched folders, which inotify does not follow.

    `links`: each link's path (spelled as the stores list it) → the real folder it leads
    to; `follow`: the real folders to watch besides the watched ones; `loops`: links that
    lead back to a folder holding a watched one (never followed); `real`: each watched
    folder's spelling → its real path, to map event paths onto link targets.
    """

    links: dict[str, str] = field(default_factory=dict)
    follow: list[str] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)
    real: dict[str, str] = field(default_factory=dict)

    def spellings(self, path: str) -> list[str]:
        """`path` as the event named it, then as seen through each symlinked folder."""
        if not self.links:
            return [path]
        real = path
        for spelled, target in self.real.items():
            rest = _below(path, spelled)
            if rest is not None:
                real = target + rest
                break
        found = [path]
        for link, target in self.links.items():
            rest = _below(real, target)
            if rest is not None and link + rest not in found:
                found.append(link + rest)
        return found


def _below(path: str, folder: str) -> str | None:
    """The rest of `path` after `folder` ("" for the folder itself), None when outside it."""
    if path == folder:
        return ""
    base = folder.rstrip(os.sep)
    return path[len(base):] if path.startswith(base + os.sep) else None


def find_symlinks(roots: Iterable[Path], accepts_dir: Callable[[str], bool]) -> Symlinks:
    """The symlinked folders under `roots` (a root may be one itself), through links too.

    Hidden folders and those `accepts_dir` refuses are not entered. A link leading to a
    folder that holds (or is) a root is a loop and is not followed; a link into a folder
    already watched is mapped but needs no watch of its own.
    """
    found = Symlinks()
    stack: list[str] = []
    for root in map(str, roots):
        real = os.path.realpath(root)
        found.real[root] = real
        if os.path.islink(root):   # inotify would watch the link, not the folder
            found.links[root] = real
            found.follow.append(real)
        stack.append(root)
    roots_real = list(found.real.values())
    watched = list(roots_real)
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:   # vanished or unreadable: nothing to follow there
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.name[0] == "." or not entry.is_dir() or not accepts_dir(entry.path):
                        continue
                    link = entry.is_symlink()
                except OSError:
                    continue
                if not link:
                    stack.append(entry.path)
                    continue
                real = os.path.realpath(entry.path)
                if any(_below(root, real) is not None for root in roots_real):
                    found.loops.append(entry.path)
                    continue
                found.links[entry.path] = real
                if all(_below(real, w) is None for w in watched):
                    watched.append(real)
                    found.follow.append(real)
                    stack.append(entry.path)
    return found


# --- the daemon --------------------------------------------------------------------------

_FILE_EVENTS = ("created", "modified", "moved", "deleted", "closed")


def _event_classes() -> list[type]:
    from watchdog import events as ev

    return [ev.FileCreatedEvent, ev.FileModifiedEvent, ev.FileMovedEvent, ev.FileDeletedEvent,
            ev.FileClosedEvent, ev.DirMovedEvent, ev.DirDeletedEvent]


def _handler(watcher: Watcher) -> Any:
    """A watchdog handler feeding every event to `watcher.on_event` (which filters)."""
    from watchdog.events import FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        def dispatch(self, event: Any) -> None:  # the observer thread calls this
            try:
                watcher.on_event(event)
            except Exception:
                log.exception("error while handling %r", event)

    return Handler()


class _OverflowLog(logging.Handler):
    """Turns watchdog's 'Inotify queue overflowed' warnings into a full-sync request."""

    def __init__(self, watcher: Watcher) -> None:
        super().__init__(logging.WARNING)
        self.watcher = watcher

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.watcher.request_full("inotify queue overflowed")


class Watcher:
    """The daemon's state; :func:`watch` builds one and calls :meth:`run`."""

    def __init__(self, app: FilepipeApp, debounce: float = DEFAULT_DEBOUNCE, poll: bool = False,
                 rescan_every: float | None = 300.0, echo: Callable[[str], Any] = print,
                 max_delay: float | None = None, stop: threading.Event | None = None,
                 on_cycle: Callable[[RunReport], Any] | None = None,
                 verbosity: int = 0) -> None:
        self.app = app
        self.verbosity = verbosity
        self.poll = poll
        self.rescan_every = rescan_every if rescan_every and rescan_every > 0 else None
        self.echo = _flushing(echo)
        self.stop = stop if stop is not None else threading.Event()
        self.on_cycle = on_cycle
        self.debouncer = Debouncer(debounce, max_delay)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        ignore_files = []
        if app.meta_url.startswith("sqlite:///"):
            ignore_files.append(app.meta_url[len("sqlite:///"):])
        self.filter = PathFilter([app.state_dir], ignore_files)
        self.outputs = OutputWrites(lambda: output_fingerprints(app))
        self.observer: Any = None
        self.targets: list[WatchTarget] = []
        self.owners: list[TableStore] = []
        self.links = Symlinks()
        self._link_watches: dict[str, Any] = {}   # real folder followed → its watch
        self._handler: Any = None
        self._classes: list[type] = []
        self.cycles = 0
        self.busy = False            # a cycle is running (for tests and benchmarks)
        self._retry_at: float | None = None
        self._backoff = RETRY_FIRST
        self._full_reason: str | None = None
        self._signals = 0

    # --- events (observer thread) -------------------------------------------------------
    def on_event(self, event: Any) -> None:
        kind = event.event_type
        if kind not in _FILE_EVENTS:
            return
        src = os.fsdecode(event.src_path)
        if event.is_directory:
            # a folder moved or deleted as a whole: its files get no events of their own
            if kind in ("moved", "deleted") and self.filter.accepts_dir(src):
                self.request_full(None)
            return
        paths = [src]
        if kind == "moved" and event.dest_path:
            paths.append(os.fsdecode(event.dest_path))
        if self._is_link_event(kind, paths):
            self.request_full("a symlinked folder appeared or went away")
            return
        accepted = [q for p in paths for q in self.links.spellings(p)
                    if self.filter.accepts(q) and self.owned(q)]
        if accepted:
            with self._lock:
                for p in accepted:
                    self.debouncer.add(p)
            self._wake.set()

    def owned(self, path: str) -> bool:
        """Can `path` hold rows of a source, or of an output (hand edits)?"""
        p = Path(path)
        return any(store.owns_path(p) for store in self.owners)

    def _is_link_event(self, kind: str, paths: list[str]) -> bool:
        """A symlink to a folder was made or moved in, or a followed one went away
        (inotify names the link alone: the files behind it get no events)."""
        if kind in ("deleted", "moved") and paths[0] in self.links.links:
            return True
        made = paths[-1] if kind == "moved" else paths[0] if kind == "created" else None
        return made is not None and os.path.islink(made) and os.path.isdir(made)

    def request_full(self, reason: str | None) -> None:
        with self._lock:
            self.debouncer.add(None)
            if reason:
                self._full_reason = reason
        self._wake.set()

    # --- observer -----------------------------------------------------------------------
    def start_observer(self) -> None:
        observer: BaseObserver
        if self.poll:
            from watchdog.observers.polling import PollingObserver

            observer = PollingObserver()
        else:
            from watchdog.observers import Observer

            observer = Observer()
        self._handler, self._classes = _handler(self), _event_classes()
        for t in self.targets:
            observer.schedule(self._handler, str(t.path), recursive=True,
                              event_filter=self._classes)
        observer.start()
        self.observer = observer

    def update_links(self) -> None:
        """Find the symlinked folders under the watched ones again: watch the targets of
        new ones, drop the watches of those gone (full syncs call it first)."""
        found = find_symlinks([t.path for t in self.targets], self.filter.accepts_dir)
        for link in found.links.keys() - self.links.links.keys():
            self.echo(f"{_now()} | watching {found.links[link]} too (symlinked as {link})")
        for link in sorted(set(found.loops) - set(self.links.loops)):
            self.echo(f"{_now()} | not following {link} -> {os.path.realpath(link)}: it leads "
                      "back to a watched folder")
        self.links = found
        if self.observer is None:
            return
        for real in self._link_watches.keys() - set(found.follow):
            try:
                self.observer.unschedule(self._link_watches.pop(real))
            except Exception as exc:  # noqa: BLE001 - its emitter may be gone already
                log.debug("cannot stop watching %s: %s", real, exc)
        for real in found.follow:
            if real not in self._link_watches:
                try:
                    self._link_watches[real] = self.observer.schedule(
                        self._handler, real, recursive=True, event_filter=self._classes)
                except OSError as exc:  # inotify's watch limit, or the folder just went
                    self.echo(f"{_now()} | cannot watch {real}: {exc} (changes there wait "
                              "for the next full sync)")

    def stop_observer(self) -> None:
        observer, self.observer = self.observer, None
        self._link_watches.clear()
        if observer is None:
            return
        try:
            observer.stop()
            observer.join(timeout=5)
        except Exception as exc:  # noqa: BLE001
            log.debug("error while stopping the observer: %s", exc)

    def observer_alive(self) -> bool:
        obs = self.observer
        return obs is not None and obs.is_alive() and all(e.is_alive() for e in obs.emitters)

    # --- cycles (main thread) -----------------------------------------------------------
    def cycle(self, paths: set[str] | None, label: str, routine: bool = False) -> RunReport | None:
        """One `run_cycle`, logged in one line (plus one per failure); never raises.

        A `routine` cycle (a file event, the periodic full sync) that did nothing is not
        logged unless the watcher is verbose (`logs`)."""
        self.busy = True
        try:
            return self._cycle(paths, label, routine)
        finally:
            self.busy = False

    def logs(self, report: RunReport, routine: bool) -> bool:
        """Is a cycle that made `report` worth a log line at this verbosity?"""
        if report.problems() or not report.ok:
            return True
        if self.verbosity < 0:
            return False
        return self.verbosity > 0 or not routine or did_something(report)

    def _cycle(self, paths: set[str] | None, label: str, routine: bool = False) -> RunReport | None:
        if paths is None:
            self.update_links()
        before = self.outputs.snapshot()
        t0 = time.perf_counter()
        try:
            report = self.app.run_cycle(paths)
        except Exception as exc:  # noqa: BLE001 - a bad cycle must not kill the daemon
            ms = (time.perf_counter() - t0) * 1000
            self._retry_at = time.monotonic() + self._backoff
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.echo(f"{_now()} | {label} | cycle failed after {ms:.0f} ms: "
                      f"{type(exc).__name__}: {msg} (full sync again in {self._backoff:g} s)")
            self._backoff = min(self._backoff * 2, RETRY_MAX)
            self.outputs.remember(before, self.outputs.snapshot())
            return None
        ms = (time.perf_counter() - t0) * 1000
        self.outputs.remember(before, self.outputs.snapshot())
        if paths is None:  # everything is synced again: no retry pending
            self._retry_at, self._backoff = None, RETRY_FIRST
        self.cycles += 1
        if self.logs(report, routine):
            for line in format_cycle(report, label, ms):
                self.echo(line)
        if self.on_cycle is not None:
            try:
                self.on_cycle(report)
            except Exception as exc:  # noqa: BLE001
                self.echo(f"{_now()} | on_cycle callback failed: {type(exc).__name__}: {exc}")
        return report

    def run_batch(self, batch: Batch) -> None:
        paths = [p for p in batch.paths if not self.outputs.is_own(p)]
        if batch.full:
            reason, self._full_reason = self._full_reason, None
            self.cycle(None, f"full sync ({reason or 'a folder moved or was deleted'})")
        elif paths:
            self.cycle(set(paths), describe_paths(paths), routine=True)

    # --- main loop ----------------------------------------------------------------------
    def run(self) -> None:
        self.targets = watch_targets(self.app.watch_paths())
        self.owners = owning_stores(self.app)
        self._announce()
        restore = self._install_signals()
        overflow = _OverflowLog(self)
        wd_log = logging.getLogger("watchdog.observers.inotify_c")
        wd_log.addHandler(overflow)
        waker = threading.Thread(target=self._wake_on_stop, name="filepipe-watch-stop",
                                 daemon=True)
        waker.start()
        try:
            self.start_observer()
            self.cycle(None, "startup: full sync")
            self._loop()
        finally:
            self.stop_observer()
            wd_log.removeHandler(overflow)
            restore()
            self.stop.set()  # releases the waker thread; watch() has returned for good
            if self.verbosity >= 0:
                self.echo(f"{_now()} | stopped after {self.cycles} cycle(s)")

    def _loop(self) -> None:
        next_rescan = time.monotonic() + self.rescan_every if self.rescan_every else None
        next_health = time.monotonic() + HEALTH_EVERY
        while not self.stop.is_set():
            self._wake.clear()
            now = time.monotonic()
            with self._lock:
                batch = self.debouncer.pop(now)
                due_in = self.debouncer.due_in(now)
                self.busy = batch is not None   # set under the lock that popped the batch
            if batch is not None:
                try:
                    self.run_batch(batch)
                finally:
                    self.busy = False
                continue
            if next_rescan is not None and now >= next_rescan:
                self.cycle(None, "periodic full sync", routine=True)
                assert self.rescan_every is not None  # next_rescan is set only then
                next_rescan = time.monotonic() + self.rescan_every
                continue
            if self._retry_at is not None and now >= self._retry_at:
                self._retry_at = None
                self.cycle(None, "retry: full sync")
                continue
            if now >= next_health:
                next_health = now + HEALTH_EVERY
                if not self.observer_alive():
                    self.echo(f"{_now()} | the file observer stopped; restarting it")
                    self.stop_observer()
                    try:
                        self.targets = watch_targets(self.app.watch_paths())
                        self.start_observer()
                    except Exception as exc:  # noqa: BLE001
                        self.echo(f"{_now()} | cannot restart the observer: "
                                  f"{type(exc).__name__}: {exc} (retrying)")
                    self.request_full("the observer was restarted")
                    continue
            waits = [next_health - now]
            if due_in is not None:
                waits.append(due_in)
            if next_rescan is not None:
                waits.append(next_rescan - now)
            if self._retry_at is not None:
                waits.append(self._retry_at - now)
            self._wake.wait(max(0.0, min(waits)))

    def _wake_on_stop(self) -> None:
        self.stop.wait()
        self._wake.set()

    def _announce(self) -> None:
        if self.verbosity < 0:
            return
        kind = "polling" if self.poll else "OS file events"
        names = ", ".join(t.name for t in self.app.sources()) or "(none)"
        if not self.targets:
            self.echo(f"{_now()} | no file source to watch (sources: {names}); "
                      "periodic full syncs only")
        for t in self.targets:
            self.echo(f"{_now()} | watching {t.path} (recursive, {kind})")
            if t.missing:
                gone = ", ".join(str(w) for w in t.wanted if not Path(w).is_dir())
                self.echo(f"{_now()} |   {gone} does not exist yet: watching its nearest "
                          f"existing parent {t.path} instead")
        rescan = f"full sync every {self.rescan_every:g} s" if self.rescan_every \
            else "no periodic full sync"
        self.echo(f"{_now()} | sources: {names}; debounce {self.debouncer.quiet:g} s "
                  f"(at most {self.debouncer.max_delay:g} s), {rescan}; Ctrl-C to stop")

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {}

        def handler(signum: int, frame: Any) -> None:
            self._signals += 1
            if self._signals > 1 and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, handler)
            except (ValueError, OSError):
                pass

        def restore() -> None:
            for sig, old in previous.items():
                try:
                    signal.signal(sig, old)
                except (ValueError, OSError, TypeError):
                    pass

        return restore


def watch(app: FilepipeApp, debounce: float = DEFAULT_DEBOUNCE, poll: bool = False,
          rescan_every: float | None = 300.0, echo: Callable[[str], Any] = print,
          max_delay: float | None = None, stop: threading.Event | None = None,
          on_cycle: Callable[[RunReport], Any] | None = None, verbosity: int = 0) -> None:
    """Keep the pipeline up to date while files under its sources change.

    `debounce`: quiet period (s) after the last event before a cycle; `max_delay`: cap on
    the wait since the first pending event (default ``max(5 × debounce, 2 s)``); `poll`:
    PollingObserver (network drives); `rescan_every`: seconds between full syncs (None or
    0: never). Returns after SIGINT/SIGTERM (handled when called in the main thread) or
    `stop.set()`, once the current cycle has finished; `stop` is set on return.
    `on_cycle(report)` is called after each successful cycle. `verbosity`: 0 logs the
    cycles that changed something or met a problem, 1 every cycle, -1 only problems.
    """
    Watcher(app, debounce=debounce, poll=poll, rescan_every=rescan_every, echo=echo,
            max_delay=max_delay, stop=stop, on_cycle=on_cycle, verbosity=verbosity).run()


# --- log lines ---------------------------------------------------------------------------

def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S")


def describe_paths(paths: list[str]) -> str:
    names = [os.path.basename(p) for p in paths[:MAX_NAMES]]
    more = f" +{len(paths) - MAX_NAMES} more" if len(paths) > MAX_NAMES else ""
    return f"{len(paths)} file(s) changed: {', '.join(names)}{more}"


def did_something(report: RunReport) -> bool:
    """Did a cycle change a row, process a key, back up or keep a file?"""
    return report.changed or any(s.keys or s.failed for s in report.steps.values())


def format_cycle(report: RunReport, label: str, ms: float) -> list[str]:
    """One summary line for a cycle, then one line per failure, refused sync, backup or
    missing file."""
    stamp = _now()
    tables = [f"{name} +{c['added']} ~{c['updated']} -{c['deleted']}"
              for name, c in report.tables.items() if any(c.values())]
    steps = []
    for name, s in report.steps.items():
        done = s.processed if s.keys is None else s.keys
        part = f"{name} {done} key(s)"
        if s.failed:
            part += f" ({s.failed} FAILED)"
        steps.append(part)
    parts = [label, "rows: " + (", ".join(tables) if tables else "no change")]
    if steps:
        parts.append("steps: " + ", ".join(steps))
    problems = report.problems()
    counted = [ln for ln in problems if not ln.startswith(("MISSING", "CHANGED BY HAND", "KEPT"))]
    if counted:
        parts.append(f"{len(counted)} problem(s)")
    parts.append(f"{ms:.0f} ms")
    return [f"{stamp} | " + " | ".join(parts)] + [f"{stamp} |   {line}" for line in problems]


def _flushing(echo: Callable[[str], Any]) -> Callable[[str], Any]:
    if echo is print:
        return lambda line: print(line, flush=True)
    return echo
