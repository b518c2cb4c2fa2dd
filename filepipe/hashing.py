"""Canonical row hashes that stay the same across library versions.

The row hashes are persisted in the metadata index, so this module defines its own hash
instead of relying on ``pd.util.hash_pandas_object`` (whose values changed between pandas
releases). Every cell is turned into a 64-bit value from its *kind* and a canonical encoding:

============  ====================================================================
kind          canonical value
============  ====================================================================
integer       the integer: int8..uint64, nullable ints, python ints, integral floats
              and integral ``Decimal`` all hash alike (``1 == 1.0 == Decimal(1)``)
float         the IEEE-754 bits of the float64 value (non-integral or infinite)
bool          ``False``/``True``, tagged apart from the integers 0 and 1
string        xxh3_64 of the UTF-8 bytes
bytes         xxh3_64 of the bytes, tagged apart from strings
json          xxh3_64 of canonical JSON (dict, list, tuple, set, ndarray cells)
datetime      the instant as (seconds, nanoseconds) since the epoch, any unit; tz-aware
              values are converted to UTC, naive ones taken as they are
date          days since the epoch (``datetime.date`` and Arrow ``date32``/``date64``)
timedelta     the duration as (seconds, nanoseconds), any unit
other         xxh3_64 of ``"Type:" + str(value)`` (e.g. ``time``, ``Period``): stable only
              as far as the type's ``str()`` is
============  ====================================================================

NaN, None, ``pd.NA`` and ``NaT`` are null; a null cell adds nothing to its row's hash.
The formulas below are part of the stored format: changing any of them changes every
persisted hash (see the golden values in ``tests/test_hashing.py``).
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

__all__ = ["hash_rows"]

_xxh3 = xxhash.xxh3_64_intdigest


def _tag(kind: str) -> np.uint64:
    return np.uint64(_xxh3(f"filepipe.hashing/{kind}".encode()))


_INT = _tag("int")  # -2**63 <= n < 2**63: the two's-complement bits
_UINT_HIGH = _tag("uint-high")  # 2**63 <= n < 2**64: the unsigned bits
_BIG_INT = _tag("big-int")  # any other integer: xxh3 of its decimal digits
_FLOAT = _tag("float")
_BOOL = _tag("bool")
_STR = _tag("str")
_BYTES = _tag("bytes")
_JSON = _tag("json")
_DATETIME = _tag("datetime")
_DATE = _tag("date")
_TIMEDELTA = _tag("timedelta")
_OTHER = _tag("other")
_ROW = _tag("row")

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_NS_PER_UNIT = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_I64_MIN, _I64_END, _U64_END = -(2**63), 2**63, 2**64

Cells = tuple[np.ndarray, np.ndarray]
"""(uint64 cell hashes, bool null mask); the hash of a null cell is ignored."""


def hash_rows(df: pd.DataFrame, columns: Sequence[str] | None = None) -> np.ndarray:
    """One signed int64 content hash per row of `df` (over `columns`, default all).

    ``row = mix(ROW ^ sum_c mix(xxh3(str(name_c)) ^ cell_c))`` modulo 2**64, with null
    cells contributing 0: column order and the row index do not matter, column names do,
    and adding an all-null column changes nothing. Non-string column names are hashed
    as ``str(name)``. A frame with no columns hashes every row to the same constant.
    """
    if columns is not None:
        df = df[list(dict.fromkeys(columns))]
    total = np.zeros(len(df), dtype=np.uint64)
    unique = df.columns.is_unique  # df[name] is much cheaper than df.iloc[:, position]
    for position, name in enumerate(df.columns):
        cells, null = _column_cells(df[name] if unique else df.iloc[:, position])
        contribution = _mix(cells ^ np.uint64(_xxh3(_utf8(str(name)))))
        contribution[null] = 0
        total += contribution
    return _mix(total ^ _ROW).view(np.int64)


# --- mixing -------------------------------------------------------------------------


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer on a uint64 array: a bijection with mix(0) == 0 (new array)."""
    with np.errstate(over="ignore"):
        z = x ^ (x >> 30)
        z *= _M1
        z ^= z >> 27
        z *= _M2
        z ^= z >> 31
    return z


def _tagged(bits: np.ndarray, tag: np.uint64 | np.ndarray) -> np.ndarray:
    return _mix(bits ^ tag)


