"""DataStore, Pipeline and running steps: the seed tutorial's lower-level API."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import PipelineError
from .meta import MetaIndex
from .sql import DBConn
from .types import ChangeList

if TYPE_CHECKING:
    import pandas as pd

    from .catalog import Catalog
    from .steps.base import ComputeStep, PipelineStep
    from .stores.base import TableStore
    from .table import DataTable

log = logging.getLogger("filepipe")


class DataStore:
    """The metadata index of a pipeline (``DataStore(DBConn("sqlite:///meta.sqlite"))``)."""

    def __init__(self, meta_dbconn: DBConn | str) -> None:
        self.meta = MetaIndex(meta_dbconn)
        self.meta_dbconn = self.meta.dbconn
        self._tables: dict[str, DataTable] = {}
        self.report: RunReport | None = None

    def get_or_create_table(self, name: str, store: TableStore,
                            max_delete_share: float | None = None) -> DataTable:
        from .table import DataTable

        table = self._tables.get(name)
        if table is None or table.store is not store:
            table = self._tables[name] = DataTable(self, name, store)
        table.max_delete_share = max_delete_share
        return table


@dataclass
class Pipeline:
    """An ordered list of steps."""

    steps: list[PipelineStep]


@dataclass
class StepStats:
    keys: int | None = None
    processed: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class RunReport:
    """What a run did: rows changed per table, keys processed and failed per step.

    `on_progress(step, done, total)` is called after each batch (for progress bars).
    """

    trigger: str = "api"
    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    steps: dict[str, StepStats] = field(default_factory=dict)
    on_progress: Callable[[str, int, int | None], None] | None = None
    source_errors: dict[str, str] = field(default_factory=dict)
    missing_files: list[str] = field(default_factory=list)
    backups: dict[str, str] = field(default_factory=dict)
    #: copies of outputs a fresh index found holding rows the pipeline no longer makes
    kept: dict[str, str] = field(default_factory=dict)
    #: source tables whose sync was refused (it would have deleted too much), and why
    refused: dict[str, str] = field(default_factory=dict)
    #: steps that did not run because an input is not ready, and why
    waiting: dict[str, str] = field(default_factory=dict)
    #: batches that read a source file changed since its sync: (step, keys, error)
    stale_reads: list[tuple[str, pd.DataFrame, str]] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    finished: float | None = None

    def step_started(self, name: str, total: int | None) -> None:
        stats = self.steps.setdefault(name, StepStats())
        stats.keys = (stats.keys or 0) + total if total is not None else stats.keys
        stats.seconds -= time.perf_counter()

    def step_progress(self, name: str, n: int) -> None:
        stats = self.steps[name]
        stats.processed += n
        if self.on_progress:
            self.on_progress(name, stats.processed, stats.keys)

    def step_done(self, name: str, batch: pd.DataFrame | None) -> None:
        stats = self.steps.get(name)
        if stats is not None and stats.seconds < 0:
            stats.seconds += time.perf_counter()

    def step_failed(self, name: str, batch: pd.DataFrame, error: str) -> None:
        stats = self.steps.setdefault(name, StepStats())
        stats.failed += max(1, len(batch))
        if len(stats.errors) < 5:
            stats.errors.append(error)

    def table_changed(self, name: str, added: int, updated: int, deleted: int) -> None:
        t = self.tables.setdefault(name, {"added": 0, "updated": 0, "deleted": 0})
        t["added"] += added
        t["updated"] += updated
        t["deleted"] += deleted

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.steps.values())

    @property
    def ok(self) -> bool:
        """No failed key, no unreadable source file, no refused sync, no step waiting."""
        return not (self.failed or self.source_errors or self.refused or self.waiting)

    @property
    def changed(self) -> bool:
        return any(any(v.values()) for v in self.tables.values()) or bool(self.backups or self.kept)

    @property
    def seconds(self) -> float:
        return (self.finished or time.time()) - self.started

    def summary(self) -> dict[str, Any]:
        return {"tables": self.tables, "source_errors": self.source_errors,
                "refused": self.refused, "waiting": self.waiting,
                "missing_files": self.missing_files,
                "backups": self.backups, "kept": self.kept,
                "steps": {n: {"keys": s.keys, "processed": s.processed, "failed": s.failed,
                              "errors": s.errors} for n, s in self.steps.items()}}


def build_compute(ds: DataStore, catalog: Catalog, pipeline: Pipeline) -> list[ComputeStep]:
    """Bind a pipeline's steps to tables, named uniquely and in dependency order."""
    names: dict[str, int] = {}
    steps: list[ComputeStep] = []
    for decl in pipeline.steps:
        base = decl.default_name
        names[base] = names.get(base, 0) + 1
        name = base if names[base] == 1 else f"{base}_{names[base]}"
        step = decl.build(ds, catalog, name)
        for t in step.outputs:
            t.produced_by = name
        steps.append(step)
    return _ordered(steps)


