"""Steps whose functions run elsewhere (`--executor`) give the outputs an in-process run
gives: the seed workload with failing batches, updates and deletes; a worker killed in the
middle of a batch; the sales example through the CLI.

The executors are real: a pool of local worker processes and a local dask cluster (two
workers each). Functions reach them from this module by reference, or by value when
defined in a pipeline file loaded by path (the sales example).
"""

from __future__ import annotations

import json
import os
import signal
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from cli_apps import explain, recording_loaded_apps
from click.testing import CliRunner
from sqlalchemy import JSON, Column, Integer, String
from test_cli import copy_sales

from filepipe import BatchTransform, Catalog, DataStore, DBConn, Pipeline, Table, build_compute, run_steps
from filepipe.cli import main
from filepipe.executor import BatchExecutor, executor_from
from filepipe.stores import TableStoreDB

pytest.importorskip("distributed")

EXECUTORS = ["processes:2", "dask:local:2"]


@pytest.fixture(scope="module", params=EXECUTORS)
def executor(request: pytest.FixtureRequest) -> Iterator[BatchExecutor]:
    """One executor per kind for the module (a dask cluster takes seconds to start)."""
    made = executor_from(request.param)
    yield made
    made.close()


# --- the seed workload ------------------------------------------------------------------

def clicks_and_ip(events: pd.DataFrame, fail_suffix: str = "7",
                  kill_marker: str = "") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clicks and last IP per user; raises for users whose id ends in `fail_suffix`;
    kills its own process the first time it sees user "5" while `kill_marker` names a
    file not there yet (it creates it)."""
    if kill_marker and "5" in set(events["user_id"]) and not os.path.exists(kill_marker):
        Path(kill_marker).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    bad = sorted(u for u in set(events["user_id"]) if fail_suffix and u.endswith(fail_suffix))
    if bad:
        raise ValueError(f"cannot parse the events of user(s) {', '.join(bad)}")
    parsed = pd.DataFrame([json.loads(e) if isinstance(e, str) else e for e in events["event"]])
    parsed["user_id"] = events["user_id"].to_numpy()
    groups = parsed.groupby("user_id", sort=False)
    clicks = (groups["event_type"].apply(lambda s: int((s == "click").sum()))
              .rename("click_count").reset_index())
    return clicks, groups["ip"].last().reset_index()


def seed(folder: Path, **kwargs: object) -> tuple[Catalog, DataStore, list]:
    url = f"sqlite:///{folder / 'meta.sqlite'}"
    dbconn = DBConn(url)
    catalog = Catalog({
        "events": Table(store=TableStoreDB("events", dbconn, [
            Column("user_id", String, primary_key=True), Column("event_id", String, primary_key=True),
            Column("event", JSON)])),
        "click_count": Table(store=TableStoreDB("click_count", dbconn, [
            Column("user_id", String, primary_key=True), Column("click_count", Integer)])),
        "ip": Table(store=TableStoreDB("ip", dbconn, [
            Column("user_id", String, primary_key=True), Column("ip", String)])),
    })
    ds = DataStore(dbconn, history=False)
    steps = build_compute(ds, catalog, Pipeline([BatchTransform(
        clicks_and_ip, inputs=["events"], outputs=["click_count", "ip"], chunk_size=7,
        kwargs=dict(kwargs))]))
    return catalog, ds, steps


def events(n: int, salt: int = 0) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": [str(i // 5) for i in range(n)],
        "event_id": [str(i % 5) for i in range(n)],
        "event": [json.dumps({"event_type": "click" if (i + salt) % 3 else "view",
                              "ip": f"10.0.{(i + salt) % 256}.{i % 7}"}) for i in range(n)],
    })


def state(ds: DataStore) -> dict[str, object]:
    """The outputs' rows and each key's status and error message, as compared."""
    with ds.meta.begin() as conn:
        tables = {t: pd.read_sql(f"SELECT * FROM {t} ORDER BY user_id", conn)
                  for t in ("click_count", "ip")}
        keys = pd.read_sql("SELECT user_id, status, error FROM fp_keys__clicks_and_ip "
                           "ORDER BY user_id", conn)
    keys["error"] = keys["error"].str.split(" \\(at ").str[0]  # where it was raised differs
    return {**tables, "keys": keys}


def assert_same(a: dict[str, object], b: dict[str, object]) -> None:
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], obj=name)


def test_seed_workload_matches_in_process(tmp_path: Path, executor: BatchExecutor) -> None:
    worlds = {}
    for kind, ex in (("inline", None), ("elsewhere", executor)):
        (tmp_path / kind).mkdir()
        catalog, ds, steps = seed(tmp_path / kind)
        table = catalog.get_datatable(ds, "events")
        table.store_chunk(events(400))
        first = run_steps(ds, steps, executor=ex)
        table.store_chunk(events(60, salt=1))  # changed events of users 0..11
        table.delete_by_idx(events(400).iloc[300:320][["user_id", "event_id"]])  # users 60..63 go
        second = run_steps(ds, steps, executor=ex)
        worlds[kind] = (state(ds), first, second)
        ds.meta_dbconn.dispose()
    (inline, i1, i2), (elsewhere, e1, e2) = worlds["inline"], worlds["elsewhere"]
    assert_same(inline, elsewhere)
    keys = elsewhere["keys"]
    failed = keys[keys["status"] == "failed"]
    sevens = {str(u) for u in range(80) if str(u).endswith("7")}
    assert sevens <= set(failed["user_id"])  # with the rest of their batches
    assert failed["error"].str.contains("ValueError: cannot parse the events").all()
    ok = set(keys.loc[keys["status"] == "ok", "user_id"])
    written = set(elsewhere["click_count"]["user_id"])
    assert ok - {"60", "61", "62", "63"} <= written and not written & sevens
    assert (e1.ok, e2.ok) == (i1.ok, i2.ok) == (False, False)
    assert e1.steps["clicks_and_ip"].failed == i1.steps["clicks_and_ip"].failed > 0
    assert e2.steps["clicks_and_ip"].failed == i2.steps["clicks_and_ip"].failed > 0


def test_worker_killed_mid_batch_loses_and_repeats_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "killed-once"
    (tmp_path / "inline").mkdir()
    (tmp_path / "pool").mkdir()
    catalog, ds, steps = seed(tmp_path / "inline", fail_suffix="")
    catalog.get_datatable(ds, "events").store_chunk(events(200))
    run_steps(ds, steps)
    expected = state(ds)
    ds.meta_dbconn.dispose()

    catalog, ds, steps = seed(tmp_path / "pool", fail_suffix="", kill_marker=str(marker))
    catalog.get_datatable(ds, "events").store_chunk(events(200))
    report = run_steps(ds, steps, executor="processes:2")
    assert marker.exists(), "the function never killed its worker: the test proves nothing"
    assert report.ok, report.failures
    got = state(ds)
    assert_same(expected, got)
    assert (got["keys"]["status"] == "ok").all() and len(got["keys"]) == 40
    ds.meta_dbconn.dispose()


def test_worker_dying_every_time_fails_its_keys_only(tmp_path: Path) -> None:
    catalog, ds, _ = seed(tmp_path)
    steps = build_compute(ds, catalog, Pipeline([BatchTransform(
        always_dies_on_user_5, inputs=["events"], outputs=["click_count", "ip"], chunk_size=7)]))
    catalog.get_datatable(ds, "events").store_chunk(events(100))  # users 0..19
    report = run_steps(ds, steps, executor="processes:2")
    assert not report.ok
    with ds.meta.begin() as conn:
        keys = pd.read_sql("SELECT user_id, status, error FROM fp_keys__always_dies_on_user_5", conn)
        written = set(pd.read_sql("SELECT user_id FROM click_count", conn)["user_id"])
    dead = keys[keys["status"] == "failed"]
    assert "5" in set(dead["user_id"]) and 1 <= len(dead) <= 7  # the batch holding user 5
    assert dead["error"].str.contains("WorkerLostError: the worker process running this batch died").all(), \
        dead["error"].tolist()
    assert report.steps["always_dies_on_user_5"].failed == len(dead)
    ok = set(keys.loc[keys["status"] == "ok", "user_id"])
    assert ok | set(dead["user_id"]) == {str(u) for u in range(20)}
    assert written == ok  # the other batches, retried after the pool broke, are all there
    ds.meta_dbconn.dispose()


def always_dies_on_user_5(events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    if "5" in set(events["user_id"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return clicks_and_ip(events, fail_suffix="")


# --- the sales example through the CLI ----------------------------------------------------

def workbook_parts(path: Path) -> dict[str, bytes]:
    """A workbook's members (the zip's own timestamps aside)."""
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


@pytest.mark.parametrize("spec", EXECUTORS)
def test_sales_example_through_the_cli(tmp_path: Path, spec: str) -> None:
    runner = CliRunner()
    outs = {}
    with recording_loaded_apps():
        for kind, extra in (("inline", []), ("elsewhere", ["--executor", spec])):
            root = copy_sales(tmp_path / kind)
            args = ["-p", str(root / "pipeline.py"), "run", *extra]
            result = runner.invoke(main, args)
            assert result.exit_code == 0, explain(result, " ".join(args))
            assert "failed" in result.stdout and "price_orders" in result.stdout
            outs[kind] = {p.relative_to(root / "out"): workbook_parts(p)
                          for p in sorted((root / "out").glob("*.xlsx"))}
    assert outs["inline"], "the example wrote no workbook"
    assert outs["inline"] == outs["elsewhere"]


def test_bad_executor_spec_is_a_usage_error(tmp_path: Path) -> None:
    root = copy_sales(tmp_path / "sales")
    with recording_loaded_apps():
        result = CliRunner().invoke(main, ["-p", str(root / "pipeline.py"), "run",
                                           "--executor", "threads:9"])
    assert result.exit_code == 2, explain(result)
    assert "threads:9" in result.output and "processes:N" in result.output
    assert not (root / "out").exists()
