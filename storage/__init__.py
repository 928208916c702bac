"""Everything SQL: engine, schema, migrations, candles, forecasts, scoring.

Imports nothing from the rest of the project (ARCHITECTURE.md; an import-linter contract
in pyproject.toml checks it).
"""

from . import accuracy, candles, checkpoints, dialect, forecasts, migrations, runs, schema, views
from .errors import (
    SchemaTooNew,
    SchemaTooOld,
    StorageError,
    StoreBusy,
    StoreConfigError,
    StoreCorrupt,
    StoreUnavailable,
)
from .forecasts import ForecastRow
from .migrations import LATEST as SCHEMA_VERSION
from .store import Store

__all__ = [
    "SCHEMA_VERSION",
    "ForecastRow",
    "SchemaTooNew",
    "SchemaTooOld",
    "StorageError",
    "Store",
    "StoreBusy",
    "StoreConfigError",
    "StoreCorrupt",
    "StoreUnavailable",
    "accuracy",
    "candles",
    "checkpoints",
    "dialect",
    "forecasts",
    "migrations",
    "runs",
    "schema",
    "views",
]