def _ordered(steps: list[ComputeStep]) -> list[ComputeStep]:
    """Steps sorted so that each runs after the steps writing its inputs."""
    writer: dict[str, ComputeStep] = {}
    for s in steps:
        for t in s.outputs:
            if t.name in writer:
                raise PipelineError(f"table {t.name!r} is written by two steps: "
                                    f"{writer[t.name].name!r} and {s.name!r}")
            writer[t.name] = s
    done: list[ComputeStep] = []
    state: dict[str, int] = {}

    def visit(s: ComputeStep, path: list[str]) -> None:
        if state.get(s.name) == 2:
            return
        if state.get(s.name) == 1:
            raise PipelineError("steps form a cycle: " + " -> ".join(path + [s.name]))
        state[s.name] = 1
        for t in s.inputs:
            if t.name in writer:
                visit(writer[t.name], path + [s.name])
        state[s.name] = 2
        done.append(s)

    for s in steps:
        visit(s, [])
    return done


def source_tables(steps: Sequence[ComputeStep]) -> list[DataTable]:
    """Tables the steps read that no step writes (of these steps, or of the pipeline)."""
    written = {t.name for s in steps for t in s.outputs}
    seen: dict[str, DataTable] = {}
    for s in steps:
        for t in s.inputs:
            if t.name not in written and t.produced_by is None:
                seen.setdefault(t.name, t)
    return list(seen.values())


SOURCE_REDOS = 3  # syncs again after a source changed under a run, at most


def run_steps(ds: DataStore, steps: Sequence[ComputeStep], report: RunReport | None = None,
              sync_sources: bool = True, allow_deletes: bool = False) -> RunReport:
    """Sync file sources, then run every step over what is stale.

    Keys whose source file changed between its sync and the step's read are redone
    after syncing again (a few times at most, then reported as failed). A step waits
    while one of its inputs is a source whose sync was refused or an output file that
    lags behind its meta (its write failed). `allow_deletes` lets a sync delete every
    row of a source, or most of it (see `sync_table`).
    """
    report = report or RunReport(trigger="run_steps")
    with reporting(ds, report):
        for step in steps:
            step.prepare()
        if sync_sources:
            sync_sources_of(steps, report, allow_deletes=allow_deletes)
        held = guard_outputs(steps, report)
        for attempt in range(SOURCE_REDOS + 1):
            report.stale_reads.clear()
            report.waiting.clear()
            for step in steps:
                blocked = waiting_inputs(step, report)
                if blocked:
                    report.waiting[step.name] = "; ".join(blocked)
                    log.warning("step %s waits: %s", step.name, report.waiting[step.name])
                    continue
                step.run_full(report)
            if not report.stale_reads or attempt == SOURCE_REDOS:
                break
            sync_sources_of(steps, report, allow_deletes=allow_deletes)
        settle_stale_reads(report)
        release_held(held, report)
    return report


