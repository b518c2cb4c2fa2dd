"""Pipeline, build_compute and running steps: the seed tutorial's lower-level API.

`DataStore` (from `filepipe.table`) and `RunReport` (from `filepipe.report`) are
re-exported here, where the tutorial imports them from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import PipelineError
from .report import RunReport, StepStats
from .table import DataStore, DataTable
from .types import ChangeList

if TYPE_CHECKING:
    from .catalog import Catalog
    from .executor import BatchExecutor
    from .steps.base import ComputeStep, PipelineStep

__all__ = ["DataStore", "Pipeline", "RunReport", "StepStats", "build_compute", "run_steps",
           "run_steps_changelist"]

log = logging.getLogger("filepipe")


@dataclass
class Pipeline:
    """An ordered list of steps."""

    steps: list[PipelineStep]


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
              sync_sources: bool = True, allow_deletes: bool = False,
              executor: str | BatchExecutor | None = None) -> RunReport:
    """Sync file sources, then run every step over what is stale.

    Keys whose source file changed between its sync and the step's read are redone
    after syncing again (a few times at most, then reported as failed). A step waits
    while one of its inputs is a source whose sync was refused or an output file that
    lags behind its meta (its write failed). `allow_deletes` lets a sync delete every
    row of a source, or most of it (see `sync_table`). `executor` runs the steps'
    functions elsewhere ("processes:N", "dask://HOST:PORT", "dask:local": see
    `filepipe.executor`); the DataStore's own by default, in this thread.
    """
    report = report or RunReport(trigger="run_steps")
    with ds.recording(report), ds.executing(executor):
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
    why = [f"the sync of {t.name!r} was refused" for t in step.inputs if t.name in report.refused]
    why += [f"its input {t.name!r} is not written yet (step {t.produced_by!r} has to redo it)"
            for t in step.inputs if t.produced_by is not None and t.is_file_backed
            and t.ds.meta.file_meta.is_dirty(t.name)]
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
    from .outputs import check_output

    held = []
    for step in steps:
        for t in step.outputs:
            if not t.is_file_backed:
                continue
            found = check_output(t, report)
            if found.backup is not None:
                report.backups[t.name] = found.backup
            if found.held is not None:
                held.append(Held(t, step, found.held, dict(report.tables.get(t.name, {}))))
            if found.rebuilt:
                step.reset()
    return held


def release_held(held: list[Held], report: RunReport) -> None:
    """Keep the copy of an adopted output beside it if the run changed the output, or
    could not finish it (its step failed keys); one copy per file."""
    from .outputs import release_adopted

    kept: dict[Path, str] = {}
    for h in held:
        stats = report.steps.get(h.step.name)
        changed = report.tables.get(h.table.name, {}) != h.before or bool(stats and stats.failed)
        backup = release_adopted(h.table, h.copy, changed=changed, kept=kept)
        if backup is not None:
            report.kept[h.table.name] = backup



def run_steps_changelist(ds: DataStore, steps: Sequence[ComputeStep], changelist: ChangeList,
                         report: RunReport | None = None) -> ChangeList:
    """Propagate `changelist` through the steps that read it (and their dependents)."""
    report = report or RunReport(trigger="changelist")
    changes = ChangeList(dict(changelist.changes))
    produced = ChangeList()
    with ds.recording(report):
        for step in steps:
            if step.reads(changes):
                out = step.run_changelist(changes, report)
                changes.extend(out)
                produced.extend(out)
        settle_stale_reads(report)
    return produced
