"""Checks and conversions on pandas frames shared by tables, steps and stores."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from .errors import DuplicateColumnsError, DuplicateKeysError, KeyTypeError, MissingColumnsError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import sqlalchemy as sa

_MAX_SHOWN = 5


def check_keys(df: pd.DataFrame, keys: Sequence[str], where: str, unique: bool = True) -> None:
    """Raise a clear error when `df` repeats a column name, lacks key columns or (if
    `unique`) repeats a key."""
    if not df.columns.is_unique:
        twice = list(dict.fromkeys(map(str, df.columns[df.columns.duplicated()])))
        raise DuplicateColumnsError(
            f"{where}: column(s) {', '.join(map(repr, twice))} appear more than once; keep one "
            "of each, e.g. df = df.loc[:, ~df.columns.duplicated()]")
    missing = [k for k in keys if k not in df.columns]
    if missing:
        near = [c for c in df.columns if not isinstance(c, str) and str(c) in missing]
        hint = (f" (column {near[0]!r} is named by a {type(near[0]).__name__}, not text: rename "
                "it, e.g. df.columns = df.columns.map(str))") if near else ""
        raise MissingColumnsError(
            f"{where}: missing key column(s) {', '.join(map(repr, missing))}; "
            f"columns present: {', '.join(map(repr, map(str, df.columns))) or '(none)'}{hint}"
        )
    if not unique or not keys or len(df) < 2:
        return
    if len(keys) == 1:  # a hash table, not a duplicated() mask
        with suppress(TypeError):  # unhashable values (lists): duplicated() compares them
            if df[keys[0]].is_unique:
                return
    dup = df.duplicated(list(keys), keep=False)
    if dup.any():
        shown = df.loc[dup, list(keys)].drop_duplicates()
        examples = "; ".join(
            ", ".join(f"{k}={v!r}" for k, v in zip(keys, row))
            for row in shown.head(_MAX_SHOWN).itertuples(index=False, name=None)
        )
        more = f" (and {len(shown) - _MAX_SHOWN} more)" if len(shown) > _MAX_SHOWN else ""
        raise DuplicateKeysError(
            f"{where}: duplicate primary key {examples}{more} — "
            f"each ({', '.join(keys)}) must appear once"
        )


SMALL_FRAME = 256  # below this many rows, plain Python sets beat pandas' per-call overhead


def key_tuples(df: pd.DataFrame, keys: Sequence[str]) -> list[tuple]:
    """The `keys` values of each row of `df` as tuples."""
    if not keys:
        return [()] * len(df)
    return list(zip(*(df[k].tolist() for k in keys)))


def rows_in(a: pd.DataFrame, b: pd.DataFrame, keys: Sequence[str]) -> np.ndarray:
    """For each row of `a`: are its `keys` values among the rows of `b`?

    A merge costs ~4 ms even on one-row frames, which is most of a one-row update; small
    frames (the common incremental case) use a set of key tuples instead.
    """
    import numpy as np

    keys = list(keys)
    check_comparable(a, b, keys)
    if len(a) <= SMALL_FRAME and len(b) <= SMALL_FRAME:
        present = set(key_tuples(b, keys))
        return np.fromiter((t in present for t in key_tuples(a, keys)), dtype=bool, count=len(a))
    marks = a[keys].merge(b[keys].drop_duplicates().assign(_in=True), on=keys, how="left")["_in"]
    return marks.notna().to_numpy(dtype=bool)


def pick(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """`df[columns]` with a fresh index; about twice as fast on small frames.

    May return `df` itself when it is that already: treat the result as read-only.
    """
    import pandas as pd

    if list(df.columns) == list(columns):
        index = df.index
        if isinstance(index, pd.RangeIndex) and index.start == 0 and index.step == 1:
            return df
        return df.reset_index(drop=True)
    if not len(columns):
        return pd.DataFrame(index=range(len(df)))
    return pd.DataFrame({c: df[c].array for c in columns})


def unique_rows(df: pd.DataFrame, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows of `df` whose `columns` (default all) were not seen in an earlier row; fresh index."""
    import numpy as np

    columns = list(df.columns if columns is None else columns)
    if len(df) > SMALL_FRAME:
        return df.drop_duplicates(columns).reset_index(drop=True)
    first: dict[tuple, int] = {}
    for i, t in enumerate(key_tuples(df, columns)):
        first.setdefault(t, i)
    if len(first) == len(df):
        return df.reset_index(drop=True)
    return df.take(np.fromiter(first.values(), dtype=np.intp, count=len(first))).reset_index(drop=True)


