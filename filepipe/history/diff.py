"""The difference between two states of a table, and its daff-style rendering.

`diff_states` aligns two states by key: rows only in the new state are *added*, rows only
in the old one *deleted*, rows in both with a cell that differs *changed*. Cells compare by
filepipe's canonical cell hash (`hashing.hash_rows`), the test that makes a row count as
updated: two nulls are equal, 1 equals 1.0 and Decimal(1) (numbers of equal value), text
"1" differs from the number 1, True differs from 1, a missing column equals nulls.

`TableDiff.to_text` writes daff's highlighter format (https://github.com/paulfitz/daff):
a CSV whose first column holds the action: ``@@`` on the header row, ``+++`` on an added
row, ``---`` on a deleted one, ``->`` on a changed one, whose changed cells read
``old->new`` (a longer arrow, ``-->``, on a row whose values contain ``->``). A ``!``
row above the header marks columns only the new state (``+++``) or the old one (``---``)
has. In a changed cell a null is ``NULL`` (text that reads ``NULL`` gains a leading ``_``);
elsewhere it is an empty cell.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from itertools import compress
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

#: the action column's name and tags
ACTION, ADDED, DELETED, ARROW = "@@", "+++", "---", "->"
_NULL_LIKE = re.compile(r"_*NULL")


@dataclass(frozen=True)
class TableDiff:
    """What changed between two states of one table."""

    keys: list[str]
    #: the non-key columns compared: the new state's, then those only the old one has
    columns: list[str]
    #: rows only in the new state: keys and `columns` (fresh index)
    added: pd.DataFrame
    #: rows only in the old state: keys and `columns` (fresh index)
    deleted: pd.DataFrame
    #: rows in both states that differ, indexed by their keys; columns ``(column, "old")``
    #: and ``(column, "new")`` for each of `columns`
    changed: pd.DataFrame
    #: same index as `changed`, one bool column per column of `columns`: did it change?
    changed_mask: pd.DataFrame
    #: columns only the new state has, and only the old one has
    added_columns: list[str]
    removed_columns: list[str]

    @property
    def changed_columns(self) -> list[list[str]]:
        """For each row of `changed`, the columns whose value changed."""
        return [list(compress(self.columns, row)) for row in self.changed_mask.to_numpy()]

    @property
    def counts(self) -> dict[str, int]:
        return {"added": len(self.added), "deleted": len(self.deleted), "changed": len(self.changed)}

    @property
    def is_empty(self) -> bool:
        """No row added, deleted or changed, and the same columns."""
        return not (any(self.counts.values()) or self.added_columns or self.removed_columns)

    def flat(self, arrow: str = ARROW) -> tuple[pd.DataFrame, np.ndarray]:
        """The diff as one frame in key order: the action (column ``@@``: ``+++``,
        ``---``, or `arrow` for a changed row), the keys and `columns`, each changed cell
        the text ``old{arrow}new``; and a bool array (rows × `columns`) marking those cells."""
        import numpy as np
        import pandas as pd

        changed, mask, arrows = self._changed_cells(arrow)
        plain = [self.added.assign(**{ACTION: ADDED}), self.deleted.assign(**{ACTION: DELETED})]
        frame = pd.concat([*plain, changed.assign(**{ACTION: arrows})], ignore_index=True)
        frame = frame[[ACTION, *self.keys, *self.columns]]
        marks = np.concatenate([np.zeros((len(self.added) + len(self.deleted), len(self.columns)), bool), mask])
        try:
            order = frame.sort_values(self.keys, kind="stable").index.to_numpy()
        except TypeError:  # keys of kinds that do not order: leave them as they are
            order = np.arange(len(frame))
        return frame.take(order).reset_index(drop=True), marks[order]

    def to_frame(self, arrow: str = ARROW) -> pd.DataFrame:
        """`flat` without the marks: the diff as a frame for CSV or JSON."""
        return self.flat(arrow)[0]

    def to_text(self) -> str:
        """The diff as daff highlighter CSV (see the module doc)."""
        frame, _ = self.flat()
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        if self.added_columns or self.removed_columns:
            writer.writerow(["!", *[""] * len(self.keys),
                             *[ADDED if c in self.added_columns else DELETED if c in self.removed_columns
                               else "" for c in self.columns]])
        writer.writerow([ACTION, *self.keys, *self.columns])
        writer.writerows([_plain(v) for v in row] for row in frame.itertuples(index=False, name=None))
        return out.getvalue()

    def _changed_cells(self, arrow: str) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
        """The changed rows as keys and `columns` (new values, changed cells as text
        ``old{arrow}new``), their change mask, and each row's arrow (longer on a row
        whose values contain `arrow`)."""
        import numpy as np

        mask = self.changed_mask.to_numpy(dtype=bool)
        rows, cols = np.nonzero(mask)
        old = _texts(self.changed[[(c, "old") for c in self.columns]].to_numpy(dtype=object)[rows, cols])
        new = _texts(self.changed[[(c, "new") for c in self.columns]].to_numpy(dtype=object)[rows, cols])
        arrows = np.full(len(mask), arrow, dtype=object)
        clash = np.array([arrow in a or arrow in b for a, b in zip(old, new)], dtype=bool)
        for i in np.unique(rows[clash]):
            texts = [t for k in np.flatnonzero(rows == i) for t in (old[k], new[k])]
            while any(arrows[i] in t for t in texts):
                arrows[i] = arrows[i][0] + arrows[i]
        cells = self.changed[[(c, "new") for c in self.columns]].to_numpy(dtype=object, copy=True)
        cells[rows, cols] = [a + arrows[r] + b for a, r, b in zip(old, rows, new)]
        out = self.changed.index.to_frame(index=False)
        for j, c in enumerate(self.columns):
            out[c] = cells[:, j]
        return out, mask, arrows


def diff_states(old: pd.DataFrame, new: pd.DataFrame, keys: list[str]) -> TableDiff:
    """The rows added, deleted and changed from state `old` to state `new` of a table
    whose primary key is `keys` (see the module doc for what counts as a change)."""
    import numpy as np
    import pandas as pd

    from ..errors import FilepipeError
    from ..frames import check_keys, key_positions

    if not keys:
        raise FilepipeError("diff: name the key columns the states are aligned on")
    check_keys(old, keys, "diff: the old state")
    check_keys(new, keys, "diff: the new state")
    data_new = [c for c in new.columns if c not in keys]
    columns = data_new + [c for c in old.columns if c not in keys and c not in new.columns]
    everything = [*keys, *columns]
    at_old = key_positions(new, old, keys)
    is_new = at_old < 0
    in_both = np.zeros(len(old), dtype=bool)
    in_both[at_old[~is_new]] = True
    before = old.take(at_old[~is_new]).reset_index(drop=True).reindex(columns=everything)
    after = new[~is_new].reset_index(drop=True).reindex(columns=everything)
    differ = np.flatnonzero(_row_hashes(before, columns) != _row_hashes(after, columns))
    before, after = before.take(differ).reset_index(drop=True), after.take(differ).reset_index(drop=True)
    mask = np.column_stack([_cell_hashes(before[c]) != _cell_hashes(after[c]) for c in columns]) \
        if columns else np.zeros((len(after), 0), dtype=bool)
    hit = mask.any(axis=1)
    before, after, mask = before[hit].reset_index(drop=True), after[hit].reset_index(drop=True), mask[hit]
    index = pd.MultiIndex.from_frame(after[keys]) if len(keys) > 1 else pd.Index(after[keys[0]], name=keys[0])
    changed = pd.DataFrame({(c, side): frame[c].array for c in columns
                            for side, frame in (("old", before), ("new", after))}, index=index)
    return TableDiff(
        keys=list(keys), columns=columns,
        added=new[is_new].reset_index(drop=True).reindex(columns=everything),
        deleted=old[~in_both].reset_index(drop=True).reindex(columns=everything),
        changed=changed,
        changed_mask=pd.DataFrame(mask, index=index, columns=columns),
        added_columns=[c for c in data_new if c not in old.columns],
        removed_columns=[c for c in columns if c not in new.columns],
    )


def _row_hashes(df: pd.DataFrame, columns: list[str]) -> np.ndarray:
    from ..hashing import hash_rows

    return hash_rows(df, columns)


def _cell_hashes(values: pd.Series) -> np.ndarray:
    """One hash per cell, equal exactly when the cells are equal (see the module doc)."""
    from ..hashing import hash_rows

    return hash_rows(values.to_frame("cell"))


def _texts(values: np.ndarray) -> list[str]:
    """Cells as a changed cell shows them: ``NULL`` for a null, text like it escaped."""
    import pandas as pd

    return [("_" + v if _NULL_LIKE.fullmatch(v) else v) if isinstance(v, str)
            else "NULL" if pd.api.types.is_scalar(v) and pd.isna(v) else str(v)
            for v in values]


def _plain(value: Any) -> str:
    """A cell of an added, deleted or unchanged position as CSV text (null: empty)."""
    import pandas as pd

    if isinstance(value, str):
        return value
    return "" if pd.api.types.is_scalar(value) and pd.isna(value) else str(value)
