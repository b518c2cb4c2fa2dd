"""What every step has: a declaration in a Pipeline and a compute step built from it."""

from __future__ import annotations

import traceback
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..catalog import Catalog
    from ..report import RunReport
    from ..table import DataStore, DataTable
    from ..types import ChangeList


class PipelineStep(ABC):
    """A step as declared in a Pipeline (names of tables, the user's function)."""

    @abstractmethod
    def build(self, ds: DataStore, catalog: Catalog, name: str) -> ComputeStep:
        """Bind the declaration to real tables."""

    @property
    @abstractmethod
    def default_name(self) -> str:
        """The step's name unless the pipeline disambiguates it."""


@dataclass
class StepStatus:
    """What the next run of a step would do, and why (for `status` and `run --dry-run`)."""

    transform_keys: list[str] = field(default_factory=list)
    pending: int = 0
    failed: int = 0
    reason: str = "runs every time (generator)"
    errors: list[str] = field(default_factory=list)


class ComputeStep(ABC):
    """A step bound to DataTables, ready to run."""

    ds: DataStore
    name: str
    inputs: list[DataTable]
    outputs: list[DataTable]

    def prepare(self) -> None:
        """Learn what the step needs of its tables (columns to track) before a run
        syncs or guards them. Default: nothing."""

    @abstractmethod
    def run_full(self, report: RunReport) -> ChangeList:
        """Process everything that is stale; return what changed in the outputs."""

    def run_changelist(self, changes: ChangeList, report: RunReport) -> ChangeList:
        """Process only what `changes` touches (default: a full run)."""
        return self.run_full(report)

    def reset(self) -> None:
        """Make the step recompute everything on its next run (default: it keeps nothing)."""

    def status(self) -> StepStatus:
        """Keys pending and failed, and why the next run would process them."""
        return StepStatus()

    def failed_keys(self) -> int:
        """How many keys failed last time (retried by the next run)."""
        return 0

    def reads(self, changes: ChangeList) -> bool:
        return any(t.name in changes.changes for t in self.inputs)

    def describe(self) -> str:
        ins = ", ".join(t.name for t in self.inputs) or "-"
        outs = ", ".join(t.name for t in self.outputs)
        return f"{self.name}: {ins} -> {outs}"


def error_text(exc: BaseException) -> str:
    """`Type: first line (at file:line in function)` + further lines, for the step meta.

    The place named is the innermost frame of the user's own code (not pandas', not
    filepipe's), which is where a fix usually goes; none is named when the user's code
    is not involved (a database constraint, say: the message names the table).
    """
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if not _library_file(f.filename)]
    where = f" (at {own[-1].filename}:{own[-1].lineno} in {own[-1].name})" if own else ""
    first, _, rest = str(exc).partition("\n")
    return f"{type(exc).__name__}: {first}{where}" + (f"\n{rest}" if rest else "")


def _library_file(filename: str) -> bool:
    """Is `filename` filepipe's, an installed package's or the standard library's?"""
    import os
    import sysconfig

    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    stdlib = [os.path.abspath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")]
    path = os.path.abspath(filename)
    return ("site-packages" in filename or "dist-packages" in filename
            or path.startswith(package + os.sep) or filename.startswith("<frozen")
            or any(path.startswith(d + os.sep) for d in stdlib))


@contextmanager
def flush_once(tables: list[DataTable]) -> Iterator[None]:
    """Buffer writes of file-backed tables and flush each once at the end."""
    with ExitStack() as stack:
        for t in tables:
            stack.enter_context(t.deferred_flush())
        yield


def tables(ds: DataStore, catalog: Catalog, step: str, names: list[str]) -> list[DataTable]:
    """The DataTables `names` of a step; an unknown name is reported with the step's name."""
    from ..errors import UnknownTableError

    try:
        return [catalog.get_datatable(ds, n) for n in names]
    except UnknownTableError as exc:
        raise UnknownTableError(f"step {step!r}: {exc}") from None
