"""`tickcast run` on one PostgreSQL store: a daemon per exchange side by side, a third for an
exchange already served refused naming its holder, the server restarted under a running
daemon, and a kill -9 followed by a restart in an empty working directory that serves the
stored model. Real subprocesses, real ccxt against the emulator, a real server (skipped in
one line without TICKCAST_TEST_PG_URL).

Every wait polls for the behaviour with a generous deadline; assertions are about what
happened, never about how long it took.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from tests.helpers import MINUTE, assert_no_holes, wait_until
from tests.helpers.daemon import DaemonHarness
from tests.helpers.stores import no_duplicate_forecasts
from tests.pg_server import restart

# Every daemon of these tests shares one fresh PostgreSQL database (the `harness` fixture).
pytestmark = pytest.mark.harness(store="postgresql")


def newest(h: DaemonHarness, exchange: str) -> int:
    """The newest candle time both symbols of an exchange have reached (0 before)."""
    rows = h.query("select min(m) from (select max(ts) m from candles where exchange = "
                   f"'{exchange}' group by symbol having count(*) > 0) x")
    got = rows[0][0] if rows else None
    n = h.query(f"select count(distinct symbol) from candles where exchange = '{exchange}'")
    return int(got or 0) if n and n[0][0] == 2 else 0


def issued(h: DaemonHarness, exchange: str, model: str = "seq2seq") -> int:
    rows = h.query(f"select max(issued_ts) from forecasts where exchange = '{exchange}' "
                   f"and model = '{model}'")
    return int(rows[0][0] or 0) if rows else 0


def test_two_exchanges_side_by_side_and_a_third_daemon_is_refused_naming_the_holder(
        harness: DaemonHarness) -> None:
    bitstamp = harness.start()
    kraken = harness.start(config=harness.config_for("kraken"))  # both migrate at once
    for ex in ("bitstamp", "kraken"):
        harness.wait_for(lambda ex=ex: issued(harness, ex) > 0 and issued(harness, ex, "naive")
                         > 0, f"{ex} forecasts")
    third = harness.start()  # bitstamp 1m again
    assert third.wait(120) == 75
    said = harness.log()
    assert re.search(rf"another tickcast run \(host \S+ pid {bitstamp.pid}\) already holds "
                     r"bitstamp 1m", said), said[-2000:]
    # Both go on: each exchange keeps growing, each served by its own daemon.
    marks = {ex: newest(harness, ex) for ex in ("bitstamp", "kraken")}
    for ex, mark in marks.items():
        wait_until(lambda ex=ex, mark=mark: newest(harness, ex) > mark + 3 * MINUTE,
                   f"{ex} candles after the refused third daemon", timeout=180,
                   on_timeout=lambda: harness.log(0)[-2000:] + harness.log(1)[-2000:])
    assert bitstamp.poll() is None and kraken.poll() is None
    assert harness.stop(bitstamp) == 0 and harness.stop(kraken) == 0
    for ex in ("bitstamp", "kraken"):
        assert_no_holes(str(harness.db), exchange=ex)
        truth = {c[0]: tuple(c) for c in harness.emu.closed_candles("BTC/USD")}
        for row in harness.query("select ts, open, high, low, close, volume from candles "
                                 f"where exchange = '{ex}' and symbol = 'BTC/USD'"):
            assert truth[row[0]] == row
    assert no_duplicate_forecasts(harness.db)
    runs = dict(harness.query("select exchange, count(*) from training_runs group by exchange"))
    assert set(runs) == {"bitstamp", "kraken"}


def test_the_server_restarting_under_a_daemon_leaves_no_hole_and_no_duplicate(
        harness: DaemonHarness) -> None:
    directory = os.environ.get("TICKCAST_TEST_PG_DIR")
    if not directory:
        pytest.skip("restarting the server needs one started by tests/pg_server.py "
                    "(TICKCAST_TEST_PG_DIR)")
    p = harness.start()
    harness.wait_for(lambda: issued(harness, "bitstamp") > 0, "seq2seq forecasts")
    before = newest(harness, "bitstamp")

    def down() -> None:  # a tick fails while the server is down: logged, the daemon stays
        harness.wait_for(lambda: "tick skipped" in harness.log(), "a tick to fail")

    restart(directory, while_down=down)
    harness.wait_for(lambda: newest(harness, "bitstamp") > before + 5 * MINUTE
                     and issued(harness, "bitstamp") > before + 5 * MINUTE,
                     "candles and forecasts after the restart")
    assert p.poll() is None, harness.log()[-3000:]
    assert harness.stop(p) == 0
    log = harness.log()
    assert "lost the writer lock" in log and "writer lock held again" in log
    assert re.search(r"tick skipped: .*database server unavailable", log), log[-3000:]
    assert "Traceback" not in log, log[-3000:]
    assert_no_holes(str(harness.db), exchange="bitstamp")
    assert no_duplicate_forecasts(harness.db)
    # Every tick's forecasts are whole: a model forecast at an issue time for both symbols
    # and every horizon (a tick's forecasts commit in one transaction).
    sizes = {n for (n,) in harness.query(
        "select count(*) from forecasts where exchange = 'bitstamp' group by issued_ts, model")}
    assert sizes == {2 * 3}, sizes


def test_kill_9_then_a_restart_in_an_empty_directory_serves_the_stored_model(
        harness: DaemonHarness, tmp_path: Path) -> None:
    first = harness.start()
    harness.wait_for(lambda: issued(harness, "bitstamp") > 0, "seq2seq forecasts")
    first.send_signal(signal.SIGKILL)
    first.wait(60)
    version, issued_before = harness.query(
        "select model_version, issued_ts from forecasts where model = 'seq2seq' "
        "order by issued_ts desc limit 1")[0]
    accepted = harness.query("select model_version from training_runs where status = "
                             "'accepted' and model = 'seq2seq' order by id desc limit 1")[0][0]
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    second = harness.start(cwd=empty)
    harness.wait_for(lambda: issued(harness, "bitstamp") > issued_before,
                     "forecasts after the restart")
    first_new = harness.query(
        "select distinct model_version from forecasts where model = 'seq2seq' and issued_ts = "
        f"(select min(issued_ts) from forecasts where model = 'seq2seq' and issued_ts > "
        f"{issued_before})")
    assert first_new == [(accepted,)], (first_new, accepted, version)
    # Loaded from the store at start-up, before any training in this process.
    assert f"model seq2seq {accepted}" in harness.log(), harness.log()[-2000:]
    assert harness.stop(second) == 0
    assert list(empty.iterdir()) == [], "the daemon wrote into its working directory"
    assert no_duplicate_forecasts(harness.db)
    assert_no_holes(str(harness.db), exchange="bitstamp")


def test_an_unreachable_server_exits_75_and_an_unknown_database_78(
        harness: DaemonHarness, pg_admin_url: str) -> None:
    harness.db = "postgresql://postgres@127.0.0.1:1/none?connect_timeout=3"
    p = harness.start()
    assert p.wait(120) == 75
    assert "database server unavailable" in harness.log()
    harness.db = re.sub(r"/[^/]+$", "/no_such_database", pg_admin_url)
    p = harness.start()
    assert p.wait(120) == 78
    assert 'database "no_such_database" does not exist' in harness.log()


def test_a_daemon_whose_lost_lock_another_took_stops_with_75(harness: DaemonHarness) -> None:
    """The lock's connection is ended by the server (an operator, a network cut); another
    process takes the lock before the daemon can take it back: the daemon stops (75)
    instead of writing beside the new holder."""
    import psycopg

    from storage import StoreBusy, dialect
    from tests.pg_server import _admin_conninfo

    p = harness.start()
    harness.wait_for(lambda: issued(harness, "bitstamp", "naive") > 0, "forecasts")
    url = str(harness.db)
    mine = None
    with psycopg.connect(_admin_conninfo(url), autocommit=True) as admin:
        while mine is None and p.poll() is None:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                          "application_name LIKE %s", (f"tickcast-writer % pid {p.pid}",))
            try:
                mine = dialect.acquire_writer_lock(url, "bitstamp", "1m")
            except StoreBusy:  # the daemon took it back first: end its session again
                continue
    assert mine is not None
    try:
        assert p.wait(120) == 75
    finally:
        mine.release()
    log = harness.log()
    assert "lost the writer lock" in log and "this daemon lost its lock meanwhile" in log
    assert re.search(rf"\(host \S+ pid {os.getpid()}\) already holds bitstamp 1m", log), \
        log[-2000:]
