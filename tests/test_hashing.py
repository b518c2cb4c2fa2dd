"""Tests for filepipe.hashing: canonical row hashes and code versions."""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import importlib.util
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from filepipe.codeversion import code_version
from filepipe.hashing import hash_rows

ROOT = Path(__file__).resolve().parents[1]


def column_hashes(values: list, dtype: object = None, name: str = "a") -> list[int]:
    """Row hashes of a one-column frame."""
    return hash_rows(pd.DataFrame({name: pd.Series(values, dtype=dtype)})).tolist()


def timestamps(*texts: str | None) -> pd.Series:
    """A datetime64[ns] series built from ISO texts (None gives NaT), parsed one by one."""
    return pd.Series([pd.Timestamp(t) if t else pd.NaT for t in texts], dtype="datetime64[ns]")


def assert_all_equal(variants: dict[str, list[int]]) -> None:
    first_label, first = next(iter(variants.items()))
    for label, hashes in variants.items():
        assert hashes == first, f"{label} hashes differ from {first_label}"


# --- output shape -------------------------------------------------------------------


def test_returns_one_signed_int64_per_row() -> None:
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}, index=[10, 20, 30])
    hashes = hash_rows(df)
    assert hashes.dtype == np.int64
    assert hashes.shape == (3,)
    assert len(set(hashes.tolist())) == 3


def test_empty_frame_gives_empty_int64_array() -> None:
    for df in (pd.DataFrame(), pd.DataFrame({"a": pd.Series([], dtype="Int64"), "b": []})):
        hashes = hash_rows(df)
        assert hashes.dtype == np.int64
        assert hashes.shape == (0,)


def test_zero_columns_hash_every_row_to_one_constant() -> None:
    hashes = hash_rows(pd.DataFrame(index=range(4)))
    assert len(set(hashes.tolist())) == 1
    assert hash_rows(pd.DataFrame({"a": [1, 2]}), columns=[]).tolist() == hashes[:2].tolist()


def test_columns_argument_selects_columns() -> None:
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "c": [0.5, 1.5]})
    assert hash_rows(df, columns=["c", "a"]).tolist() == hash_rows(df[["a", "c"]]).tolist()
    assert hash_rows(df, columns=["a", "a"]).tolist() == hash_rows(df[["a"]]).tolist()
    assert hash_rows(df, columns=["a"]).tolist() != hash_rows(df).tolist()
    with pytest.raises(KeyError):
        hash_rows(df, columns=["missing"])


# --- structure: columns, names, index, nulls ----------------------------------------


def test_column_order_does_not_matter() -> None:
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"], "c": [dt.date(2024, 1, 1), None]})
    assert hash_rows(df).tolist() == hash_rows(df[["c", "a", "b"]]).tolist()


def test_column_names_matter() -> None:
    df = pd.DataFrame({"a": [1, 2], "b": [3, 4]})
    assert hash_rows(df).tolist() != hash_rows(df.rename(columns={"a": "z"})).tolist()
    swapped = pd.DataFrame({"a": [3, 4], "b": [1, 2]})
    assert hash_rows(df).tolist() != hash_rows(swapped).tolist()


def test_row_index_does_not_matter() -> None:
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
    reindexed = df.set_axis(pd.Index(["r", "s", "t"]), axis=0)
    assert hash_rows(df).tolist() == hash_rows(reindexed).tolist()


def test_equal_rows_hash_equal_and_different_rows_differ() -> None:
    hashes = hash_rows(pd.DataFrame({"a": [1, 2, 1], "b": ["x", "x", "x"]})).tolist()
    assert hashes[0] == hashes[2]
    assert hashes[0] != hashes[1]


def test_adding_all_null_columns_changes_nothing() -> None:
    df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", None]})
    with_nulls = df.assign(
        none=pd.Series([None] * 3, dtype=object),
        nan=np.nan,
        na_int=pd.Series([pd.NA] * 3, dtype="Int64"),
        nat=pd.Series([pd.NaT] * 3, dtype="datetime64[ns]"),
        na_str=pd.Series([None] * 3, dtype="str"),
        na_arrow=pd.Series([None] * 3, dtype=pd.ArrowDtype(pa.string())),
        na_cat=pd.Categorical([None] * 3, categories=["x"]),
    )
    assert hash_rows(with_nulls).tolist() == hash_rows(df).tolist()


