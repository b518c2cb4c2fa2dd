"""What the next run would do, found without committing anything (like `make -n`).

`build_plan` compares the files of each file source with their recorded fingerprints
(one stat per file), reads and hashes the changed ones exactly as the sync does
(`sync._read_changed`, `hashing.hash_rows`) and compares their rows with the row meta in
read-only queries: no fingerprint is registered, no clock value taken, no file written.
The rows a sync would add, change and delete give, for each step reading that source, the
transform keys the run would recompute — the old and the new group of a row moving between
groups, keys completed from the step's other inputs as the step itself does it
(`BatchTransformStep._expand`) — merged with what the index already holds pending
(`BatchTransformStep._pending`: synced changes not processed yet, failed keys, a code
change).

Steps below other steps: which keys such a step recomputes depends on the rows the step
above writes, known only by running its function. Its count holds what is known now (its
own pending keys in the index, the sources it reads itself), and `StepPlan.after` names
the steps above whose changes come on top: the CLI shows ``3+`` and "+ what price_orders
changes". So a count is exact for a step reading only sources, a lower bound for a step
below a step with work; a step is never called up to date while a step above it has work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from .frametypes import DataDF, IndexDF, MetaDF
    from .steps.base import ComputeStep
    from .table import DataTable

#: keys kept per step in a plan (the counts are always complete)
KEYS_KEPT = 1000


@dataclass
class SourcePlan:
    """How a file source differs on disk from what the last sync saw, and what syncing it
    would do to its rows (when its changed files were read: `read`)."""

    table: str
    new: list[str]
    changed: list[str]
    missing: list[str]
    added: int = 0
    updated: int = 0
    deleted: int = 0
    #: files the sync would report as unreadable (or clashing), by path
    unreadable: dict[str, str] = field(default_factory=dict)
    #: why the sync would change nothing (it would delete too much), else None
    refused: str | None = None
    read: bool = False

    @property
    def rows_changed(self) -> int:
        return self.added + self.updated + self.deleted

    def as_dict(self) -> dict[str, Any]:
        return {"table": self.table, "new": self.new, "changed": self.changed,
                "missing": self.missing,
                "rows": {"added": self.added, "updated": self.updated, "deleted": self.deleted},
                "unreadable": self.unreadable, "refused": self.refused}


@dataclass
class StepPlan:
    """What the next run of one step would do, and why."""

    name: str
    inputs: list[str]
    outputs: list[str]
    transform_keys: list[str]
    pending: int
    failed: int
    reason: str
    errors: list[str] = field(default_factory=list)
    #: the pending keys (at most KEYS_KEPT of them), None when not worked out
    keys: IndexDF | None = None
    #: steps above whose changes add keys not counted in `pending`
    after: list[str] = field(default_factory=list)
    #: why the step would not run (an input's sync would be refused), else None
    waiting: str | None = None

    def as_dict(self) -> dict[str, Any]:
        keys = None
        if self.keys is not None:
            keys = _json_records(self.keys) if self.transform_keys else []
        return {"name": self.name, "inputs": self.inputs, "outputs": self.outputs,
                "transform_keys": self.transform_keys, "pending": self.pending,
                "pending_is_lower_bound": bool(self.after), "after": self.after,
                "failed": self.failed, "state": self.reason, "errors": self.errors,
                "waiting": self.waiting, "keys": keys,
                "keys_complete": keys is not None and len(keys) == self.pending}


@dataclass
class Plan:
    """What the next run would do: per source, per step, per output file."""

    sources: list[SourcePlan]
    steps: list[StepPlan]
    #: file outputs changed on disk since filepipe wrote them (`changed` lists the files)
    outputs: list[SourcePlan]

    @property
    def pending(self) -> bool:
        """Would a run recompute anything (or check an output changed on disk)?"""
        return any(s.pending or s.after for s in self.steps) or bool(self.outputs)

    @property
    def failed(self) -> int:
        return sum(s.failed for s in self.steps)

    def problems(self) -> list[str]:
        """What a run would report as errors: unreadable files, refused syncs."""
        lines = [f"UNREADABLE {path}: {err.splitlines()[0] if err else ''}"
                 for s in self.sources for path, err in s.unreadable.items()]
        lines += [f"NOT SYNCED {s.table}: {s.refused}" for s in self.sources if s.refused]
        return lines

    @property
    def clean(self) -> bool:
        """Nothing pending, nothing failed, no problem."""
        return not (self.pending or self.failed or self.problems())

    def as_dict(self) -> dict[str, Any]:
        return {"up_to_date": self.clean, "pending": self.pending, "failed": self.failed,
                "problems": self.problems(),
                "sources": [s.as_dict() for s in self.sources],
                "steps": [s.as_dict() for s in self.steps],
                "outputs": [{"table": o.table, "changed": o.changed} for o in self.outputs]}


@dataclass
class _Touched:
    """Rows a sync of one source would write: `written` (new and changed rows, every
    column) and `before` (meta rows of the keys they replace and of the rows it deletes)."""

    written: DataDF
    before: MetaDF


# --- sources ---------------------------------------------------------------------------

def source_changes(table: DataTable, read: bool = True,
                   allow_deletes: bool = False) -> tuple[SourcePlan, _Touched | None]:
    """How `table`'s files differ from the last sync; with `read`, the rows a sync would
    add, change and delete (its changed files read and hashed; nothing is written)."""
    from .sync import _ever_held_rows, _root_missing, _vanished, file_changes

    found = file_changes(table)
    skipped = table.store.skipped_files()
    missing = [p for p in found.missing if p not in skipped]
    plan = SourcePlan(table.name, found.new, found.changed, found.missing,
                      unreadable=dict(skipped))
    if found.listed.empty and not allow_deletes and (
            missing or (_root_missing(table) and not _ever_held_rows(table))):
        plan.refused = _vanished(table)
        return plan, None
    if not read or (not found.to_read and not missing):
        return plan, None
    plan.read = True
    return plan, _rows_to_sync(table, plan, found.to_read, missing, found.stored, allow_deletes)


def _rows_to_sync(table: DataTable, plan: SourcePlan, to_read: list[str], missing: list[str],
                  stored: pd.DataFrame, allow_deletes: bool) -> _Touched | None:
    """`sync_table`'s diff, in read-only queries: counts into `plan`, rows returned."""
    import numpy as np
    import pandas as pd

    from .frames import key_positions, pick, rows_in
    from .hashing import hash_rows
    from .sync import _mass_delete, _read_changed, _without_clashes

    keys, meta = table.primary_keys, table.meta
    read = _read_changed(table, to_read)
    errors = plan.unreadable
    errors.update(read.errors)
    with table.ds.meta.begin() as conn:
        data = read.data
        if data is not None:
            data = _without_clashes(conn, table, data, stored, missing, errors)
        read_ok = [p for p in to_read if p not in errors]
        ids = [int(i) for i in stored.loc[stored["path"].isin(read_ok + missing), "file_id"]]
        prev = meta.matching(conn, pd.DataFrame({"file_id": ids})) if meta.exists and ids \
            else None
        prev_keys = pick(prev, keys) if prev is not None else pd.DataFrame(columns=keys)
        refused = None if allow_deletes else _mass_delete(conn, table, data, prev_keys)
        if refused:
            plan.refused = refused
            return None
        if data is None:
            data = pd.DataFrame(columns=keys + ["_path"])
        data = data[data["_path"].isin(read_ok)]
        file_of = dict(zip(stored["path"], stored["file_id"].astype("float64")))
        fids = data["_path"].map(file_of).to_numpy(dtype="float64", na_value=-2.0)
        data = meta.coerce(data.drop(columns="_path")).reset_index(drop=True)
        before = []
        write = np.ones(len(data), dtype=bool)
        live = np.zeros(len(data), dtype=bool)
        if len(data) and meta.exists:
            old = meta.lookup(conn, pick(data, keys))
            if len(old):
                hashes = np.asarray(hash_rows(data), dtype="int64")
                pos = key_positions(data, old, keys)
                existed = pos >= 0
                live = existed & old["delete_ts"].isna().to_numpy(dtype=bool)[pos]
                same = live & (old["hash"].to_numpy(dtype="int64")[pos] == hashes)
                same &= old["file_id"].to_numpy(dtype="float64", na_value=-1.0)[pos] == fids
                write = ~same
                before.append(old.take(pos[existed & write]))
    gone = prev if prev is not None else pd.DataFrame(columns=keys)
    if len(gone) and len(data):
        gone = gone[~rows_in(gone, data, keys)]
    before.append(gone)
    plan.added = int((write & ~live).sum())
    plan.updated = int((write & live).sum())
    plan.deleted = len(gone)
    if not plan.rows_changed:
        return None
    found = [f for f in before if len(f)]
    return _Touched(data[write].reset_index(drop=True),
                    pd.concat(found, ignore_index=True) if found else pd.DataFrame())


