"""BatchTransform: recompute only the transform keys whose input rows changed."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import MissingColumnsError, OutputWriteError, PipelineError, SourceChangedError, StepOutputError
from ..frames import (
    SMALL_FRAME,
    check_keys,
    concat_rows,
    empty_frame,
    keeps_values,
    key_positions,
    latest_rows,
    pick,
    unique_rows,
)
from ..meta.steps import WHOLE
from ..types import ChangeList
from .base import ComputeStep, PipelineStep, StepStatus, error_text, flush_once, tables

if TYPE_CHECKING:
    import pandas as pd
    import sqlalchemy as sa

    from ..catalog import Catalog
    from ..frametypes import DataDF, IndexDF, MetaDF
    from ..report import RunReport
    from ..table import DataStore, DataTable

log = logging.getLogger("filepipe")


@dataclass(frozen=True, slots=True)
class Pending:
    """What the next full run of a step has to do (`BatchTransformStep._pending`)."""

    keys: IndexDF | None  # transform keys to process; None while the inputs' columns are unknown
    advance: bool  # move the step's marks on even if no key is left to process
    hwm: dict[str, int]  # the step's marks: the last change handled, per input table
    snap: int  # the index's change clock when the keys were taken


@dataclass
class BatchTransform(PipelineStep):
    """``func(*input_frames, **kwargs)`` → one frame per output.

    `transform_keys` default to the primary keys shared by every input and output; they
    may name non-key columns (an incremental group-by). With no shared key the step is
    whole-table: any input change recomputes it over all rows.
    """

    func: Callable[..., Any]
    inputs: list[str]
    outputs: list[str]
    transform_keys: list[str] | None = None
    chunk_size: int = 1000
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str | None = None

    @property
    def default_name(self) -> str:
        func_name: str = getattr(self.func, "__name__", "transform")
        return self.name or func_name

    def build(self, ds: DataStore, catalog: Catalog, name: str) -> BatchTransformStep:
        return BatchTransformStep(
            ds, name, self.func, tables(ds, catalog, name, self.inputs),
            tables(ds, catalog, name, self.outputs),
            transform_keys=self.transform_keys, chunk_size=self.chunk_size, kwargs=self.kwargs)


class BatchTransformStep(ComputeStep):
    """A BatchTransform bound to its tables; keeps its progress in the step meta."""

    def __init__(self, ds: DataStore, name: str, func: Callable[..., Any],
                 inputs: list[DataTable], outputs: list[DataTable],
                 transform_keys: Sequence[str] | None = None, chunk_size: int = 1000,
                 kwargs: Mapping[str, Any] | None = None) -> None:
        from ..codeversion import code_version

        if not outputs:
            raise PipelineError(f"step {name!r} has no outputs")
        if chunk_size < 1:
            raise PipelineError(f"step {name!r}: chunk_size must be at least 1")
        self.ds, self.name, self.func = ds, name, func
        self.inputs, self.outputs = inputs, outputs
        self.chunk_size = chunk_size
        self.kwargs = dict(kwargs or {})
        self.explicit_keys = transform_keys is not None
        if transform_keys is None:
            shared = [k for k in inputs[0].primary_keys] if inputs else []
            for t in inputs[1:] + outputs:
                shared = [k for k in shared if k in t.primary_keys]
            transform_keys = shared
        self.transform_keys = list(transform_keys)
        self.whole = not self.transform_keys
        self.meta = ds.meta.step_meta(name)
        self.code_version = code_version(func, {
            "kwargs": self.kwargs, "transform_keys": self.transform_keys,
            "inputs": [t.name for t in inputs], "outputs": [t.name for t in outputs]})
        self._input_keys: dict[str, list[str]] | None = None
        # outputs with no meta row under any key not yet written in this `_process`: their
        # meta held none when it began and each batch so far wrote only under its own keys
        self._unwritten: set[str] = set()
        for out in outputs:
            out.track(self.transform_keys)

    # --- which transform-key columns each input holds ----------------------------------
    def input_keys(self) -> dict[str, list[str]]:
        """Per input, the transform-key columns it holds (key or tracked columns)."""
        if self._input_keys is not None:
            return self._input_keys
        result: dict[str, list[str]] = {}
        resolved = True
        for t in self.inputs:
            held = [k for k in self.transform_keys if k in t.primary_keys]
            extra = [k for k in self.transform_keys if k not in t.primary_keys]
            if extra:
                columns = t.known_columns()
                if columns is None:  # empty, schema unknown: its keys only, decide again later
                    resolved = False
                    columns = []
                held = [k for k in self.transform_keys if k in t.primary_keys or k in columns]
                t.track([k for k in held if k not in t.primary_keys])
            result[t.name] = held
        if not self.whole:
            covered = {k for ks in result.values() for k in ks}
            lost = [k for k in self.transform_keys if k not in covered]
            if lost and not resolved:
                return {}  # nothing to run until the empty input shows its columns
            if lost:
                raise PipelineError(f"step {self.name!r}: transform key(s) {lost} are columns "
                                    f"of none of its inputs {[t.name for t in self.inputs]}")
        if resolved:
            self._input_keys = result
        return result

    # --- running ------------------------------------------------------------------------
    def prepare(self) -> None:
        self.input_keys()

    def run_full(self, report: RunReport) -> ChangeList:
        with self.ds.meta.begin() as conn:
            todo = self._pending(conn)
        pending, snap = todo.keys, todo.snap
        if pending is None:
            return ChangeList()
        changes = self._process(pending, done_seq=snap, report=report) if len(pending) else ChangeList()
        new_hwm = {t.name: snap for t in self.inputs}
        # a run that found no change keeps its marks: a no-op run writes nothing
        if todo.advance or len(pending):
            with self.ds.meta.begin() as conn:
                self.meta.set_state(conn, self.code_version, self.transform_keys, new_hwm)
                for t in self.inputs:
                    if t.meta.moves is not None:
                        t.meta.prune_moves(conn, self._readers_hwm(conn, t.name))
        return changes

    def reset(self) -> None:
        with self.ds.meta.begin() as conn:
            self.meta.reset(conn)

    def failed_keys(self) -> int:
        if not self.meta.ready:
            return 0
        with self.ds.meta.begin() as conn:
            return int(self.meta.counts(conn).get("failed", 0))

    def status(self) -> StepStatus:
        pending = self.pending_count()
        with self.ds.meta.begin() as conn:
            failed = self.meta.counts(conn).get("failed", 0)
            errors = [str(e).splitlines()[0] for e in self.meta.errors(conn, 3)["error"]] \
                if failed else []
            version = self.meta.state(conn)[0]
        if version is None:
            reason = "never ran (or was reset)"
        elif version != self.code_version:
            reason = "code or parameters changed"
        elif failed:
            reason = f"{failed} key(s) failed last time"
        elif pending:
            reason = "inputs changed"
        else:
            reason = "up to date"
        if self.whole:
            reason += " (whole-table step: no key shared by inputs and outputs)"
        return StepStatus(list(self.transform_keys), pending, failed, reason, errors)

    def pending_count(self) -> int:
        """How many transform keys the next full run would process."""
        with self.ds.meta.begin() as conn:
            pending = self._pending(conn).keys
        return 0 if pending is None else len(pending)

    def _pending(self, conn: sa.Connection) -> Pending:
        """The keys to process (None if the inputs are not known yet), whether to advance
        the marks, the marks and the clock.

        The marks advance after a code change and when input changes were found, even if
        all were handled already (by a change-list run): later runs then skip them.
        """
        version, keys_before, hwm = self.meta.state(conn)
        snap = self.ds.meta.current_seq(conn)
        full = version != self.code_version or keys_before != self.transform_keys
        ikeys = self.input_keys()
        if not ikeys and self.inputs:
            return Pending(None, full, hwm, snap)
        # after a code change, keys done before (by change-list runs) are to redo as well
        pending, seen = self._changed_keys(conn, ikeys, hwm, snap, skip_done=not full)
        # every key, and those whose rows were deleted since (their outputs go); a step
        # that never read its inputs already has every key among the changes; keys only
        # the outputs hold (their inputs went while the index was lost) go too
        if full:
            every = [self._output_keys(conn), pending]
            if any(hwm.get(t.name, 0) for t in self.inputs):
                every.append(self._all_keys(conn, ikeys))
            pending = unique_rows(_rows_of(every))
            if pending.empty:
                pending = self._empty_keys()
        return Pending(self._with_failed(conn, pending), full or seen, hwm, snap)

    def run_changelist(self, changes: ChangeList, report: RunReport) -> ChangeList:
        with self.ds.meta.begin() as conn:
            _, _, hwm = self.meta.state(conn)
            snap = self.ds.meta.current_seq(conn)
            ikeys = self.input_keys()
            if not ikeys and self.inputs:
                return ChangeList()
            frames = []
            for t in self.inputs:
                idx = changes.get(t.name)
                if idx is None or idx.empty or not t.meta.holds(ikeys[t.name]):
                    continue
                cols = ikeys[t.name]
                rows = pick(t.meta.lookup(conn, idx), cols) if cols else _whole_key()
                if cols and set(cols) & set(t.meta.tracked):
                    moved = t.meta.moves_for(conn, idx, hwm.get(t.name, 0), cols)
                    rows = _rows_of([rows, moved])
                frames.append(self._expand(conn, t, rows, ikeys, hwm))
            pending = unique_rows(_rows_of(frames)) if frames else None
        if pending is None or pending.empty:
            return ChangeList()
        changes = self._process(pending, done_seq=snap, report=report)
        with self.ds.meta.begin() as conn:
            version, _, _ = self.meta.state(conn)
            if version is None:  # first run ever: what it processed is at this code version;
                # marks at 0 keep the group moves it has not looked at from being pruned
                self.meta.set_state(conn, self.code_version, self.transform_keys,
                                    {t.name: 0 for t in self.inputs})
        return changes

    # --- which keys ---------------------------------------------------------------------
    def _changed_keys(self, conn: sa.Connection, ikeys: dict[str, list[str]],
                      hwm: Mapping[str, int], snap: int,
                      skip_done: bool = True) -> tuple[IndexDF, bool]:
        """Transform keys with input changes after the step last handled them (all keys
        with changes unless `skip_done`), and whether there were input changes at all."""
        import numpy as np

        frames = []
        for t in self.inputs:
            lo = hwm.get(t.name, 0)
            if not t.meta.holds(ikeys[t.name]) or lo >= snap:
                continue
            cols = ikeys[t.name]
            changed = t.meta.changed_between(conn, lo, snap, cols)
            if changed.empty:
                continue
            if not cols:
                changed = _whole_key().assign(seq=int(changed["seq"].max()))
            expanded = self._expand(conn, t, changed, ikeys, hwm)
            frames.append(expanded)
        if not frames:
            return self._empty_keys(), False
        keys = self._key_columns()
        changed = _rows_of(frames)
        if changed.empty:
            return self._empty_keys(), True
        changed = latest_rows(changed, keys, "seq")
        done = self.meta.done_seqs(conn, changed) if skip_done and self._keys_table_fits() else None
        if done is not None and len(done):
            pos = key_positions(changed, done, keys)
            done_seq = done["done_seq"].to_numpy(dtype="float64", na_value=np.nan)[pos]
            # NaN (never done) compares False, so such keys stay stale
            fresh = (pos >= 0) & (done_seq >= changed["seq"].to_numpy(dtype="float64"))
            changed = changed[~fresh]
        return pick(changed, keys), True

    def _all_keys(self, conn: sa.Connection, ikeys: dict[str, list[str]]) -> IndexDF:
        """Every transform key present in the inputs (after a code change)."""
        if self.whole:
            return _whole_key()
        frames = [self._expand(conn, t, t.meta.scan(conn, columns=ikeys[t.name]), ikeys, None)
                  for t in self.inputs if ikeys[t.name] and t.meta.holds(ikeys[t.name])]
        return _rows_of(frames).drop_duplicates() if frames else self._empty_keys()

    def _output_keys(self, conn: sa.Connection) -> IndexDF:
        """Every transform key present in the outputs."""
        if self.whole:
            return _whole_key() if any(t.meta.exists and t.meta.count(conn) for t in self.outputs) \
                else self._empty_keys()
        frames = [t.meta.scan(conn, columns=self.transform_keys) for t in self.outputs
                  if t.meta.holds(self.transform_keys)]
        return _rows_of(frames).drop_duplicates() if frames else self._empty_keys()

    def _expand(self, conn: sa.Connection, source: DataTable, rows: pd.DataFrame,
                ikeys: dict[str, list[str]], hwm: Mapping[str, int] | None) -> IndexDF:
        """Complete partial transform keys with the values the other inputs hold.

        Values of rows deleted since the step last looked count too: the outputs of a
        pair whose both sides were deleted before one run must go as well.
        """
        if self.whole:
            return rows if WHOLE in rows.columns else _whole_key().assign(
                **({"seq": int(rows["seq"].max())} if "seq" in rows and len(rows) else {}))
        have = list(ikeys[source.name])
        out = rows
        for t in self.inputs:
            missing = [k for k in ikeys[t.name] if k not in have]
            if t is source or not missing or not t.meta.holds(ikeys[t.name]):
                continue
            since = None if hwm is None else hwm.get(t.name, 0)
            values = t.meta.scan(conn, columns=ikeys[t.name], deleted_after=since).drop_duplicates()
            on = [k for k in ikeys[t.name] if k in have]
            out = out.merge(values, on=on) if on else out.merge(values, how="cross")
            have += missing
        if len(have) < len(self.transform_keys):
            return self._empty_keys()
        return out

    def _with_failed(self, conn: sa.Connection, pending: IndexDF) -> IndexDF:
        if not self._keys_table_fits():  # none yet, or of other transform keys: redone anyway
            return pending
        failed = self.meta.failed(conn)
        if failed.empty:
            return pending
        if self.whole:
            return _whole_key()
        return _rows_of([pending, failed[self.transform_keys]]).drop_duplicates()

    def _keys_table_fits(self) -> bool:
        """Does the step's keys table exist and have the current transform keys?"""
        return self.meta.ready and self.meta.keys == self._key_columns()

    def _key_columns(self) -> list[str]:
        return self.transform_keys or [WHOLE]

    def _empty_keys(self) -> IndexDF:
        return empty_frame(self._key_columns())

    def _key_types(self) -> dict[str, Any]:
        types: dict[str, Any] = {}
        for t in self.inputs + self.outputs:
            if t.meta.exists:
                for k, v in t.meta.column_types().items():
                    types.setdefault(k, v)
        return types

    def _readers_hwm(self, conn: sa.Connection, table: str) -> int:
        """Lowest high-water mark of all steps reading `table` (moves below it are done)."""
        import sqlalchemy as sa

        inputs = self.ds.meta.step_inputs
        low = conn.execute(sa.select(sa.func.min(inputs.c.hwm))
                           .where(inputs.c.input == table)).scalar_one()
        return int(low or 0)

    # --- processing ---------------------------------------------------------------------
    def _process(self, pending: IndexDF, done_seq: int, report: RunReport) -> ChangeList:
        """Run the function over `pending` keys in batches; isolate failing batches.

        A batch that read a source file changed since its sync is recorded as failed
        and handed to the run (`report.stale_reads`), which syncs the file again and redoes
        it. If writing an output file fails, every key fails with that error, and the
        output is rebuilt by the next run.
        """
        keys = self._key_columns()
        pending = unique_rows(pick(pending, keys))
        if not self._keys_table_fits():
            self.meta.ensure(self.transform_keys, {**_types_from(pending), **self._key_types()})
        changes = ChangeList()
        total = len(pending)
        self._unwritten = set()
        if total > SMALL_FRAME:  # a few keys: their lookups cost less than this check
            with self.ds.meta.begin() as conn:
                self._unwritten = {o.name for o in self.outputs
                                   if self._keys_kept_in(o) and o.meta.is_empty(conn)}
        report.step_started(self.name, total)
        executor = self.ds.executor
        # batches whose function runs (on a worker, with another executor) while the next
        # are read; their outputs are written in order, each in its own transaction
        running: deque[tuple[IndexDF, Future[Any] | None]] = deque()
        try:
            with flush_once(self.outputs):
                for start in range(0, total, self.chunk_size):
                    batch = pending.iloc[start:start + self.chunk_size].reset_index(drop=True)
                    try:
                        frames = self._read_batch(batch)
                    except Exception as exc:  # noqa: BLE001 - isolate the batch, record why
                        self._fail(batch, exc, done_seq, report)
                        report.step_progress(self.name, len(batch))
                        continue
                    # every input row under these keys is gone: so must their outputs be
                    running.append((batch, executor.submit(self.func, frames, self.kwargs)
                                    if any(len(f) for f in frames) else None))
                    while len(running) >= executor.slots:
                        self._finish(*running.popleft(), done_seq, changes, report)
                while running:
                    self._finish(*running.popleft(), done_seq, changes, report)
        except OutputWriteError as exc:
            # none of the keys is done: all fail with this error, and the output is
            # rebuilt by the next run (it stays marked dirty; its readers wait)
            report.stale_reads[:] = [r for r in report.stale_reads if r[0] != self.name]
            self._fail(pending, exc, done_seq, report)
            return ChangeList()
        finally:
            for _, future in running:  # stopped early: what was not written is not wanted
                if future is not None:
                    future.cancel()
        return changes

    def _finish(self, batch: IndexDF, future: Future[Any] | None, done_seq: int,
                changes: ChangeList, report: RunReport) -> None:
        """Write the outputs of a batch whose function has run (or record its failure)."""
        try:
            result = self._checked(future.result()) if future is not None else \
                tuple(empty_frame(o.primary_keys) for o in self.outputs)
            self._write_batch(batch, result, done_seq, changes, report)
        except Exception as exc:  # noqa: BLE001 - isolate the batch, record why
            self._fail(batch, exc, done_seq, report)
        report.step_progress(self.name, len(batch))

    def _fail(self, batch: IndexDF, exc: Exception, done_seq: int, report: RunReport) -> None:
        """Record `batch` as failed with `exc` (retried next run, or soon if a source changed)."""
        text = error_text(exc)
        with self.ds.meta.begin() as conn:
            self.meta.record(conn, batch, text, done_seq)
        if isinstance(exc, SourceChangedError):
            log.info("step %s: %s; redoing %d key(s)", self.name, exc, len(batch))
            report.stale_reads.append((self.name, batch, text))
            return
        log.error("step %s failed for %d key(s) %s: %s", self.name, len(batch),
                  _show_keys(batch), text)
        report.step_failed(self.name, batch, text)

    def _read_batch(self, batch: IndexDF) -> list[DataDF]:
        """All current input rows under the batch's keys, oldest change first."""
        import numpy as np

        ikeys = self.input_keys()
        joined: dict[str, DataDF] = {}
        with self.ds.meta.begin() as conn:
            for t in self.inputs:
                on = ikeys[t.name]
                found = t.live_rows_matching(conn, t.meta.coerce(pick(batch, on))) \
                    if on and t.meta.holds(on) else None
                if found is not None:
                    joined[t.name] = found
            metas = [None if t.name in joined else self._input_meta(conn, t, batch, ikeys[t.name])
                     for t in self.inputs]
        frames = []
        for t, meta in zip(self.inputs, metas):
            if t.name in joined:
                frames.append(joined[t.name])
                continue
            if meta is None:
                frames.append(t.store.read_rows(empty_frame(t.primary_keys)))
                continue
            on = ikeys[t.name]
            rows = t.store.read_rows_matching(t.meta.coerce(pick(batch, on))) if on else None
            if rows is None:
                rows = t.store.read_rows(pick(meta, t.primary_keys) if on else None)
            rows = t.meta.coerce(rows)
            # only rows the meta knows as live, ordered by their last change
            pos = key_positions(rows, meta, t.primary_keys)
            keep = np.flatnonzero(pos >= 0)
            order = keep[np.argsort(meta["seq"].to_numpy()[pos[keep]], kind="stable")]
            rows = rows.take(order).reset_index(drop=True)
            if _read_as_synced(t):
                _check_as_synced(t, rows, meta, pos[order])
            frames.append(rows)
        return frames

    @staticmethod
    def _input_meta(conn: sa.Connection, t: DataTable, batch: IndexDF,
                    on: list[str]) -> MetaDF | None:
        """Keys and seq of the live rows of `t` matching the batch's keys in columns `on`."""
        if not t.meta.holds(on):
            return None
        columns = t.primary_keys + ["seq"] + (["hash"] if _read_as_synced(t) else [])
        if not on:
            return t.meta.scan(conn, columns=columns)
        return t.meta.matching(conn, batch, columns=columns, on=on)

    def _checked(self, result: Any) -> tuple[DataDF, ...]:
        """The function's result as one frame per output, each checked."""
        import pandas as pd

        n = len(self.outputs)
        if isinstance(result, pd.DataFrame):
            result = (result,)
        if not isinstance(result, (tuple, list)) or len(result) != n or \
                not all(isinstance(r, pd.DataFrame) for r in result):
            got = (f"{len(result)} value(s)" if isinstance(result, (tuple, list))
                   else type(result).__name__)
            raise StepOutputError(
                f"step {self.name!r} must return {n} DataFrame(s) for outputs "
                f"{[t.name for t in self.outputs]}, got {got}")
        for out, df in zip(self.outputs, result):
            where = f"step {self.name!r} output {out.name!r}"
            if df.empty and not len(df.columns):
                continue
            check_keys(df, out.primary_keys, where, unique=False)  # repeats: `prepare_chunk`
            lacking = [k for k in self.transform_keys if k not in df.columns]
            if lacking:
                raise MissingColumnsError(f"{where}: result lacks transform key column(s) "
                                          f"{lacking}, needed to know which key each row belongs to")
        return tuple(result)

    def _write_batch(self, batch: IndexDF, result: tuple[DataDF, ...],
                     done_seq: int, changes: ChangeList, report: RunReport) -> None:
        """Replace the outputs under the batch's keys and record success, in one transaction.

        Every output is checked and diffed before any is written.
        """
        applied: list[DataTable] = []
        try:
            with self.ds.meta.begin() as conn:
                chunks = []
                for out, df in zip(self.outputs, result):
                    if not out.meta.exists and df.empty:
                        continue
                    if df.empty and not len(df.columns):
                        df = empty_frame(out.primary_keys)
                    known, covers = self._previous_outputs(conn, out, batch)
                    live = known[known["delete_ts"].isna().to_numpy(dtype=bool)] \
                        if covers is not None and len(known) else known
                    chunk = out.prepare_chunk(df, live, conn, known=known, covers=covers,
                                              where=f"step {self.name!r} output {out.name!r}")
                    if chunk.diff is not None and chunk.diff.beyond:  # rows under other batches' keys
                        self._unwritten.discard(out.name)
                    chunks.append((out, chunk))
                # outputs that roll back with the transaction first: if one of those fails,
                # no file or memory output has been touched yet
                for out, chunk in sorted(chunks, key=lambda c: not c[0].store.transactional):
                    applied.append(out)
                    changes.append(out.name, out.apply_chunk(chunk, conn, report=report))
                self.meta.record(conn, batch, None, done_seq)
        except Exception:
            for out in applied:  # its file may hold rows whose meta just rolled back
                if not out.store.transactional:
                    out.tainted = True
            raise
        report.step_done(self.name, batch)

    def _keys_kept_in(self, out: DataTable) -> bool:
        """Does every transform key keep its values as a key column of `out` (`keeps_values`
        from each input holding it)? Otherwise two keys of two batches may be one in `out`."""
        if not (out.meta.exists and set(self.transform_keys) <= set(out.primary_keys)):
            return False
        theirs = out.meta.column_types()
        for t in self.inputs:
            if not t.meta.exists:
                return False
            mine = t.meta.column_types()
            if not all(keeps_values(mine[k], theirs.get(k)) for k in self.transform_keys if k in mine):
                return False
        return True

    def _previous_outputs(self, conn: sa.Connection, out: DataTable,
                          batch: IndexDF) -> tuple[MetaDF, IndexDF | None]:
        """Meta rows (all columns) of the output rows under the batch's keys: the live
        ones; or, when the transform keys are key columns of the output, every one
        (deleted too), and the batch as the keys these rows cover (no other meta row of
        the output can hold keys with those values: `DataTable.prepare_chunk`)."""
        out.ensure_tracked(conn=conn)
        if not out.meta.holds(self.transform_keys):  # no rows yet to know the columns by
            return empty_frame(out.primary_keys), None
        if self.whole:
            return out.meta.scan(conn), None
        if set(self.transform_keys) <= set(out.primary_keys):
            covers = out.meta.coerce(pick(batch, self.transform_keys))
            if out.name in self._unwritten:  # nothing there yet: no lookup (a first run)
                return out.meta.empty(), covers
            return out.meta.matching(conn, batch, on=self.transform_keys, include_deleted=True), covers
        return out.meta.matching(conn, batch, on=self.transform_keys), None


