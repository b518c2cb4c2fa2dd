"""Bad input gets a clear error naming the culprit, and leaves every table unchanged."""

from __future__ import annotations

import pandas as pd
import pytest
from sqlalchemy import Column, DateTime, Integer, String

from filepipe import BatchTransform, Catalog, Pipeline, Table, build_compute, run_steps
from filepipe.errors import (
    DuplicateColumnsError,
    DuplicateKeysError,
    KeyTypeError,
    MissingColumnsError,
    PipelineError,
    UnknownTableError,
)
from filepipe.stores import TableStoreDB


def _catalog(ds) -> Catalog:
    db = ds.meta.dbconn
    return Catalog({
        "items": Table(TableStoreDB("items", db, [Column("id", Integer, primary_key=True),
                                                 Column("name", String)])),
        "out": Table(TableStoreDB("out", db, [Column("id", Integer, primary_key=True),
                                             Column("name", String)])),
        "pairs": Table(TableStoreDB("pairs", db, [Column("id", Integer, primary_key=True),
                                                 Column("n", Integer)])),
    })


def _snapshot(ds, catalog) -> dict:
    return {n: (catalog.get_datatable(ds, n).get_data().to_json(),
                catalog.get_datatable(ds, n).get_metadata().to_json())
            for n in ("items", "out")}


def test_duplicate_keys_are_named_and_nothing_is_written(ds) -> None:
    catalog = _catalog(ds)
    items = catalog.get_datatable(ds, "items")
    items.store_chunk(pd.DataFrame({"id": [1, 2], "name": ["a", "b"]}))
    before = _snapshot(ds, catalog)
    bad = pd.DataFrame({"id": [2, 3, 3, 7, 7], "name": ["x", "y", "z", "p", "q"]})
    with pytest.raises(DuplicateKeysError, match=r"table 'items'.*id=3.*id=7"):
        items.store_chunk(bad)
    assert _snapshot(ds, catalog) == before


def test_a_repeated_column_name_is_named_and_nothing_is_written(ds) -> None:
    """Two columns named `name` (a concat along columns, say): the copy is named, rather
    than pandas failing deep inside the write."""
    catalog = _catalog(ds)
    items = catalog.get_datatable(ds, "items")
    items.store_chunk(pd.DataFrame({"id": [1, 2], "name": ["a", "b"]}))
    before = _snapshot(ds, catalog)
    bad = pd.concat([pd.DataFrame({"id": [3], "name": ["c"]}), pd.DataFrame({"name": ["d"]})], axis=1)
    with pytest.raises(DuplicateColumnsError, match=r"table 'items': column\(s\) 'name' appear more than once"):
        items.store_chunk(bad)
    assert _snapshot(ds, catalog) == before


def test_missing_key_column_is_named(ds) -> None:
    catalog = _catalog(ds)
    items = catalog.get_datatable(ds, "items")
    with pytest.raises(MissingColumnsError, match=r"table 'items'.*missing key column.*'id'.*'name'"):
        items.store_chunk(pd.DataFrame({"name": ["a"]}))
    assert items.get_data().empty


def test_timezone_aware_keys_are_refused_before_anything_is_written(ds) -> None:
    """SQL DateTime keys keep no timezone: such keys would never match their stored meta."""
    events = Catalog({"events": Table(TableStoreDB(
        "events", ds.meta.dbconn, [Column("ts", DateTime, primary_key=True),
                                   Column("v", Integer)]))}).get_datatable(ds, "events")
    ts = pd.to_datetime(["2024-01-01 10:00", "2024-01-02 10:00"])
    events.store_chunk(pd.DataFrame({"ts": ts, "v": [1, 2]}))

    def state() -> tuple[str, str]:
        return (events.get_data().to_json(date_format="iso"),
                events.get_metadata().to_json(date_format="iso"))

    before = state()
    aware = pd.DataFrame({"ts": ts.tz_localize("Europe/Paris"), "v": [1, 5]})
    with pytest.raises(KeyTypeError, match=r"'ts'.*timezone-aware.*tz_convert\(None\)"):
        events.store_chunk(aware)
    assert state() == before
    naive = aware.assign(ts=aware["ts"].dt.tz_convert(None))  # what the message advises
    assert len(events.store_chunk(naive)) == 2


