"""Backfill and polling through real ccxt against the local exchange emulator."""

from __future__ import annotations

import gc
import logging
import sqlite3
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from daemon.commands.backfill import Span, backfill
from daemon.core.clock import iso
from daemon.core.series import Series
from daemon.pipeline.ingest import poll
from daemon.pipeline.source import RetryLater
from daemon.sources.exchange import CcxtSource
from storage import Store, candles
from tests.emulator import Candle, ExchangeEmulator, hourly_onto_minutes, load_csv
from tests.helpers import GAPPY_MINUTES, MINUTE, T0, emulator_config, wait_until

SYMBOLS = ["BTC/USD", "BTC/EUR"]
SERIES = Series("bitstamp", tuple(SYMBOLS), "1m")


def stored(db: Path, symbol: str) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute("select ts, open, high, low, close, volume from candles "
                           "where symbol = ? order by ts", (symbol,)).fetchall()
    finally:
        con.close()


def assert_complete(db: Path, emu: ExchangeEmulator) -> None:
    for s in SYMBOLS:
        want = [tuple(c) for c in emu.closed_candles(s)]
        got = stored(db, s)
        assert len(got) == len(want), s
        assert got == want, s


@pytest.mark.parametrize("exchange", ["bitstamp", "kraken"])
def test_backfill_stores_exactly_the_closed_candles_and_a_rerun_adds_nothing(
        tmp_path: Path, emulator: ExchangeEmulator, cli: Any, exchange: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = emulator_config(tmp_path, emulator, exchange)
    db = tmp_path / "t.db"
    assert cli("--config", str(cfg), "--db", str(db), "backfill", "--since", "2024-01-01") == 0
    assert_complete(db, emulator)
    assert len(stored(db, "BTC/USD")) > 4000
    assert "8638 candles stored, 0 rejected" in capsys.readouterr().out
    # The open candle (partial values) was seen but never stored.
    open_c = emulator.open_candle("BTC/USD")
    assert open_c is not None and open_c[0] not in {r[0] for r in stored(db, "BTC/USD")}
    before = emulator.request_count()
    assert cli("--config", str(cfg), "--db", str(db), "backfill") == 0
    assert "0 candles stored" in capsys.readouterr().out
    assert_complete(db, emulator)
    assert emulator.request_count() - before <= 6  # resumed from the store, no re-download


def test_backfill_with_ten_percent_of_requests_faulted_still_ends_complete(
        tmp_path: Path, emulator: ExchangeEmulator, cli: Any) -> None:
    emulator.seed(7)
    emulator.timeout_s = 0.6
    kinds = ["http429", "http500", "http502", "http503", "http504", "timeout", "drop",
             "malformed", "empty", "garbage", "error_payload"]
    for k in kinds:
        emulator.add_fault(k, probability=0.10 / len(kinds))
    cfg = emulator_config(tmp_path, emulator, exchange={"timeout_ms": 400, "max_retries": 10})
    db = tmp_path / "t.db"
    assert cli("--config", str(cfg), "--db", str(db), "backfill", "--since", "2024-01-01") == 0
    assert_complete(db, emulator)
    faulted = [r for r in emulator.requests if r.fault]
    assert faulted, "the fault injection did not fire; the test proves nothing"


def test_a_hole_cut_into_the_store_is_found_and_refetched(
        tmp_path: Path, emulator: ExchangeEmulator, cli: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    cfg = emulator_config(tmp_path, emulator)
    db = tmp_path / "t.db"
    assert cli("--config", str(cfg), "--db", str(db), "backfill", "--since", "2024-01-01") == 0
    con = sqlite3.connect(db)
    cut = con.execute("delete from candles where symbol = 'BTC/EUR' and ts >= ? and ts < ?",
                      (T0 + 1000 * MINUTE, T0 + 1100 * MINUTE)).rowcount
    con.commit()
    con.close()
    assert cut == 100
    caplog.set_level(logging.INFO)
    assert cli("--config", str(cfg), "--db", str(db), "backfill") == 0
    assert "refetching hole" in caplog.text
    assert_complete(db, emulator)


def test_an_outage_leaves_no_hole_after_recovery(tmp_path: Path, emulator: ExchangeEmulator,
                                                 cli: Any) -> None:
    db = tmp_path / "t.db"
    start = T0 + 2000 * MINUTE
    emulator.set_now(start + 30_000)
    cfg = emulator_config(tmp_path, emulator, exchange={"max_retries": 2})
    assert cli("--config", str(cfg), "--db", str(db), "backfill", "--since", "2024-01-01") == 0
    emulator.add_fault("http503")  # the exchange goes down for 90 minutes
    emulator.advance(90 * MINUTE)
    cfg = emulator_config(tmp_path, emulator, exchange={"max_retries": 2})
    assert cli("--config", str(cfg), "--db", str(db), "backfill") == 75  # temporary failure
    emulator.clear_faults()
    emulator.advance(5 * MINUTE)
    cfg = emulator_config(tmp_path, emulator, exchange={"max_retries": 2})
    assert cli("--config", str(cfg), "--db", str(db), "backfill") == 0
    assert_complete(db, emulator)
    s = Store(str(db))
    with s.read() as conn:
        for sym in SYMBOLS:
            assert candles.gaps(conn, "bitstamp", sym, "1m", MINUTE) == []


def test_polling_after_an_outage_resumes_from_the_store(tmp_path: Path,
                                                        emulator: ExchangeEmulator) -> None:
    """The daemon's tick path: each poll fetches everything closed since the newest stored."""
    s = Store(str(tmp_path / "p.db"))
    now = T0 + 1500 * MINUTE + 10_000
    s.open(now)
    emulator.set_now(now)
    src = CcxtSource("bitstamp", api_url=emulator.base_url, rate_limit=False, max_retries=1,
                     backoff_max_s=0.01, timeout_ms=1000)
    for sym in SYMBOLS:
        poll(s, src, SERIES, sym, now, history=1500)
    emulator.add_fault("drop")
    for _ in range(3):  # three ticks during the outage
        emulator.advance(MINUTE)
        with pytest.raises(RetryLater):
            poll(s, src, SERIES, "BTC/USD", emulator.now_ms(), history=1500)
    emulator.clear_faults()
    emulator.advance(MINUTE)
    for sym in SYMBOLS:
        stats = poll(s, src, SERIES, sym, emulator.now_ms(), history=1500)
    assert stats.stored == 4
    with s.read() as conn:
        for sym in SYMBOLS:
            got = candles.range_rows(conn, "bitstamp", sym, "1m", 0, 2**62)
            assert got == [tuple(c) for c in emulator.closed_candles(sym)][-len(got):]
            assert candles.gaps(conn, "bitstamp", sym, "1m", MINUTE) == []


@pytest.mark.parametrize("kind,reason", [
    ("nan", "close is missing or not finite"),
    ("inf", "high is missing or not finite"),
    ("negative", "low is not positive"),
    ("zero", "open is not positive"),
    ("high_lt_low", "high < low"),
    ("negative_volume", "volume is negative"),
    ("off_grid", "not on the 60000 ms grid"),
    ("duplicate", "duplicate timestamp with different values"),
])
def test_every_bad_candle_kind_is_rejected_with_a_reason_and_neighbours_kept(
        tmp_path: Path, emulator: ExchangeEmulator, cli: Any,
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
        kind: str, reason: str) -> None:
    bad_ts = T0 + 2500 * MINUTE
    emulator.corrupt("BTC/USD", bad_ts, kind)
    cfg = emulator_config(tmp_path, emulator)
    db = tmp_path / "t.db"
    caplog.set_level(logging.WARNING)
    assert cli("--config", str(cfg), "--db", str(db), "backfill", "--since", "2024-01-01") == 0
    assert reason in caplog.text
    assert "rejected" in caplog.text
    got = {r[0]: r for r in stored(db, "BTC/USD")}
    assert bad_ts not in got
    truth = {c[0]: tuple(c) for c in emulator.closed_candles("BTC/USD")}
    for t in (bad_ts - MINUTE, bad_ts + MINUTE):
        assert got[t] == truth[t]
    assert len(got) == len(truth) - 1
    out = capsys.readouterr().out
    assert "1 gaps left (1 candles)" in out
    # Once the exchange serves the candle correctly, the next backfill repairs the hole.
    emulator.uncorrupt_all()
    assert cli("--config", str(cfg), "--db", str(db), "backfill") == 0
    assert_complete(db, emulator)


def test_out_of_order_answers_are_sorted_not_lost(tmp_path: Path, emulator: ExchangeEmulator,
                                                  cli: Any) -> None:
    emulator.corrupt("BTC/EUR", T0 + 700 * MINUTE, "out_of_order")
    cfg = emulator_config(tmp_path, emulator)
    db = tmp_path / "t.db"
    assert cli("--config", str(cfg), "--db", str(db), "backfill", "--since", "2024-01-01") == 0
    assert_complete(db, emulator)


def test_no_trade_minutes_are_remembered_as_checked(tmp_path: Path, cli: Any,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Real Coinbase minutes omit minutes without trades: they are not refetched forever."""
    data = {s: load_csv(p) for s, p in GAPPY_MINUTES.items()}
    now = data["BTC/USD"][-1][0] + MINUTE + 5_000
    since = data["BTC/EUR"][0][0]
    with ExchangeEmulator(data, now_ms=now) as emu:
        cfg = emulator_config(tmp_path, emu, "kraken")
        db = tmp_path / "g.db"
        assert cli("--config", str(cfg), "--db", str(db), "backfill", "--since", iso(since)) == 0
        for s in SYMBOLS:
            want = [tuple(c) for c in emu.closed_candles(s) if c[0] >= since]
            assert stored(db, s) == want
        con = sqlite3.connect(db)
        n_empty = con.execute("select count(*) from empty_candles").fetchone()[0]
        con.close()
        assert n_empty > 500  # the thin EUR market alone misses hundreds of minutes
        capsys.readouterr()
        before = emu.request_count()
        assert cli("--config", str(cfg), "--db", str(db), "backfill") == 0
        assert emu.request_count() - before <= 8
        assert "0 candles stored" in capsys.readouterr().out


@pytest.mark.parametrize("setup,message", [
    ("auth", "refused"),
    ("symbol", "exchange.symbols"),
])
def test_errors_that_retrying_cannot_fix_exit_78(tmp_path: Path, emulator: ExchangeEmulator,
                                                 cli: Any, caplog: pytest.LogCaptureFixture,
                                                 setup: str, message: str) -> None:
    extra: dict[str, Any] = {}
    if setup == "auth":
        emulator.add_fault("error_auth", path="OHLC")
    else:
        extra = {"symbols": ["BTC/USD", "DOGE/USD"]}
    cfg = emulator_config(tmp_path, emulator, "kraken", exchange=extra)
    assert cli("--config", str(cfg), "--db", str(tmp_path / "x.db"), "backfill") == 78
    assert message in caplog.text


def test_a_stop_request_interrupts_the_backoff(emulator: ExchangeEmulator) -> None:
    from daemon.pipeline.source import Stopping

    stop = threading.Event()
    src = CcxtSource("bitstamp", api_url=emulator.base_url, rate_limit=False, max_retries=50,
                     backoff_max_s=30, timeout_ms=500, stop=stop)
    emulator.add_fault("http503")
    raised: list[BaseException] = []

    def fetch() -> None:
        try:
            src.fetch_closed(SERIES, "BTC/USD", T0, None, emulator.now_ms(), lambda part: None)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            raised.append(e)

    t = threading.Thread(target=fetch)
    t.start()
    # Stop once the source is retrying: 50 retries of up to 30 s would take half an hour.
    wait_until(lambda: emulator.request_count() >= 2, "the source to be retrying")
    stop.set()
    t.join(120)
    assert not t.is_alive(), "the stop request did not interrupt the backoff"
    assert len(raised) == 1 and isinstance(raised[0], Stopping), raised



class _HeldBetweenPages:
    """A candle source that notes the Python heap (tracemalloc, after a garbage collection)
    each time a page has been stored: what a fetch holds between its pages."""

    def __init__(self, src: CcxtSource) -> None:
        self.src, self.exchange = src, src.exchange
        self.held: list[int] = []

    def fetch_closed(self, series: Series, symbol: str, since_ms: int, until_ms: int | None,
                     now_ms: int, on_page: Any, **kw: Any) -> Any:
        def stored(part: Any) -> None:
            on_page(part)
            gc.collect()
            self.held.append(tracemalloc.get_traced_memory()[0])

        return self.src.fetch_closed(series, symbol, since_ms, until_ms, now_ms, stored, **kw)


def _held_between_pages(tmp_path: Path, rows: list[Candle], name: str) -> list[int]:
    """Bytes of the Python heap, above its level at the start, after each stored page of a
    backfill of `rows` (one symbol) from an emulator."""
    series = Series("bitstamp", ("BTC/USD",), "1m")
    with ExchangeEmulator({"BTC/USD": rows}) as emu:  # its clock: just after the data
        src = _HeldBetweenPages(CcxtSource("bitstamp", api_url=emu.base_url, rate_limit=False))
        src.src.load_markets(series.symbols)
        store = Store(str(tmp_path / f"{name}.db"))
        store.open(emu.now_ms())
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            (summary,) = backfill(store, src, series, Span(rows[0][0], None, emu.now_ms(), 0))
        finally:
            tracemalloc.stop()
            store.close()
    assert summary.stats.stored == len(rows) and summary.gaps_left == 0
    assert len(src.held) == summary.stats.pages
    return [h - base for h in src.held]


def test_a_long_backfill_holds_one_page_at_a_time(tmp_path: Path,
                                                  hourly: dict[str, list[Candle]]) -> None:
    """Memory flat in the number of pages: each page is validated, stored and forgotten,
    so a backfill of four times the pages holds no more between its pages. (Keeping the
    rows would add about 250 bytes a candle, 250 kB a page: over 3 MB more after the
    longer backfill. SQLite's own page cache is outside the Python heap tracemalloc sees.)"""
    page = CcxtSource("bitstamp").page_limit
    real = hourly["BTC/USD"]

    def history(pages: int) -> list[Candle]:
        return hourly_onto_minutes(real[:pages * (page - 1)], T0)

    _held_between_pages(tmp_path, history(4), "warm-up")  # imports, caches, statements
    short = _held_between_pages(tmp_path, history(4), "short")
    long = _held_between_pages(tmp_path, history(16), "long")
    assert (len(short), len(long)) == (4, 16)
    assert long[-1] < 1.5 * short[-1], \
        f"held after each page (kB): {[h // 1000 for h in short]}, {[h // 1000 for h in long]}"
