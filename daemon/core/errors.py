"""Exit codes (README: Commands; `tickcast --help`), the exceptions that carry them, and the
one mapping from an error to the code a process ends with.

Errors are named by what the caller must do: fix the command line (2), fix the config (78),
fix the input data (65), look at the store (74), or simply try again later (75). The CLI and
the daemon both ask :func:`exit_code_for`, so a kind of error cannot end one way in one place
and another way elsewhere.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_DATAERR = 65
EXIT_IOERR = 74
EXIT_TEMPFAIL = 75
EXIT_CONFIG = 78
EXIT_INTERRUPTED = 130  # what a shell reports for Ctrl-C


class TickcastError(Exception):
    exit_code = 1


class UsageError(TickcastError):
    """The command line itself is wrong."""

    exit_code = EXIT_USAGE


class ConfigError(TickcastError):
    """Invalid configuration: the message names the key. Restarting will not help."""

    exit_code = EXIT_CONFIG


class DataError(TickcastError):
    """Input data is unusable as a whole (wrong header, nothing valid, seconds not ms)."""

    exit_code = EXIT_DATAERR


class TemporaryFailure(TickcastError):
    """Try again later: the exchange is down, or another process holds the store."""

    exit_code = EXIT_TEMPFAIL


def exit_code_for(exc: BaseException) -> int | None:
    """The exit code a process ends with because of `exc`; None for a bug (let it surface).

    >>> exit_code_for(ConfigError("model.lookback: must be at least 8"))
    78
    >>> exit_code_for(ZeroDivisionError()) is None
    True
    """
    if isinstance(exc, TickcastError):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    # Imported here, not at the top: `import daemon.cli` must stay light (no SQLAlchemy
    # for `--help`), and a storage error only exists once storage was imported anyway.
    from storage.errors import StorageError, StoreBusy, StoreConfigError

    if isinstance(exc, StoreConfigError):  # bad URL, refused login, unknown database
        return EXIT_CONFIG
    if isinstance(exc, StoreBusy):  # another process holds the store, or the server is
        return EXIT_TEMPFAIL        # unreachable (StoreUnavailable): try again later
    if isinstance(exc, StorageError):
        return EXIT_IOERR
    return None


def describe(exc: BaseException) -> str:
    """The one line logged for an error that ends a command."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if exit_code_for(exc) == EXIT_IOERR and not isinstance(exc, TickcastError):
        return f"storage error: {exc}"
    return str(exc)
