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
    """Keys changed per table name; what `run_steps_changelist` propagates.

    Appends are cheap (kept as parts); the union per table is built once when read.
    """

    def __init__(self, changes: dict[str, pd.DataFrame] | None = None) -> None:
        self._parts: dict[str, list[pd.DataFrame]] = {}
        self._merged: set[str] = set()  # tables whose one part is the union already
        for name, idx in (changes or {}).items():
            self.append(name, idx)

    @classmethod
    def create(cls, name: str, idx: pd.DataFrame) -> ChangeList:
        return cls({name: idx})

    def append(self, table_name: str, idx: pd.DataFrame) -> None:
        """Add the keys in `idx` to the changes of `table_name`."""
        if idx is None or len(idx) == 0:
            return
        self._parts.setdefault(table_name, []).append(idx)
        self._merged.discard(table_name)

    @property
    def changes(self) -> dict[str, pd.DataFrame]:
        """The keys changed per table, each once."""
        import pandas as pd

        from .frames import unique_rows

        for name, parts in self._parts.items():
            if name not in self._merged:
                self._parts[name] = [unique_rows(pd.concat(parts, ignore_index=True)
                                                 if len(parts) > 1 else parts[0])]
                self._merged.add(name)
        return {name: parts[0] for name, parts in self._parts.items()}

    def extend(self, other: ChangeList) -> None:
        for name, parts in other._parts.items():
            for idx in parts:
                self.append(name, idx)

    def get(self, table_name: str) -> pd.DataFrame | None:
        return self.changes.get(table_name) if table_name in self._parts else None

    def tables(self) -> list[str]:
        return list(self._parts)

    def empty(self) -> bool:
        return not self._parts

    def __iter__(self) -> Iterator[str]:
        return iter(self._parts)

    def __len__(self) -> int:
        return sum(len(v) for v in self.changes.values())

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}: {len(v)} keys" for k, v in self.changes.items())
        return f"ChangeList({inner})"