def latest_rows(df: pd.DataFrame, keys: Sequence[str], order: str) -> pd.DataFrame:
    """Per distinct `keys`, the row with the highest `order` value; fresh index."""
    import numpy as np

    keys = list(keys)
    if len(df) > SMALL_FRAME:
        return df.groupby(keys, as_index=False, dropna=False)[order].max()
    best: dict[tuple, int] = {}
    values = df[order].tolist()
    for i, t in enumerate(key_tuples(df, keys)):
        j = best.get(t)
        if j is None or values[i] > values[j]:
            best[t] = i
    return pick(df, keys + [order]).take(np.fromiter(best.values(), dtype=np.intp,
                                                     count=len(best))).reset_index(drop=True)


def check_comparable(a: pd.DataFrame, b: pd.DataFrame, keys: Sequence[str]) -> None:
    """Raise when a key column holds values of another kind in `a` than in `b`.

    Such keys never match (a merge would refuse them); without this check every row
    would silently look new.
    """
    for k in keys:
        kind_a, kind_b = _key_kind(a[k].dtype), _key_kind(b[k].dtype)
        if kind_a != kind_b and "object" not in (kind_a, kind_b):
            hint = " (convert timezone-aware times to UTC-naive ones)" if "tz" in (kind_a + kind_b) else ""
            raise KeyTypeError(f"key column {k!r} cannot match {a[k].dtype} values against "
                               f"{b[k].dtype} ones{hint}")


def _key_kind(dtype: Any) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
        return "number"
    if isinstance(dtype, pd.DatetimeTZDtype):
        return "datetime-tz"
    if pd.api.types.is_datetime64_dtype(dtype):
        return "datetime"
    if pd.api.types.is_timedelta64_dtype(dtype):
        return "timedelta"
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        return "str"
    return "object"


def key_positions(left: pd.DataFrame, right: pd.DataFrame, keys: Sequence[str]) -> np.ndarray:
    """For each row of `left`, the position of the row of `right` with equal `keys`, or -1.

    `right`'s keys must be unique. Both frames' key columns must have the same dtypes
    (coerce them first). Small frames use a dict, large ones a pandas index.
    """
    import numpy as np
    import pandas as pd

    keys = list(keys)
    check_comparable(left, right, keys)
    if len(left) <= SMALL_FRAME and len(right) <= SMALL_FRAME:
        where = {t: i for i, t in enumerate(key_tuples(right, keys))}
        return np.fromiter((where.get(t, -1) for t in key_tuples(left, keys)),
                           dtype=np.intp, count=len(left))
    if len(keys) == 1:
        found = _arrow_positions(left[keys[0]].array, right[keys[0]].array)
        if found is not None:
            return found
        return pd.Index(right[keys[0]]).get_indexer(left[keys[0]])
    index = pd.MultiIndex.from_arrays([right[k] for k in keys])
    return index.get_indexer(pd.MultiIndex.from_arrays([left[k] for k in keys]))


