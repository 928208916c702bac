"""Storage errors, named by what the caller must do.

The daemon maps every one of them to exit code 74 (storage error), except
:class:`StoreBusy`, which is a temporary condition (exit 75).
"""

from __future__ import annotations


class StorageError(Exception):
    """The store cannot be used as asked; stop and tell the operator."""


class SchemaTooNew(StorageError):
    """The database was written by a newer tickcast; refuse rather than corrupt it."""


class StoreCorrupt(StorageError):
    """An integrity check failed; the operator must restore or repair the file."""


class StoreBusy(StorageError):
    """Another process holds the store (lock or busy timeout); retry later."""
