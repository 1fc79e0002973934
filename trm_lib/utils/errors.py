"""The error types that name a user's mistake, in a leaf module every layer may import.

They live apart from the modules that raise them most (``config``, ``backbone``) so that a method
or the weight resolver can raise them without importing those modules, which keeps the import
graph acyclic (``tests/test_imports.py``). Every one derives from :class:`UserError`, the one
type the CLI turns into an ``error:`` line: a new error class anywhere in the package joins the
policy by subclassing it, and cannot drop out of it by being moved or renamed.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of every "the input is wrong, not the code" error: the CLI prints its message as one
    ``error:`` line and exits with status 2 (``--debug`` shows the traceback)."""


class ConfigError(UserError, ValueError):
    """A config value is missing, unknown or out of range; the message names the field."""


class BackboneError(UserError, ValueError):
    """A backbone cannot be built as asked; the message names the model, file or option."""


class TrainingError(UserError, RuntimeError):
    """Training cannot go on (non-finite loss, mismatched checkpoint); the message says where."""


class FileError(UserError, ValueError):
    """A file the package reads or writes is damaged, unreadable or cannot be written; the
    message names the file and says what to do."""


class DiskFullError(FileError):
    """The filesystem holding a file being written is full (ENOSPC / EDQUOT)."""


__all__ = ["BackboneError", "ConfigError", "DiskFullError", "FileError", "TrainingError",
           "UserError"]