def _arrow_positions(left: Any, right: Any) -> np.ndarray | None:
    """`key_positions` of one text key held in Arrow by both sides (pandas' `str` dtype), by
    Arrow's hash lookup: 4x faster than a pandas index of those strings. None otherwise
    (other types, or nulls, which Arrow and pandas match differently)."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    arrow = pd.arrays.ArrowStringArray
    if not (isinstance(left, arrow) and isinstance(right, arrow)) or left.isna().any() or right.isna().any():
        return None
    values = pa.array(right)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    found = pc.index_in(pa.array(left), value_set=values).fill_null(-1)
    return np.asarray(found, dtype=np.intp)


def take_rows(df: pd.DataFrame, positions: np.ndarray, columns: Sequence[str],
              suffix: str = "") -> dict[str, Any]:
    """Columns of `df` at `positions` (-1 gives a missing value), as arrays by name+suffix.

    Integer columns with holes become nullable Int64 (UInt64 if unsigned), so 64-bit
    values stay exact (a merge would turn them into floats).
    """
    import numpy as np
    import pandas as pd

    holes = bool((positions < 0).any())
    out = {}
    for c in columns:
        values = df[c].array
        if holes and isinstance(values, pd.arrays.NumpyExtensionArray):
            values = values.to_numpy()
            if values.dtype.kind in "iu":
                values = pd.array(values, dtype="UInt64" if values.dtype.kind == "u" else "Int64")
            elif values.dtype.kind == "b":
                values = pd.array(values, dtype="boolean")
        if isinstance(values, np.ndarray):
            out[c + suffix] = pd.api.extensions.take(values, positions, allow_fill=True)
        else:
            out[c + suffix] = values.take(positions, allow_fill=holes)
    return out


def python_kind(sa_type: sa.types.TypeEngine) -> str:
    """Classify an SQL type as 'int', 'float', 'bool', 'datetime' or 'str'."""
    import sqlalchemy as sa

    if isinstance(sa_type, sa.Boolean):
        return "bool"
    if isinstance(sa_type, sa.Integer):
        return "int"
    if isinstance(sa_type, (sa.Float, sa.Numeric)):
        return "float"
    if isinstance(sa_type, (sa.DateTime, sa.Date)):
        return "datetime"
    if isinstance(sa_type, sa.String):
        return "str"
    return "other"


def keeps_values(a: sa.types.TypeEngine, b: sa.types.TypeEngine | None) -> bool:
    """Does every value of SQL type `a` stay itself, and distinct from the others, as a value
    of type `b`? Same kind and, but for integers, the same generic type (a String key read as
    an Integer makes "7" and "007" one; a DateTime stored as a Date loses its time)."""
    if b is None or python_kind(a) != python_kind(b):
        return False
    if python_kind(a) == "int":
        return True
    try:
        return repr(a.as_generic()) == repr(b.as_generic())
    except NotImplementedError:  # a dialect's own type without a generic one
        return False


def sql_type_for(series: pd.Series) -> sa.types.TypeEngine:
    """An SQL type able to hold the values of `series` (for inferred key columns)."""
    import pandas as pd
    import sqlalchemy as sa

    if pd.api.types.is_bool_dtype(series.dtype):
        return sa.Boolean()
    if pd.api.types.is_integer_dtype(series.dtype):
        return sa.BigInteger()
    if pd.api.types.is_float_dtype(series.dtype):
        return sa.Float()
    if pd.api.types.is_datetime64_any_dtype(series.dtype):
        return sa.DateTime()
    return sa.String()


def coerce_columns(df: pd.DataFrame, types: Mapping[str, Any]) -> pd.DataFrame:
    """Cast the columns named in `types` (SQL types) to matching pandas dtypes.

    Keys read from the index and keys given by the user must compare equal in merges:
    a user's int `1` for a String key becomes `'1'`, an int64 stays int64, and so on.
    """
    import pandas as pd

    out = df
    for col, sa_type in types.items():
        if col not in df.columns:
            continue
        kind = python_kind(sa_type)
        s = df[col]
        if kind == "datetime" and isinstance(s.dtype, pd.DatetimeTZDtype):
            raise KeyTypeError(f"column {col!r} holds timezone-aware times ({s.dtype}), which "
                               f"its {sa_type} key cannot keep; convert them to UTC-naive ones "
                               f"with df[{col!r}].dt.tz_convert(None)")
        target = _cast(s, kind)
        if target is not s:
            if out is df:
                out = df.copy()
            out[col] = target
    return out


def _cast(s: pd.Series, kind: str) -> pd.Series:
    import pandas as pd

    dt = s.dtype
    if kind == "str":
        if pd.api.types.is_string_dtype(dt) and not pd.api.types.is_object_dtype(dt):
            return s
        return s.map(lambda v: v if v is None or isinstance(v, str) else str(v)).astype("str")
    if kind == "int":
        if pd.api.types.is_integer_dtype(dt) and not isinstance(dt, pd.ArrowDtype):
            return s if dt == "int64" else s.astype("int64")
        return pd.to_numeric(s).astype("int64")
    if kind == "float":
        return s if pd.api.types.is_float_dtype(dt) else pd.to_numeric(s).astype("float64")
    if kind == "datetime":
        return s if pd.api.types.is_datetime64_any_dtype(dt) else pd.to_datetime(s)
    if kind == "bool":
        return s if pd.api.types.is_bool_dtype(dt) else s.astype(bool)
    return s


def apply_dtypes(df: pd.DataFrame, dtypes: Mapping[str, Any],
                 where: str | Callable[[str, Any], str]) -> pd.DataFrame:
    """Cast the columns named in `dtypes` (pandas dtypes, or ``"date"``: see
    `cast_column`); a value that does not fit is an error naming `where` (or
    `where(column, dtype)`, e.g. the file holding the bad value), the column and the value."""
    from .errors import FilepipeError

    for col, dtype in dtypes.items():
        if col not in df.columns:
            continue
        cast, bad = cast_column(df[col], dtype)
        if len(bad):
            place = where(col, dtype) if callable(where) else where
            raise FilepipeError(f"{place}: column {col!r} {_bad_value_text(df[col], bad, dtype)}")
        df[col] = cast
    return df


# --- declared column types of sources ------------------------------------------------------

_DATE_NAMES = frozenset({"date", "datetime.date", "date32"})
_MAX_CHECKED = 10_000  # distinct values tried one by one to find those that do not convert


def is_date_dtype(dtype: Any) -> bool:
    """Is `dtype` filepipe's ``"date"`` (``datetime.date`` values, no time of day)?"""
    import datetime as dt

    return dtype is dt.date or (isinstance(dtype, str) and dtype.strip().lower() in _DATE_NAMES)