def _xxh3_array(blobs: Iterable[bytes], count: int) -> np.ndarray:
    return np.fromiter(map(_xxh3, blobs), dtype=np.uint64, count=count)


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _utf8_all(texts: Sequence[str]) -> list[bytes]:
    try:
        return list(map(str.encode, texts))
    except UnicodeEncodeError:  # lone surrogates
        return list(map(_utf8, texts))


# --- one kind each ------------------------------------------------------------------


def _int_cells(values: np.ndarray) -> np.ndarray:
    """Cells of a numpy integer array of any width and signedness."""
    if values.dtype == np.uint64:
        high = values >= np.uint64(_I64_END)
        return _tagged(values, np.where(high, _UINT_HIGH, _INT))
    return _tagged(values.astype(np.int64, copy=False).view(np.uint64), _INT)


def _python_int_cells(values: Sequence[int]) -> np.ndarray:
    """Cells of Python integers of any size (same values as `_int_cells` where both apply)."""
    bits = np.zeros(len(values), dtype=np.uint64)
    tags = np.empty(len(values), dtype=np.uint64)
    for i, value in enumerate(values):
        if _I64_MIN <= value < _U64_END:
            bits[i] = value % _U64_END
            tags[i] = _INT if value < _I64_END else _UINT_HIGH
        else:
            bits[i] = _xxh3(str(value).encode())
            tags[i] = _BIG_INT
    return _tagged(bits, tags)


