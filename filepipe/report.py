"""RunReport: what one run did (rows changed per table, keys per step, files and
sources in trouble), filled in by the engine and printed by the CLI and the watcher."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


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

    `on_progress(step, done, total)` is called after each batch (for progress bars), and
    `on_read_progress(table, done, total)` as the changed files of a source are read.
    """

    trigger: str = "api"
    tables: dict[str, dict[str, int]] = field(default_factory=dict)
    steps: dict[str, StepStats] = field(default_factory=dict)
    on_progress: Callable[[str, int, int | None], None] | None = None
    on_read_progress: Callable[[str, int, int], None] | None = None
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
    #: its version in the run log, once logged (runs that changed nothing have none)
    run_id: int | None = None

    def step_started(self, name: str, total: int | None) -> None:
        stats = self.steps.setdefault(name, StepStats())
        stats.keys = (stats.keys or 0) + total if total is not None else stats.keys
        stats.seconds -= time.perf_counter()

    def step_progress(self, name: str, n: int) -> None:
        stats = self.steps[name]
        stats.processed += n
        if self.on_progress:
            self.on_progress(name, stats.processed, stats.keys)

    def read_progress(self, table: str, done: int, total: int) -> None:
        """`done` of the `total` changed files of source `table` are read (the sync calls it)."""
        if self.on_read_progress:
            self.on_read_progress(table, done, total)

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

    def problems(self, most_missing: int | None = None) -> list[str]:
        """One line per thing the user must hear of, worded alike wherever it is shown (the
        CLI's stderr, the watch log): failed steps, unreadable files, refused syncs,
        waiting steps, missing files (the first `most_missing`), backups and kept copies."""
        lines = [f"FAILED {name}: {err}" for name, s in self.steps.items()
                 for err in dict.fromkeys(_first_line(e) for e in s.errors)]
        lines += [f"UNREADABLE {path}: {_first_line(err).replace(f'{path}: ', '')}"
                  for path, err in self.source_errors.items()]
        lines += [f"NOT SYNCED {table}: {why}" for table, why in self.refused.items()]
        lines += [f"WAITING {step}: {why}" for step, why in self.waiting.items()]
        shown = self.missing_files[:most_missing]
        lines += [f"MISSING {path}: not found (rows it held are deleted)" for path in shown]
        if len(self.missing_files) > len(shown):
            lines.append(f"MISSING ... and {len(self.missing_files) - len(shown)} more")
        lines += [f"CHANGED BY HAND: output {table} was edited outside filepipe; kept a copy "
                  f"as {backup} and rebuilt it" for table, backup in self.backups.items()]
        lines += [f"KEPT: output {table} held rows the pipeline does not make from the current "
                  f"sources (the index had no record of it); its previous content is in {copy}"
                  for table, copy in self.kept.items()]
        return lines

    def summary(self) -> dict[str, Any]:
        return {"tables": self.tables, "source_errors": self.source_errors,
                "refused": self.refused, "waiting": self.waiting,
                "missing_files": self.missing_files,
                "backups": self.backups, "kept": self.kept,
                "steps": {n: {"keys": s.keys, "processed": s.processed, "failed": s.failed,
                              "errors": s.errors} for n, s in self.steps.items()}}


def _first_line(text: str) -> str:
    text = str(text).strip()
    return text.splitlines()[0] if text else "(no message)"