def is_text_dtype(dtype: Any) -> bool:
    """Is `dtype` a text dtype (``str``, ``"str"``, ``"string"``...)?"""
    import pandas as pd

    if dtype is str:
        return True
    if is_date_dtype(dtype):
        return False
    try:
        resolved = pd.api.types.pandas_dtype(dtype)
    except TypeError:
        return False
    return isinstance(resolved, pd.StringDtype) or getattr(resolved, "kind", "") == "U"


def frame_dtype(dtype: Any, key: bool = False) -> Any:
    """The pandas dtype of a column of the declared type `dtype` (``"date"``: object; of a
    key column, datetime64[ns]: see `declared_sql_type`)."""
    if is_date_dtype(dtype):
        return "datetime64[ns]" if key else object
    return dtype


def cast_key_column(s: pd.Series, dtype: Any) -> tuple[pd.Series, np.ndarray]:
    """`cast_column` for a key column: a ``"date"`` key is checked as a date and kept
    as a datetime at midnight, as the index keeps it (`declared_sql_type`)."""
    import pandas as pd

    cast, bad = cast_column(s, dtype)
    if is_date_dtype(dtype) and not len(bad):
        cast = pd.Series(pd.to_datetime(cast.to_numpy(dtype=object)), index=s.index).astype("datetime64[ns]")
    return cast, bad


def declared_sql_type(dtype: Any) -> sa.types.TypeEngine:
    """The SQL type of a key declared `dtype`. The index has no date type that reads back
    as `datetime.date`: a ``"date"`` key is kept as a datetime at midnight."""
    import pandas as pd

    if is_date_dtype(dtype):
        dtype = "datetime64[ns]"
    return sql_type_for(pd.Series([], dtype=dtype))


