"""The error types that name a user's mistake, in a leaf module every layer may import.

They live apart from the modules that raise them most (``config``, ``backbone``) so that a method
or the weight resolver can raise them without importing those modules, which keeps the import
graph acyclic (``tests/test_imports.py``). The CLI turns each of them into one ``error:`` line.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config value is missing, unknown or out of range; the message names the field."""


class BackboneError(ValueError):
    """A backbone cannot be built as asked; the message names the model, file or option."""


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, mismatched checkpoint); the message says where."""


class FileError(ValueError):
    """A file the package reads or writes is damaged, unreadable or cannot be written; the
    message names the file and says what to do."""


class DiskFullError(FileError):
    """The filesystem holding a file being written is full (ENOSPC / EDQUOT)."""


__all__ = ["BackboneError", "ConfigError", "DiskFullError", "FileError", "TrainingError"]
