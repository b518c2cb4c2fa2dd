"""BatchGenerate: a generator yields the full contents of its output tables, chunk by chunk."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import StepOutputError
from ..frames import empty_frame
from ..types import ChangeList, concat_index
from .base import ComputeStep, PipelineStep, error_text, flush_once, tables

if TYPE_CHECKING:
    import pandas as pd

    from ..catalog import Catalog
    from ..report import RunReport
    from ..table import DataStore, DataTable

log = logging.getLogger("filepipe")


@dataclass
class BatchGenerate(PipelineStep):
    """``func(**kwargs)`` yields frames (a tuple of frames for several outputs).

    A function that *returns* a frame (or a tuple of one frame per output) instead of
    yielding is taken as one chunk. Each run stores every chunk; rows the generator no
    longer yields are deleted once it finishes. If it raises, or yields something that
    is not frames, what it yielded before stays and nothing is deleted.
    """

    func: Callable[..., Any]
    outputs: list[str]
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str | None = None

    @property
    def default_name(self) -> str:
        func_name: str = getattr(self.func, "__name__", "generate")
        return self.name or func_name

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
        try:
            for frames in self._chunks():
                with self.ds.meta.begin() as conn:
                    for i, (out, df) in enumerate(zip(self.outputs, frames)):
                        changes.append(out.name, out.store_chunk(df, conn=conn, report=report))
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
                    changes.append(out.name, out.delete_by_idx(stale, conn=conn, report=report))
        report.step_done(self.name, None)
        return changes

    def _chunks(self) -> Iterator[tuple[pd.DataFrame, ...]]:
        """The function's chunks, each a tuple of one frame per output (checked)."""
        import pandas as pd

        n = len(self.outputs)
        per_chunk = "a tuple of one per output" if n > 1 else "one"
        frames_per_chunk = f"DataFrames ({per_chunk} per chunk)"
        result = self.func(**self.kwargs)
        if isinstance(result, pd.DataFrame) or (
                isinstance(result, tuple) and len(result) == n
                and all(isinstance(f, pd.DataFrame) for f in result)):
            result = [result]  # returned rather than yielded: one chunk
        try:
            chunks = iter(result)
        except TypeError:
            raise StepOutputError(f"generator {self.name!r} returned "
                                  f"{'None' if result is None else type(result).__name__}; "
                                  f"it must yield {frames_per_chunk} or return one chunk"
                                  ) from None
        for chunk in chunks:
            frames = (chunk,) if isinstance(chunk, pd.DataFrame) else chunk
            if not isinstance(frames, (tuple, list)):
                raise StepOutputError(f"generator {self.name!r} yielded a "
                                      f"{type(chunk).__name__}; yield {frames_per_chunk}")
            bad = next((i for i, f in enumerate(frames) if not isinstance(f, pd.DataFrame)), None)
            if bad is not None:
                raise StepOutputError(
                    f"generator {self.name!r} yielded a {type(chunk).__name__} holding a "
                    f"{type(frames[bad]).__name__} at position {bad}; yield {frames_per_chunk}")
            if len(frames) != n:
                raise StepOutputError(
                    f"generator {self.name!r} yielded {len(frames)} frame(s) for "
                    f"{n} output(s) {[t.name for t in self.outputs]}")
            yield tuple(frames)
