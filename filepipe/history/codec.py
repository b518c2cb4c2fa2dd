"""Frames to Parquet tables and back, exactly, whatever their object columns hold.

Parquet gives each column one type. A typed pandas column (int64, str, datetime64, Int64,
category...) is stored as it is. An object column is stored natively when all its values
are of one kind Arrow keeps exactly (text, bools, ints, floats, bytes, dates, times,
datetimes, durations); any other object column (ints mixed with text and dates, dicts,
lists... as Excel sources give) is stored as JSON text, one document per cell, and the
column is named in the schema metadata under ``filepipe.json_columns``. Such text uses
tags for what JSON lacks, so it reads back as the same Python values:

``{"$dict": [[k, v], ...]}``, ``{"$tuple": [...]}``, ``{"$float": "nan"|"inf"|"-inf"}``,
``{"$datetime": iso}``, ``{"$Timestamp": iso}``, ``{"$date": iso}``, ``{"$time": iso}``,
``{"$timedelta": microseconds}``, ``{"$Timedelta": nanoseconds}``, ``{"$decimal": text}``,
``{"$bytes": base64}``, ``{"$ndarray": [dtype, values]}``, ``{"$NaT": 0}``, ``{"$NA": 0}``.

Every JSON object in such a cell is a tag (a dict value is a ``$dict``), so no value can be
mistaken for one. A null cell (None, NaN, NaT, NA) is a Parquet null and reads back as None.
A time zone is kept as its UTC offset.

Every object column, JSON or not, is named under ``filepipe.object_columns`` and reads back
as an object column: a frame reads back with the dtypes it was written with, so rewriting
rows (merging segments, dropping versions) never changes how a column reads.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import math
from typing import TYPE_CHECKING, Any

from ..errors import FilepipeError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

JSON_COLUMNS_KEY = b"filepipe.json_columns"
OBJECT_COLUMNS_KEY = b"filepipe.object_columns"


def to_arrow(df: pd.DataFrame, where: str) -> pa.Table:
    """`df` as an Arrow table (no index), mixed object columns as tagged JSON text;
    `where` names the frame in errors."""
    import pandas as pd
    import pyarrow as pa

    bad = [c for c in df.columns if not isinstance(c, str)]
    if bad or not df.columns.is_unique:
        what = f"column names that are not text ({bad[0]!r})" if bad else "repeated column names"
        raise FilepipeError(f"{where}: {what}; history needs unique text column names")
    columns: dict[str, Any] = {}
    as_json, as_object = [], []
    for name in df.columns:
        s = df[name]
        if s.dtype == object:
            as_object.append(name)
            native = _native_column(s)
            if native is None:
                as_json.append(name)
                s = pd.Series([_encode_cell(v, where, name) for v in s], dtype=object)
            else:
                s = native
        columns[name] = s.array
    frame = pd.DataFrame(columns, index=pd.RangeIndex(len(df)))
    try:
        table = pa.Table.from_pandas(frame, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
        raise FilepipeError(f"{where}: cannot store the frame in Parquet: {exc}") from exc
    if as_object:
        meta = dict(table.schema.metadata or {})
        meta[OBJECT_COLUMNS_KEY] = json.dumps(as_object).encode()
        if as_json:
            meta[JSON_COLUMNS_KEY] = json.dumps(as_json).encode()
        table = table.replace_schema_metadata(meta)
    return table


def json_columns(schema: pa.Schema) -> list[str]:
    """The columns of a segment stored as tagged JSON text."""
    return _listed(schema, JSON_COLUMNS_KEY)


def to_frame(table: pa.Table) -> pd.DataFrame:
    """The frame `table` (written by `to_arrow`) holds: JSON columns decoded, object
    columns of object dtype with None for every null."""
    df = table.to_pandas()
    as_json = json_columns(table.schema)
    for name in _listed(table.schema, OBJECT_COLUMNS_KEY):
        if name in df.columns:
            s = _decoded(df[name]) if name in as_json else df[name].astype(object)
            df[name] = s.where(s.notna(), None)
    return df


def empty_frame(schema: pa.Schema) -> pd.DataFrame:
    """A frame with no rows and the columns and dtypes a segment of `schema` reads as."""
    df = schema.empty_table().to_pandas()
    for name in _listed(schema, OBJECT_COLUMNS_KEY):
        df[name] = df[name].astype(object)
    return df


def _listed(schema: pa.Schema, key: bytes) -> list[str]:
    raw = (schema.metadata or {}).get(key)
    return json.loads(raw) if raw else []


def _decoded(s: pd.Series) -> pd.Series:
    """JSON texts (or nulls: None) decoded to an object column; each distinct text once."""
    import numpy as np
    import pandas as pd

    codes, uniques = pd.factorize(s)
    values = np.empty(len(uniques) + 1, dtype=object)  # the last slot, None, is for nulls
    for i, text in enumerate(uniques):
        values[i] = json.loads(text, object_hook=_untag)
    return pd.Series(values[codes], index=s.index, dtype=object, name=s.name)


# --- which object columns Arrow keeps as they are ------------------------------------


def _native_column(s: pd.Series) -> pd.Series | None:
    """`s` (object dtype) ready for Arrow when its non-null values are all of one family
    Arrow keeps exactly; None when the column must go as JSON."""
    import pyarrow as pa

    families = {_family(kind) for kind in set(map(type, s.dropna()))}
    if not families:
        return s
    if len(families) > 1 or None in families:
        return None
    if families == {"int"}:
        try:
            return s.astype("Int64")
        except (OverflowError, TypeError, ValueError):  # beyond int64
            return None
    try:  # e.g. datetimes with and without a time zone, text with lone surrogates
        pa.array(s, from_pandas=True)
    except (pa.ArrowException, TypeError, ValueError, OverflowError):
        return None
    return s


def _family(kind: type) -> str | None:
    """The family of values of type `kind` Arrow keeps exactly, if any."""
    import numpy as np

    families = (("bool", (bool, np.bool_)), ("int", (int, np.integer)), ("float", (float, np.floating)),
                ("str", str), ("bytes", bytes), ("datetime", dt.datetime), ("date", dt.date),
                ("time", dt.time), ("timedelta", dt.timedelta))
    return next((name for name, bases in families if issubclass(kind, bases)), None)


# --- tagged JSON cells -----------------------------------------------------------------


def _encode_cell(value: Any, where: str, column: str) -> str | None:
    import pandas as pd

    if pd.api.types.is_scalar(value) and pd.isna(value):
        return None
    try:
        return json.dumps(_tree(value), allow_nan=False, separators=(",", ":"))
    except TypeError as exc:
        raise FilepipeError(f"{where}: column {column!r} holds a {type(value).__name__} value "
                            f"({value!r:.60}), which history cannot store: {exc}") from None


def _tree(v: Any) -> Any:
    """`v` as a JSON-ready tree, tagged where JSON alone would lose its type."""
    import numpy as np
    import pandas as pd

    if v is None or isinstance(v, (str, bool)):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return float(v) if math.isfinite(v) else {"$float": str(v)}
    if isinstance(v, (list, tuple)):
        items = [_tree(x) for x in v]
        return items if isinstance(v, list) else {"$tuple": items}
    if isinstance(v, dict):
        return {"$dict": [[_tree(k), _tree(x)] for k, x in v.items()]}
    if v is pd.NaT:
        return {"$NaT": 0}
    if v is pd.NA:
        return {"$NA": 0}
    if isinstance(v, pd.Timestamp):
        return {"$Timestamp": v.isoformat()}
    if isinstance(v, dt.datetime):
        return {"$datetime": v.isoformat()}
    if isinstance(v, dt.date):
        return {"$date": v.isoformat()}
    if isinstance(v, dt.time):
        return {"$time": v.isoformat()}
    if isinstance(v, pd.Timedelta):
        return {"$Timedelta": v.value}
    if isinstance(v, dt.timedelta):
        return {"$timedelta": v // dt.timedelta(microseconds=1)}
    if isinstance(v, decimal.Decimal):
        return {"$decimal": str(v)}
    if isinstance(v, bytes):
        return {"$bytes": base64.b64encode(v).decode("ascii")}
    if isinstance(v, np.ndarray):
        return {"$ndarray": [v.dtype.str, _tree(v.tolist())]}
    if isinstance(v, np.generic):  # numpy scalars: their Python value
        return _tree(pd.Timestamp(v) if isinstance(v, np.datetime64) else v.item())
    raise TypeError("no JSON form for this type")


def _untag(obj: dict[str, Any]) -> Any:
    """The value a tag object (see the module doc) stands for."""
    import numpy as np
    import pandas as pd

    ((tag, x),) = obj.items()
    match tag:
        case "$dict":
            return dict(x)
        case "$tuple":
            return tuple(x)
        case "$float":
            return float(x)
        case "$Timestamp":
            return pd.Timestamp(x)
        case "$datetime":
            return dt.datetime.fromisoformat(x)
        case "$date":
            return dt.date.fromisoformat(x)
        case "$time":
            return dt.time.fromisoformat(x)
        case "$Timedelta":
            return pd.Timedelta(x, unit="ns")
        case "$timedelta":
            return dt.timedelta(microseconds=x)
        case "$decimal":
            return decimal.Decimal(x)
        case "$bytes":
            return base64.b64decode(x)
        case "$ndarray":
            return np.asarray(x[1], dtype=np.dtype(x[0]))
        case "$NaT":
            return pd.NaT
        case "$NA":
            return pd.NA
    raise FilepipeError(f"unknown tag {tag!r} in a history JSON cell (written by a newer filepipe?)")