def test_none_nan_na_nat_are_all_null() -> None:
    nulls = [None, np.nan, pd.NA, pd.NaT, np.datetime64("NaT"), decimal.Decimal("NaN")]
    base = pd.DataFrame({"a": [1] * len(nulls)})
    hashes = hash_rows(base.assign(b=pd.Series(nulls, dtype=object))).tolist()
    assert hashes == hash_rows(base).tolist()


# --- equivalent dtypes --------------------------------------------------------------


def test_integer_dtypes_hash_equal() -> None:
    values = [0, 1, -5, 127]
    assert_all_equal(
        {
            "int64": column_hashes(values, "int64"),
            "Int64": column_hashes(values, "Int64"),
            "int32": column_hashes(values, "int32"),
            "int8": column_hashes(values, "int8"),
            "float64": column_hashes([float(v) for v in values], "float64"),
            "Float64": column_hashes(values, "Float64"),
            "object ints": column_hashes(values, object),
            "object numpy ints": column_hashes([np.int16(v) for v in values], object),
            "object decimals": column_hashes([decimal.Decimal(v) for v in values], object),
            "arrow int64": column_hashes(values, pd.ArrowDtype(pa.int64())),
            "arrow double": column_hashes(values, pd.ArrowDtype(pa.float64())),
        }
    )
    unsigned = [0, 1, 200, 255]
    assert column_hashes(unsigned, "uint8") == column_hashes(unsigned, "int64")
    assert column_hashes(unsigned, "UInt16") == column_hashes(unsigned, "int64")


def test_integral_float_trap_an_int_column_with_one_blank_keeps_its_hashes() -> None:
    before = pd.DataFrame({"k": ["a", "b", "c"], "n": [1, 2, 3]})
    after = pd.DataFrame({"k": ["a", "b", "c"], "n": [1, None, 3]})
    assert after["n"].dtype == np.float64
    old, new = hash_rows(before).tolist(), hash_rows(after).tolist()
    assert new[0] == old[0]
    assert new[2] == old[2]
    assert new[1] != old[1]


def test_large_integers_hash_by_value() -> None:
    assert column_hashes([2**64 - 1, 2**63], "uint64") == column_hashes([2**64 - 1, 2**63], object)
    assert column_hashes([2**64 - 1], "uint64") != column_hashes([-1], "int64")
    assert column_hashes([2**70], object) == column_hashes([float(2**70)], "float64")
    assert column_hashes([2**70], object) != column_hashes([2**70 + 1], object)
    assert column_hashes([2**63], "float64") == column_hashes([2**63], "uint64")
    assert column_hashes([decimal.Decimal(2**70 + 1)], object) == column_hashes([2**70 + 1], object)


def test_float_values() -> None:
    assert column_hashes([-0.0]) == column_hashes([0.0]) == column_hashes([0])
    assert column_hashes([0.1], "float32") == column_hashes([float(np.float32(0.1))])
    assert column_hashes([1.5], "float32") == column_hashes([1.5])
    assert column_hashes([1.5]) == column_hashes([decimal.Decimal("1.5")], object)
    inf = column_hashes([np.inf, -np.inf])
    assert inf[0] != inf[1]
    assert inf[0] not in hash_rows(pd.DataFrame(index=range(1))).tolist()  # inf is a value, not null
    assert column_hashes([0.5]) != column_hashes([0.25])


def test_string_dtypes_hash_equal() -> None:
    values = ["a", "", "ünï", "a", "1", None]
    assert_all_equal(
        {
            "object": column_hashes(values, object),
            "str": column_hashes(values, "str"),
            "string[python]": column_hashes(values, "string[python]"),
            "string[pyarrow]": column_hashes(values, "string[pyarrow]"),
            "arrow string": column_hashes(values, pd.ArrowDtype(pa.string())),
            "arrow large_string": column_hashes(values, pd.ArrowDtype(pa.large_string())),
            "category": column_hashes(values, "category"),
            "numpy str_ objects": column_hashes([v if v is None else np.str_(v) for v in values], object),
        }
    )


