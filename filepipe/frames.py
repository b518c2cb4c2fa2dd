"""Checks and conversions on pandas frames shared by tables, steps and stores."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import DuplicateKeysError, KeyTypeError, MissingColumnsError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import sqlalchemy as sa

_MAX_SHOWN = 5


def check_keys(df: pd.DataFrame, keys: Sequence[str], where: str, unique: bool = True) -> None:
    """Raise a clear error when `df` lacks key columns or (if `unique`) repeats a key."""
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
        return pd.Index(right[keys[0]]).get_indexer(left[keys[0]])
    index = pd.MultiIndex.from_arrays([right[k] for k in keys])
    return index.get_indexer(pd.MultiIndex.from_arrays([left[k] for k in keys]))


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
    """Cast the columns named in `dtypes`; a value that does not fit is an error naming
    `where` (or `where(column, dtype)`, e.g. the file holding the bad value)."""
    from .errors import FilepipeError

    for col, dtype in dtypes.items():
        if col not in df.columns:
            continue
        try:
            df[col] = df[col].astype(dtype)
        except (TypeError, ValueError) as exc:
            place = where(col, dtype) if callable(where) else where
            raise FilepipeError(f"{place}: column {col!r} cannot be read as {dtype}: {exc}") from exc
    return df


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
