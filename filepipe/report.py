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
