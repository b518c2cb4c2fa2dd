"""Table states from row versions: the state at a clock value, and the versions a set of
states needs (what `gc` keeps). Pure frame logic, vectorised; no files."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

SEQ, RUN, KIND, HASH = "_fp_seq", "_fp_run", "_fp_kind", "_fp_hash"
#: the system columns of a row version, in the order segments store them (after the row's own)
SYSTEM_COLUMNS = [SEQ, RUN, KIND, HASH]
#: their dtypes: `_fp_hash` is null for a deletion, so nullable
SYSTEM_DTYPES = {SEQ: "int64", RUN: "int64", KIND: "str", HASH: "Int64"}
KINDS = ("added", "updated", "deleted")
DELETED = "deleted"


def state_at(versions: pd.DataFrame, keys: Sequence[str], seq: int | None = None) -> pd.DataFrame:
    """The table as it was at clock value `seq` (default: after every version): per key its
    latest version with ``_fp_seq <= seq``, deleted keys left out; the row columns only,
    sorted by `keys`. `versions` must be sorted by `_fp_seq`."""
    from ..frames import sorted_by_key

    if seq is not None:
        versions = versions[versions[SEQ].to_numpy() <= seq]
    latest = versions.drop_duplicates(list(keys), keep="last")
    alive = latest[latest[KIND].to_numpy() != DELETED]
    return sorted_by_key(alive.drop(columns=SYSTEM_COLUMNS).reset_index(drop=True), list(keys))


def needed_versions(versions: pd.DataFrame, keys: Sequence[str], keep_from_seq: int,
                    keep_seqs: Iterable[int] = ()) -> np.ndarray:
    """Which `versions` (sorted by `_fp_seq`, one per (seq, keys)) rebuild every state at
    ``seq >= keep_from_seq`` and at each of `keep_seqs`: a boolean mask.

    Every version after `keep_from_seq` stays. Of the older ones, per key and per *keep
    point* (each of `keep_seqs` before `keep_from_seq`, and `keep_from_seq` itself), the
    latest version at or before that point stays: no other version lies between it and
    the point, so the state there is unchanged. A kept deletion that follows nothing alive
    (no kept version before it, or a deletion) changes no state and goes too.
    """
    import numpy as np

    keys = list(keys)
    seq = versions[SEQ].to_numpy()
    old = seq <= keep_from_seq
    points = np.array(sorted({s for s in keep_seqs if s < keep_from_seq} | {keep_from_seq}))
    old_rows = versions[old]
    # the keep point a version counts for: the first one at or after it
    bucket = np.searchsorted(points, seq[old], side="left")
    last = ~old_rows[keys].assign(_fp_point=bucket).duplicated(keep="last").to_numpy()
    kept = old_rows[last]
    previous = kept[KIND].groupby([kept[k] for k in keys], dropna=False, sort=False).shift()
    idle = (kept[KIND] == DELETED) & (previous.isna() | (previous == DELETED))
    positions = np.flatnonzero(old)[last][~idle.to_numpy()]
    mask = ~old
    mask[positions] = True
    return mask
