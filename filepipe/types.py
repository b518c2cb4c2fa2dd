"""Change lists and helpers for frames of keys ("indexes")."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

def concat_index(frames: Sequence[pd.DataFrame], keys: Sequence[str]) -> pd.DataFrame:
    """Union of several key frames (duplicates dropped)."""
    import pandas as pd

    from .frames import pick, unique_rows

    frames = [pick(f, keys) for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(keys))
    return unique_rows(pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0])


class ChangeList:
    """Keys changed per table name; what `run_steps_changelist` propagates."""

    def __init__(self, changes: dict[str, pd.DataFrame] | None = None) -> None:
        self.changes: dict[str, pd.DataFrame] = {}
        for name, idx in (changes or {}).items():
            self.append(name, idx)

    @classmethod
    def create(cls, name: str, idx: pd.DataFrame) -> ChangeList:
        return cls({name: idx})

    def append(self, table_name: str, idx: pd.DataFrame) -> None:
        """Add the keys in `idx` to the changes of `table_name`."""
        if idx is None or len(idx) == 0:
            return
        import pandas as pd

        from .frames import unique_rows

        if table_name in self.changes:
            idx = pd.concat([self.changes[table_name], idx], ignore_index=True)
        self.changes[table_name] = unique_rows(idx)

    def extend(self, other: ChangeList) -> None:
        for name, idx in other.changes.items():
            self.append(name, idx)

    def get(self, table_name: str) -> pd.DataFrame | None:
        return self.changes.get(table_name)

    def tables(self) -> list[str]:
        return list(self.changes)

    def empty(self) -> bool:
        return not self.changes

    def __iter__(self) -> Iterator[str]:
        return iter(self.changes)

    def __len__(self) -> int:
        return sum(len(v) for v in self.changes.values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {len(v)} keys" for k, v in self.changes.items())
        return f"ChangeList({inner})"