def _float_cells(values: np.ndarray) -> Cells:
    """Cells of floats; integral values (-0.0 included) hash as the integer, NaN is null."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    null = np.isnan(values)
    integral = np.isfinite(values) & (np.trunc(values) == values)
    as_int64 = integral & (values >= -(2.0**63)) & (values < 2.0**63)
    int_bits = np.where(as_int64, values, 0.0).astype(np.int64).view(np.uint64)
    bits = np.where(as_int64, int_bits, values.view(np.uint64))
    cells = _tagged(bits, np.where(as_int64, _INT, _FLOAT))
    huge = integral & ~as_int64
    if huge.any():
        cells[huge] = _python_int_cells([int(v) for v in values[huge]])
    return cells, null


def _bool_cells(values: np.ndarray) -> np.ndarray:
    return _tagged(values.astype(np.uint64), _BOOL)


def _coded_cells(codes: np.ndarray, uniques: Sequence[bytes], tag: np.uint64) -> np.ndarray:
    """Cells from factorized values: hash each distinct value once; code -1 gives 0."""
    distinct = np.append(_tagged(_xxh3_array(uniques, len(uniques)), tag), np.uint64(0))
    return distinct[codes]


def _time_cells(seconds: np.ndarray, nanos: np.ndarray, tag: np.uint64) -> np.ndarray:
    """Cells of instants or durations split into whole seconds and 0 <= nanos < 1e9."""
    return _tagged(_mix(seconds.astype(np.int64).view(np.uint64)) ^ nanos.astype(np.uint64), tag)


def _unit_time_cells(values: np.ndarray, unit: str, tag: np.uint64) -> np.ndarray:
    """Cells of int64 counts of `unit` (s, ms, us or ns): equal instants hash equal."""
    seconds, rest = np.divmod(values, 1_000_000_000 // _NS_PER_UNIT[unit])
    return _time_cells(seconds, rest * _NS_PER_UNIT[unit], tag)


def _scalar_time_parts(value: np.datetime64 | np.timedelta64) -> tuple[int, int]:
    """(seconds, nanoseconds) of a numpy datetime64/timedelta64 scalar of any unit."""
    unit, count = np.datetime_data(value.dtype)
    if unit not in _NS_PER_UNIT:
        unit, count = ("ns" if unit in ("ps", "fs", "as") else "s"), 1
        value = value.astype(f"{value.dtype.kind}8[{unit}]")
    return divmod(int(value.astype(np.int64)) * count * _NS_PER_UNIT[unit], 1_000_000_000)


def _as_datetime64(value: dt.datetime | np.datetime64) -> np.datetime64:
    """A datetime-like scalar as a naive datetime64; tz-aware values are converted to UTC."""
    if isinstance(value, pd.Timestamp):
        return value.to_datetime64()  # always the UTC instant for tz-aware timestamps
    if isinstance(value, dt.datetime):
        if value.utcoffset() is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return np.datetime64(value, "us")
    return value


def _as_timedelta64(value: dt.timedelta | np.timedelta64) -> np.timedelta64:
    if isinstance(value, pd.Timedelta):
        return value.to_timedelta64()
    if isinstance(value, dt.timedelta):
        return np.timedelta64(value, "us")
    return value


def _scalar_time_cells(
    values: Sequence[Any], convert: Callable[[Any], np.datetime64 | np.timedelta64], tag: np.uint64
) -> np.ndarray:
    parts = np.array([_scalar_time_parts(convert(v)) for v in values], dtype=np.int64).reshape(-1, 2)
    return _time_cells(parts[:, 0], parts[:, 1], tag)


def _json_default(value: Any, fallback: Callable[[Any], str]) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    return fallback(value)


def _stringify_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _stringify_keys(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stringify_keys(v) for v in value]
    return value


def _canonical_json(value: Any, fallback: Callable[[Any], str]) -> str:
    """JSON with sorted keys and no whitespace; values JSON cannot encode go through `fallback`."""
    encode = functools.partial(
        json.dumps,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=functools.partial(_json_default, fallback=fallback),
    )
    try:
        return encode(value)
    except TypeError:  # mixed-type or non-JSON dict keys cannot be sorted: compare them as text
        return encode(_stringify_keys(value))


def _other_text(value: Any) -> bytes:
    return _utf8(f"{type(value).__qualname__}:{value}")


# --- columns ------------------------------------------------------------------------


def _column_cells(column: pd.Series) -> Cells:
    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        categories, _ = _column_cells(pd.Series(dtype.categories))
        codes = column.cat.codes.to_numpy()
        return np.append(categories, np.uint64(0))[codes], codes < 0
    arrow_text = isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"
    if isinstance(dtype, pd.ArrowDtype) or arrow_text:
        array = pa.array(column.array)
        return _arrow_cells(array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array)
    if isinstance(dtype, pd.DatetimeTZDtype):
        column = column.dt.tz_convert(None)  # the UTC instants, as naive datetimes
        dtype = column.dtype
    numpy_dtype = dtype if isinstance(dtype, np.dtype) else getattr(dtype, "numpy_dtype", None)
    if numpy_dtype is None or numpy_dtype.kind not in "biufmM":  # python strings, objects, others
        return _object_cells(column.to_numpy(dtype=object))
    null = column.isna().to_numpy()
    if numpy_dtype.kind == "f":
        cells, nan = _float_cells(column.to_numpy(dtype=numpy_dtype, na_value=np.nan))
        return cells, null | nan
    if numpy_dtype.kind in "mM":  # numpy-backed here: NaT is in `null`
        tag = _DATETIME if numpy_dtype.kind == "M" else _TIMEDELTA
        values = column.to_numpy().view(np.int64)
        return _unit_time_cells(values, np.datetime_data(numpy_dtype)[0], tag), null
    values = column.to_numpy(dtype=numpy_dtype, na_value=numpy_dtype.type(0))
    return (_bool_cells(values) if numpy_dtype.kind == "b" else _int_cells(values)), null


def _arrow_cells(array: pa.Array) -> Cells:
    kind = array.type
    null = array.is_null().to_numpy(zero_copy_only=False)
    if pa.types.is_dictionary(kind):
        return _arrow_cells(array.dictionary_decode())
    if pa.types.is_null(kind):
        return np.zeros(len(array), dtype=np.uint64), null
    if pa.types.is_integer(kind):
        return _int_cells(array.fill_null(0).to_numpy()), null
    if pa.types.is_floating(kind):
        cells, nan = _float_cells(array.cast(pa.float64()).fill_null(np.nan).to_numpy())
        return cells, null | nan
    if pa.types.is_boolean(kind):
        return _bool_cells(array.fill_null(False).to_numpy(zero_copy_only=False)), null
    text = pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind)
    binary = pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
    binary = binary or pa.types.is_fixed_size_binary(kind)
    if text or binary:
        encoded = pc.dictionary_encode(array)
        codes = encoded.indices.fill_null(-1).to_numpy()
        uniques = encoded.dictionary.cast(pa.large_binary()).to_pylist()  # Arrow text is UTF-8
        return _coded_cells(codes, uniques, _STR if text else _BYTES), null
    if pa.types.is_timestamp(kind) or pa.types.is_duration(kind):  # timestamps are stored in UTC
        values = array.view(pa.int64()).fill_null(0).to_numpy()
        tag = _DATETIME if pa.types.is_timestamp(kind) else _TIMEDELTA
        return _unit_time_cells(values, kind.unit, tag), null
    if pa.types.is_date(kind):
        days = array.cast(pa.date32()).view(pa.int32()).fill_null(0).to_numpy()
        return _tagged(days.astype(np.int64).view(np.uint64), _DATE), null
    return _object_cells(np.fromiter(array.to_pylist(), dtype=object, count=len(array)))


def _object_cells(values: np.ndarray) -> Cells:
    """Cells of an object array: split by Python type, then hash each type group."""
    null = pd.isna(values)
    cells = np.zeros(len(values), dtype=np.uint64)
    present = np.flatnonzero(~null)
    items = values[present]
    if pd.api.types.infer_dtype(items, skipna=False) == "string":  # fast path: all str
        cells[present] = _typed_cells(str, items)
        return cells, null
    type_codes, item_types = pd.factorize(np.fromiter(map(type, items), dtype=object, count=len(items)))
    for code, item_type in enumerate(item_types):
        group = np.flatnonzero(type_codes == code)
        cells[present[group]] = _typed_cells(item_type, items[group])
    return cells, null


def _typed_cells(item_type: type, items: np.ndarray) -> np.ndarray:
    """Cells of non-null objects that all have exactly the type `item_type`."""
    if issubclass(item_type, (bool, np.bool_)):
        return _bool_cells(items.astype(bool))
    if issubclass(item_type, np.integer):
        return _int_cells(items.astype(item_type))
    if issubclass(item_type, int):
        try:
            return _int_cells(items.astype(np.int64))
        except OverflowError:
            return _per_distinct(items, _python_int_cells)
    if issubclass(item_type, (float, np.floating)):
        return _float_cells(items.astype(np.float64))[0]
    if issubclass(item_type, str):
        codes, uniques = pd.factorize(items)
        return _coded_cells(codes, _utf8_all(uniques), _STR)
    if issubclass(item_type, (bytes, bytearray, memoryview)):
        return _tagged(_xxh3_array((bytes(v) for v in items), len(items)), _BYTES)
    if issubclass(item_type, (dt.datetime, np.datetime64)):
        to_cells = functools.partial(_scalar_time_cells, convert=_as_datetime64, tag=_DATETIME)
        return _per_distinct(items, to_cells)
    if issubclass(item_type, dt.date):
        return _tagged(items.astype("datetime64[D]").astype(np.int64).view(np.uint64), _DATE)
    if issubclass(item_type, (dt.timedelta, np.timedelta64)):
        to_cells = functools.partial(_scalar_time_cells, convert=_as_timedelta64, tag=_TIMEDELTA)
        return _per_distinct(items, to_cells)
    if issubclass(item_type, decimal.Decimal):
        return _per_distinct(items, _decimal_cells)
    if issubclass(item_type, (dict, list, tuple, set, frozenset, np.ndarray)):
        texts = (_utf8(_canonical_json(v, str)) for v in items)
        return _tagged(_xxh3_array(texts, len(items)), _JSON)
    return _tagged(_xxh3_array(map(_other_text, items), len(items)), _OTHER)


def _per_distinct(items: np.ndarray, distinct_cells: Callable[[list[Any]], np.ndarray]) -> np.ndarray:
    """Apply `distinct_cells` to the distinct values of `items` (all of one hashable type)."""
    positions: dict[Any, int] = {}
    codes = np.fromiter(
        (positions.setdefault(v, len(positions)) for v in items), dtype=np.intp, count=len(items)
    )
    return distinct_cells(list(positions))[codes]


def _decimal_cells(values: Sequence[decimal.Decimal]) -> np.ndarray:
    """Decimals hash as the number: integral ones as the integer, others as the float."""
    numbers = [int(v) if v.is_finite() and v == v.to_integral_value() else float(v) for v in values]
    cells, _ = _object_cells(np.fromiter(numbers, dtype=object, count=len(numbers)))
    return cells
