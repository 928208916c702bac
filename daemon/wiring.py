"""Builds what every command works with from the settings: the store, the exchange source,
the model set. Every command (`daemon.commands`) and the live daemon (`daemon.live.service`)
build through here; this room imports only the rooms below it (the `rooms` contract in
pyproject.toml), so there is no import circle.

torch and ccxt are imported inside the functions that need them: `tickcast status` and
`tickcast report` open a store and nothing else, and must not pay a second for either.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from daemon.config.settings import Settings
from daemon.core import crashpoints
from daemon.core.series import Series
from storage import StorageError, Store, dialect

if TYPE_CHECKING:
    from daemon.pipeline.modelset import ModelSet
    from daemon.sources.exchange import CcxtSource


def open_store(url: str, now_ms: int, *, read_only: bool = False, durable: bool = True,
               busy_timeout_ms: int | None = None, statement_timeout_ms: int | None = None,
               progress: Callable[[str, int, int], None] | None = None) -> Store:
    """Open a store: check and migrate it; or, `read_only` (commands that only read:
    status, report, replay --from-db), check that it exists and has this code's schema and
    write nothing at all: no file is created, no migration runs (an older store is refused,
    `storage.SchemaTooOld`, exit 74), and every connection refuses writes."""
    path = dialect.sqlite_path(url)
    if read_only and path is not None and not path.exists():
        raise StorageError(f"store {path} does not exist (give --db or set storage.url)")
    store = Store(url, durable=durable, busy_timeout_ms=busy_timeout_ms,
                  statement_timeout_ms=statement_timeout_ms or None, read_only=read_only)
    try:
        if read_only:
            store.open_read_only()
        else:
            store.open(now_ms, on_migration_step=crashpoints.hook("mid-migration"),
                       progress=progress or migration_progress())
    except BaseException:
        store.close()
        raise
    return store


def migration_progress() -> Callable[[str, int, int], None]:
    """A long migration step's progress: a bar on a terminal, log lines otherwise (filling
    the accuracy sums of a year of minutes takes minutes, once)."""
    from daemon.core.progress import Progress

    bars: dict[str, Progress] = {}

    def update(what: str, done: int, total: int) -> None:
        bar = bars.get(what)
        if bar is None:
            bar = bars[what] = Progress(f"upgrading the store: {what}", total, unit=" days")
        bar.update(done)
        if done >= total:
            bar.close()

    return update


def open_configured_store(cfg: Settings, now_ms: int, *, read_only: bool = False,
                          progress: Callable[[str, int, int], None] | None = None) -> Store:
    """The store `storage.url` names, with the configured busy and statement timeouts."""
    return open_store(cfg.storage.url, now_ms, read_only=read_only,
                      busy_timeout_ms=cfg.storage.busy_timeout_ms,
                      statement_timeout_ms=cfg.storage.statement_timeout_ms, progress=progress)


def make_source(cfg: Settings, *, stop: threading.Event | None = None,
                call_budget_s: float | None = None) -> CcxtSource:
    """The configured exchange; raises ConfigError for an id ccxt does not know."""
    from daemon.sources.exchange import CcxtSource

    ex = cfg.exchange
    return CcxtSource(ex.id, api_url=ex.api_url, timeout_ms=ex.timeout_ms,
                      rate_limit=ex.rate_limit, max_retries=ex.max_retries,
                      backoff_max_s=ex.backoff_max_s, stop=stop, call_budget_s=call_budget_s)


def make_models(cfg: Settings, series: Series) -> ModelSet:
    """The models `model.models` names for a series. Raises ConfigError for an unknown
    model or a device that is not there."""
    from daemon.pipeline.modelset import ModelSet

    return ModelSet(cfg, series)


def history_candles(cfg: Settings) -> int:
    """How far back a first fetch reaches: enough to train on."""
    return cfg.model.train_window