def _run_with(ds, catalog, func, outputs=("out",)):
    catalog.get_datatable(ds, "items").store_chunk(pd.DataFrame({"id": [1, 2], "name": ["a", "b"]}))
    steps = build_compute(ds, catalog, Pipeline([BatchTransform(func, inputs=["items"],
                                                                outputs=list(outputs))]))
    return run_steps(ds, steps), steps


def test_a_database_constraint_error_names_the_table_not_library_code(ds) -> None:
    catalog = _catalog(ds)
    catalog.add_datatable("strict", Table(TableStoreDB("strict", ds.meta.dbconn, [
        Column("id", Integer, primary_key=True), Column("name", String, nullable=False)])))
    report, _ = _run_with(ds, catalog, lambda df: df.assign(name=None), outputs=("strict",))
    (error,) = report.steps[next(iter(report.steps))].errors
    assert "NOT NULL constraint failed: strict.name" in error
    assert "site-packages" not in error and " (at " not in error.splitlines()[0]


@pytest.mark.parametrize("func,pattern", [
    (lambda df: (df, df), r"must return 1 DataFrame\(s\) for outputs \['out'\], got 2 value\(s\)"),
    (lambda df: None, r"must return 1 DataFrame\(s\).*got NoneType"),
    (lambda df: df[["name"]], r"output 'out': missing key column\(s\) 'id'"),
    (lambda df: pd.concat([df, df]), r"output 'out': duplicate primary key id=1"),
])
def test_bad_step_results_fail_the_batch_with_a_clear_error(ds, func, pattern) -> None:
    catalog = _catalog(ds)
    report, steps = _run_with(ds, catalog, func)
    assert report.failed == 2
    errors = report.steps[steps[0].name].errors
    assert errors and pytest.importorskip("re").search(pattern, errors[0]), errors
    assert catalog.get_datatable(ds, "out").get_data().empty
    assert catalog.get_datatable(ds, "out").get_metadata().empty
    with ds.meta.begin() as conn:
        recorded = steps[0].meta.errors(conn)
    assert sorted(recorded["id"]) == [1, 2]
    assert recorded["error"].str.contains("Error").all()


def test_failed_multi_output_batch_writes_neither_output(ds) -> None:
    catalog = _catalog(ds)

    def half_good(df):
        return df, df.assign(n=1)[["name", "n"]]  # second output lacks its key

    report, steps = _run_with(ds, catalog, half_good, outputs=("out", "pairs"))
    assert report.failed == 2
    assert catalog.get_datatable(ds, "out").get_data().empty
    assert catalog.get_datatable(ds, "pairs").get_data().empty


def test_unknown_table_names_the_step_and_the_catalog(ds) -> None:
    catalog = _catalog(ds)
    with pytest.raises(UnknownTableError, match=r"step 'copy'.*unknown table 'itemz'.*items, out, pairs"):
        build_compute(ds, catalog, Pipeline([BatchTransform(lambda df: df, inputs=["itemz"],
                                                            outputs=["out"], name="copy")]))


def test_two_steps_writing_one_table_is_refused(ds) -> None:
    catalog = _catalog(ds)
    with pytest.raises(PipelineError, match="'out' is written by two steps"):
        build_compute(ds, catalog, Pipeline([
            BatchTransform(lambda df: df, inputs=["items"], outputs=["out"], name="a"),
            BatchTransform(lambda df: df, inputs=["items"], outputs=["out"], name="b")]))


def test_cycle_is_refused(ds) -> None:
    catalog = _catalog(ds)
    with pytest.raises(PipelineError, match="cycle"):
        build_compute(ds, catalog, Pipeline([
            BatchTransform(lambda df: df, inputs=["items"], outputs=["out"], name="a"),
            BatchTransform(lambda df: df, inputs=["out"], outputs=["items"], name="b")]))


def test_transform_key_in_no_input_is_refused(ds) -> None:
    catalog = _catalog(ds)
    catalog.get_datatable(ds, "items").store_chunk(pd.DataFrame({"id": [1], "name": ["a"]}))
    steps = build_compute(ds, catalog, Pipeline([
        BatchTransform(lambda df: df, inputs=["items"], outputs=["out"],
                       transform_keys=["colour"], name="a")]))
    with pytest.raises(PipelineError, match=r"step 'a'.*'colour'.*none of its inputs"):
        run_steps(ds, steps)