# --- steps -----------------------------------------------------------------------------

def step_plans(steps: Sequence[ComputeStep], touched: dict[str, _Touched],
               refused: dict[str, str] | None = None, full: bool = False) -> list[StepPlan]:
    """Per step (in dependency order): the keys it would recompute, counted from what
    the index holds and the rows `touched` of sources (see the module docstring).
    `refused`: sources whose sync would be refused (their steps wait); `full`: every key."""
    refused = refused or {}
    plans: list[StepPlan] = []
    busy: dict[str, str] = {}  # table → the step writing it, when that step has work
    for s in steps:
        st = s.status()
        keys: IndexDF | None = None
        pending, reason = st.pending, st.reason
        if hasattr(s, "_pending"):  # a BatchTransformStep: its keys
            keys = _transform_keys(s, touched, full)
            if keys is not None:
                pending = len(keys)
        if full:
            reason = "recomputes every key (--full)"
        elif pending and reason.startswith("up to date"):
            reason = "source files changed" + reason[len("up to date"):]
        after = list(dict.fromkeys(busy[t.name] for t in s.inputs if t.name in busy))
        if after:
            more = f"+ what {', '.join(after)} change{'s' if len(after) == 1 else ''}"
            reason = more if reason.startswith("up to date") else f"{reason}; {more}"
        blocked = [f"the sync of {t.name!r} would be refused" for t in s.inputs if t.name in refused]
        waiting = "; ".join(blocked) or None
        if waiting:
            reason = f"waits: {waiting}"
        plans.append(StepPlan(s.name, [t.name for t in s.inputs], [t.name for t in s.outputs],
                              st.transform_keys, pending, st.failed, reason, st.errors,
                              keys.head(KEYS_KEPT) if keys is not None else None, after, waiting))
        if (pending or after) and not waiting:
            busy.update({t.name: s.name for t in s.outputs})
    return plans


