"""Data versioning: row versions of tables in Parquet segments, states as of a clock
value, diffs between states, and the change workbook (docs/history.md)."""

from __future__ import annotations

from .diff import TableDiff, diff_states
from .segments import HistoryStore
from .workbook import write_diff_workbook

__all__ = ["HistoryStore", "TableDiff", "diff_states", "write_diff_workbook"]
