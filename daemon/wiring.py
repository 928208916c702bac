"""Builds what every command works with from the settings: the store, the exchange source,
the model set. `commands`, `status`, `replay` and `service` all build through here, and
nothing here imports them, so there is no import circle.

torch and ccxt are imported inside the functions that need them: `tickcast status` and
`tickcast report` open a store and nothing else, and must not pay a second for either.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from storage import StorageError, Store, dialect

from . import crashpoints
from .series import Series
from .settings import Settings

if TYPE_CHECKING:
    from .ccxt_source import CcxtSource
    from .models import ModelSet


def open_store(url: str, now_ms: int, *, must_exist: bool = False, durable: bool = True,
               busy_timeout_ms: int | None = None,
               statement_timeout_ms: int | None = None) -> Store:
    """Open (check, migrate) a store. `must_exist`: refuse to create a missing SQLite file
    (commands that only read: status, report, replay --from-db)."""
    path = dialect.sqlite_path(url)
    if must_exist and path is not None and not path.exists():
        raise StorageError(f"store {path} does not exist (give --db or set storage.url)")
    store = Store(url, durable=durable, busy_timeout_ms=busy_timeout_ms,
                  statement_timeout_ms=statement_timeout_ms or None)
    store.open(now_ms, on_migration_step=crashpoints.hook("mid-migration"))
    return store


def open_configured_store(cfg: Settings, now_ms: int, *, must_exist: bool = False) -> Store:
    """The store `storage.url` names, with the configured busy and statement timeouts."""
    return open_store(cfg.storage.url, now_ms, must_exist=must_exist,
                      busy_timeout_ms=cfg.storage.busy_timeout_ms,
                      statement_timeout_ms=cfg.storage.statement_timeout_ms)


def make_source(cfg: Settings, *, stop: threading.Event | None = None,
                call_budget_s: float | None = None) -> CcxtSource:
    """The configured exchange; raises ConfigError for an id ccxt does not know."""
    from .ccxt_source import CcxtSource

    ex = cfg.exchange
    return CcxtSource(ex.id, api_url=ex.api_url, timeout_ms=ex.timeout_ms,
                      rate_limit=ex.rate_limit, max_retries=ex.max_retries,
                      backoff_max_s=ex.backoff_max_s, stop=stop, call_budget_s=call_budget_s)


def make_models(cfg: Settings, series: Series) -> ModelSet:
    """The models `model.models` names for a series. Raises ConfigError for an unknown
    model or a device that is not there."""
    from .models import ModelSet

    return ModelSet(cfg, series)


def history_candles(cfg: Settings) -> int:
    """How far back a first fetch reaches: enough to train on."""
    return cfg.model.train_window
