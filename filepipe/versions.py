"""Versions of a pipeline's data: the run log, tables as of a version, diffs, the history
of one row, tags and garbage collection (docs/history.md).

Every run that changes something is a version, numbered by its run id. A *ref* names a
version: a run id (``12``), a tag (``month-end``), or a time (``2026-11-30``,
``2026-11-30T14:00``: the state at that moment). Everything here reads the history and
the run log; nothing changes the tables.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import FilepipeError

if TYPE_CHECKING:
    import pandas as pd

    from .history import TableDiff
    from .table import DataStore


@dataclass
class Version:
    """One run that changed something (or failed): the unit of history."""

    run_id: int
    started: float
    finished: float | None  # None: the run was interrupted
    trigger: str
    seq_from: int
    seq_to: int
    tables: dict[str, dict[str, int]]  # table -> {"added", "updated", "deleted"}
    failed: int
    tags: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "started": _iso(self.started),
                "finished": _iso(self.finished) if self.finished else None,
                "trigger": self.trigger, "tables": self.tables, "failed": self.failed,
                "tags": self.tags}


def log(ds: DataStore, table: str | None = None, limit: int | None = None) -> list[Version]:
    """Versions, newest first; with `table`, those that changed it."""
    if table is not None:
        table_keys(ds, table)  # a table the index knows
    history = ds.meta.history
    with ds.meta.begin() as conn:
        runs = history.runs(conn, limit=limit if table is None else None)
        tags = history.tags(conn)
    by_run: dict[int, list[str]] = {}
    for name, run_id in zip(tags["name"], tags["run_id"]):
        if run_id == run_id and run_id is not None:  # not NaN
            by_run.setdefault(int(run_id), []).append(str(name))
    out = []
    for row in runs.to_dict("records"):
        summary = row["summary"] or {}
        tables = {t: {k: int(v) for k, v in c.items()} for t, c in summary.get("tables", {}).items()}
        if table is not None and not any(tables.get(table, {}).values()):
            continue
        finished = row["finished"]
        out.append(Version(int(row["run_id"]), float(row["started"]),
                           None if finished != finished or finished is None else float(finished),
                           str(row["trigger"]), int(row["seq_from"]), int(row["seq_to"]), tables,
                           int(summary.get("failed", 0)), by_run.get(int(row["run_id"]), [])))
        if limit and len(out) >= limit:
            break
    return out


def resolve(ds: DataStore, ref: str | int | None, kept_only: bool = True) -> int:
    """The clock value a ref names: the state after run ``N``, at a tag, or at a time.
    None: now. A state `gc` dropped is refused (unless not `kept_only`)."""
    if ref is None or ref == "":
        return ds.meta.current_seq()
    history = ds.meta.history
    text = str(ref).strip()
    with ds.meta.begin() as conn:
        tags = history.tags(conn)
        runs = history.runs(conn, columns=("run_id", "finished", "seq_to"))
        kept_from = history.kept_from(conn)
    hit = tags[tags["name"] == text]
    if len(hit):
        return int(hit["seq"].iloc[0])
    if text.isdigit():
        found = runs[runs["run_id"] == int(text)]
        if found.empty:
            raise FilepipeError(f"no version {text}: `filepipe log` lists them")
        seq = int(found["seq_to"].iloc[0])
    else:
        moment = _parse_time(text)
        if moment is None:
            raise FilepipeError(f"{text!r} names no version: give a run id from `filepipe log`, a tag "
                                "from `filepipe tags`, or a time such as 2026-11-30 or 2026-11-30T14:00")
        before = runs[runs["finished"].fillna(float("inf")) <= moment]
        seq = int(before["seq_to"].max()) if len(before) else 0
    if kept_only and seq < kept_from and seq not in set(tags["seq"].astype("int64")):
        first = runs[runs["seq_to"] >= kept_from]["run_id"].min()
        raise FilepipeError(f"version {text} is older than the history `filepipe gc` kept: every "
                            f"version from {first} on, and the tagged ones (`filepipe tags`)")
    return seq


def table_keys(ds: DataStore, table: str) -> list[str]:
    """The key columns of `table`, from the index."""
    meta = ds.meta.row_meta(table)
    if not meta.exists:
        raise FilepipeError(f"the index knows no table {table!r}")
    return list(meta.keys)


def as_of(ds: DataStore, table: str, ref: str | int | None = None) -> pd.DataFrame:
    """The rows of `table` as they were at `ref` (default: now), sorted by key."""
    _check_history(ds, table)
    return ds.history.as_of(table, table_keys(ds, table), resolve(ds, ref))


def diff(ds: DataStore, table: str, from_ref: str | int | None = None,
         to_ref: str | int | None = None, run: int | None = None) -> TableDiff:
    """Rows added, deleted and changed in `table` between two versions (`to_ref` default:
    now), or by the run `run`."""
    from .history import diff_states

    keys = table_keys(ds, table)
    _check_history(ds, table)
    if run is not None:
        lo, hi = _run_range(ds, run)
    else:
        lo, hi = resolve(ds, from_ref), resolve(ds, to_ref)
    store = ds.history
    # only the keys that changed in between: cost grows with the changes
    changed = store.read(table, min(lo, hi), max(lo, hi))
    touched = changed[keys].drop_duplicates()
    return diff_states(store.as_of_keys(table, keys, lo, touched),
                       store.as_of_keys(table, keys, hi, touched), keys)


def row_history(ds: DataStore, table: str, key: Mapping[str, Any]) -> pd.DataFrame:
    """Every version of one row, oldest first: run, time, kind and the columns that
    changed from the version before, then the row's values."""
    import pandas as pd

    from .history.states import HASH, KIND, RUN, SEQ

    keys = table_keys(ds, table)
    missing = [k for k in keys if k not in key]
    if missing:
        raise FilepipeError(f"name every key column of {table!r}: missing {', '.join(missing)} "
                            f"(keys: {', '.join(keys)})")
    _check_history(ds, table)
    typed = ds.meta.row_meta(table).coerce(pd.DataFrame({k: [key[k]] for k in keys}))
    versions = ds.history.versions(table, keys, typed.iloc[0].to_dict())
    if versions.empty:
        return versions
    with ds.meta.begin() as conn:
        runs = ds.meta.history.runs(conn, columns=("run_id", "finished", "trigger"))
    when = dict(zip(runs["run_id"], runs["finished"]))
    columns = [c for c in versions.columns if c not in (SEQ, RUN, KIND, HASH)]
    values = versions[[c for c in columns if c not in keys]]
    changed = []
    previous: dict[str, Any] | None = None
    for kind, row in zip(versions[KIND], values.to_dict("records")):
        if kind == "deleted":
            changed.append("")
            previous = None
            continue
        changed.append(", ".join(c for c, v in row.items()
                                 if previous is None or not _same(previous.get(c), v)))
        previous = row
    out = pd.DataFrame({
        "run": versions[RUN].to_numpy(),
        "time": [_iso(when.get(r)) for r in versions[RUN]],
        "change": versions[KIND].to_numpy(),
        "changed": changed,
    })
    return pd.concat([out, values.reset_index(drop=True)], axis=1)


