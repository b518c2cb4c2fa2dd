"""A store kept in a pandas frame in memory: for tests and throwaway pipelines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .base import TableStore

if TYPE_CHECKING:
    import pandas as pd


class TableStoreMemory(TableStore):
    """A keyed table in memory. `data` seeds it; `columns` names the columns of an empty one."""

    def __init__(self, primary_keys: Sequence[str], data: pd.DataFrame | None = None,
                 columns: Sequence[str] | None = None) -> None:
        import pandas as pd

        self.primary_keys = list(primary_keys)
        empty = list(self.primary_keys) + [c for c in columns or () if c not in self.primary_keys]
        self._df = pd.DataFrame(columns=empty) if data is None else data.copy()

    def read_rows(self, idx: pd.DataFrame | None = None) -> pd.DataFrame:
        if idx is None:
            return self._df.reset_index(drop=True).copy()
        return self._df.merge(idx[self.primary_keys].drop_duplicates(), on=self.primary_keys)

    def upsert_rows(self, df: pd.DataFrame, conn: Any = None) -> None:
        import pandas as pd

        if df.empty:
            return
        rest = self._without(df)
        self._df = df.copy() if rest.empty else pd.concat([rest, df], ignore_index=True)

    def delete_rows(self, idx: pd.DataFrame, conn: Any = None) -> None:
        if len(idx):
            self._df = self._without(idx)

    def _without(self, idx: pd.DataFrame) -> pd.DataFrame:
        from ..frames import rows_in

        return self._df[~rows_in(self._df, idx, self.primary_keys)].reset_index(drop=True)

    def describe(self) -> str:
        return f"memory({', '.join(self.primary_keys)})"
