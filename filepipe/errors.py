"""Every exception filepipe raises on purpose; each message names the culprit.

All are `FilepipeError`s. `retryable` says whether the same operation may succeed if
tried again soon without anyone fixing anything (a file still being saved, another
filepipe holding the lock): the sync retries those with backoff; the others need a fix.
"""


class FilepipeError(Exception):
    """Base class of filepipe's own errors."""

    retryable: bool = False


class DuplicateKeysError(FilepipeError, ValueError):
    """A frame holds the same primary key more than once."""


class DuplicateColumnsError(FilepipeError, ValueError):
    """A frame holds two columns of the same name."""


class MissingColumnsError(FilepipeError, ValueError):
    """A frame lacks key columns that its table or step needs."""


class KeyTypeError(FilepipeError, TypeError):
    """Key values of two kinds that never compare equal (text against numbers, say)."""


class UnknownTableError(FilepipeError, KeyError):
    """A step or call names a table the catalog does not have."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class StepOutputError(FilepipeError, ValueError):
    """A step returned something that does not fit its outputs."""


class PipelineError(FilepipeError, ValueError):
    """The pipeline itself is inconsistent (cycles, two writers of one table...)."""


class SourceReadError(FilepipeError):
    """A source file could not be read (after retries)."""


class SourceChangedError(FilepipeError):
    """A source file changed between the sync that hashed it and the step that read it;
    the run syncs it again and redoes the keys."""

    retryable = True


class MetaIndexError(FilepipeError):
    """The metadata index cannot be opened (damaged, or not filepipe's)."""


class OutputWriteError(FilepipeError):
    """An output file could not be written (a full disk, a path that is a folder...)."""


class FileDecodeError(SourceReadError, ValueError):
    """A file's content could not be decoded (it may be half-written): retried, then reported."""

    retryable = True


class NotRegularFileError(FilepipeError):
    """A data path holds a FIFO, socket, device or folder: filepipe never reads one."""


class SheetError(FilepipeError, ValueError):
    """A sheet cannot be read or written; the message names the file and the sheet."""


class SheetNotFoundError(SourceReadError, SheetError):
    """A source's sheet is not in its workbook (renamed or deleted): retrying will not help."""


class EmptyKeyError(MissingColumnsError):
    """Rows of a source (a sheet, a CSV or Parquet file) have an empty cell in a key column."""


class BadRowsError(FilepipeError, ValueError):
    """Rows of a source file that cannot be rows of its table: empty or duplicate keys,
    values that do not fit their declared type, a key column that disagrees with the
    file's path. All of them at once, each named by its row (the sheet's row number, the
    CSV's line); `problems` holds one text per problem. Bad data: not retried."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems: list[str] = list(problems or [])


class DuplicateRowsError(BadRowsError, DuplicateKeysError):
    """A source file's only bad rows are rows with duplicate keys."""


class EmptyKeyRowsError(BadRowsError, EmptyKeyError):
    """A source file's only bad rows are rows with an empty key cell."""


class NotWritableError(FilepipeError, ValueError):
    """Rows an output cannot hold, or would not give back as written (a cell too long,
    too many rows, an integer Parquet cannot store); checked before anything is written."""


class KeyNameError(FilepipeError, TypeError):
    """A primary key names a column by something other than its header text."""


class PipelineLoadError(FilepipeError):
    """The pipeline file or module cannot be loaded."""


class LockedError(FilepipeError):
    """Another filepipe process is writing to the same index."""

    retryable = True


class WorkerLostError(FilepipeError):
    """The worker process running a batch died (a crash, or the system killing it, often
    for lack of memory) on every attempt the executor made; the batch is recorded as failed
    and retried by the next run. Not `retryable`: the executor has already retried it."""