def _read_as_synced(t: DataTable) -> bool:
    """Must rows read from `t` be checked against the sync's hashes (a file source)?"""
    return t.is_file_backed and t.produced_by is None


def _check_as_synced(t: DataTable, rows: DataDF, meta: MetaDF, pos: Any) -> None:
    """Raise SourceChangedError unless `rows` (read from `t`'s files now, `pos` their meta
    rows) are exactly the rows the last sync hashed: the file may have changed since."""
    import numpy as np

    from ..hashing import hash_rows

    same = len(rows) == len(meta) and bool(
        (np.asarray(hash_rows(rows), dtype="int64")
         == meta["hash"].to_numpy(dtype="int64")[pos]).all())
    if not same:
        raise SourceChangedError(f"{t.store.describe()} changed since it was synced")


def _whole_key() -> IndexDF:
    import pandas as pd

    return pd.DataFrame({WHOLE: [0]})



def _rows_of(frames: list[IndexDF]) -> IndexDF:
    """`concat_rows` of key frames, an empty frame when there are none."""
    import pandas as pd

    found = concat_rows(frames)
    return pd.DataFrame() if found is None else found


def _types_from(df: pd.DataFrame) -> dict[str, Any]:
    from ..frames import sql_type_for

    return {c: sql_type_for(df[c]) for c in df.columns}


def _show_keys(batch: IndexDF, limit: int = 3) -> str:
    rows = batch.head(limit).to_dict("records")
    more = f" +{len(batch) - limit} more" if len(batch) > limit else ""
    return ", ".join(str(r) for r in rows) + more