def _transform_keys(step: Any, touched: dict[str, _Touched], full: bool) -> IndexDF | None:
    """The transform keys `step` (a BatchTransformStep) would process: pending in the index
    (every key with `full`), and those of the rows a sync of its sources would write."""
    from .frames import pick, sorted_by_key, unique_rows
    from .steps.transform import _rows_of

    columns = step._key_columns()
    with step.ds.meta.begin() as conn:
        if full:
            ikeys = step.input_keys()
            if not ikeys and step.inputs:
                return None
            found = _rows_of([step._output_keys(conn),
                              step._changed_keys(conn, ikeys, {}, step.ds.meta.current_seq(conn),
                                                 skip_done=False)[0]])
        else:
            found = step._pending(conn).keys
        frames = [] if found is None else [found]
        for t in step.inputs:
            rows = touched.get(t.name)
            if rows is not None:
                frames.append(_keys_of_rows(step, conn, t, rows))
    if not frames:
        return None
    every = _rows_of(frames)
    if every.empty:
        return step._empty_keys()
    return sorted_by_key(unique_rows(pick(every, columns)), columns)


def _keys_of_rows(step: Any, conn: Any, t: DataTable, rows: _Touched) -> IndexDF:
    """Transform keys of `step` under the rows of its input `t` that a sync would write or
    delete: their new values, and the old ones of the keys they replace (a moved group)."""
    import pandas as pd

    from .frames import pick, unique_rows
    from .steps.transform import _rows_of, _whole_key

    if step.whole:
        return _whole_key()
    ikeys = step.input_keys()
    cols = ikeys.get(t.name)
    if cols is None:  # inputs not resolved yet: the columns the rows hold
        cols = [k for k in step.transform_keys if k in rows.written.columns]
        ikeys = {**{i.name: [] for i in step.inputs}, **ikeys, t.name: cols}
    if not cols:  # the input holds no transform key: every key of the other inputs
        found = _whole_key()
    else:
        parts = [pick(f, cols) for f in (rows.written, rows.before)
                 if len(f) and all(c in f.columns for c in cols)]
        if not parts:
            return pd.DataFrame(columns=step._key_columns())
        found = unique_rows(t.meta.coerce(_rows_of(parts)))
    _, _, hwm = step.meta.state(conn)
    return step._expand(conn, t, found, ikeys, hwm)


