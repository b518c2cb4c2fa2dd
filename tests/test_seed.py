"""The datapipe tutorial (docs/design.md, appendix A) replayed on filepipe: the exact tables it
prints, its database on SQLite and on PostgreSQL."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from examples.seed_events.pipeline import make_app, make_pipeline, store_event

pytestmark = pytest.mark.backends("sqlite", "postgresql")

EVENTS = [
    ("1", "1", {"event_type": "click", "ip": "111.111.111.111"}),
    ("1", "2", {"event_type": "click", "ip": "222.222.222.222"}),
    ("1", "1", {"event_type": "clack", "ip": "333.333.333.333"}),
]

# What the tutorial prints after each event: (events rows, click_count, ip).
EXPECTED = [
    ([("1", "1", "click", "111.111.111.111")], 1, "111.111.111.111"),
    ([("1", "1", "click", "111.111.111.111"), ("1", "2", "click", "222.222.222.222")],
     2, "222.222.222.222"),
    # the rewritten event (1, 1) moved to the end of the table
    ([("1", "2", "click", "222.222.222.222"), ("1", "1", "clack", "333.333.333.333")],
     1, "333.333.333.333"),
]


def _tables(catalog, ds) -> tuple[list[tuple], pd.DataFrame, pd.DataFrame]:
    events = catalog.get_datatable(ds, "events").get_data()
    rows = [(r.user_id, r.event_id, json.loads(r.event)["event_type"], json.loads(r.event)["ip"])
            for r in events.itertuples()]
    return (rows, catalog.get_datatable(ds, "click_count").get_data(),
            catalog.get_datatable(ds, "ip").get_data())


def test_seed_tutorial_three_events(meta_url: str) -> None:
    catalog, ds, steps = make_pipeline(meta_url)
    for (user, event_id, event), (rows, clicks, ip) in zip(EVENTS, EXPECTED):
        store_event(catalog, ds, steps, user, event_id, event)
        got_rows, got_clicks, got_ip = _tables(catalog, ds)
        assert got_rows == rows
        assert got_clicks.to_dict("records") == [{"user_id": "1", "click_count": clicks}]
        assert got_ip.to_dict("records") == [{"user_id": "1", "ip": ip}]


def test_seed_tables_are_plain_sql_tables(meta_url: str) -> None:
    """The data lives in ordinary tables named as in the tutorial, readable by any tool."""
    import sqlalchemy as sa

    catalog, ds, steps = make_pipeline(meta_url)
    for user, event_id, event in EVENTS:
        store_event(catalog, ds, steps, user, event_id, event)
    engine = sa.create_engine(meta_url)  # a connection of its own, not filepipe's
    with engine.connect() as con:
        assert con.exec_driver_sql("SELECT user_id, click_count FROM click_count").all() == [("1", 1)]
        assert con.exec_driver_sql("SELECT COUNT(*) FROM events").one() == (2,)
    engine.dispose()


def test_seed_fastapi_endpoint(meta_url: str) -> None:
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    app = make_app(meta_url)
    client = TestClient(app)
    for (user, event_id, event), (rows, clicks, ip) in zip(EVENTS, EXPECTED):
        body = {"user_id": int(user), "event_id": int(event_id), "event": event}
        assert client.post("/update-data", json=body).json() == {"result": "ok"}
        got_rows, got_clicks, got_ip = _tables(app.state.catalog, app.state.ds)
        assert got_rows == rows
        assert got_clicks["click_count"].tolist() == [clicks]
        assert got_ip["ip"].tolist() == [ip]