def test_bool_dtypes_hash_equal() -> None:
    values = [True, False, True]
    assert_all_equal(
        {
            "bool": column_hashes(values, bool),
            "boolean": column_hashes(values, "boolean"),
            "object": column_hashes(values, object),
            "object numpy bools": column_hashes([np.bool_(v) for v in values], object),
            "arrow bool": column_hashes(values, pd.ArrowDtype(pa.bool_())),
        }
    )


def test_datetime_units_and_objects_hash_equal() -> None:
    instants = ["2024-01-02 03:04:05", "1969-12-31 23:59:59", "1970-01-01"]
    naive = timestamps(*instants)
    variants = {unit: column_hashes(naive.astype(f"datetime64[{unit}]")) for unit in ("s", "ms", "us", "ns")}
    variants["python datetime"] = column_hashes(naive.dt.to_pydatetime().tolist(), object)
    variants["Timestamp objects"] = column_hashes(list(naive), object)
    variants["datetime64 objects"] = column_hashes([np.datetime64(t, "s") for t in instants], object)
    variants["arrow timestamp[ms]"] = column_hashes(naive, pd.ArrowDtype(pa.timestamp("ms")))
    assert_all_equal(variants)


def test_datetime_sub_second_precision_matters() -> None:
    nanos = timestamps("2024-01-02 03:04:05.123456789", "2024-01-02 03:04:05.123456")
    hashes = column_hashes(nanos)
    assert hashes[0] != hashes[1]
    assert hashes[1] == column_hashes([dt.datetime(2024, 1, 2, 3, 4, 5, 123456)], object)[0]
    assert hashes[0] == column_hashes([pd.Timestamp("2024-01-02 03:04:05.123456789")], object)[0]


def test_datetimes_outside_the_nanosecond_range() -> None:
    far = column_hashes([dt.datetime(3000, 1, 1, 12)], object)
    for unit in ("s", "ms", "us"):
        assert far == column_hashes([np.datetime64("3000-01-01T12:00:00", unit)], f"datetime64[{unit}]")
    assert far != column_hashes([dt.datetime(3000, 1, 1, 13)], object)


def test_tz_aware_datetimes_are_converted_to_utc() -> None:
    paris = timestamps("2024-06-01 14:00").dt.tz_localize("Europe/Paris")
    utc_naive = column_hashes(timestamps("2024-06-01 12:00"))
    assert_all_equal(
        {
            "Europe/Paris series": column_hashes(paris),
            "UTC series": column_hashes(paris.dt.tz_convert("UTC")),
            "aware python datetime": column_hashes(
                [dt.datetime(2024, 6, 1, 14, tzinfo=dt.timezone(dt.timedelta(hours=2)))], object
            ),
            "aware Timestamp": column_hashes([pd.Timestamp("2024-06-01 14:00", tz="Europe/Paris")], object),
            "arrow timestamp tz": column_hashes(paris, pd.ArrowDtype(pa.timestamp("us", tz="Asia/Tokyo"))),
            "naive UTC wall time": utc_naive,
        }
    )
    assert column_hashes(timestamps("2024-06-01 14:00")) != utc_naive  # naive is taken as is


def test_categorical_hashes_by_its_values() -> None:
    assert column_hashes([3, 1, 3], "category") == column_hashes([3, 1, 3])
    reordered = pd.Categorical(["x", "y", None], categories=["y", "z", "x"])
    assert column_hashes(reordered) == column_hashes(["x", "y", None], object)


def test_other_kinds_are_canonical() -> None:
    leap_day = dt.date(2024, 2, 29)
    assert column_hashes([leap_day], object) == column_hashes([leap_day], pd.ArrowDtype(pa.date32()))
    assert column_hashes([leap_day], object) == column_hashes([leap_day], pd.ArrowDtype(pa.date64()))
    assert column_hashes([b"\x00ab"], object) == column_hashes([bytearray(b"\x00ab")], object)
    assert column_hashes([b"\x00ab"], object) == column_hashes([b"\x00ab"], pd.ArrowDtype(pa.binary()))
    day = dt.timedelta(days=1, microseconds=3)
    assert_all_equal(
        {
            "python timedelta": column_hashes([day], object),
            "timedelta64[ns]": column_hashes([day], "timedelta64[ns]"),
            "timedelta64[us]": column_hashes([day], "timedelta64[us]"),
            "Timedelta object": column_hashes([pd.Timedelta(day)], object),
            "arrow duration": column_hashes([day], pd.ArrowDtype(pa.duration("us"))),
        }
    )