# --- outputs ---------------------------------------------------------------------------

def output_changes(steps: Sequence[ComputeStep]) -> list[SourcePlan]:
    """File outputs whose files differ from what filepipe last wrote (fingerprints
    only): the next run checks their rows, backs up real edits and rebuilds them."""
    from .sync import file_changes

    plans = []
    for s in steps:
        for t in s.outputs:
            if not t.is_file_backed:
                continue
            found = file_changes(t)
            files = set(found.stored.loc[found.stored["size"].notna(), "path"])
            changed = sorted(found.changed + found.new + [p for p in found.missing if p in files])
            if found.stored.empty or not changed:
                continue
            plans.append(SourcePlan(t.name, [], changed, []))
    return plans


# --- the plan --------------------------------------------------------------------------

def build_plan(steps: Sequence[ComputeStep], sources: Sequence[DataTable],
               read: bool = True, full: bool = False, allow_deletes: bool = False) -> Plan:
    """What running `steps` would do (`sources`: the file sources it would sync).

    With `read`, changed source files are read and hashed to count the keys they touch;
    without, only fingerprints are compared. Nothing is written either way.
    """
    source_plans, touched, refused = [], {}, {}
    for t in sources:
        plan, rows = source_changes(t, read=read, allow_deletes=allow_deletes)
        if plan.new or plan.changed or plan.missing or plan.unreadable or plan.refused:
            source_plans.append(plan)
        if rows is not None:
            touched[t.name] = rows
        if plan.refused:
            refused[t.name] = plan.refused
    return Plan(source_plans, step_plans(steps, touched, refused, full), output_changes(steps))


def _json_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows of `df` as JSON-ready dicts (dates as ISO text, floats exact)."""
    import json

    return list(json.loads(frame_json(df)))


def frame_json(df: pd.DataFrame) -> str:
    """`df` as a JSON array of records: dates in ISO format, every float exactly as it is
    (the shortest text that reads back to the same float, unlike pandas' `to_json`,
    which keeps at most 15 decimals: 0.1 + 0.2 would become 0.3)."""
    import json
    import math

    records = json.loads(df.to_json(orient="records", date_format="iso", force_ascii=False,
                                    double_precision=15))
    names = [str(c) for c in df.columns]
    for j, name in enumerate(names):
        column = df.iloc[:, j]
        if column.dtype.kind not in "fO":
            continue
        for record, value in zip(records, column.tolist()):
            if isinstance(value, float) and math.isfinite(value):
                record[name] = value
    return json.dumps(records, ensure_ascii=False, separators=(",", ":"))
