"""FilepipeApp: a catalog and a pipeline bundled with their metadata index and lock.

``pipeline.py`` defines ``app = FilepipeApp(catalog, pipeline)``; the CLI loads it with
:func:`load_app`. Metadata lives in ``.filepipe/meta.sqlite`` beside the pipeline file
unless ``meta=`` names another SQLAlchemy URL.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import FilepipeError, LockedError, PipelineError, PipelineLoadError
from .fileutil import base_dir, current_base_dir
from .plan import Plan, SourcePlan, StepPlan

if TYPE_CHECKING:
    from .catalog import Catalog
    from .compute import Pipeline
    from .executor import BatchExecutor
    from .report import RunReport
    from .steps.base import ComputeStep
    from .table import DataStore, DataTable

STATE_DIR = ".filepipe"

__all__ = ["FilepipeApp", "Plan", "SourcePlan", "StepPlan", "load_app"]


class FilepipeApp:
    """A pipeline ready to run: ``FilepipeApp(catalog, pipeline, meta=None, executor=None)``.

    `executor`: where steps run their functions, e.g. ``"processes:4"`` or
    ``"dask://scheduler:8786"`` (see `filepipe.executor`; default: in this process).
    `history`: the folder of the row versions (default ``.filepipe/history``; working
    copies sharing an index on a server should name one shared folder).
    """

    def __init__(self, catalog: Catalog, pipeline: Pipeline, meta: str | None = None,
                 root: str | os.PathLike | None = None,
                 executor: str | BatchExecutor | None = None,
                 history: str | Path | bool | None = None) -> None:
        self.catalog = catalog
        self.pipeline = pipeline
        self.root = Path(root).resolve() if root else (current_base_dir() or Path.cwd())
        self.meta_url = meta or f"sqlite:///{self.root / STATE_DIR / 'meta.sqlite'}"
        #: a spec (each run starts and stops its workers) or an executor (kept: `executing`)
        self.executor = executor
        self.history = history
        self._ds: DataStore | None = None
        self._steps: list[ComputeStep] | None = None

    # --- wiring -------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR

    @property
    def ds(self) -> DataStore:
        if self._ds is None:
            from .table import DataStore

            history = self.history
            if self.meta_url.startswith("sqlite:///"):
                Path(self.meta_url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
            elif history is None:  # an index on a server: the project's own folder
                history = self.state_dir / "history"
            self._ds = DataStore(self.meta_url, history=history)
        return self._ds

    @property
    def steps(self) -> list[ComputeStep]:
        if self._steps is None:
            from .compute import build_compute

            self._steps = build_compute(self.ds, self.catalog, self.pipeline)
        return self._steps

    def table(self, name: str) -> DataTable:
        """The table `name`, knowing which step writes it."""
        self.steps  # noqa: B018 - binding the steps marks the tables they write
        return self.catalog.get_datatable(self.ds, name)

    def select_steps(self, names: Sequence[str] | None) -> list[ComputeStep]:
        """The steps `names` selects (all when empty), in dependency order.

        As in dbt, ``NAME+`` selects the step and every step below it (reading what it
        writes, directly or through other steps), ``+NAME`` the step and every step it
        needs, ``+NAME+`` both.
        """
        if not names:
            return self.steps
        known = {s.name: s for s in self.steps}
        chosen: set[str] = set()
        unknown = []
        for spec in names:
            up, down = spec.startswith("+"), spec.endswith("+") and len(spec) > 1
            name = spec[1 if up else 0:len(spec) - 1 if down else len(spec)]
            step = known.get(name)
            if step is None:
                unknown.append(spec)
                continue
            chosen.add(name)
            if down:
                chosen.update(s.name for s in self.downstream({t.name for t in step.outputs}))
            if up:
                chosen.update(s.name for s in self.upstream(step))
        if unknown:
            raise PipelineError(f"unknown step(s) {', '.join(unknown)}; the pipeline has: "
                                f"{', '.join(known) or '(none)'} (NAME+ selects a step and the "
                                "steps below it, +NAME the steps it needs)")
        return [s for s in self.steps if s.name in chosen]

    @contextmanager
    def lock(self, wait: float = 0) -> Iterator[None]:
        """Hold the writer lock of this index: ``.filepipe/lock`` for an SQLite index; for
        one on PostgreSQL, an advisory lock in its database (one writer across machines,
        released by the server when the holding process ends, however it ends).

        `wait` seconds to wait for another writer; raises LockedError naming the holder.
        """
        if self.meta_url.startswith("postgresql"):
            from .meta.lock import advisory_lock

            with advisory_lock(self.meta_url, None, wait, str(self.root)):
                yield
            return
        from filelock import FileLock, Timeout

        self.state_dir.mkdir(parents=True, exist_ok=True)
        path = self.state_dir / "lock"
        lock = FileLock(str(path) + ".lck", timeout=wait)
        try:
            lock.acquire()
        except Timeout:
            holder = path.read_text().strip() if path.exists() else "another process"
            raise LockedError(f"another filepipe is already running on {self.root} "
                              f"({holder}); wait for it to finish or stop it") from None
        try:
            path.write_text(f"pid {os.getpid()} on {os.uname().nodename}")
            yield
        finally:
            lock.release()

    # --- running ------------------------------------------------------------------------
    def run(self, steps: Sequence[str] | None = None, full: bool = False,
            report: RunReport | None = None, trigger: str = "run",
            allow_deletes: bool = False) -> RunReport:
        """Sync the sources, then run what is stale (everything with `full`).

        `allow_deletes`: let a sync delete all rows of a source whose files are gone, or
        more than its `max_delete_share` at once (refused otherwise, nothing changed).
        """
        from .compute import run_steps
        from .report import RunReport

        selected = self.select_steps(steps)
        if full:
            for s in selected:
                s.reset()
        return run_steps(self.ds, selected, report=report or RunReport(trigger=trigger),
                         allow_deletes=allow_deletes, executor=self.executor)

    @contextmanager
    def executing(self) -> Iterator[None]:
        """Keep the executor's workers (a process pool, a dask client) from one run to the
        next meanwhile, as `watch` does, instead of starting them for each run."""
        from .executor import executor_from

        spec = self.executor
        if spec is None or not isinstance(spec, str):
            yield
            return
        self.executor = executor_from(spec)
        try:
            yield
        finally:
            self.executor.close()
            self.executor = spec

    def run_cycle(self, paths: set[str] | None = None, trigger: str = "watch") -> RunReport:
        """Sync only the sources holding `paths` (all when None) and run the steps below them."""
        from .compute import run_steps
        from .report import RunReport
        from .sync import sync_table

        report = RunReport(trigger=trigger)
        with self.ds.recording(report):
            changed: set[str] = set()
            for t in self.sources():
                result = sync_table(t, report=report, paths=paths)
                if result.changed is not None and len(result.changed):
                    changed.add(t.name)
            steps = self.steps
            if paths is not None:  # and the steps writing outputs someone touched
                touched = {t.name for s in self.steps for t in s.outputs if t.is_file_backed
                           and any(t.store.owns_path(Path(p)) for p in paths)}
                wanted = (self.downstream(changed | touched) + self._steps_with_failures()
                          + [s for s in self.steps if any(t.name in touched for t in s.outputs)])
                steps = [s for s in self.steps if s in wanted]
            run_steps(self.ds, steps, report=report, sync_sources=False, executor=self.executor)
        return report

    def downstream(self, tables: set[str]) -> list[ComputeStep]:
        """Steps that read any of `tables`, directly or through other steps."""
        reached, names = [], set(tables)
        for s in self.steps:  # dependency order: one pass suffices
            if any(t.name in names for t in s.inputs):
                reached.append(s)
                names.update(t.name for t in s.outputs)
        return reached

    def upstream(self, step: ComputeStep) -> list[ComputeStep]:
        """Steps writing what `step` reads, directly or through other steps."""
        writer = {t.name: s for s in self.steps for t in s.outputs}
        needed: dict[str, ComputeStep] = {}
        todo = [step]
        while todo:
            for t in todo.pop().inputs:
                s = writer.get(t.name)
                if s is not None and s.name not in needed:
                    needed[s.name] = s
                    todo.append(s)
        return [s for s in self.steps if s.name in needed]

    def _steps_with_failures(self) -> list[ComputeStep]:
        return [s for s in self.steps if s.failed_keys()]

    def reset(self, step: str) -> list[str]:
        """Make `step` (a selection such as ``totals+`` too) recompute every key on the
        next run; returns the names of the steps reset."""
        chosen = self.select_steps([step])
        for s in chosen:
            s.reset()
        return [s.name for s in chosen]

    # --- versions -----------------------------------------------------------------------
    def restore(self, table: str, ref: str, output: str | Path | None = None,
                in_place: bool = False) -> Path:
        """Write `table` as it was at version `ref` to the new file `output`; or, with
        `in_place` (file sources only), back up the source's files, write the old rows into
        them (the next run syncs them). Returns the file written, or the backup made."""
        from . import versions
        from .frames import rows_in

        old = versions.as_of(self.ds, table, ref)
        if output is not None:
            versions.export(old, output)
            return Path(output)
        if not in_place:
            raise FilepipeError("say where to write it: -o FILE (a new file), or --in-place for a source")
        t = self.table(table)
        if t.produced_by is not None:
            raise FilepipeError(f"{table!r} is written by step {t.produced_by!r}, which would "
                                "recompute it: restore the sources it comes from, or write it with -o FILE")
        if not t.is_file_backed:
            raise FilepipeError(f"--in-place restores file sources; {table!r} is "
                                f"{t.store.describe()}: write it with -o FILE")
        backup = _backup_files(t)
        now = t.store.read_rows()
        keys = t.primary_keys
        if len(now):
            t.store.delete_rows(now.loc[~rows_in(now, old, keys), keys])
        t.store.upsert_rows(old)
        t.store.flush()
        return backup

    def row_sources(self, table: str, row: dict[str, Any], run: int) -> dict[str, Any]:
        """For a version of a row of the output `table` (`row`: its values then), the rows
        of each input of the step writing it, as they were after run `run`, under the
        row's transform keys."""
        import pandas as pd

        from . import versions
        from .frames import rows_in

        t = self.table(table)
        step = next((s for s in self.steps if s.name == t.produced_by), None)
        if step is None:
            return {}
        tk = [k for k in getattr(step, "transform_keys", []) if k in row]
        found = {}
        for source in step.inputs:
            rows = versions.as_of(self.ds, source.name, run)
            on = [k for k in tk if k in rows.columns]
            if on and len(rows):
                wanted = source.meta.coerce(pd.DataFrame({k: [row[k]] for k in on}))
                rows = rows[rows_in(rows, wanted, on)]
            found[source.name] = rows.reset_index(drop=True)
        return found

    # --- inspecting ---------------------------------------------------------------------
    def sources(self) -> list[DataTable]:
        from .compute import source_tables

        return [t for t in source_tables(self.steps) if t.is_file_backed]

    def source_plan(self) -> list[SourcePlan]:
        """File sources whose files differ from the last sync (fingerprints only)."""
        from .plan import source_changes

        plans = []
        for t in self.sources():
            found, _ = source_changes(t, read=False)
            if found.new or found.changed or found.missing:
                plans.append(found)
        return plans

    def output_plan(self) -> list[SourcePlan]:
        """File outputs whose files differ from what filepipe last wrote (fingerprints
        only): the next run checks their rows, backs up real edits and rebuilds them."""
        from .plan import output_changes

        return output_changes(self.steps)

    def plan(self, steps: Sequence[str] | None = None, full: bool = False,
             read: bool = True, allow_deletes: bool = False) -> Plan:
        """What `run(steps, full, allow_deletes=...)` would do, committing nothing: the
        changed source files are read and hashed (unless not `read`) and the keys each
        step would recompute counted from them (`filepipe.plan`)."""
        from .compute import source_tables
        from .plan import build_plan

        selected = self.select_steps(steps)
        sources = [t for t in source_tables(selected) if t.is_file_backed]
        return build_plan(selected, sources, read=read, full=full, allow_deletes=allow_deletes)

    def reset_index(self) -> Path | None:
        """Move the metadata index aside (kept as ``meta.<time>.bak.sqlite``) so the next
        run starts a fresh one from the files; returns where the old one went."""
        from .fileutil import backup_path
        from .meta.history import default_root

        if not self.meta_url.startswith("sqlite:///"):
            raise FilepipeError(f"reset --all works on a SQLite index; {self.meta_url} is not one: "
                                "drop its fp_* tables with the database's own tools")
        index = Path(self.meta_url[len("sqlite:///"):])
        if self._ds is not None:
            self._ds.meta_dbconn.dispose()
            self._ds = self._steps = None
        history = default_root(self.meta_url)
        if history is not None and history.exists():  # its clock values are the old index's
            history.rename(backup_path(history))
        if not index.exists():
            return None
        kept = backup_path(index)
        index.rename(kept)
        for extra in ("-wal", "-shm", "-journal"):
            side = index.with_name(index.name + extra)
            if side.exists():
                side.rename(kept.with_name(kept.name + extra))
        return kept

    def step_plan(self) -> list[StepPlan]:
        """Per step: keys pending, keys failed, and why it would run."""
        plans = []
        for s in self.steps:
            st = s.status()
            plans.append(StepPlan(s.name, [t.name for t in s.inputs], [t.name for t in s.outputs],
                                  st.transform_keys, st.pending, st.failed, st.reason, st.errors))
        return plans

    def table_stats(self) -> list[dict[str, Any]]:
        """Per table: rows, last change time, store, role."""
        written = {t.name for s in self.steps for t in s.outputs}
        read = {t.name for s in self.steps for t in s.inputs}
        stats = []
        for name in self.catalog:
            t = self.table(name)
            with self.ds.meta.begin() as conn:
                rows = t.meta.count(conn)
                last = t.meta.last_change_ts(conn)
            role = "output" if name in written else ("source" if name in read else "unused")
            stats.append({"table": name, "rows": rows, "last_change": last,
                          "store": t.store.describe(), "role": role})
        return stats

    def watch_paths(self) -> list[Path]:
        """Folders holding the pipeline's file sources."""
        paths: list[Path] = []
        for t in self.sources():
            for p in t.store.watch_paths():
                if p not in paths:
                    paths.append(p)
        return paths


