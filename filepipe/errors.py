"""Exceptions filepipe raises for bad input; each message names the culprit."""


class FilepipeError(Exception):
    """Base class of filepipe's own errors."""


class DuplicateKeysError(FilepipeError, ValueError):
    """A frame holds the same primary key more than once."""


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


class OutputConflictError(FilepipeError):
    """An output file was changed by someone else and the policy says stop."""


class SourceChangedError(FilepipeError):
    """A source file changed between the sync that hashed it and the step that read it;
    the run syncs it again and redoes the keys."""


class MetaIndexError(FilepipeError):
    """The metadata index cannot be opened (damaged, or not filepipe's)."""


class OutputWriteError(FilepipeError):
    """An output file could not be written (a full disk, a path that is a folder...)."""
