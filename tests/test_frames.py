"""Frame helpers: each small-frame (sets, dicts) and large-frame (pandas) path against pandas."""

from __future__ import annotations

from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pandas.testing import assert_frame_equal

from filepipe import frames
from filepipe.frames import (
    SMALL_FRAME,
    key_positions,
    key_tuples,
    latest_rows,
    pick,
    rows_in,
    take_rows,
    unique_rows,
)


@pytest.mark.parametrize("n", [3, SMALL_FRAME * 4])
def test_rows_in_small_and_large_frames(n: int) -> None:
    a = pd.DataFrame({"k": np.arange(n), "s": [f"x{i % 7}" for i in range(n)]})
    b = a.iloc[::3].copy()
    b.loc[b.index[0], "s"] = "other"  # same k, different s: not the same key
    got = rows_in(a, b, ["k", "s"])
    expected = np.arange(n) % 3 == 0
    expected[0] = False
    assert got.dtype == bool and got.tolist() == expected.tolist()
    assert rows_in(a, b, ["k"]).tolist() == (np.arange(n) % 3 == 0).tolist()
    assert not rows_in(a, b.iloc[0:0], ["k"]).any()


# --- key_tuples, pick, unique_rows, latest_rows, key_positions, take_rows, rows_in ---------
#
# Each helper has a small-frame path (<= SMALL_FRAME rows: dicts and sets) and a large-frame
# path (pandas). The tests below compare both against plain pandas and against ground truth
# known from how the data was built. Frames are keyed by an integer "id": `keyed` turns ids
# into key columns so that id <-> key tuple is a bijection; in the two-column key sets the
# first column alone is shared by groups of 4 ids, so matching on one column only is wrong.

KEYSETS = {
    "str": ["s"],
    "int64": ["i"],
    "str+str": ["s", "s2"],
    "int64+int64": ["i", "i2"],
    "str+int64": ["s", "i"],
}
BIG = 2**40  # int64 key values beyond 32 bits


