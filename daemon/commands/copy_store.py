"""`tickcast copy-store --to URL`: copy the configured store into another one (SQLite to
PostgreSQL and back), resumable and idempotent, counts checked at the end.

Arguments and both stores' states are checked before the target is created or changed: a
--to that is no store URL, the same store twice, a missing source, a source whose schema
version is not this tickcast's, a target a daemon is writing to. The copy itself is
`storage.copy_store`: one snapshot of the source, every table in key order, batches that insert
what is new and update what differs, so a copy killed at any point and run again completes
without duplicates.
"""

from __future__ import annotations

import logging

from daemon import wiring
from daemon.config.settings import Settings
from daemon.core import crashpoints, errors
from daemon.core.clock import WallClock
from daemon.core.progress import Progress
from storage import SCHEMA_VERSION, StorageError, Store, copy_store, dialect

log = logging.getLogger("tickcast.commands")


def _same_store(a: str, b: str) -> bool:
    pa, pb = dialect.sqlite_path(a), dialect.sqlite_path(b)
    if pa is not None and pb is not None:
        return pa.resolve() == pb.resolve()
    return pa is None and pb is None and dialect.normalise_url(a) == dialect.normalise_url(b)


def check_target(to: str, source_url: str) -> str:
    """The --to URL, normalised; UsageError when it names no store or the source itself."""
    if not to.strip():
        raise errors.UsageError("--to: give the target store (a SQLite path or URL, or "
                                "postgresql://user@host/db)")
    try:
        dialect.backend(to)
        url = dialect.normalise_url(to)
    except StorageError as e:
        raise errors.UsageError(f"--to: {str(e).removeprefix('storage.url: ')}") from None
    if _same_store(url, source_url):
        raise errors.UsageError(f"--to is the configured store itself ({dialect.display_url(url)})"
                                "; copy into another one")
    return url


def copy_store_command(cfg: Settings, to: str) -> int:
    src_url = dialect.normalise_url(cfg.storage.url)
    url = check_target(to, src_url)
    path = dialect.sqlite_path(src_url)
    if path is not None and not path.exists():
        raise StorageError(f"store {path} does not exist (give --db or set storage.url)")
    source = Store(src_url, busy_timeout_ms=cfg.storage.busy_timeout_ms,
                   statement_timeout_ms=cfg.storage.statement_timeout_ms or None)
    target: Store | None = None
    try:
        with copy_store.snapshot(source) as snap:
            version = copy_store.schema_version_of(snap)
            if version != SCHEMA_VERSION:
                raise StorageError(
                    f"the source store {source.display_url} is at schema version {version}, "
                    f"this tickcast writes version {SCHEMA_VERSION}: refusing to copy between "
                    "schema versions (run any tickcast command on the source first, e.g. "
                    "`tickcast status`, to migrate it)" if version < SCHEMA_VERSION else
                    f"the source store {source.display_url} is at schema version {version}, "
                    f"newer than this tickcast ({SCHEMA_VERSION}); upgrade tickcast")
            if dialect.lock_is_held(url):
                raise errors.TemporaryFailure(
                    f"a tickcast run is writing to {dialect.display_url(url)}; stop it before "
                    "copying into that store")
            want = copy_store.counts(snap)
            target = wiring.open_store(url, WallClock().now_ms(),
                                       busy_timeout_ms=cfg.storage.busy_timeout_ms,
                                       statement_timeout_ms=cfg.storage.statement_timeout_ms)
            _copy(snap, target, want)
        with target.read("count the copy") as conn:
            got = copy_store.counts(conn)
    finally:
        source.close()
        if target is not None:
            target.close()
    differ = [f"{t}: {want[t]} in the source, {got[t]} in the target"
              for t in want if want[t] != got[t]]
    if differ:
        raise StorageError(f"copy-store: row counts differ after the copy ({'; '.join(differ)})"
                           "; does the target hold rows of another store?")
    print(f"copy-store: {sum(want.values())} rows copied from {source.display_url} to "
          f"{dialect.display_url(url)}; row counts equal in every table "
          f"({', '.join(f'{t} {n}' for t, n in want.items())})")
    return errors.EXIT_OK


def _copy(snap: copy_store.Snapshot, target: Store, want: dict[str, int]) -> None:
    bar = Progress("copy-store", sum(want.values()), unit=" rows")
    state = {"done": 0, "written": 0}
    for table in copy_store.TABLES:
        def step(read: int, written: int, name: str = table.name) -> None:
            state["done"] += read
            state["written"] += written
            bar.update(state["done"], name)
            crashpoints.hit("after-copy-batch")

        copy_store.copy_table(snap, target, table, step)
        log.debug("copied %s", table.name)
    bar.update(bar.total)
    bar.close()
    log.info("copy-store: %d rows read, %d inserted or updated in the target", state["done"],
             state["written"])