def test_json_cells_hash_canonically() -> None:
    assert column_hashes([{"a": 1, "b": {"x": [1, 2], "y": None}}], object) == column_hashes(
        [{"b": {"y": None, "x": [1, 2]}, "a": 1}], object
    )
    assert column_hashes([[1, "a"]], object) == column_hashes([(1, "a")], object)
    assert column_hashes([[1, 2]], object) == column_hashes([np.array([1, 2])], object)
    assert column_hashes([{"a": 1}], object) != column_hashes([{"a": 2}], object)
    assert column_hashes([[1, 2]], object) != column_hashes([[2, 1]], object)
    assert column_hashes([{"a": {1, 2}}], object) == column_hashes([{"a": {2, 1}}], object)
    assert column_hashes([{1: "x", "b": 2}], object) == column_hashes([{"b": 2, 1: "x"}], object)
    struct = pd.ArrowDtype(pa.struct([("b", pa.int64()), ("a", pa.string())]))
    assert column_hashes([{"a": "x", "b": 1}], struct) == column_hashes([{"b": 1, "a": "x"}], object)


def test_mixed_object_column_matches_homogeneous_columns() -> None:
    mixed = ["x", 1, 2.5, True, None, dt.date(2024, 1, 1), {"k": [1]}, b"b", pd.Timestamp("2024-01-01")]
    hashes = column_hashes(mixed, object)
    singles = [column_hashes([v], object)[0] for v in mixed]
    assert hashes == singles
    assert len(set(hashes)) == len(mixed)


# --- kinds that must not collide ----------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right"),
    [
        pytest.param("1", 1, id="str-vs-int"),
        pytest.param("1.5", 1.5, id="str-vs-float"),
        pytest.param("None", None, id="str-vs-null"),
        pytest.param("", None, id="empty-str-vs-null"),
        pytest.param(True, 1, id="bool-vs-int"),
        pytest.param(False, 0, id="false-vs-zero"),
        pytest.param(pd.Timestamp("2024-01-01"), 1_704_067_200_000_000_000, id="datetime-vs-int-ns"),
        pytest.param(pd.Timestamp("1970-01-01"), 0, id="epoch-vs-zero"),
        pytest.param(dt.date(2024, 1, 1), pd.Timestamp("2024-01-01"), id="date-vs-datetime"),
        pytest.param(dt.date(1970, 1, 2), 1, id="date-vs-int-days"),
        pytest.param(dt.timedelta(seconds=1), 1, id="timedelta-vs-int"),
        pytest.param(dt.timedelta(0), pd.Timestamp("1970-01-01"), id="timedelta-vs-datetime"),
        pytest.param(b"x", "x", id="bytes-vs-str"),
        pytest.param({"a": 1}, '{"a":1}', id="json-vs-its-text"),
        pytest.param([1], 1, id="list-vs-int"),
        pytest.param(2**70, str(2**70), id="bigint-vs-its-digits"),
        pytest.param(dt.time(1, 2), "01:02:00", id="other-vs-its-text"),
    ],
)
def test_different_kinds_do_not_collide(left: object, right: object) -> None:
    separate = (column_hashes([left], object), column_hashes([right], object))
    assert separate[0] != separate[1]
    together = column_hashes([left, right], object)
    assert together[0] != together[1]


def test_typed_columns_do_not_collide_across_kinds() -> None:
    assert column_hashes([1]) != column_hashes(["1"], "str")
    assert column_hashes([True]) != column_hashes([1])
    assert column_hashes(timestamps("1970-01-01 00:00:01")) != column_hashes([10**9])


# --- golden values ------------------------------------------------------------------
# These numbers are persisted in every user's metadata index. If a change in filepipe,
# pandas, pyarrow or numpy alters any of them, every stored row would look changed and be
# recomputed. Never update them casually: fix the code so it reproduces them, or treat the
# change as a breaking format change with a migration.