def load_app(spec: str | None = None) -> FilepipeApp:
    """Load ``PATH_OR_MODULE[:ATTR]`` (default ``./pipeline.py:app``)."""
    spec = spec or "pipeline.py"
    target, _, attr = spec.partition(":") if not _is_windows_drive(spec) else (spec, "", "")
    attr = attr or "app"
    path = Path(target)
    if path.suffix == ".py" or path.exists() or os.sep in target:
        if not path.is_file():
            raise PipelineLoadError(f"pipeline file not found: {path} "
                                    "(give one with -p PATH, or run `filepipe init` to start one)")
        module = _import_file(path.resolve())
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise PipelineLoadError(f"cannot import pipeline module {target!r}: {exc}") from exc
    app = getattr(module, attr, None)
    if not isinstance(app, FilepipeApp):
        found = [k for k, v in vars(module).items() if isinstance(v, FilepipeApp)]
        hint = f"; it has FilepipeApp(s): {', '.join(found)} (use -p {target}:{found[0]})" \
            if found else "; define `app = FilepipeApp(catalog, pipeline)` in it"
        raise PipelineLoadError(f"{target} has no FilepipeApp named {attr!r}{hint}")
    return app


def _import_file(path: Path) -> Any:
    name = f"filepipe_pipeline_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))
    try:
        with base_dir(path.parent):
            spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise PipelineLoadError(f"syntax error in {exc.filename}:{exc.lineno}: {exc.msg}") from exc
    except FilepipeError:
        raise
    except Exception as exc:
        raise PipelineLoadError(f"error while loading {path}: {type(exc).__name__}: {exc}") from exc
    finally:
        sys.path.remove(str(path.parent))
    sys.modules[name] = module
    return module


def _is_windows_drive(spec: str) -> bool:
    return len(spec) > 1 and spec[1] == ":" and spec[0].isalpha()


def _backup_files(t: DataTable) -> Path:
    """A timestamped copy of the file (or folder) holding `t`, beside it."""
    import shutil

    from .fileutil import backup_path

    where = t.store.location()
    if where is None or not where.exists():
        raise FilepipeError(f"{t.store.describe()} has no file to back up")
    kept = backup_path(where)
    if where.is_dir():
        shutil.copytree(where, kept, symlinks=True)
    else:
        shutil.copy2(where, kept)
    return kept