def cast_column(s: pd.Series, dtype: Any) -> tuple[pd.Series, np.ndarray]:
    """`s` cast to the declared `dtype`, and the positions of the values that do not fit
    (empty when all do; else the returned column is not fully cast).

    ``"date"`` gives `datetime.date` values: from dates, from datetimes and ISO-8601 text
    at midnight (``"2024-01-05"``, ``"2024-01-05T00:00:00"``); missing values stay
    missing (None). Any other `dtype` is a pandas dtype (``"int64"``, ``"Int64"``,
    ``"datetime64[ns]"``, ``"str"``...), applied with `Series.astype`; a column that
    does not convert although each of its values does raises the pandas error.
    """
    import numpy as np

    if is_date_dtype(dtype):
        return _to_dates(s)
    try:
        return s.astype(dtype), np.empty(0, dtype=np.intp)
    except (TypeError, ValueError, OverflowError, ArithmeticError) as exc:
        if _not_a_dtype(dtype):
            raise TypeError(f"{dtype!r} is not a column type: give a pandas dtype such as "
                            "'int64', 'Int64', 'float64', 'str', 'datetime64[ns]', or 'date'") from exc
        bad = _positions_not_fitting(s, dtype)
        if not len(bad):
            raise
        return s, bad


def _not_a_dtype(dtype: Any) -> bool:
    import pandas as pd

    try:
        pd.api.types.pandas_dtype(dtype)
    except TypeError:
        return True
    return False


def _fits(value: Any, dtype: Any) -> bool:
    import pandas as pd

    try:
        pd.Series([value], dtype=object).astype(dtype)
    except (TypeError, ValueError, OverflowError, ArithmeticError):
        return False
    return True


def _positions_not_fitting(s: pd.Series, dtype: Any) -> np.ndarray:
    """Positions of the values of `s` that `astype(dtype)` refuses (the cast of the whole
    column failed): each distinct value is tried once, up to `_MAX_CHECKED` of them."""
    import numpy as np
    import pandas as pd

    values = s.to_numpy(dtype=object).tolist()
    missing = pd.isna(s).to_numpy(dtype=bool)
    bad = missing.copy() if missing.any() and not _fits(None, dtype) else np.zeros(len(values), dtype=bool)
    present = [v for v, m in zip(values, missing.tolist()) if not m]
    try:
        distinct = list(dict.fromkeys(present))
    except TypeError:  # unhashable values (lists from JSON): tried one by one
        for i in np.flatnonzero(~missing)[:_MAX_CHECKED].tolist():
            bad[i] = not _fits(values[i], dtype)
        return np.flatnonzero(bad)
    refused = {v for v in distinct[:_MAX_CHECKED] if not _fits(v, dtype)}
    if refused:
        bad |= np.fromiter((not m and v in refused for v, m in zip(values, missing.tolist())),
                           dtype=bool, count=len(values))
    return np.flatnonzero(bad)


def _to_dates(s: pd.Series) -> tuple[pd.Series, np.ndarray]:
    import datetime as dt

    import numpy as np
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        times = s.dt.tz_localize(None) if isinstance(s.dtype, pd.DatetimeTZDtype) else s
        off = (times.notna() & (times != times.dt.normalize())).to_numpy()
        dates = times.dt.date.astype(object).where(times.notna(), None)
        return pd.Series(dates.to_numpy(dtype=object), index=s.index, dtype=object), np.flatnonzero(off)
    values = s.to_numpy(dtype=object)
    out = np.empty(len(values), dtype=object)
    bad = np.zeros(len(values), dtype=bool)
    cache: dict[Any, Any] = {}
    for i, v in enumerate(values.tolist()):
        try:
            got = cache[v]
        except (KeyError, TypeError):
            got = _one_date(v, dt)
            try:
                cache[v] = got
            except TypeError:
                pass
        if got is _NOT_A_DATE:
            bad[i] = True
        else:
            out[i] = got
    return pd.Series(out, index=s.index, dtype=object), np.flatnonzero(bad)


