"""Sales report: order files dropped by three shops + a price list → a report workbook.

    inbox/{shop}/{order_id}.json   one order per file (customer, sku, qty, date)
    prices.xlsx, sheet "Prices"    sku, product, unit_price (edited by hand)
    out/report.xlsx                sheets Orders, Customers, Products

Run it with ``filepipe -p examples/sales/pipeline.py run``; edit a price or drop a new
order file and run again: only the touched customers and products are recomputed.
"""

import pandas as pd

from filepipe import BatchTransform, Catalog, FilepipeApp, Pipeline, Table
from filepipe.stores import TableStoreExcel, TableStoreFiledir


def price_orders(orders: pd.DataFrame, prices: pd.DataFrame) -> pd.DataFrame:
    """Orders joined with the price of their product."""
    priced = orders.merge(prices, on="sku", how="left")
    priced["amount"] = (priced["qty"] * priced["unit_price"]).round(2)
    return priced[["shop", "order_id", "date", "customer", "sku", "product", "qty",
                   "unit_price", "amount"]]


def customer_totals(orders: pd.DataFrame) -> pd.DataFrame:
    """Per customer: number of orders, items bought, revenue."""
    return (orders.groupby("customer", as_index=False)
            .agg(orders=("order_id", "count"), items=("qty", "sum"), revenue=("amount", "sum"))
            .round({"revenue": 2}))


def product_totals(orders: pd.DataFrame) -> pd.DataFrame:
    """Per product: units sold and revenue."""
    return (orders.groupby(["sku", "product"], as_index=False, dropna=False)
            .agg(units=("qty", "sum"), revenue=("amount", "sum"))
            .round({"revenue": 2}))


MONEY = "#,##0.00"  # Excel number format: thousands separator, two decimals

catalog = Catalog({
    "orders": Table(TableStoreFiledir("inbox/{shop}/{order_id}.json")),
    "prices": Table(TableStoreExcel("prices.xlsx", sheet="Prices", primary_keys=["sku"])),
    # the report's sheets: money shown with two decimals (the cells keep every digit)
    "priced_orders": Table(TableStoreExcel("out/report.xlsx", sheet="Orders",
                                           primary_keys=["shop", "order_id"],
                                           formats={"unit_price": MONEY, "amount": MONEY})),
    "customers": Table(TableStoreExcel("out/report.xlsx", sheet="Customers",
                                       primary_keys=["customer"], formats={"revenue": MONEY})),
    "products": Table(TableStoreExcel("out/report.xlsx", sheet="Products",
                                      primary_keys=["sku"], formats={"revenue": MONEY})),
})

pipeline = Pipeline([
    # a changed order re-prices itself; a changed price re-prices the orders of that sku
    BatchTransform(price_orders, inputs=["orders", "prices"], outputs=["priced_orders"],
                   transform_keys=["sku"]),
    BatchTransform(customer_totals, inputs=["priced_orders"], outputs=["customers"],
                   transform_keys=["customer"]),
    BatchTransform(product_totals, inputs=["priced_orders"], outputs=["products"],
                   transform_keys=["sku"]),
])

app = FilepipeApp(catalog, pipeline)