def tag(ds: DataStore, name: str, message: str | None = None, ref: str | int | None = None) -> int:
    """Name the current version (or `ref`); returns the run id tagged (0: before any run)."""
    if not name or name.isdigit() or _parse_time(name) is not None:
        raise FilepipeError(f"tag name {name!r} could be read as a run id or a time: choose "
                            "a name with a letter in it, such as month-end-2026-11")
    seq = resolve(ds, ref)
    versions = [v for v in log(ds) if v.seq_to <= seq]
    run_id = versions[0].run_id if versions else 0
    with ds.meta.begin() as conn:
        ds.meta.history.tag(conn, name, run_id, seq, time.time(), message)
    return run_id


def tags(ds: DataStore) -> pd.DataFrame:
    """Tags: name, run id, clock value, when made, message."""
    with ds.meta.begin() as conn:
        return ds.meta.history.tags(conn).sort_values("created", ignore_index=True)


def gc(ds: DataStore, keep_runs: int | None = None, keep_days: float | None = None) -> dict[str, int]:
    """Drop history older than the last `keep_runs` versions or `keep_days` days: every
    state since then stays exact, and so do tagged versions. Returns the row versions
    dropped per table; current data and meta are untouched."""
    if keep_runs is None and keep_days is None:
        raise FilepipeError("say what to keep: --keep-runs N or --keep-days D")
    versions = log(ds)
    points = []
    if keep_runs is not None:
        kept = versions[:max(keep_runs, 0)]
        points.append(kept[-1].seq_from if kept else ds.meta.current_seq())
    if keep_days is not None:
        cutoff = time.time() - keep_days * 86400
        points.append(resolve(ds, _iso(cutoff), kept_only=False))
    keep_from = min(points) if len(points) > 1 else points[0]
    keep_seqs = [int(s) for s in tags(ds)["seq"]]
    store = ds.history
    with ds.meta.begin() as conn:  # first: a crash during gc leaves no state served half-dropped
        ds.meta.history.set_kept_from(conn, max(keep_from, ds.meta.history.kept_from(conn)))
    dropped = {}
    for table in store.tables():
        meta = ds.meta.row_meta(table)
        if meta.exists:
            dropped[table] = store.gc(table, list(meta.keys), keep_from, keep_seqs)
            store.compact(table, 1)
    return dropped