_NOT_A_DATE = object()


def _one_date(v: Any, dt: Any) -> Any:
    import pandas as pd

    if v is None or v is pd.NaT or v is pd.NA or (isinstance(v, float) and v != v):
        return None
    if isinstance(v, str):
        text = v.strip()
        if not text:
            return None
        try:
            v = pd.Timestamp(dt.datetime.fromisoformat(text))
        except ValueError:
            return _NOT_A_DATE
    if isinstance(v, dt.datetime):
        v = pd.Timestamp(v)
    if isinstance(v, pd.Timestamp):
        if v.tz is not None:
            v = v.tz_localize(None)
        return v.date() if v == v.normalize() else _NOT_A_DATE
    if isinstance(v, dt.date):
        return v
    return _NOT_A_DATE


def _bad_value_text(s: pd.Series, bad: np.ndarray, dtype: Any) -> str:
    """'holds 'x', which cannot be read as int64' for the first bad value of `s`."""
    import pandas as pd

    value = s.iloc[int(bad[0])]
    if value is None or (not isinstance(value, (list, dict)) and pd.isna(value)):
        return f"is empty, which {dtype} cannot hold (use a nullable type such as 'Int64' or 'float64')"
    shown = f"{value!r:.60}"
    if is_date_dtype(dtype):
        why = (" (a time of day is not a date: declare 'datetime64[ns]')"
               if _has_time(value) else " (write dates as YYYY-MM-DD)")
        return f"holds {shown}, which cannot be read as date{why}"
    return f"holds {shown}, which cannot be read as {dtype}"


def _has_time(value: Any) -> bool:
    import pandas as pd

    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return False
    return ts is not pd.NaT and ts != ts.normalize()


