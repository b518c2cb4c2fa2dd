"""Frame helpers: the small-frame and large-frame paths of `rows_in` agree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from filepipe.frames import SMALL_FRAME, rows_in


@pytest.mark.parametrize("n", [3, SMALL_FRAME * 4])
def test_rows_in_small_and_large_frames(n: int) -> None:
    a = pd.DataFrame({"k": np.arange(n), "s": [f"x{i % 7}" for i in range(n)]})
    b = a.iloc[::3].copy()
    b.loc[b.index[0], "s"] = "other"  # same k, different s: not the same key
    got = rows_in(a, b, ["k", "s"])
    expected = np.arange(n) % 3 == 0
    expected[0] = False
    assert got.dtype == bool and got.tolist() == expected.tolist()
    assert rows_in(a, b, ["k"]).tolist() == (np.arange(n) % 3 == 0).tolist()
    assert not rows_in(a, b.iloc[0:0], ["k"]).any()
