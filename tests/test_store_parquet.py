"""TableStoreParquet: one Parquet file, or a hive-style partitioned dataset (real files)."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import age

from filepipe import BatchTransform, Catalog, Pipeline, Table, build_compute, run_steps
from filepipe.errors import DuplicateKeysError, FilepipeError, MissingColumnsError
from filepipe.hashing import hash_rows
from filepipe.stores import TableStoreParquet, TableStoreParquetDataset
from filepipe.stores import parquet as parquet_module

KINDS = ["file", "dataset"]


def make_store(kind: str, base: Path, name: str = "t",
               **kwargs) -> TableStoreParquet | TableStoreParquetDataset:
    """The single-file store `<name>.parquet` or the dataset `<name>/` partitioned by region."""
    keys = kwargs.pop("primary_keys", ["region", "id"])
    if kind == "file":
        return TableStoreParquet(base / f"{name}.parquet", primary_keys=keys, **kwargs)
    kwargs.setdefault("partition_cols", ["region"])
    return TableStoreParquetDataset(base / name, primary_keys=keys, **kwargs)


def mixed_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "region": ["EU", "US", "EU", "Ünïcode/ä=b"],
        "id": [1, 2, 3, 4],
        "name": ["Zoë", "日本語", None, "emoji 🎉"],
        "qty": [10, -3, 0, 2**40],
        "price": [1.5, np.nan, -0.25, 1e300],
        "maybe": pd.array([1, None, 3, None], dtype="Int64"),
        "day": [dt.date(2024, 1, 31), None, dt.date(1999, 12, 31), dt.date(2024, 2, 29)],
        "at": pd.to_datetime(["2024-01-01 10:00:00.123456", None, "1970-01-01", "2038-01-19 03:14:08"],
                            format="ISO8601"),
        "at_utc": pd.to_datetime(["2024-01-01 10:00", "2024-06-01 00:00", None, "2000-01-01"],
                                 utc=True, format="ISO8601"),
        "flag": [True, False, True, False],
    })


def by_key(df: pd.DataFrame, keys=("region", "id")) -> pd.DataFrame:
    return df.sort_values(list(keys)).reset_index(drop=True)


def assert_same_rows(got: pd.DataFrame, want: pd.DataFrame, keys=("region", "id")) -> None:
    """Same columns and the same values per key (by filepipe's canonical row hash)."""
    assert sorted(got.columns) == sorted(want.columns)
    got, want = by_key(got, keys), by_key(want, keys)
    assert got[list(keys)].astype(str).values.tolist() == want[list(keys)].astype(str).values.tolist()
    assert hash_rows(got).tolist() == hash_rows(want).tolist()


def parquet_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.parquet") if not p.name.startswith("."))


def stats(paths: list[Path]) -> dict[Path, tuple[int, int]]:
    return {p: (p.stat().st_mtime_ns, p.stat().st_ino) for p in paths}


# --- the store on its own ------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_mixed_dtypes(kind: str, tmp_path: Path) -> None:
    df = mixed_frame()
    store = make_store(kind, tmp_path)
    store.upsert_rows(df)
    store.flush()
    got = make_store(kind, tmp_path).read_rows()  # a fresh store reads the files
    assert_same_rows(got, df)
    row = by_key(got).set_index("id")
    assert row.loc[2, "name"] == "日本語" and row.loc[4, "region"] == "Ünïcode/ä=b"
    assert row.loc[4, "qty"] == 2**40 and got["qty"].dtype == "int64"
    assert np.isnan(row.loc[2, "price"]) and row.loc[4, "price"] == 1e300
    assert pd.isna(row.loc[3, "name"]) and pd.isna(row.loc[2, "maybe"]) and row.loc[3, "maybe"] == 3
    assert row.loc[1, "day"] == dt.date(2024, 1, 31) and pd.isna(row.loc[2, "day"])
    assert row.loc[1, "at"] == pd.Timestamp("2024-01-01 10:00:00.123456") and pd.isna(row.loc[2, "at"])
    assert row.loc[2, "at_utc"] == pd.Timestamp("2024-06-01", tz="UTC")
    assert got["flag"].dtype == bool and row.loc[1, "flag"] and not row.loc[2, "flag"]


def test_dataset_partition_values_keep_their_type(tmp_path: Path) -> None:
    df = pd.DataFrame({"id": [1, 2, 3, 4], "year": [2024, 2025, 2024, 2023],
                       "day": [dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 1), None],
                       "ok": [True, False, True, True], "v": ["a", "b", "c", "d"]})
    store = TableStoreParquetDataset(tmp_path / "d", ["id"], partition_cols=["year", "day", "ok"])
    store.upsert_rows(df)
    store.flush()
    assert (tmp_path / "d/year=2024/day=2024-01-01/ok=true/part-0.parquet").exists()
    assert (tmp_path / "d/year=2023/day=__HIVE_DEFAULT_PARTITION__/ok=true/part-0.parquet").exists()
    got = by_key(TableStoreParquetDataset(tmp_path / "d", ["id"], partition_cols=["year", "day", "ok"])
                 .read_rows(), ["id"])
    assert got["year"].dtype == "int64" and got["year"].tolist() == [2024, 2025, 2024, 2023]
    assert got["day"].tolist()[:3] == [dt.date(2024, 1, 1), dt.date(2024, 1, 2), dt.date(2024, 1, 1)]
    assert pd.isna(got["day"].iloc[3])
    assert got["ok"].tolist() == [True, False, True, True]
    assert hash_rows(got).tolist() == hash_rows(df).tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_upsert_delete_and_read_by_keys(kind: str, tmp_path: Path) -> None:
    store = make_store(kind, tmp_path)
    store.upsert_rows(pd.DataFrame({"region": ["EU", "EU", "US"], "id": [1, 2, 3], "v": [1.0, 2.0, 3.0]}))
    store.flush()
    store = make_store(kind, tmp_path)
    store.upsert_rows(pd.DataFrame({"region": ["EU", "US"], "id": [2, 4], "v": [20.0, 4.0]}))
    store.delete_rows(pd.DataFrame({"region": ["US", "XX"], "id": [3, 99]}))  # 99 is absent
    expected = pd.DataFrame({"region": ["EU", "EU", "US"], "id": [1, 2, 4], "v": [1.0, 20.0, 4.0]})
    assert_same_rows(store.read_rows(), expected)  # buffered
    store.flush()
    fresh = make_store(kind, tmp_path)
    assert_same_rows(fresh.read_rows(), expected)
    some = fresh.read_rows(pd.DataFrame({"region": ["EU", "US", "US"], "id": [2, 4, 3]}))
    assert_same_rows(some, expected[expected["id"].isin([2, 4])])
    assert len(fresh.read_rows(pd.DataFrame({"region": ["ZZ"], "id": [1]}))) == 0
    none = fresh.read_rows(pd.DataFrame({"region": [], "id": []}))
    assert len(none) == 0 and "v" in none.columns  # the schema, for callers asking for columns


