"""filepipe: incremental processing of the data people keep in files.

The public API is imported lazily so that ``filepipe --help`` starts fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "BatchGenerate": "filepipe.steps",
    "BatchTransform": "filepipe.steps",
    "Catalog": "filepipe.catalog",
    "ChangeList": "filepipe.types",
    "DataStore": "filepipe.table",
    "DataTable": "filepipe.table",
    "DBConn": "filepipe.sql",
    "FilepipeApp": "filepipe.app",
    "load_app": "filepipe.app",
    "Pipeline": "filepipe.compute",
    "RunReport": "filepipe.report",
    "Table": "filepipe.catalog",
    "build_compute": "filepipe.compute",
    "run_steps": "filepipe.compute",
    "run_steps_changelist": "filepipe.compute",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from .app import FilepipeApp, load_app
    from .catalog import Catalog, Table
    from .compute import Pipeline, build_compute, run_steps, run_steps_changelist
    from .report import RunReport
    from .sql import DBConn
    from .steps import BatchGenerate, BatchTransform
    from .table import DataStore, DataTable
    from .types import ChangeList


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'filepipe' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__ + ["__version__"]
