"""Storage errors, named by what the caller must do.

Exit codes the daemon maps them to (README: Commands), most specific class first:

- :class:`StoreConfigError` 78: the URL, the credentials or the database name are wrong,
  or the role lacks a privilege; retrying cannot help, so systemd must not restart.
- :class:`StoreBusy` 75, and its subclass :class:`StoreUnavailable`: temporary (a lock,
  a timeout, the server restarting or unreachable); a running daemon logs the failed
  tick and tries again at the next one.
- :class:`StorageError` 74 (and :class:`SchemaTooNew`, :class:`StoreCorrupt`): the store
  cannot be used as asked (disk full, a newer schema, damage); stop and tell the operator.
"""

from __future__ import annotations


class StorageError(Exception):
    """The store cannot be used as asked; stop and tell the operator (exit 74)."""


class SchemaTooNew(StorageError):
    """The database was written by a newer tickcast; refuse rather than corrupt it."""


class SchemaTooOld(StorageError):
    """A command that only reads was given a store older than the code: it does not
    migrate it (exit 74); a daemon or a writing command of this version will."""


class StoreCorrupt(StorageError):
    """An integrity check failed; the operator must restore or repair the file."""


class StoreConfigError(StorageError):
    """The store cannot be reached as configured: bad URL, unknown back-end, refused login,
    unknown database, missing privilege (exit 78: restarting will not fix it)."""


class StoreBusy(StorageError):
    """Another process holds the store (lock or busy timeout); retry later (exit 75)."""


class StoreUnavailable(StoreBusy):
    """The database server cannot be reached right now (connection refused or lost, server
    restarting or shutting down, too many connections); retry later (exit 75)."""
