"""Stores: each makes one place look like a keyed table (see `TableStore`)."""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "FileStore": "filepipe.stores.files",
    "TableStore": "filepipe.stores.base",
    "TableStoreCSV": "filepipe.stores.csv",
    "TableStoreExcel": "filepipe.stores.excel",
    "TableStoreFiledir": "filepipe.stores.filedir",
    "TableStoreParquet": "filepipe.stores.parquet",
    "TableStoreParquetDataset": "filepipe.stores.parquet",
    "TableStoreDB": "filepipe.stores.db",
    "TableStoreMemory": "filepipe.stores.memory",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'filepipe.stores' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