@pytest.mark.parametrize("kind", KINDS)
def test_empty_table(kind: str, tmp_path: Path) -> None:
    store = make_store(kind, tmp_path)
    assert store.list_files().empty
    empty = store.read_rows()
    assert len(empty) == 0 and {"region", "id"} <= set(empty.columns)
    assert len(store.read_rows(pd.DataFrame({"region": ["EU"], "id": [1]}))) == 0
    store.upsert_rows(pd.DataFrame({"region": ["EU", "US"], "id": [1, 2], "v": ["a", "b"]}))
    store.flush()
    store.delete_rows(pd.DataFrame({"region": ["EU", "US"], "id": [1, 2]}))
    store.flush()
    assert len(make_store(kind, tmp_path).read_rows()) == 0
    if kind == "dataset":  # no file for an empty partition, and no empty folders either
        assert (tmp_path / "t").is_dir() and list((tmp_path / "t").iterdir()) == []
        assert store.list_files().empty
    else:
        assert list(make_store(kind, tmp_path).read_rows().columns) == ["region", "id", "v"]


def write_raw(path: Path, df: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # (pyarrow cannot open paths that are not UTF-8 itself)
        pq.write_table(pa.Table.from_pandas(df, preserve_index=False), f)


@pytest.mark.parametrize("kind", KINDS)
def test_duplicate_keys_error_names_file_and_keys(kind: str, tmp_path: Path) -> None:
    store = make_store(kind, tmp_path)
    bad = tmp_path / ("t.parquet" if kind == "file" else "t/region=EU/part-0.parquet")
    df = pd.DataFrame({"region": ["EU"] * 3, "id": [7, 8, 7], "v": [1, 2, 3]})
    write_raw(bad, df if kind == "file" else df.drop(columns="region"))
    with pytest.raises(DuplicateKeysError) as err:
        store.read_rows()
    assert str(bad) in str(err.value) and "id=7" in str(err.value) and "region='EU'" in str(err.value)
    with pytest.raises(DuplicateKeysError, match="id=7"):
        store.read_files([str(bad)])


def test_dataset_duplicate_key_across_partitions(tmp_path: Path) -> None:
    """Partitioned by a non-key column, one key in two partition files is an error."""
    write_raw(tmp_path / "t/region=EU/part-0.parquet", pd.DataFrame({"id": [1, 5], "v": [1, 2]}))
    write_raw(tmp_path / "t/region=US/part-0.parquet", pd.DataFrame({"id": [5], "v": [3]}))
    store = TableStoreParquetDataset(tmp_path / "t", ["id"], partition_cols=["region"])
    with pytest.raises(DuplicateKeysError, match="id=5"):
        store.read_rows()


@pytest.mark.parametrize("kind", KINDS)
def test_missing_key_column(kind: str, tmp_path: Path) -> None:
    store = make_store(kind, tmp_path)
    bad = tmp_path / ("t.parquet" if kind == "file" else "t/region=EU/part-0.parquet")
    write_raw(bad, pd.DataFrame({"region": ["EU"], "ident": [1]}).drop(
        columns=[] if kind == "file" else ["region"]))
    with pytest.raises(MissingColumnsError) as err:
        store.read_rows()
    assert str(bad) in str(err.value) and "'id'" in str(err.value)


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_bytes(kind: str, tmp_path: Path) -> None:
    df = mixed_frame()
    a, b = make_store(kind, tmp_path, "a"), make_store(kind, tmp_path, "b")
    for store in (a, b):
        store.upsert_rows(df)
        store.flush()
    if kind == "file":
        pairs = [(tmp_path / "a.parquet", tmp_path / "b.parquet")]
    else:
        files = parquet_files(tmp_path / "a")
        assert len(files) == 3
        pairs = [(p, tmp_path / "b" / p.relative_to(tmp_path / "a")) for p in files]
    for p, q in pairs:
        assert p.read_bytes() == q.read_bytes(), p
    # a second write of the same frame over the file gives the same bytes too
    before = {p: p.read_bytes() for p, _ in pairs}
    a.upsert_rows(df.iloc[[0]].assign(name="changed"))
    a.flush()
    a.upsert_rows(df.iloc[[0]])
    a.flush()
    assert {p: p.read_bytes() for p, _ in pairs} == before


# --- the dataset: layout, pruning, partial rewrites ----------------------------------------

def seed_dataset(tmp_path: Path, regions=("EU", "US", "JP"), per=3) -> TableStoreParquet:
    store = TableStoreParquetDataset(tmp_path / "t", ["region", "id"], partition_cols=["region"])
    rows = [(r, i, float(i)) for r in regions for i in range(per)]
    store.upsert_rows(pd.DataFrame(rows, columns=["region", "id", "v"]))
    store.flush()
    return store


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    read: list[Path] = []
    original = parquet_module._read_table

    def spy(path):
        read.append(Path(path))
        return original(path)

    monkeypatch.setattr(parquet_module, "_read_table", spy)
    return read


def test_dataset_reads_and_rewrites_only_touched_partitions(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    seed_dataset(tmp_path)
    files = parquet_files(tmp_path / "t")
    before = stats(files)
    read = count_reads(monkeypatch)
    store = TableStoreParquetDataset(tmp_path / "t", ["region", "id"], partition_cols=["region"])
    got = store.read_rows(pd.DataFrame({"region": ["US"], "id": [1]}))
    assert got["v"].tolist() == [1.0]
    assert read == [tmp_path / "t/region=US/part-0.parquet"]
    store.upsert_rows(pd.DataFrame({"region": ["US", "US"], "id": [1, 9], "v": [10.0, 9.0]}))
    store.delete_rows(pd.DataFrame({"region": ["US", "NOPE"], "id": [2, 1]}))
    store.flush()
    assert read == [tmp_path / "t/region=US/part-0.parquet"]  # still only US, read once
    after = stats(files)
    changed = {p for p in files if after[p] != before[p]}
    assert changed == {tmp_path / "t/region=US/part-0.parquet"}
    # a new partition is a new file; the others are not touched
    store.upsert_rows(pd.DataFrame({"region": ["FR"], "id": [1], "v": [0.5]}))
    store.flush()
    assert stats(files) == after and (tmp_path / "t/region=FR/part-0.parquet").exists()
    assert read == [tmp_path / "t/region=US/part-0.parquet"]


def test_dataset_partition_not_in_keys_moves_rows(tmp_path: Path) -> None:
    """Partitioned by a non-key column: an update may move a row to another partition."""
    store = TableStoreParquetDataset(tmp_path / "t", ["id"], partition_cols=["region"])
    store.upsert_rows(pd.DataFrame({"id": [1, 2], "region": ["EU", "US"], "v": [1, 2]}))
    store.flush()
    store = TableStoreParquetDataset(tmp_path / "t", ["id"], partition_cols=["region"])
    store.upsert_rows(pd.DataFrame({"id": [1], "region": ["US"], "v": [10]}))
    store.flush()
    assert not (tmp_path / "t/region=EU").exists()
    got = by_key(TableStoreParquetDataset(tmp_path / "t", ["id"], partition_cols=["region"]).read_rows(), ["id"])
    assert got[["id", "region", "v"]].values.tolist() == [[1, "US", 10], [2, "US", 2]]
    assert len(store.read_rows(pd.DataFrame({"id": [1]}))) == 1  # any partition may hold it
    # an update that stays in its partition rewrites only that partition
    store.upsert_rows(pd.DataFrame({"id": [3, 4], "region": ["EU", "JP"], "v": [3, 4]}))
    store.flush()
    before = stats(parquet_files(tmp_path / "t"))
    store = TableStoreParquetDataset(tmp_path / "t", ["id"], partition_cols=["region"])
    store.upsert_rows(pd.DataFrame({"id": [4], "region": ["JP"], "v": [40]}))
    store.delete_rows(pd.DataFrame({"id": [99]}))
    store.flush()
    after = stats(parquet_files(tmp_path / "t"))
    assert {p for p in after if after[p] != before.get(p)} == {tmp_path / "t/region=JP/part-0.parquet"}


def test_dataset_listing_ignores_temp_and_hidden_files(tmp_path: Path) -> None:
    seed_dataset(tmp_path, regions=("EU",))
    root = tmp_path / "t"
    for junk in ["_SUCCESS", "_common_metadata", ".~filepipe-abc.parquet", "region=EU/.hidden.parquet",
                 "region=EU/~$lock.parquet", "region=EU/x.parquet.tmp", "_temporary/0/region=EU/p.parquet",
                 ".filepipe/a.parquet", "region=EU/part-1.parquet.crdownload", "notes.txt"]:
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_bytes(b"junk")
    listed = TableStoreParquetDataset(root, ["region", "id"], partition_cols=["region"]).list_files()
    assert listed["path"].tolist() == [str(root / "region=EU/part-0.parquet")]
    assert list(listed.columns) == ["path", "size", "mtime_ns", "inode"]
    assert listed["size"].dtype == listed["mtime_ns"].dtype == listed["inode"].dtype == "int64"


def test_dataset_foreign_files_and_misplaced_files(tmp_path: Path) -> None:
    """Files other tools wrote: partition values are text unless `dtypes` says otherwise."""
    root = tmp_path / "t"
    write_raw(root / "year=2024/part-00000-abc.snappy.parquet", pd.DataFrame({"id": [1], "v": ["a"]}))
    write_raw(root / "year=2025/part-00000-def.snappy.parquet", pd.DataFrame({"id": [2], "v": ["b"]}))
    plain = TableStoreParquetDataset(root, ["id"], partition_cols=["year"]).read_rows()
    assert sorted(plain["year"].tolist()) == ["2024", "2025"]
    typed = TableStoreParquetDataset(root, ["id"], partition_cols=["year"], dtypes={"year": "int64"})
    got = by_key(typed.read_rows(), ["id"])
    assert got["year"].dtype == "int64" and got["year"].tolist() == [2024, 2025]
    # an update goes to the partition's existing file; no second file appears
    typed.upsert_rows(pd.DataFrame({"id": [1], "v": ["A"], "year": [2024]}))
    typed.flush()
    assert parquet_files(root / "year=2024") == [root / "year=2024/part-00000-abc.snappy.parquet"]
    misplaced = root / "loose.parquet"
    write_raw(misplaced, pd.DataFrame({"id": [3], "v": ["c"]}))
    assert str(misplaced) in typed.list_files()["path"].tolist()
    with pytest.raises(FilepipeError, match="loose.parquet"):
        typed.read_files([str(misplaced)])


# --- through the engine --------------------------------------------------------------------

def double(src: pd.DataFrame) -> pd.DataFrame:
    return src.assign(v2=src["v"] * 2)[["region", "id", "v2", "note"]]


def engine(ds, source: TableStoreParquet, out: TableStoreParquet):
    catalog = Catalog({"src": Table(source), "out": Table(out)})
    return build_compute(ds, catalog, Pipeline([BatchTransform(double, inputs=["src"], outputs=["out"])]))


def source_frame(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame({"id": range(n), "region": ["EU", "US", "JP"] * (n // 3),
                         "v": [float(i) for i in range(n)], "note": [f"n°{i}" for i in range(n)]})


def out_store() -> TableStoreParquet:
    return TableStoreParquetDataset("out", ["region", "id"], partition_cols=["region"])


def write_source(path: Path, df: pd.DataFrame) -> None:
    TableStoreParquet(path, ["id"]).write_file(df)
    age(path)


def test_engine_file_source_to_dataset_output(ds, in_tmp: Path) -> None:
    src = in_tmp / "src.parquet"
    df = source_frame()
    write_source(src, df)
    steps = engine(ds, TableStoreParquet("src.parquet", ["id"]), out_store())
    report = run_steps(ds, steps)
    assert report.ok and report.tables["out"] == {"added": 6, "updated": 0, "deleted": 0}
    outs = parquet_files(in_tmp / "out")
    assert [p.parent.name for p in outs] == ["region=EU", "region=JP", "region=US"]
    got = out_store().read_rows()
    assert sorted(got["v2"].tolist()) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    for p in outs:
        age(p)
    before = stats(outs + [src])

    # no-op: nothing opened, nothing written
    report = run_steps(ds, steps)
    assert not report.changed and stats(outs + [src]) == before

    # one changed row: one key downstream, only its partition rewritten
    changed = df.copy()
    changed.loc[changed["id"] == 4, "v"] = 40.0
    write_source(src, changed)
    before = stats(outs)
    report = run_steps(ds, steps)
    assert report.tables["src"] == {"added": 0, "updated": 1, "deleted": 0}
    assert report.tables["out"] == {"added": 0, "updated": 1, "deleted": 0}
    after = stats(outs)
    assert {p for p in outs if after[p] != before[p]} == {in_tmp / "out/region=US/part-0.parquet"}
    got = out_store().read_rows(pd.DataFrame({"region": ["US"], "id": [4]}))
    assert got["v2"].tolist() == [80.0]

    # the source re-saved with identical content: nothing propagates, nothing rewritten
    for p in outs:
        age(p)
    before = stats(outs)
    write_source(src, changed)
    report = run_steps(ds, steps)
    assert not report.changed and stats(outs) == before

    # all rows of one region gone: that partition's file and folder disappear
    write_source(src, changed[changed["region"] != "JP"])
    report = run_steps(ds, steps)
    assert report.tables["out"] == {"added": 0, "updated": 0, "deleted": 2}
    assert not (in_tmp / "out/region=JP").exists()
    kept = [p for p in outs if "JP" not in str(p)]
    assert stats(kept) == {p: before[p] for p in kept}


def test_engine_noop_after_partition_removed_reads_nothing(ds, in_tmp: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    write_source(in_tmp / "src.parquet", source_frame())
    steps = engine(ds, TableStoreParquet("src.parquet", ["id"]), out_store())
    run_steps(ds, steps)
    write_source(in_tmp / "src.parquet", source_frame().query("region != 'JP'"))
    run_steps(ds, steps)
    assert not (in_tmp / "out/region=JP").exists()
    read = count_reads(monkeypatch)
    report = run_steps(ds, steps)
    assert not report.changed
    assert read == []  # a no-op run opens no file


def test_engine_dataset_source_half_written_file(ds, in_tmp: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import filepipe.sync

    monkeypatch.setattr(filepipe.sync, "RETRY_DELAYS", (0.0, 0.0, 0.0))

    def source() -> TableStoreParquet:  # keyed by its partition column: reads are pruned
        return TableStoreParquetDataset("src", ["region", "id"], partition_cols=["region"])

    writer = source()
    writer.upsert_rows(source_frame())
    writer.flush()
    for p in parquet_files(in_tmp / "src"):
        age(p)
    steps = engine(ds, source(), out_store())
    report = run_steps(ds, steps)
    assert report.ok and report.tables["out"]["added"] == 6

    eu, us = in_tmp / "src/region=EU/part-0.parquet", in_tmp / "src/region=US/part-0.parquet"
    writer = source()
    writer.upsert_rows(pd.DataFrame({"id": [1], "region": ["US"], "v": [100.0], "note": ["x"]}))
    writer.flush()
    age(us)
    good_eu = eu.read_bytes()
    eu.write_bytes(good_eu[: len(good_eu) // 2])  # a program is still saving it
    age(eu)
    report = run_steps(ds, steps)
    assert list(report.source_errors) == [str(eu)] and "ArrowInvalid" in report.source_errors[str(eu)]
    assert not report.ok and not report.failed
    assert report.tables["out"] == {"added": 0, "updated": 1, "deleted": 0}
    got = by_key(out_store().read_rows())
    assert len(got) == 6  # the broken file's rows are kept downstream
    assert got.set_index("id").loc[1, "v2"] == 200.0

    eu.write_bytes(good_eu)  # the save finished
    age(eu)
    report = run_steps(ds, steps)
    assert report.ok and not report.changed  # same rows as before: nothing to recompute


def test_engine_file_source_half_written(ds, in_tmp: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import filepipe.sync

    monkeypatch.setattr(filepipe.sync, "RETRY_DELAYS", (0.0, 0.0, 0.0))
    src = in_tmp / "src.parquet"
    write_source(src, source_frame())
    steps = engine(ds, TableStoreParquet("src.parquet", ["id"]), out_store())
    assert run_steps(ds, steps).ok
    outs = parquet_files(in_tmp / "out")
    before = stats(outs)
    good = src.read_bytes()
    src.write_bytes(good[:100])
    age(src)
    report = run_steps(ds, steps)
    assert list(report.source_errors) == [str(src)] and not report.ok
    assert stats(outs) == before and len(out_store().read_rows()) == 6
    src.write_bytes(good)
    age(src)
    report = run_steps(ds, steps)
    assert report.ok and not report.changed and stats(outs) == before


def test_engine_hand_edited_output_partition_is_backed_up_and_rebuilt(ds, in_tmp: Path) -> None:
    write_source(in_tmp / "src.parquet", source_frame())
    steps = engine(ds, TableStoreParquet("src.parquet", ["id"]), out_store())
    run_steps(ds, steps)
    us = in_tmp / "out/region=US/part-0.parquet"
    edited = pq.read_table(us).to_pandas()
    edited.loc[0, "v2"] = -1.0
    pq.write_table(pa.Table.from_pandas(edited, preserve_index=False), us)
    report = run_steps(ds, steps)
    # only the edited partition is copied, into a sibling folder the dataset never reads
    backup = Path(report.backups["out"])
    assert backup.parent == in_tmp and backup.name.startswith("out.") and backup.name.endswith(".bak")
    copied = sorted(p.relative_to(backup) for p in backup.rglob("*.parquet"))
    assert copied == [Path("region=US/part-0.parquet")]
    assert pq.read_table(backup / copied[0]).to_pandas().loc[0, "v2"] == -1.0
    got = out_store().read_rows()
    assert sorted(got["v2"].tolist()) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    assert not run_steps(ds, steps).changed


# --- values Arrow or Parquet cannot hold, entries that are not files (issue #8) --------------

UNWRITABLE = [
    # column values, what the message must say
    ([1, 2**64], r"column 'x': row region='US', id=2 holds 18446744073709551616, an integer "
                 r"outside the 64-bit range.*as text"),
    ([-1, 2**63], r"column 'x': row region='US', id=2 holds 9223372036854775808.*"
                  r"\.astype\('uint64'\)"),
    ([[1, 2], {"a": 1}], r"column 'x': row region='US', id=2 holds dict \{'a': 1\}.*"
                         r"cannot mix list and non-list.*one kind of value"),
    ([1, "one"], r"column 'x': row region='US', id=2 holds str 'one'.*one kind of value"),
    ([{}, {}], r"column 'x'.*struct type 'x' with no child field"),
]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("values, message", UNWRITABLE,
                         ids=["int-over-64-bit", "uint64-with-negative", "list-and-dict",
                              "int-and-str", "empty-struct"])
def test_check_writable_names_column_and_key(kind: str, values: list, message: str,
                                             tmp_path: Path) -> None:
    store = make_store(kind, tmp_path)
    df = pd.DataFrame({"region": ["US", "US"], "id": [1, 2], "x": pd.Series(values, dtype=object)})
    with pytest.raises(FilepipeError, match=message):
        store.check_writable(df)
    store.check_writable(df.iloc[:1] if values[0] != {} else df.iloc[:0])
    # what the check would have refused, the writer refuses too, naming the table
    store.upsert_rows(df)
    with pytest.raises(FilepipeError, match=rf"{tmp_path}/t.*{message}"):
        store.flush()
    assert parquet_files(tmp_path) == []


def test_check_writable_dataset_partition_column(tmp_path: Path) -> None:
    store = make_store("dataset", tmp_path)
    df = pd.DataFrame({"region": [["EU"], ["US"]], "id": [1, 2], "v": [1, 2]})
    with pytest.raises(FilepipeError, match=r"cannot partition by column 'region'"):
        store.check_writable(df)
    with pytest.raises(FilepipeError, match=r"rows lack column\(s\) 'region'"):
        store.check_writable(df.drop(columns="region"))


def test_parquet_output_that_cannot_be_written_fails_every_run(ds, in_tmp: Path) -> None:
    """Run 1 fails naming the column; run 2 must not say all is well while no file exists."""
    write_source(in_tmp / "src.parquet", source_frame())

    def tags(src: pd.DataFrame) -> pd.DataFrame:
        return src.assign(v2=[[1] if i % 2 else {"a": 1} for i in src["id"]])[
            ["region", "id", "v2", "note"]]

    catalog = Catalog({"src": Table(TableStoreParquet("src.parquet", ["id"])), "out": Table(out_store())})
    steps = build_compute(ds, catalog, Pipeline([BatchTransform(tags, inputs=["src"], outputs=["out"])]))
    for _ in range(2):
        report = run_steps(ds, steps)
        assert not report.ok and report.failed
        assert any("column 'v2'" in e and "cannot mix list" in e for e in report.steps["tags"].errors)
        assert parquet_files(in_tmp / "out") == []


def test_dataset_fifo_and_non_utf8_names_are_skipped_and_reported(tmp_path: Path) -> None:
    from test_fileutil import promptly

    seed_dataset(tmp_path, regions=("EU",))
    root = tmp_path / "t"
    fifo = root / "region=EU" / "part-1.parquet"
    os.mkfifo(fifo)
    odd = root / os.fsdecode(b"region=caf\xe9")
    odd.mkdir()
    write_raw(odd / "part-0.parquet", pd.DataFrame({"id": [7], "v": [7.0]}))
    write_raw(root / "region=EU" / os.fsdecode(b"\xff.parquet"), pd.DataFrame({"id": [8], "v": [8.0]}))
    store = TableStoreParquetDataset(root, ["region", "id"], partition_cols=["region"])
    listed = promptly(store.list_files, fifo)
    assert listed["path"].tolist() == [str(root / "region=EU" / "part-0.parquet")]
    assert store.skipped_files() == {
        str(fifo): "not a regular file (a FIFO): filepipe never opens it; remove it or move it away",
        f"{root}/region=caf\\xe9": "folder name is not valid UTF-8 (rename it)",
        f"{root}/region=EU/\\xff.parquet": "file name is not valid UTF-8 (rename it)",
    }
    assert sorted(promptly(store.read_rows, fifo)["id"]) == [0, 1, 2]
    assert promptly(lambda: store.read_rows(pd.DataFrame({"region": ["EU"], "id": [1]})), fifo)["id"].tolist() == [1]


# --- BatchGenerate writing a Parquet file ------------------------------------------------------

def test_generator_that_returns_a_frame_writes_it(ds, in_tmp: Path) -> None:
    from filepipe import BatchGenerate

    def prices() -> pd.DataFrame:  # returns instead of yielding: one chunk
        return pd.DataFrame({"sku": ["a", "b"], "price": [1.5, 2.5]})

    def pair() -> tuple[pd.DataFrame, pd.DataFrame]:
        return (pd.DataFrame({"sku": ["a"], "price": [1.0]}), pd.DataFrame({"sku": ["z"], "n": [3]}))

    catalog = Catalog({name: Table(TableStoreParquet(f"{name}.parquet", ["sku"]))
                       for name in ("prices", "p2", "n2")})
    steps = build_compute(ds, catalog, Pipeline([
        BatchGenerate(prices, outputs=["prices"]),
        BatchGenerate(pair, outputs=["p2", "n2"]),
    ]))
    report = run_steps(ds, steps)
    assert report.ok, report.summary()
    assert pd.read_parquet(in_tmp / "prices.parquet").to_dict("list") == \
        {"sku": ["a", "b"], "price": [1.5, 2.5]}
    assert pd.read_parquet(in_tmp / "n2.parquet")["n"].tolist() == [3]
    assert pd.read_parquet(in_tmp / "p2.parquet")["price"].tolist() == [1.0]


@pytest.mark.parametrize("func, message", [
    (lambda: None, r"returned None; it must yield DataFrames"),
    (lambda: iter([{"sku": "a"}]), r"yielded a dict; yield DataFrames"),
    (lambda: iter([(pd.DataFrame({"sku": ["a"]}), [1])]), r"yielded a tuple holding a list at "
                                                          r"position 1; yield DataFrames"),
], ids=["none", "dict", "tuple-with-list"])
def test_generator_yielding_something_else_is_named(ds, in_tmp: Path, func, message: str) -> None:
    from filepipe import BatchGenerate

    catalog = Catalog({"prices": Table(TableStoreParquet("prices.parquet", ["sku"]))})
    steps = build_compute(ds, catalog, Pipeline([BatchGenerate(func, outputs=["prices"], name="gen")]))
    report = run_steps(ds, steps)
    assert not report.ok
    assert any(re.search(message, e) for e in report.steps["gen"].errors), report.steps["gen"].errors


def test_dataset_folder_that_is_a_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "t").write_text("a file where the dataset's folder should be")
    store = make_store("dataset", tmp_path)
    rows = pd.DataFrame({"region": ["EU"], "id": [1], "v": [1.0]})
    message = rf"{tmp_path}/t is a file, not a folder"
    with pytest.raises(FilepipeError, match=message):
        store.check_writable(rows)
    with pytest.raises(FilepipeError, match=message):  # as a source: its rows do not vanish
        store.list_files()
    with pytest.raises(FilepipeError, match=message):
        store.upsert_rows(rows)
        store.flush()


def test_a_single_file_store_given_partition_cols_names_the_dataset_class(tmp_path: Path) -> None:
    from filepipe.errors import PipelineError

    with pytest.raises(PipelineError, match=r"a partitioned dataset is TableStoreParquetDataset\("):
        TableStoreParquet(tmp_path / "t", ["id"], partition_cols=["region"])
