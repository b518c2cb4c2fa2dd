"""The metadata index: row meta, step meta, file fingerprints and the run log."""

from .index import MetaIndex
from .rows import RowMeta
from .steps import StepMeta

__all__ = ["MetaIndex", "RowMeta", "StepMeta"]
