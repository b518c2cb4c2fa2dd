"""BatchGenerate: a generator yields the full contents of its output tables, chunk by chunk."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import StepOutputError
from ..frames import empty_frame
from ..types import ChangeList, concat_index
from .base import ComputeStep, PipelineStep, error_text, flush_once, tables

if TYPE_CHECKING:
    import pandas as pd

    from ..catalog import Catalog
    from ..compute import DataStore, RunReport
    from ..table import DataTable

log = logging.getLogger("filepipe")


@dataclass
class BatchGenerate(PipelineStep):
    """``func(**kwargs)`` yields frames (a tuple of frames for several outputs).

    Each run stores every chunk; rows the generator no longer yields are deleted once it
    finishes. If it raises, what it yielded stays and nothing is deleted.
    """

    func: Callable[..., Any]
    outputs: list[str]
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str | None = None

    @property
    def default_name(self) -> str:
        return self.name or getattr(self.func, "__name__", "generate")

    def build(self, ds: DataStore, catalog: Catalog, name: str) -> BatchGenerateStep:
        return BatchGenerateStep(ds, name, self.func, tables(ds, catalog, name, self.outputs),
                                 self.kwargs)


class BatchGenerateStep(ComputeStep):
    def __init__(self, ds: DataStore, name: str, func: Callable[..., Any],
                 outputs: list[DataTable], kwargs: dict[str, Any]) -> None:
        self.ds, self.name, self.func, self.kwargs = ds, name, func, kwargs
        self.inputs: list[DataTable] = []
        self.outputs = outputs

    def run_full(self, report: RunReport) -> ChangeList:

        changes = ChangeList()
        seen: list[list[pd.DataFrame]] = [[] for _ in self.outputs]
        report.step_started(self.name, None)
        with flush_once(self.outputs):
            return self._generate(changes, seen, report)

    def _generate(self, changes: ChangeList, seen: list[list[pd.DataFrame]],
                  report: RunReport) -> ChangeList:
        import pandas as pd

        try:
            for chunk in self.func(**self.kwargs):
                frames = (chunk,) if isinstance(chunk, pd.DataFrame) else tuple(chunk)
                if len(frames) != len(self.outputs):
                    raise StepOutputError(
                        f"generator {self.name!r} yielded {len(frames)} frame(s) for "
                        f"{len(self.outputs)} output(s) {[t.name for t in self.outputs]}")
                with self.ds.meta.begin() as conn:
                    for i, (out, df) in enumerate(zip(self.outputs, frames)):
                        changes.append(out.name, out.store_chunk(df, conn=conn))
                        seen[i].append(df[out.primary_keys])
                report.step_progress(self.name, 1)
        except Exception as exc:  # noqa: BLE001 - keep what was yielded, delete nothing
            text = error_text(exc)
            log.error("generator %s failed: %s", self.name, text)
            report.step_failed(self.name, empty_frame([]), text)
            return changes
        with self.ds.meta.begin() as conn:
            for out, keys in zip(self.outputs, seen):
                if not out.meta.exists:
                    continue
                kept = concat_index(keys, out.primary_keys)
                live = out.meta.scan(conn, columns=out.primary_keys)
                stale = live.merge(out.meta.coerce(kept).assign(_k=1), how="left",
                                   on=out.primary_keys)
                stale = stale[stale["_k"].isna()][out.primary_keys]
                if len(stale):
                    changes.append(out.name, out.delete_by_idx(stale, conn=conn))
        report.step_done(self.name, None)
        return changes
