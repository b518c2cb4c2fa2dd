"""The datapipe tutorial's example (docs/design.md, appendix A) on filepipe: only the imports changed.

Website events (user_id, event_id, event JSON) go into `events`; one step derives
`click_count` (clicks per user) and `ip` (the ip of the user's latest event).
Serve the tutorial's API (POST /update-data) from the repository's folder, after
``pip install -e '.[api]'``: ``uvicorn --factory examples.seed_events.pipeline:make_app``
(the data goes to store.sqlite in the current folder).
"""

import json

import pandas as pd
from sqlalchemy import JSON, Column, Integer, String

from filepipe import (
    BatchTransform,
    Catalog,
    ChangeList,
    DataStore,
    DBConn,
    Pipeline,
    Table,
    build_compute,
    run_steps_changelist,
)
from filepipe.stores import TableStoreDB

events_schema = [
    Column("user_id", String(), primary_key=True),
    Column("event_id", String(), primary_key=True),
    Column("event", JSON()),
]
click_count_schema = [
    Column("user_id", String(), primary_key=True),
    Column("click_count", Integer()),
]
ip_schema = [
    Column("user_id", String(), primary_key=True),
    Column("ip", String()),
]


def parse_clicks_ip_step(df: pd.DataFrame):
    res = []
    res_ips = []
    for user_id, grp in df.groupby("user_id"):
        events = grp["event"].apply(json.loads)
        click_count = sum([1 for x in events if x["event_type"] == "click"])
        res.append({"user_id": user_id, "click_count": click_count})
        res_ips.append({"user_id": user_id, "ip": events.iloc[-1]["ip"]})
    return (
        pd.DataFrame.from_records(res),
        pd.DataFrame.from_records(res_ips),
    )


def make_pipeline(db_url: str, history: bool | None = None):
    """Catalog, DataStore and compute steps of the tutorial on the database `db_url`
    (`history=False`: keep no versions)."""
    dbconn = DBConn(db_url)
    catalog = Catalog({
        "events": Table(store=TableStoreDB(name="events", dbconn=dbconn,
                                           data_sql_schema=events_schema)),
        "click_count": Table(store=TableStoreDB(name="click_count", dbconn=dbconn,
                                                data_sql_schema=click_count_schema)),
        "ip": Table(store=TableStoreDB(name="ip", dbconn=dbconn, data_sql_schema=ip_schema)),
    })
    ds = DataStore(dbconn, history=history)
    pipeline = Pipeline(steps=[
        BatchTransform(parse_clicks_ip_step, inputs=["events"], outputs=["click_count", "ip"]),
    ])
    return catalog, ds, build_compute(ds, catalog, pipeline)


def store_event(catalog, ds, steps, user_id: str, event_id: str, event: dict) -> None:
    """What the tutorial's POST /update-data does."""
    dt = catalog.get_datatable(ds, "events")
    cl = ChangeList()
    chunk = pd.DataFrame({
        "user_id": user_id,
        "event_id": event_id,
        "event": json.dumps(event),
    }, index=[0])
    idx = dt.store_chunk(chunk)
    cl.append("events", idx)
    run_steps_changelist(ds, steps, cl)


def make_app(db_url: str = "sqlite:///store.sqlite"):
    """The tutorial's FastAPI app (requires `pip install filepipe[api]`)."""
    from fastapi import FastAPI
    from pydantic import BaseModel, ConfigDict

    catalog, ds, steps = make_pipeline(db_url)
    app = FastAPI()

    class UpdateDataRequest(BaseModel):
        # the tutorial posts numbers for these string fields (pydantic 1 coerced them)
        model_config = ConfigDict(coerce_numbers_to_str=True)
        user_id: str
        event_id: str
        event: dict

    @app.post("/update-data")
    def update_data(req: UpdateDataRequest) -> dict:
        store_event(catalog, ds, steps, req.user_id, req.event_id, req.event)
        return {"result": "ok"}

    app.state.catalog, app.state.ds = catalog, ds
    return app
