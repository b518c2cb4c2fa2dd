"""Names for the kinds of pandas frames the engine passes around.

All three are plain `pandas.DataFrame`s; the names say which columns to expect. They
exist for the type checker only (pandas is imported lazily, so they are defined under
``TYPE_CHECKING``): use them in annotations of modules with
``from __future__ import annotations``, imported under ``TYPE_CHECKING`` too::

    if TYPE_CHECKING:
        from .frametypes import DataDF, IndexDF
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import TypeAlias

    import pandas as pd

    #: A frame of key columns only (a table's primary keys, or a step's transform
    #: keys), one row per key: what `idx` arguments and change lists hold.
    IndexDF: TypeAlias = pd.DataFrame

    #: Rows of a table as its store holds them: key columns plus content columns.
    DataDF: TypeAlias = pd.DataFrame

    #: Meta rows of a table (see `meta.rows`): keys, ``hash``, ``create_ts``,
    #: ``update_ts``, ``delete_ts``, ``seq``, ``file_id`` and the tracked columns.
    MetaDF: TypeAlias = pd.DataFrame
