"""Regenerate the example's inputs (deterministic): ``python examples/sales/make_data.py``."""

import json
import random
from pathlib import Path

import pandas as pd

HERE = Path(__file__).parent
PRODUCTS = [("A-100", "Espresso beans 1 kg", 18.5), ("A-200", "Filter coffee 500 g", 7.9),
            ("B-100", "Green tea 100 g", 5.2), ("B-200", "Earl Grey 250 g", 6.75),
            ("C-100", "Hand grinder", 39.0), ("C-200", "Moka pot 6 cups", 27.5),
            ("D-100", "Ceramic mug", 9.0), ("D-200", "Travel tumbler", 15.0)]
CUSTOMERS = ["Ana Souza", "Björn Lind", "Chen Wei", "Dana Cohen", "Émile Roux", "Fatima Zahra",
             "Giulia Conti", "Hiro Tanaka", "Ivan Petrov", "Jonas Berg", "Kwame Mensah",
             "Lena Vogel"]
SHOPS = ["berlin", "lisbon", "online"]


def main() -> None:
    rng = random.Random(7)
    pd.DataFrame(PRODUCTS, columns=["sku", "product", "unit_price"]).to_excel(
        HERE / "prices.xlsx", sheet_name="Prices", index=False)
    for n in range(1, 61):
        shop = SHOPS[n % 3]
        order = {"customer": rng.choice(CUSTOMERS), "sku": rng.choice(PRODUCTS)[0],
                 "qty": rng.randint(1, 5), "date": f"2026-10-{1 + n % 28:02d}"}
        path = HERE / "inbox" / shop / f"{1000 + n}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(order, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