def golden_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "int": pd.Series([1, -2, None, 2**40], dtype="Int64"),
            "uint": pd.Series([0, 2**64 - 1, 7, 2**63], dtype="uint64"),
            "float": [0.5, -0.0, np.inf, np.nan],
            "str": pd.Series(["a", "", "ünï ☃", None], dtype="str"),
            "bool": pd.Series([True, False, None, True], dtype="boolean"),
            "datetime": timestamps("2024-01-02 03:04:05.123456789", None, "1969-12-31 23:59:59", "2262-04-11"),
            "datetime_tz": timestamps("2024-06-01 14:00", "2000-01-01", None, "1999-12-31 23:00")
            .dt.tz_localize("Europe/Paris"),
            "category": pd.Categorical(["x", "y", "x", None]),
            "objects": pd.Series(
                [{"b": 1, "a": [1, 2.5, None]}, b"\x00bytes", dt.date(2024, 2, 29), decimal.Decimal("2.5")],
                dtype=object,
            ),
            "more_objects": pd.Series(
                [2**70, dt.timedelta(days=1, microseconds=1), ["x", None], dt.time(1, 2, 3)], dtype=object
            ),
            "mixed": pd.Series(["1", 1, True, None], dtype=object),
        }
    )


GOLDEN_COLUMNS = {
    "int": [-2933053459792208629, 7237422461007593962, -8617340362719972555, 5947055946511463758],
    "uint": [5176955887052893057, -2455612751234829269, -5156443779396839456, 3638635941830350480],
    "float": [2722845829790566368, 3420362720285762614, 7762382742505543870, -8617340362719972555],
    "str": [6614960750655035661, 3469353271078081609, -3596650785726190295, -8617340362719972555],
    "bool": [-2212479114121315525, -852304755149632932, -8617340362719972555, -2212479114121315525],
    "datetime": [8079590745334479484, -8617340362719972555, 4763143126558952320, -2063155188703561328],
    "datetime_tz": [-8135711342900300335, -2504805179940514996, -8617340362719972555, 6082983702973907587],
    "category": [6059233834511155292, -7301077586278833646, 6059233834511155292, -8617340362719972555],
    "objects": [-729737197689185756, -2193305223982203022, -9053978828390791643, 6561797721669982465],
    "more_objects": [6623679778368098640, -6755430711206851765, -1419602338835910279, 4111728281302588527],
    "mixed": [-309456409857313657, -1981181733584396273, -7263460515972707703, -8617340362719972555],
}
GOLDEN_ROWS = [5641432548645267807, -776123319198587206, -439558396543916066, 4315351027563483277]


def test_golden_values_per_kind() -> None:
    df = golden_frame()
    got = {name: hash_rows(df[[name]]).tolist() for name in df.columns}
    assert got == GOLDEN_COLUMNS


def test_golden_values_whole_rows() -> None:
    assert hash_rows(golden_frame()).tolist() == GOLDEN_ROWS


# --- properties ---------------------------------------------------------------------

_cell_values = {
    "int": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(allow_nan=True, allow_infinity=True),
    "str": st.text(max_size=5),
    "bool": st.booleans(),
    "datetime": st.datetimes(min_value=dt.datetime(1800, 1, 1), max_value=dt.datetime(2200, 1, 1)),
    "object": st.one_of(st.integers(), st.text(max_size=3), st.floats(), st.booleans(), st.dates()),
}


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    rows = draw(st.integers(0, 12))
    names = draw(st.lists(st.text(min_size=1, max_size=4), min_size=0, max_size=5, unique=True))
    columns = {}
    for name in names:
        kind = draw(st.sampled_from(sorted(_cell_values)))
        cells = draw(st.lists(st.one_of(st.none(), _cell_values[kind]), min_size=rows, max_size=rows))
        columns[name] = pd.Series(cells, dtype=object if kind == "object" else None)
    index = draw(st.permutations(range(rows)))
    index = pd.Index(index, dtype="int64")
    return pd.DataFrame(columns, index=index) if names else pd.DataFrame(index=index)


@settings(max_examples=150, deadline=None)
@given(df=frames(), data=st.data())
def test_hashes_ignore_column_order_and_index_and_split_by_rows(
    df: pd.DataFrame, data: st.DataObject
) -> None:
    expected = hash_rows(df)
    shuffled = data.draw(st.permutations(list(df.columns)))
    assert hash_rows(df[shuffled].reset_index(drop=True)).tolist() == expected.tolist()
    cut = data.draw(st.integers(0, len(df)))
    parts = np.concatenate([hash_rows(df.iloc[:cut]), hash_rows(df.iloc[cut:])])
    assert parts.tolist() == expected.tolist()