def changed_tables(ds: DataStore, from_ref: str | int | None = None, to_ref: str | int | None = None,
                   run: int | None = None) -> list[str]:
    """Tables with row versions between two versions (or in run `run`)."""
    lo, hi = _run_range(ds, run) if run is not None else (resolve(ds, from_ref), resolve(ds, to_ref))
    store = ds.history
    return [t for t in store.tables() if any(s.overlaps(min(lo, hi), max(lo, hi))
                                             for s in store.segments(t))
            and len(store.read(t, min(lo, hi), max(lo, hi)))]


def change_workbook(ds: DataStore, path: str | Path, diffs: Mapping[str, TableDiff],
                    title: str) -> None:
    """Write `diffs` as a workbook people open: a summary sheet, then a sheet per table
    (added rows green, deleted red, changed cells highlighted holding old → new)."""
    import pandas as pd

    from .history import write_diff_workbook

    summary = pd.DataFrame([{"table": t, **d.counts} for t, d in diffs.items()]) if diffs \
        else pd.DataFrame({"table": [], "added": [], "deleted": [], "changed": []})
    summary.insert(0, "changes", [title] * len(summary))
    write_diff_workbook(path, diffs, summary)


def export(df: pd.DataFrame, path: str | Path) -> None:
    """Write `df` to a new file, the format by its extension (.csv, .xlsx, .parquet,
    .json), atomically; an existing file is never overwritten."""
    from .fileutil import atomic_write, display_path

    target = Path(path)
    if target.exists():
        raise FilepipeError(f"{display_path(target)} exists: name a new file (filepipe never "
                            "writes over a file you have)")
    suffix = target.suffix.lower()
    writers = {
        ".csv": lambda tmp: df.to_csv(tmp, index=False),
        ".xlsx": lambda tmp: df.to_excel(tmp, index=False, engine="xlsxwriter"),
        ".parquet": lambda tmp: df.to_parquet(tmp, index=False),
        ".json": lambda tmp: df.to_json(tmp, orient="records", date_format="iso",
                                        force_ascii=False, double_precision=15),
    }
    if suffix not in writers:
        raise FilepipeError(f"cannot tell the format of {display_path(target)}: name a .csv, "
                            ".xlsx, .parquet or .json file")
    atomic_write(target, writers[suffix])


# --- helpers ---------------------------------------------------------------------------


def _check_history(ds: DataStore, table: str) -> None:
    if not ds.meta.history.enabled:
        raise FilepipeError("this index keeps no history: it was opened with history=False, or it "
                            "is on a database server and no folder was named for its versions "
                            "(DataStore(url, history='folder'))")
    table_keys(ds, table)


def _run_range(ds: DataStore, run: int) -> tuple[int, int]:
    with ds.meta.begin() as conn:
        runs = ds.meta.history.runs(conn, columns=("run_id", "seq_from", "seq_to"))
        kept_from = ds.meta.history.kept_from(conn)
    found = runs[runs["run_id"] == int(run)]
    if found.empty:
        raise FilepipeError(f"no version {run}: `filepipe log` lists them")
    lo, hi = int(found["seq_from"].iloc[0]), int(found["seq_to"].iloc[0])
    if lo < kept_from:
        raise FilepipeError(f"the changes of version {run} are older than the history "
                            "`filepipe gc` kept")
    return lo, hi


def _parse_time(text: str) -> float | None:
    """A local date or date-time as epoch seconds, or None."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.timestamp()


def _iso(ts: float | None) -> str:
    if ts is None or ts != ts:
        return ""
    return dt.datetime.fromtimestamp(ts).isoformat(timespec="seconds")


def _same(a: Any, b: Any) -> bool:
    try:
        import pandas as pd

        if pd.isna(a) and pd.isna(b):
            return True
    except (TypeError, ValueError):
        pass
    return bool(a == b) if type(a) is type(b) or _numbers(a, b) else False


def _numbers(a: Any, b: Any) -> bool:
    import numbers

    return isinstance(a, numbers.Number) and isinstance(b, numbers.Number) \
        and not isinstance(a, bool) and not isinstance(b, bool)
