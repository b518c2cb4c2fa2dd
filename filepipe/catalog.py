"""Catalog: the named tables of a pipeline."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import UnknownTableError

if TYPE_CHECKING:
    from .stores.base import TableStore
    from .table import DataStore, DataTable


@dataclass
class Table:
    """A catalog entry: where a table's rows live.

    `max_delete_share`: a sync of this (source) table that would delete more than this
    share of its rows at once (once it holds 20 or more) stops and changes nothing,
    unless the run allows deletes; None turns the guard off.
    """

    store: TableStore
    max_delete_share: float | None = 0.5


class Catalog:
    """Tables by name: ``Catalog({"events": Table(store=...)})``."""

    def __init__(self, tables: Mapping[str, Table]) -> None:
        self.catalog: dict[str, Table] = dict(tables)

    def add_datatable(self, name: str, table: Table) -> None:
        self.catalog[name] = table

    def get_datatable(self, ds: DataStore, name: str) -> DataTable:
        """The DataTable `name` (one per DataStore)."""
        if name not in self.catalog:
            known = ", ".join(sorted(self.catalog)) or "(none)"
            raise UnknownTableError(f"unknown table {name!r}; the catalog has: {known}")
        entry = self.catalog[name]
        return ds.get_or_create_table(name, entry.store, entry.max_delete_share)

    def __contains__(self, name: object) -> bool:
        return name in self.catalog

    def __iter__(self) -> Iterator[str]:
        return iter(self.catalog)

    def __len__(self) -> int:
        return len(self.catalog)