def waiting_inputs(step: ComputeStep, report: RunReport) -> list[str]:
    """Why `step` cannot run now: inputs whose sync was refused, or output files of other
    steps that are not written as their meta says (marked dirty)."""
    from .sync import is_dirty

    why = [f"the sync of {t.name!r} was refused" for t in step.inputs if t.name in report.refused]
    why += [f"its input {t.name!r} is not written yet (step {t.produced_by!r} has to redo it)"
            for t in step.inputs if t.produced_by is not None and t.is_file_backed and is_dirty(t)]
    return why


def settle_stale_reads(report: RunReport) -> None:
    """Batches still reading changed sources after the redos count as failed."""
    for step, batch, text in report.stale_reads:
        report.step_failed(step, batch, f"{text}; it kept changing during the run "
                                        "(the keys are retried next run)")
    report.stale_reads.clear()


def sync_sources_of(steps: Sequence[ComputeStep], report: RunReport,
                    paths: set[str] | None = None, allow_deletes: bool = False) -> None:
    """Sync the file-backed tables the steps read and no step writes."""
    from .sync import sync_table

    for t in source_tables(steps):
        if t.is_file_backed:
            sync_table(t, report=report, paths=paths, allow_deletes=allow_deletes)


@dataclass
class Held:
    """A copy of an output a fresh index adopted, kept only if the run changes it."""

    table: DataTable
    step: ComputeStep
    copy: Path
    before: dict[str, int]


def guard_outputs(steps: Sequence[ComputeStep], report: RunReport) -> list[Held]:
    """Back up and rebuild file outputs someone else changed (or a crash left behind);
    adopt outputs the index does not know. Returns the copies held of adopted outputs."""
    from .sync import check_output

    held = []
    for step in steps:
        for t in step.outputs:
            if not t.is_file_backed:
                continue
            found = check_output(t)
            if found.backup is not None:
                report.backups[t.name] = found.backup
            if found.held is not None:
                held.append(Held(t, step, found.held, dict(report.tables.get(t.name, {}))))
            if found.rebuilt:
                reset_step(step)
    return held


def release_held(held: list[Held], report: RunReport) -> None:
    """Keep the copy of an adopted output beside it if the run changed the output, or
    could not finish it (its step failed keys); one copy per file."""
    from .sync import release_adopted

    kept: dict[Path, str] = {}
    for h in held:
        stats = report.steps.get(h.step.name)
        changed = report.tables.get(h.table.name, {}) != h.before or bool(stats and stats.failed)
        backup = release_adopted(h.table, h.copy, changed=changed, kept=kept)
        if backup is not None:
            report.kept[h.table.name] = backup


def reset_step(step: ComputeStep) -> None:
    """Make the step recompute every key on its next run."""
    meta = getattr(step, "meta", None)
    if meta is not None:
        with step.ds.meta.begin() as conn:
            meta.reset(conn)


def run_steps_changelist(ds: DataStore, steps: Sequence[ComputeStep], changelist: ChangeList,
                         report: RunReport | None = None) -> ChangeList:
    """Propagate `changelist` through the steps that read it (and their dependents)."""
    report = report or RunReport(trigger="changelist")
    changes = ChangeList(dict(changelist.changes))
    produced = ChangeList()
    with reporting(ds, report):
        for step in steps:
            if step.reads(changes):
                out = step.run_changelist(changes, report)
                changes.extend(out)
                produced.extend(out)
        settle_stale_reads(report)
    return produced


class reporting:
    """Attach `report` to the DataStore for the duration of a run; log the run if it did anything."""

    def __init__(self, ds: DataStore, report: RunReport) -> None:
        self.ds, self.report = ds, report

    def __enter__(self) -> None:
        self.previous = getattr(self.ds, "report", None)
        self.ds.report = self.report
        self.seq0 = self.ds.meta.current_seq()

    def __exit__(self, *exc: object) -> None:
        self.ds.report = self.previous
        self.report.finished = time.time()
        if self.previous is None and (self.report.changed or self.report.failed):
            self.ds.meta.log_run(self.report, self.seq0)