# --- code_version -------------------------------------------------------------------


@pytest.fixture
def load_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], ModuleType]:
    """Write `source` to tmp_path/<name>.py and import it (registered like a real import)."""

    def load(name: str, source: str) -> ModuleType:
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    return load


STEP_SOURCE = """
    def step(df, factor=2):
        # scale the values
        return df * factor
"""


def test_code_version_is_16_hex_chars_and_deterministic() -> None:
    version = code_version(test_returns_one_signed_int64_per_row)
    assert len(version) == 16
    int(version, 16)
    assert version == code_version(test_returns_one_signed_int64_per_row, None)
    assert version == code_version(test_returns_one_signed_int64_per_row, {})


def test_code_version_follows_the_body(load_module: Callable[[str, str], ModuleType]) -> None:
    original = load_module("mod_a", STEP_SOURCE)
    same = load_module("mod_b", STEP_SOURCE)
    body = load_module("mod_c", STEP_SOURCE.replace("df * factor", "df * factor + 1"))
    comment = load_module("mod_d", STEP_SOURCE.replace("scale the values", "scale values"))
    assert code_version(original.step) == code_version(same.step)
    assert code_version(original.step) != code_version(body.step)
    assert code_version(original.step) != code_version(comment.step)  # any source edit counts


def test_code_version_follows_params() -> None:
    def step(df: pd.DataFrame) -> pd.DataFrame:
        return df

    base = code_version(step, {"a": 1, "b": [1, 2]})
    assert base == code_version(step, {"b": [1, 2], "a": 1})
    assert base != code_version(step, {"a": 2, "b": [1, 2]})
    assert base != code_version(step, {"a": 1, "b": [2, 1]})
    assert base != code_version(step, {"a": 1})
    when = code_version(step, {"when": dt.date(2024, 1, 1)})  # not JSON: compared by repr
    assert when != code_version(step, {"when": dt.date(2024, 1, 2)})


def test_code_version_of_partials_lambdas_and_builtins() -> None:
    def step(df: pd.DataFrame, factor: int = 1) -> pd.DataFrame:
        return df * factor

    twice, thrice = functools.partial(step, factor=2), functools.partial(step, factor=3)
    assert code_version(twice) != code_version(thrice)
    assert code_version(functools.partial(step, factor=2)) != code_version(step)
    assert code_version(functools.partial(step, 2)) != code_version(functools.partial(step, factor=2))
    first, second = (lambda df: df + 1), (lambda df: df + 2)  # one source line, two bodies
    assert code_version(first) != code_version(second)
    assert code_version(lambda s: s.upper()) != code_version(lambda s: s.lower())
    assert code_version(len) == code_version(len)
    assert code_version(len) != code_version(abs)


def test_code_version_of_a_callable_instance_follows_its_class(
    load_module: Callable[[str, str], ModuleType],
) -> None:
    source = """
        class Scale:
            def __call__(self, df):
                return df * 2
    """
    one = load_module("cls_a", source)
    other = load_module("cls_b", source.replace("df * 2", "df * 3"))
    assert code_version(one.Scale()) == code_version(load_module("cls_c", source).Scale())
    assert code_version(one.Scale()) != code_version(other.Scale())


def test_code_version_is_stable_across_processes(
    tmp_path: Path, load_module: Callable[[str, str], ModuleType]
) -> None:
    module = load_module("stable_step", STEP_SOURCE)
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import stable_step
        from filepipe.codeversion import code_version
        params = {{"columns": {{"b", "a", "c", "d"}}, "n": 1, "nested": {{"z": [1, "x"], "y": None}}}}
        print(code_version(stable_step.step, params))
        print(code_version(lambda df: df[df["k"].isin({{"p", "q", "r", "s"}})]))
        """
    )
    outputs = []
    for seed in ("1", "2"):  # different str hash seeds: set orders differ between the runs
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=True,
        )
        outputs.append(done.stdout.split())
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) == 2
    params = {"columns": {"a", "b", "c", "d"}, "n": 1, "nested": {"y": None, "z": [1, "x"]}}
    assert outputs[0][0] == code_version(module.step, params)