def keyed(ids: np.ndarray, keys: list[str]) -> pd.DataFrame:
    """Key columns for `ids` (one row per id, repeats allowed)."""
    ids = np.asarray(ids, dtype=np.int64)
    two = len(keys) == 2
    cols: dict[str, object] = {}
    for k in keys:
        if k == "s":
            cols[k] = pd.Series([f"g{v // 4}é" if two else f"key-{v}" for v in ids], dtype="str")
        elif k == "s2":
            cols[k] = pd.Series(["abcd"[v % 4] for v in ids], dtype="str")
        elif k == "i" and keys == ["s", "i"]:
            cols[k] = (ids % 4) * 2**33 - 5
        elif k == "i":
            cols[k] = (ids // 4 if two else ids) * BIG - 7 * BIG
        elif k == "i2":
            cols[k] = ids % 4 - 2
    return pd.DataFrame(cols)


def with_payload(ids: np.ndarray, keys: list[str]) -> pd.DataFrame:
    """Key columns plus value columns of several dtypes, all derived from the ids."""
    ids = np.asarray(ids, dtype=np.int64)
    return keyed(ids, keys).assign(
        v=ids * 3 + 1,                                          # int64 (exact as float too)
        f=ids / 8,                                              # float64
        t=pd.Series([f"t{v}" for v in ids], dtype="str"),       # str
        b=ids % 3 == 0,                                         # bool
    )


def test_keyed_frames_have_the_expected_dtypes_and_uniqueness() -> None:
    # guards the helpers below: a key set must really be str / int64 / mixed and injective
    ids = np.arange(100)
    for name, keys in KEYSETS.items():
        df = keyed(ids, keys)
        assert list(df.columns) == keys
        for k in keys:
            want = "int64" if k.startswith("i") else "str"
            assert df[k].dtype == want, (name, k, df[k].dtype)
        assert not df.duplicated(keys).any()
        if len(keys) == 2:  # the first column alone is not a key
            assert df[keys[0]].nunique() == 25


def na_list(values: object) -> list:
    """Values as a list with every kind of missing value as None (for comparisons)."""
    return [None if pd.isna(v) else v for v in pd.Series(values, dtype=object)]


def test_key_tuples() -> None:
    df = pd.DataFrame({"s": pd.Series(["a", "b", "a"], dtype="str"),
                       "i": np.array([2**62 + 1, -1, 5], dtype=np.int64)})
    assert key_tuples(df, ["i", "s"]) == [(2**62 + 1, "a"), (-1, "b"), (5, "a")]
    assert all(type(t[0]) is int for t in key_tuples(df, ["i"]))  # plain Python values
    assert key_tuples(df, ["s"]) == [("a",), ("b",), ("a",)]
    assert key_tuples(df, []) == [(), (), ()]
    assert key_tuples(df.iloc[0:0], ["s", "i"]) == []


# (len(left), len(right)): both small, exactly at the limit, one side large, both large
SIZE_PAIRS = [(20, 30), (SMALL_FRAME, SMALL_FRAME), (SMALL_FRAME + 1, 40), (25, SMALL_FRAME + 1),
              (1500, 1200)]


@pytest.mark.parametrize("missing", [True, False], ids=["holes", "no-holes"])
@pytest.mark.parametrize("keyset", KEYSETS)
@pytest.mark.parametrize("n_left,n_right", SIZE_PAIRS)
def test_key_positions_and_take_rows_match_left_merge(n_left: int, n_right: int, keyset: str,
                                                      missing: bool) -> None:
    keys = KEYSETS[keyset]
    rng = np.random.default_rng(n_left * 7 + n_right)
    right_ids = rng.permutation(4 * max(n_left, n_right))[:n_right]
    pool = np.concatenate([right_ids, -1 - right_ids]) if missing else right_ids  # -1-x: absent
    left_ids = rng.choice(pool, size=n_left)  # repeats allowed on the left
    if missing:
        left_ids[0] = -5  # at least one hole
    left = with_payload(left_ids, keys)[keys + ["v"]]  # "v" also on the left: merge suffixes
    right = with_payload(right_ids, keys)

    pos = key_positions(left, right, keys)

    # ground truth from the ids
    where = {int(r): p for p, r in enumerate(right_ids)}
    expected = [where.get(int(i), -1) for i in left_ids]
    assert pos.tolist() == expected
    assert pos.dtype.kind == "i" and len(pos) == n_left
    assert (pos < 0).any() == missing
    # the plain pandas equivalent: a left merge keeps one row per left row, in order
    cols = ["v", "f", "t", "b"]
    renamed = right.rename(columns={c: c + "_r" for c in cols}).assign(_pos=np.arange(n_right))
    merged = left.merge(renamed, on=keys, how="left")
    assert len(merged) == n_left
    assert merged["_pos"].fillna(-1).astype(np.int64).tolist() == expected
    assert_frame_equal(merged[keys + ["v"]], left)

    got = take_rows(right, pos, cols, suffix="_r")
    assert list(got) == [c + "_r" for c in cols]
    for c in cols:
        assert len(got[c + "_r"]) == n_left
        assert na_list(got[c + "_r"]) == na_list(merged[c + "_r"]), c
    # dtypes: exact integers and booleans stay exact (nullable when there are holes)
    dtype = {c: pd.Series(got[c + "_r"]).dtype for c in cols}
    assert dtype["v"] == ("Int64" if missing else "int64")
    assert dtype["b"] == ("boolean" if missing else "bool")
    assert dtype["f"] == "float64"
    assert dtype["t"] == "str"


@pytest.mark.parametrize("n", [10, SMALL_FRAME + 50, 5000])
def test_key_positions_of_one_text_key_in_arrow_match_a_pandas_index(n: int) -> None:
    """One `str` key on both sides takes Arrow's hash lookup; nulls and other string
    arrays take pandas' index: the same positions either way."""
    rng = np.random.default_rng(n)
    right = [f"k{i}" for i in rng.permutation(2 * n)[:n]]
    left = [f"k{i}" for i in rng.integers(0, 3 * n, size=n)] + ["", "K1", right[0]]
    for l_values, r_values in [(left, right), (left + [None], right), (left, right + [None])]:
        a = pd.DataFrame({"k": pd.array(l_values, dtype="str")})
        b = pd.DataFrame({"k": pd.array(r_values, dtype="str")})
        assert isinstance(a["k"].array, pd.arrays.ArrowStringArray)
        expected = pd.Index(b["k"].astype(object)).get_indexer(a["k"].astype(object))
        got = key_positions(a, b, ["k"])
        assert got.dtype.kind == "i" and got.tolist() == expected.tolist()
    a, b = (pd.DataFrame({"k": pd.array(v, dtype="str")}) for v in (left, right))
    chunked = pd.DataFrame({"k": pd.concat([b["k"].iloc[: n // 2], b["k"].iloc[n // 2:]],
                                           ignore_index=True)})  # two Arrow chunks
    assert key_positions(a, chunked, ["k"]).tolist() == key_positions(a, b, ["k"]).tolist()


def test_key_positions_empty_left_and_disjoint_frames() -> None:
    for n in (5, SMALL_FRAME + 5):
        right = with_payload(np.arange(n), ["s", "i"])
        assert key_positions(right.iloc[0:0], right, ["s", "i"]).tolist() == []
        other = with_payload(np.arange(n) + 10 * n, ["s", "i"])
        assert key_positions(other, right, ["s", "i"]).tolist() == [-1] * n
        assert key_positions(right, right, ["s", "i"]).tolist() == list(range(n))


@pytest.mark.parametrize("n", [6, SMALL_FRAME + 44])
def test_take_rows_keeps_64_bit_integers_exact_with_holes(n: int) -> None:
    # values a float64 cannot hold: a merge would return 2**62 for 2**62 + 1
    big = np.array([2**62 + 1, -(2**63), 2**63 - 1, 2**53 + 1], dtype=np.int64)
    ids = np.arange(n)
    right = keyed(ids, ["s"]).assign(v=big[ids % 4], b=ids % 2 == 0)
    left = keyed(np.array([1, 10**6, 0, 2, -3, 3]), ["s"])  # 10**6 and -3 are absent
    pos = key_positions(left, right, ["s"])
    assert pos.tolist() == [1, -1, 0, 2, -1, 3]
    out = take_rows(right, pos, ["v", "b"])
    v = out["v"]
    assert isinstance(v, pd.arrays.IntegerArray) and v.dtype == "Int64"
    assert v.isna().tolist() == [False, True, False, False, True, False]
    assert [None if x is pd.NA else x for x in v] == \
        [-(2**63), None, 2**62 + 1, 2**63 - 1, None, 2**53 + 1]
    assert all(type(x) is int for x in v.dropna().tolist())
    b = out["b"]
    assert b.dtype == "boolean"
    assert [None if x is pd.NA else x for x in b] == [False, None, True, True, None, False]
    # no holes: plain int64 / bool, still exact
    full = take_rows(right, np.array([3, 0, 2]), ["v", "b"])
    assert np.asarray(full["v"]).dtype == np.int64
    assert np.asarray(full["v"]).tolist() == [2**53 + 1, 2**62 + 1, 2**63 - 1]
    assert np.asarray(full["b"]).dtype == bool and np.asarray(full["b"]).tolist() == [False, True, True]


def test_take_rows_other_dtypes_with_holes() -> None:
    df = pd.DataFrame({
        "t": pd.Series(["x", "y"], dtype="str"),
        "d": pd.to_datetime(["2024-01-02", "2024-03-04"]),
        "f": [0.5, 1.5],
        "o": [{"a": 1}, [2]],
        "n": pd.array([7, None], dtype="Int64"),
    })
    out = take_rows(df, np.array([1, -1, 0]), list(df.columns), suffix="__old")
    assert list(out) == ["t__old", "d__old", "f__old", "o__old", "n__old"]
    s = {c: pd.Series(v) for c, v in out.items()}
    assert s["t__old"].dtype == "str" and na_list(s["t__old"]) == ["y", None, "x"]
    assert s["d__old"].dtype == df["d"].dtype
    assert na_list(s["d__old"]) == [pd.Timestamp("2024-03-04"), None, pd.Timestamp("2024-01-02")]
    assert s["f__old"].dtype == "float64" and na_list(s["f__old"]) == [1.5, None, 0.5]
    assert na_list(s["o__old"]) == [[2], None, {"a": 1}]
    assert s["n__old"].dtype == "Int64" and na_list(s["n__old"]) == [None, None, 7]


@pytest.mark.parametrize("keyset", KEYSETS)
@pytest.mark.parametrize("n_a,n_b", SIZE_PAIRS)
def test_rows_in_matches_isin(n_a: int, n_b: int, keyset: str) -> None:
    keys = KEYSETS[keyset]
    rng = np.random.default_rng(n_a * 3 + n_b)
    a_ids = rng.integers(0, 2 * max(n_a, n_b), size=n_a)
    b_ids = rng.integers(0, 2 * max(n_a, n_b), size=n_b)  # repeated keys in b too
    a = with_payload(a_ids, keys)
    b = with_payload(b_ids, keys).assign(v=-1)  # other payload: only the keys count

    got = rows_in(a, b, keys)

    expected = np.isin(a_ids, b_ids)
    assert expected.any() and not expected.all()
    assert got.dtype == bool and got.tolist() == expected.tolist()
    if len(keys) == 1:
        assert got.tolist() == a[keys[0]].isin(b[keys[0]]).tolist()
    else:
        assert got.tolist() == pd.MultiIndex.from_frame(a[keys]).isin(
            pd.MultiIndex.from_frame(b[keys])).tolist()


@pytest.mark.parametrize("keyset", KEYSETS)
@pytest.mark.parametrize("n", [12, SMALL_FRAME, SMALL_FRAME + 1, 1500])
def test_unique_rows_keeps_first_occurrences_in_order(n: int, keyset: str) -> None:
    keys = KEYSETS[keyset]
    rng = np.random.default_rng(n)
    ids = rng.integers(0, max(2, n // 2), size=n)
    df = with_payload(ids, keys).assign(row=np.arange(n))
    df.index = np.arange(n)[::-1] * 10  # not a RangeIndex: the result must get a fresh one

    got = unique_rows(df, keys)

    assert_frame_equal(got, df.drop_duplicates(keys).reset_index(drop=True))
    _, first = np.unique(ids, return_index=True)
    assert got["row"].tolist() == sorted(first.tolist())  # ground truth, in input order
    assert isinstance(got.index, pd.RangeIndex) and got.index.equals(pd.RangeIndex(len(got)))
    # default columns: all of them (the payload is a function of the id, "row" is not)
    whole = df.drop(columns="row")
    assert_frame_equal(unique_rows(whole), whole.drop_duplicates().reset_index(drop=True))
    # a frame without repeats comes back whole, re-indexed
    distinct = df.iloc[sorted(first.tolist())]
    assert_frame_equal(unique_rows(distinct, keys), distinct.reset_index(drop=True))


def test_unique_rows_on_a_subset_of_non_key_columns() -> None:
    for n in (9, SMALL_FRAME * 2 + 1):
        df = pd.DataFrame({"k": np.arange(n), "g": pd.Series([f"g{i % 3}" for i in range(n)],
                                                              dtype="str")})
        got = unique_rows(df, ["g"])
        assert got.to_dict("list") == {"k": [0, 1, 2], "g": ["g0", "g1", "g2"]}
        assert unique_rows(df.iloc[0:0], ["g"]).empty


@pytest.mark.parametrize("keyset", KEYSETS)
@pytest.mark.parametrize("n", [15, SMALL_FRAME, SMALL_FRAME + 1, 1500])
def test_latest_rows_matches_groupby_max(n: int, keyset: str) -> None:
    keys = KEYSETS[keyset]
    rng = np.random.default_rng(n + 1)
    ids = rng.integers(0, max(2, n // 3), size=n)
    seq = rng.permutation(n).astype(np.int64) * 1000 + 2**40  # distinct, not in row order
    df = with_payload(ids, keys).assign(seq=seq)
    df.index = df.index + 5

    got = latest_rows(df, keys, "seq")

    assert list(got.columns) == keys + ["seq"]
    assert got.dtypes.tolist() == df[keys + ["seq"]].dtypes.tolist()
    assert isinstance(got.index, pd.RangeIndex)
    assert not got.duplicated(keys).any()
    expected = df.groupby(keys, as_index=False)["seq"].max()
    # no promised order: compare sorted by key
    assert_frame_equal(got.sort_values(keys).reset_index(drop=True),
                       expected.sort_values(keys).reset_index(drop=True))
    # ground truth: the highest seq of each id, with that id's key values
    best: dict[int, int] = {}
    for i, s in zip(ids.tolist(), seq.tolist()):
        best[i] = max(best.get(i, s), s)
    truth = keyed(np.array(list(best)), keys).assign(seq=np.array(list(best.values())))
    assert_frame_equal(got.sort_values(keys).reset_index(drop=True),
                       truth.sort_values(keys).reset_index(drop=True))


def test_latest_rows_with_string_order_and_ties() -> None:
    for n in (6, SMALL_FRAME * 3):
        df = pd.DataFrame({"k": np.arange(n) % 2,
                           "ts": pd.Series([f"2024-01-0{1 + i % 3}" for i in range(n)], dtype="str")})
        got = latest_rows(df, ["k"], "ts").sort_values("k").reset_index(drop=True)
        assert got.to_dict("list") == {"k": [0, 1], "ts": ["2024-01-03", "2024-01-03"]}
        assert got["ts"].dtype == "str"


def test_pick_fresh_index_same_dtypes_and_values() -> None:
    df = pd.DataFrame({
        "i": np.array([2**62 + 1, 2, 3, 4], dtype=np.int64),
        "s": pd.array(["a", None, "c", "d"], dtype="str"),
        "n": pd.array([1, None, 3, 4], dtype="Int64"),
        "c": pd.Categorical(["p", "q", "p", "q"]),
        "d": pd.to_datetime(["2024-01-01"] * 4, utc=True),
        "b": [True, False, True, False],
        "o": [{"k": 1}, None, [1], "x"],
    }, index=["w", "x", "y", "z"])
    part = df.iloc[[3, 1, 2]]  # a shuffled, non-default index
    cols = ["o", "d", "i", "s", "n", "c", "b"]

    got = pick(part, cols)

    assert isinstance(got.index, pd.RangeIndex) and got.index.equals(pd.RangeIndex(3))
    assert list(got.columns) == cols
    assert got.dtypes.to_dict() == part[cols].dtypes.to_dict()
    assert_frame_equal(got, part[cols].reset_index(drop=True))
    assert got["i"].tolist() == [4, 2, 3] and na_list(got["s"]) == ["d", None, "c"]
    assert_frame_equal(pick(df.iloc[0:0], ["s", "i"]), df[["s", "i"]].iloc[0:0].reset_index(drop=True))
    # all columns, in order (pick may then return the frame itself, read-only): the index
    # must still be a fresh 0..n-1 RangeIndex, whatever index the input had
    everything = list(df.columns)
    for source in (df, part, df.reset_index(drop=True), df.reset_index(drop=True).iloc[1:],
                   df.reset_index(drop=True).iloc[::2]):
        got = pick(source, everything)
        assert isinstance(got.index, pd.RangeIndex), source.index
        assert got.index.equals(pd.RangeIndex(len(source))), source.index
        assert_frame_equal(got, source.reset_index(drop=True))


# --- small path vs large path on the same data (SMALL_FRAME patched) ---------------------

KEY_VALUES = st.tuples(st.sampled_from(["a", "b", "", "é", "a b"]),
                       st.sampled_from([0, 1, -1, 2**62 + 1, -(2**63), 2**53 + 1]))


def _frame(pairs: list[tuple[str, int]], seqs: list[int]) -> pd.DataFrame:
    return pd.DataFrame({
        "s": pd.Series([p[0] for p in pairs], dtype="str"),
        "i": np.array([p[1] for p in pairs], dtype=np.int64),
        "seq": np.array(seqs[:len(pairs)] + list(range(len(pairs) - len(seqs))), dtype=np.int64),
        "v": np.array([2**62 + k for k in range(len(pairs))], dtype=np.int64),
        "b": np.array([k % 2 == 0 for k in range(len(pairs))], dtype=bool),
    })


def _both_paths(fn, *args):
    with mock.patch.object(frames, "SMALL_FRAME", 10**9):
        small = fn(*args)
    with mock.patch.object(frames, "SMALL_FRAME", -1):
        large = fn(*args)
    return small, large


def test_both_paths_helper_really_switches_paths() -> None:
    # the property test below relies on patching SMALL_FRAME; make sure it takes effect
    df = pd.DataFrame({"k": [1, 1, 2], "seq": [3, 5, 4]})
    small, large = _both_paths(latest_rows, df, ["k"], "seq")
    assert small["k"].tolist() == [1, 2] and small["seq"].tolist() == [5, 4]
    assert_frame_equal(large, small)
    with mock.patch.object(pd.DataFrame, "groupby", side_effect=AssertionError("large path")):
        with mock.patch.object(frames, "SMALL_FRAME", 10**9):
            latest_rows(df, ["k"], "seq")
        with mock.patch.object(frames, "SMALL_FRAME", -1), pytest.raises(AssertionError):
            latest_rows(df, ["k"], "seq")


@settings(max_examples=60, deadline=None, database=None, derandomize=True)
@given(left=st.lists(KEY_VALUES, max_size=25), right=st.lists(KEY_VALUES, max_size=25),
       seqs=st.lists(st.integers(-5, 5), max_size=25),
       keys=st.sampled_from([["s"], ["i"], ["s", "i"], ["i", "s"]]))
def test_small_and_large_paths_agree(left: list, right: list, seqs: list[int],
                                     keys: list[str]) -> None:
    a, b = _frame(left, seqs), _frame(right, seqs)

    small, large = _both_paths(rows_in, a, b, keys)
    assert small.tolist() == large.tolist()
    assert small.tolist() == [t in set(key_tuples(b, keys)) for t in key_tuples(a, keys)]

    small, large = _both_paths(unique_rows, a, keys)
    assert_frame_equal(small, large)
    assert_frame_equal(small, a.drop_duplicates(keys).reset_index(drop=True))

    small, large = _both_paths(latest_rows, a, keys, "seq")
    assert_frame_equal(small.sort_values(keys).reset_index(drop=True),
                       large.sort_values(keys).reset_index(drop=True))

    ub = b.drop_duplicates(keys).reset_index(drop=True)  # key_positions wants unique right keys
    small, large = _both_paths(key_positions, a, ub, keys)
    assert small.tolist() == large.tolist()
    where = {t: i for i, t in enumerate(key_tuples(ub, keys))}
    assert small.tolist() == [where.get(t, -1) for t in key_tuples(a, keys)]
    cols = [c for c in ("v", "b", "s", "i") if c not in keys]
    got = take_rows(ub, small, cols, suffix="_r")
    merged = a[keys].merge(ub[keys + cols].rename(columns={c: c + "_r" for c in cols}),
                           on=keys, how="left")
    for c in cols:
        if c in ("v", "i"):  # merge turns int-with-holes into float: compare exact values
            exact = [None if p < 0 else int(ub[c].iloc[p]) for p in small]
            assert [None if x is pd.NA else x for x in pd.array(got[c + "_r"])] == exact
        else:
            assert na_list(got[c + "_r"]) == na_list(merged[c + "_r"]), c


def test_keys_of_different_kinds_are_refused_not_silently_unmatched() -> None:
    from filepipe.errors import KeyTypeError
    from filepipe.frames import key_positions, rows_in

    ints = pd.DataFrame({"k": [1, 2]})
    texts = pd.DataFrame({"k": ["1", "2"]})
    for n in (2, 300):  # the small (dict) and the large (pandas index) paths
        big_ints, big_texts = (pd.concat([f] * (n // 2), ignore_index=True).drop_duplicates()
                               for f in (ints, texts))
        with pytest.raises(KeyTypeError, match="'k'.*int64.*str"):
            key_positions(big_ints, big_texts, ["k"])
        with pytest.raises(KeyTypeError, match="'k'"):
            rows_in(big_ints, big_texts, ["k"])
    # kinds that do compare equal stay allowed
    assert key_positions(ints, ints.astype("float64"), ["k"]).tolist() == [0, 1]
    assert key_positions(ints, ints.astype("Int64"), ["k"]).tolist() == [0, 1]
    assert key_positions(texts, texts.astype(object), ["k"]).tolist() == [0, 1]


def test_take_rows_keeps_unsigned_64_bit_values_exact_with_holes() -> None:
    import numpy as np

    from filepipe.frames import take_rows

    big = np.array([2**64 - 1, 2**63], dtype=np.uint64)
    got = take_rows(pd.DataFrame({"v": big}), np.array([1, -1, 0]), ["v"])["v"]
    assert str(got.dtype) == "UInt64"
    assert got[0] == 2**63 and got[1] is pd.NA and got[2] == 2**64 - 1


def test_a_missing_key_named_by_a_number_column_gets_a_hint() -> None:
    from filepipe.errors import MissingColumnsError
    from filepipe.frames import check_keys

    with pytest.raises(MissingColumnsError, match=r"column 2019 is named by a int, not text"):
        check_keys(pd.DataFrame({2019: [1], "v": [2]}), ["2019"], "table 't'")


def test_every_exception_filepipe_defines_is_a_filepipe_error_in_errors_py() -> None:
    """One home for exceptions: no module but errors.py defines one (#9)."""
    import ast
    from pathlib import Path

    import filepipe
    from filepipe import errors

    root = Path(filepipe.__file__).parent
    elsewhere = [f"{p.relative_to(root)}:{node.name}" for p in root.rglob("*.py") if p.name != "errors.py"
                 for node in ast.walk(ast.parse(p.read_text())) if isinstance(node, ast.ClassDef)
                 and any(getattr(b, "id", getattr(b, "attr", "")).endswith(("Error", "Exception"))
                         for b in node.bases)]
    assert elsewhere == []
    defined = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert all(issubclass(e, errors.FilepipeError) for e in defined)
    assert {e.__name__ for e in defined if e.retryable} == {
        "SourceChangedError", "FileDecodeError", "LockedError"}


def test_one_key_column_of_unhashable_values_is_still_checked() -> None:
    """Lists and dicts as key values (a memory store allows them): no TypeError from the
    one-column fast path; repeated ones are still found."""
    from filepipe.errors import DuplicateKeysError
    from filepipe.frames import check_keys

    check_keys(pd.DataFrame({"id": [[1], [2]], "v": [1, 2]}), ["id"], "table 't'")
    with pytest.raises(DuplicateKeysError, match=r"table 't': duplicate primary key id=\{'a': 1\}"):
        check_keys(pd.DataFrame({"id": [{"a": 1}, {"a": 1}], "v": [1, 2]}), ["id"], "table 't'")


@pytest.mark.parametrize("ids", [[1, 2], [1, 1]])
def test_a_repeated_column_name_is_named(ids: list[int]) -> None:
    from filepipe.errors import DuplicateColumnsError
    from filepipe.frames import check_keys

    df = pd.DataFrame([[i, i, 5] for i in ids], columns=["id", "id", "v"])
    with pytest.raises(DuplicateColumnsError, match=r"table 't': column\(s\) 'id' appear more than once"):
        check_keys(df, ["id"], "table 't'")


def test_keeps_values_only_where_no_two_keys_can_become_one() -> None:
    """Which transform-key types let a first run skip its output lookups (`keeps_values`)."""
    import sqlalchemy as sa

    from filepipe.frames import keeps_values

    kept = [(sa.String(), sa.VARCHAR()), (sa.Integer(), sa.BigInteger()), (sa.DateTime(), sa.DateTime()),
            (sa.Float(), sa.Float()), (sa.String(20), sa.String(20))]
    merged = [(sa.String(), sa.Integer()), (sa.DateTime(), sa.Date()), (sa.Float(), sa.Numeric(10, 2)),
              (sa.String(), sa.String(5)), (sa.Integer(), sa.Float()), (sa.String(), None)]
    assert all(keeps_values(a, b) for a, b in kept)
    assert not any(keeps_values(a, b) for a, b in merged)
