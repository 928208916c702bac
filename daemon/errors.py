"""Exit codes (SPEC §4) and the exceptions that carry them to the CLI.

Errors are named by what the caller must do: fix the config (78), fix the
input data (65), look at the store (74), or simply try again later (75).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_DATAERR = 65
EXIT_IOERR = 74
EXIT_TEMPFAIL = 75
EXIT_CONFIG = 78


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