def check_source_rows(df: pd.DataFrame, keys: Sequence[str], dtypes: Mapping[str, Any],
                      where: str, label: Callable[[int], str] | None = None,
                      fixed: Mapping[str, tuple[str, Callable[[Any], bool]]] | None = None,
                      empty_keys: bool = True, key_checks: bool = True) -> pd.DataFrame:
    """The rows of one source file, `dtypes` applied and checked — or one error listing
    every bad row at once.

    Checks: each key column is present (else `MissingColumnsError`); each value of a
    column named in `dtypes` converts; no key cell is empty (when `empty_keys`); no key
    repeats; each column of `fixed` (name → (text, agrees)) holds only values `agrees`
    with (a key the file's path names; the column is then dropped). Without `key_checks`
    the keys are only typed (a declared date key becomes a datetime at midnight, as the
    index keeps it), not checked. `label(i)` names the
    row at position `i` (``"row 7"`` of a sheet, ``"line 7"`` of a CSV). The error is a
    `BadRowsError` — a `DuplicateRowsError` or an `EmptyKeyRowsError` when those are the
    only problems — naming `where`, each row, column and value.
    """
    import numpy as np
    import pandas as pd

    keys = list(keys)
    if key_checks:
        check_keys(df, keys, where, unique=False)
    problems: list[tuple[int, str, str]] = []  # (first row position, kind, text)
    unfit = np.zeros(len(df), dtype=bool)
    for col, dtype in dtypes.items():
        if col not in df.columns:
            continue
        cast, bad = (cast_key_column if col in keys else cast_column)(df[col], dtype)
        if not len(bad):
            df[col] = cast
            continue
        if col in keys:
            unfit[bad] = True
        for i in bad[:_MAX_SHOWN_ROWS].tolist():
            problems.append((i, "type", f"column {col!r} {_bad_value_text(df[col], np.array([i]), dtype)}"))
        if len(bad) > _MAX_SHOWN_ROWS:
            problems.append((int(bad[_MAX_SHOWN_ROWS]), "type",
                             f"and {len(bad) - _MAX_SHOWN_ROWS:,} more rows whose {col!r} is not {dtype}"))
    for col, (text, agrees) in (fixed or {}).items():
        if col not in df.columns:
            continue
        values = df[col].tolist()
        verdict: dict[Any, bool] = {}
        off = []
        for i, v in enumerate(values):
            try:
                ok = verdict[v]
            except (KeyError, TypeError):
                ok = agrees(v)
                try:
                    verdict[v] = ok
                except TypeError:
                    pass
            if not ok:
                off.append(i)
        for i in off[:_MAX_SHOWN_ROWS]:
            problems.append((i, "path", f"column {col!r} holds {values[i]!r:.60}, but the file's "
                                        f"path says {col}={text!r} (fix or remove the column)"))
        if len(off) > _MAX_SHOWN_ROWS:
            problems.append((off[_MAX_SHOWN_ROWS], "path",
                             f"and {len(off) - _MAX_SHOWN_ROWS:,} more rows whose {col!r} is not {text!r}"))
        if not off:
            df = df.drop(columns=col)
    if keys and len(df) and key_checks:
        empty = df[keys].isna().any(axis=1).to_numpy() & ~unfit if empty_keys else \
            np.zeros(len(df), dtype=bool)
        for i in np.flatnonzero(empty)[:_MAX_SHOWN_ROWS].tolist():
            cols = [k for k in keys if pd.isna(df[k].iloc[i])]
            problems.append((i, "empty", f"empty key cell in {', '.join(map(repr, cols))} "
                                         f"({_show_row(df, i)})"))
        if empty.sum() > _MAX_SHOWN_ROWS:
            problems.append((int(np.flatnonzero(empty)[_MAX_SHOWN_ROWS]), "empty",
                             f"and {int(empty.sum()) - _MAX_SHOWN_ROWS:,} more rows with an empty key"))
        rest = ~(empty | unfit)
        if len(df) > 1:
            sub = df.loc[rest, keys] if not rest.all() else df[keys]
            try:
                dup = sub.duplicated(keys, keep=False).to_numpy()
            except TypeError:  # unhashable key values: the index refuses them later
                dup = np.zeros(len(sub), dtype=bool)
            if dup.any():
                positions = np.flatnonzero(rest)[dup]
                groups: dict[tuple, list[int]] = {}
                for i, t in zip(positions.tolist(), key_tuples(df.iloc[positions], keys)):
                    groups.setdefault(t, []).append(i)
                shown = list(groups.items())
                for t, rows in shown[:_MAX_SHOWN_ROWS]:
                    named = ", ".join(f"{k}={_shown(v)}" for k, v in zip(keys, t))
                    problems.append((rows[0], "duplicate",
                                     f"duplicate primary key {named}" + _also(rows[1:], label)))
                if len(shown) > _MAX_SHOWN_ROWS:
                    problems.append((shown[_MAX_SHOWN_ROWS][1][0], "duplicate",
                                     f"and {len(shown) - _MAX_SHOWN_ROWS:,} more duplicate keys"))
    if problems:
        _raise_bad_rows(where, keys, problems, label)
    return df


_MAX_SHOWN_ROWS = 10


def _also(rows: list[int], label: Callable[[int], str] | None) -> str:
    if label is None or not rows:
        return ""
    return " (again in " + ", ".join(label(i) for i in rows[:_MAX_SHOWN]) + \
        (f" and {len(rows) - _MAX_SHOWN} more" if len(rows) > _MAX_SHOWN else "") + ")"


def _shown(v: Any) -> str:
    """A cell value for a message: integral floats (an int column with empty cells) as ints."""
    if isinstance(v, float) and v.is_integer():
        return repr(int(v))
    return repr(v.item() if hasattr(v, "item") and not isinstance(v, str) else v)


def _show_row(df: pd.DataFrame, i: int) -> str:
    import pandas as pd

    cells = []
    for c, v in zip(df.columns, df.iloc[i].tolist()):
        empty = v is None or (not isinstance(v, (list, dict)) and pd.isna(v))
        cells.append(f"{c}: {'(empty)' if empty else _shown(v)}")
        if len(cells) == 8:
            break
    return "{" + ", ".join(cells) + "}"


def _raise_bad_rows(where: str, keys: list[str], problems: list[tuple[int, str, str]],
                    label: Callable[[int], str] | None) -> None:
    from .errors import BadRowsError, DuplicateRowsError, EmptyKeyRowsError

    problems.sort(key=lambda p: p[0])
    texts = [f"{label(i)}: {text}" if label is not None and not text.startswith("and ") else text
             for i, _, text in problems]
    kinds = {kind for _, kind, _ in problems}
    if kinds == {"duplicate"}:
        cls: type[BadRowsError] = DuplicateRowsError
        hint = f" — each ({', '.join(keys)}) must appear once"
    elif kinds == {"empty"}:
        cls = EmptyKeyRowsError
        hint = " — every row needs a key: complete or delete those rows"
    else:
        cls = BadRowsError
        hint = " — fix those rows"
    count = sum(1 for t in texts if not t.startswith("and "))
    head = f"{where}: " + (f"{count} bad rows: " if count > 1 else "")
    raise cls(head + "; ".join(texts) + hint, texts)


#: pandas' inferred kind of a column's values → the dtype to read such a column back with
_VALUE_KINDS = {"string": "str", "integer": "Int64", "floating": "float64",
                "mixed-integer-float": "float64", "boolean": "boolean",
                "datetime64": "datetime64[ns]", "datetime": "datetime64[ns]"}


def value_kinds(df: pd.DataFrame) -> dict[str, str]:
    """Per column, the dtype its values need to be read back as they are (text that looks
    like numbers stays text) from a format that keeps no types; columns of other or
    mixed values are left out."""
    import pandas as pd

    kinds = {}
    for c in df.columns:
        if isinstance(df[c].dtype, pd.DatetimeTZDtype):  # keep the zone: "datetime64[ns, UTC]"
            kinds[str(c)] = str(df[c].dtype)
            continue
        inferred = pd.api.types.infer_dtype(df[c], skipna=True)
        kind = _VALUE_KINDS.get(inferred)
        if kind is None and inferred.startswith("mixed") and holds_text(df[c]):
            kind = "str"
        if kind is not None:
            kinds[str(c)] = kind
    return kinds


def holds_text(s: pd.Series) -> bool:
    """Does the (object) column hold any str value?"""
    return bool(s.map(type).eq(str).any())


def merge_kinds(old: Mapping[str, str], new: Mapping[str, str]) -> dict[str, str]:
    """Kinds of `new` over `old`, except that a text column stays text, and ints and
    floats of one column make floats."""
    merged = {**old, **new}
    for c in set(old) & set(new):
        if "str" in (old[c], new[c]):
            merged[c] = "str"
        elif {old[c], new[c]} == {"Int64", "float64"}:
            merged[c] = "float64"
    return merged


def concat_rows(frames: Sequence[pd.DataFrame]) -> pd.DataFrame | None:
    """The non-empty frames one after the other, in a new frame; None when all are empty."""
    import pandas as pd

    frames = [f for f in frames if len(f)]
    if not frames:
        return None
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].copy()


def sorted_by_key(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Rows in key order, so equal tables give equal files whatever order rows came in;
    keys of mixed types that cannot be ordered keep the order they have."""
    if len(df) < 2 or not all(k in df.columns for k in keys):
        return df
    try:
        if len(keys) == 1 and df[keys[0]].is_monotonic_increasing:
            return df
        return df.sort_values(keys, kind="stable", ignore_index=True)
    except TypeError:
        return df


def align_keys(idx: pd.DataFrame, df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """`idx` with its key columns cast to the dtypes `df` has, so merges match."""
    import pandas as pd

    out = idx
    for k in keys:
        if k in df.columns and idx[k].dtype != df[k].dtype and len(df):
            try:
                casted = idx[k].astype(df[k].dtype)
            except (TypeError, ValueError):
                casted = idx[k].astype(str) if pd.api.types.is_string_dtype(df[k].dtype) else idx[k]
            out = out.assign(**{k: casted})
    return out


def empty_frame(columns: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
