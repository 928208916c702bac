"""Self-tests of the exchange emulator, driven through real ccxt bitstamp/kraken clients over HTTP."""
from __future__ import annotations

import json
import math
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import ccxt
import pytest

from tests.emulator import (
    CORRUPTION_KINDS,
    Candle,
    ExchangeEmulator,
    ccxt_client,
    hourly_onto_minutes,
    load_csv,
)
from tests.helpers import GAPPY_MINUTES, HOURLY, MINUTE, wait_until

MINUTE_FILES = GAPPY_MINUTES
HOURLY_USD = HOURLY["BTC/USD"]
EXCHANGES = ["bitstamp", "kraken"]
OHLC_PATH = {"bitstamp": "/ohlc/", "kraken": "/OHLC"}
# How far one since-only request reaches: bitstamp asks for a 1000-step window, kraken returns 720 rows.
WINDOW_MS = {"bitstamp": 1000 * 60_000, "kraken": 720 * 60_000}


def _no_proxy_get(url: str) -> tuple[int, bytes]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read()


@pytest.fixture(scope="module")
def gappy() -> dict[str, list[Candle]]:
    return {symbol: load_csv(path) for symbol, path in MINUTE_FILES.items()}


@pytest.fixture
def emu(gappy: dict[str, list[Candle]]) -> Iterator[ExchangeEmulator]:
    # Mid-candle, so there is an open candle (the USD data has a candle at that minute).
    now = gappy["BTC/USD"][-10][0] + 30_000
    with ExchangeEmulator(gappy, now_ms=now) as emulator:
        yield emulator
    assert emulator.internal_errors == []


@pytest.fixture(params=EXCHANGES)
def client(request: pytest.FixtureRequest, emu: ExchangeEmulator) -> Iterator[ccxt.Exchange]:
    exchange = ccxt_client(request.param, emu.base_url)
    yield exchange
    exchange.close()


def _page_all(ex: ccxt.Exchange, symbol: str, since: int, now: int) -> list[list[Any]]:
    out: list[list[Any]] = []
    while since <= now:
        batch = ex.fetch_ohlcv(symbol, "1m", since=since)
        if batch:
            out.extend(batch)
            since = batch[-1][0] + MINUTE
        else:
            # Bitstamp answers per fixed window, so a long trade-less stretch yields [] although later data exists.
            since += WINDOW_MS[ex.id]
    return out


def _true_candle(data: list[Candle], ts: int) -> Candle:
    return next(c for c in data if c[0] == ts)


# ---------------------------------------------------------------------------------------------- plumbing
def test_ccxt_client_rewrites_only_scheme_and_host() -> None:
    b = ccxt_client("bitstamp", "http://127.0.0.1:9")
    k = ccxt_client("kraken", "http://127.0.0.1:9")
    try:
        assert b.urls["api"]["public"] == "http://127.0.0.1:9/api"
        assert k.urls["api"]["public"] == "http://127.0.0.1:9"
        assert k.urls["api"]["zendesk"].startswith("http://127.0.0.1:9/api/v2/help_center")
        assert b.enableRateLimit is False and b.timeout == 2000
        pristine = ccxt.kraken()
        assert pristine.urls["api"]["public"] == "https://api.kraken.com"
        pristine.close()
    finally:
        b.close()
        k.close()


def test_load_markets(client: ccxt.Exchange) -> None:
    client.load_markets()
    assert {"BTC/USD", "BTC/EUR"} <= set(client.symbols)
    ids = {"bitstamp": ("btcusd", "btceur"), "kraken": ("XXBTZUSD", "XXBTZEUR")}[client.id]
    assert (client.market("BTC/USD")["id"], client.market("BTC/EUR")["id"]) == ids


def test_unknown_path_is_404_json(emu: ExchangeEmulator) -> None:
    for path in ("/nope", "/api/v2/nope/", "/0/public/Nope"):
        status, body = _no_proxy_get(emu.base_url + path)
        answer = json.loads(body)
        assert status == 404
        assert answer.get("status") == "error" or answer["error"]
    assert [r.status for r in emu.requests] == [404, 404, 404]


def test_request_records_show_how_ccxt_builds_ohlc_requests(client: ccxt.Exchange, emu: ExchangeEmulator,
                                                            gappy: dict[str, list[Candle]]) -> None:
    since = gappy["BTC/USD"][100][0]
    client.fetch_ohlcv("BTC/USD", "1m", since=since)
    rec = emu.requests[-1]
    if client.id == "bitstamp":
        assert rec.path == "/api/v2/ohlc/btcusd/"
        s = since // 1000
        assert rec.query == {"step": "60", "start": str(s), "end": str(s + 1000 * 60 - 1), "limit": "1000"}
    else:
        assert rec.path == "/0/public/OHLC"
        assert rec.query == {"pair": "XXBTZUSD", "interval": "1", "since": str(since // 1000 - 60)}
    assert rec.status == 200 and rec.fault is None and rec.symbol == "BTC/USD"
    assert emu.request_count(OHLC_PATH[client.id]) == 1


# ---------------------------------------------------------------------------------------------- candles
def test_paging_returns_exactly_the_true_candles_plus_open_one(client: ccxt.Exchange, emu: ExchangeEmulator,
                                                               gappy: dict[str, list[Candle]]) -> None:
    now = emu.now_ms()
    floor = now - now % MINUTE
    for symbol, data in gappy.items():
        rows = _page_all(client, symbol, data[0][0], now)
        closed = emu.closed_candles(symbol)
        assert len(closed) > 3000
        assert [tuple(r) for r in rows if r[0] < floor] == closed
        if symbol == "BTC/USD":
            last = rows[-1]
            assert last[0] == floor and len(rows) == len(closed) + 1
            true = _true_candle(data, floor)
            assert last[4] != true[4] and tuple(last) != true
            assert tuple(last) == emu.open_candle(symbol)


def test_open_candle_becomes_final_after_advance(client: ccxt.Exchange, emu: ExchangeEmulator,
                                                 gappy: dict[str, list[Candle]]) -> None:
    data = gappy["BTC/USD"]
    open_ts = data[-10][0]
    before = client.fetch_ohlcv("BTC/USD", "1m", since=open_ts)
    assert [r[0] for r in before] == [open_ts]
    emu.advance(MINUTE)
    after = client.fetch_ohlcv("BTC/USD", "1m", since=open_ts)
    assert tuple(after[0]) == data[-10] != tuple(before[0])
    assert emu.closed_candles("BTC/USD")[-1] == data[-10]


def test_open_candle_never_has_the_final_close(gappy: dict[str, list[Candle]]) -> None:
    emu = ExchangeEmulator(gappy)
    for c in gappy["BTC/EUR"][:500]:
        emu.set_now(c[0] + 1)
        partial = emu.open_candle("BTC/EUR")
        assert partial is not None and partial[0] == c[0] and partial[4] != c[4]


def test_default_clock_is_after_the_data(gappy: dict[str, list[Candle]]) -> None:
    emu = ExchangeEmulator(gappy)
    assert emu.closed_candles("BTC/USD") == gappy["BTC/USD"]
    assert emu.open_candle("BTC/USD") is None


def test_callable_clock_drives_visibility(gappy: dict[str, list[Candle]]) -> None:
    data = gappy["BTC/USD"]
    clock = [data[50][0]]
    emu = ExchangeEmulator(gappy, now_ms=lambda: clock[0])
    assert emu.closed_candles("BTC/USD") == data[:50]
    clock[0] = data[60][0]
    assert emu.closed_candles("BTC/USD") == data[:60]
    emu.set_now(data[10][0])  # a fixed clock replaces the callable
    clock[0] = data[70][0]
    assert emu.closed_candles("BTC/USD") == data[:10]


def test_remove_makes_a_hole(client: ccxt.Exchange, emu: ExchangeEmulator, gappy: dict[str, list[Candle]]) -> None:
    data = gappy["BTC/USD"]
    t0 = data[200][0]
    removed = [c for c in data if t0 <= c[0] < t0 + 5 * MINUTE]
    before = emu.closed_candles("BTC/USD")
    emu.remove("BTC/USD", t0, t0 + 5 * MINUTE)
    rows = client.fetch_ohlcv("BTC/USD", "1m", since=data[190][0], limit=50)
    assert rows and not [r for r in rows if t0 <= r[0] < t0 + 5 * MINUTE]
    assert [tuple(r) for r in rows] == [c for c in before if c not in removed and c[0] >= data[190][0]][:len(rows)]
    assert emu.closed_candles("BTC/USD") == [c for c in before if c not in removed]


def test_limit_without_since_returns_latest_including_open(client: ccxt.Exchange, emu: ExchangeEmulator) -> None:
    rows = client.fetch_ohlcv("BTC/USD", "1m", limit=10)
    closed = emu.closed_candles("BTC/USD")
    assert [tuple(r) for r in rows[:-1]] == closed[-9:]
    assert tuple(rows[-1]) == emu.open_candle("BTC/USD")


def test_since_with_limit(client: ccxt.Exchange, gappy: dict[str, list[Candle]]) -> None:
    data = gappy["BTC/EUR"]
    rows = client.fetch_ohlcv("BTC/EUR", "1m", since=data[300][0], limit=5)
    if client.id == "bitstamp":
        # bitstamp asks for a window of `limit` steps, so holes in it mean fewer rows
        assert [tuple(r) for r in rows] == [c for c in data if data[300][0] <= c[0] < data[300][0] + 5 * MINUTE]
    else:
        assert [tuple(r) for r in rows] == data[300:305]


def test_kraken_recent_only_ignores_since(gappy: dict[str, list[Candle]]) -> None:
    data = gappy["BTC/USD"]
    now = data[-1][0] + 10_000
    with ExchangeEmulator(gappy, now_ms=now, kraken_recent_only=True) as emu:
        ex = ccxt_client("kraken", emu.base_url)
        rows = ex.fetch_ohlcv("BTC/USD", "1m", since=data[0][0])
        ex.close()
    assert rows[0][0] > data[-1][0] - 720 * MINUTE and len(rows) <= 720
    assert [tuple(r) for r in rows[:-1]] == [c for c in data if c[0] > data[-1][0] - 720 * MINUTE][:-1]
    assert rows[-1][0] == data[-1][0] and tuple(rows[-1]) != data[-1]


@pytest.mark.parametrize("exchange_id", EXCHANGES)
def test_hourly_timeframe(exchange_id: str) -> None:
    hourly = load_csv(HOURLY_USD)[:1500]
    now = hourly[1200][0] + 1_800_000
    with ExchangeEmulator({"BTC/USD": hourly}, timeframe_ms=3_600_000, now_ms=now) as emu:
        ex = ccxt_client(exchange_id, emu.base_url)
        rows = ex.fetch_ohlcv("BTC/USD", "1h", since=hourly[700][0])
        with pytest.raises(ccxt.ExchangeError):
            ex.fetch_ohlcv("BTC/USD", "1m", since=hourly[700][0])  # step != emulated timeframe
        ex.close()
    assert [tuple(r) for r in rows[:-1]] == hourly[700:1200]
    assert rows[-1][0] == hourly[1200][0] and tuple(rows[-1]) != hourly[1200]


def test_step_mismatch_is_an_error(client: ccxt.Exchange) -> None:
    expected = ccxt.BadRequest if client.id == "kraken" else ccxt.ExchangeError
    with pytest.raises(expected):
        client.fetch_ohlcv("BTC/USD", "5m")


def test_ticker_last_is_last_closed_close(client: ccxt.Exchange, emu: ExchangeEmulator) -> None:
    for symbol in ("BTC/USD", "BTC/EUR"):
        assert client.fetch_ticker(symbol)["last"] == emu.closed_candles(symbol)[-1][4]


# ---------------------------------------------------------------------------------------------- faults
RAISES: dict[tuple[str, str], type[Exception]] = {
    ("bitstamp", "http429"): ccxt.RateLimitExceeded, ("kraken", "http429"): ccxt.DDoSProtection,
    **{(e, f"http{c}"): ccxt.ExchangeNotAvailable for e in EXCHANGES for c in (500, 502, 503)},
    **{(e, "http504"): ccxt.RequestTimeout for e in EXCHANGES},
    **{(e, "drop"): ccxt.NetworkError for e in EXCHANGES},
    **{(e, "error_auth"): ccxt.AuthenticationError for e in EXCHANGES},
    ("bitstamp", "error_payload"): ccxt.ExchangeError, ("kraken", "error_payload"): ccxt.ExchangeNotAvailable,
    # ccxt's bitstamp exceptions table has no BadSymbol entry
    ("bitstamp", "error_badsymbol"): ccxt.ExchangeError, ("kraken", "error_badsymbol"): ccxt.BadSymbol,
    # bitstamp's own JSON error body wins over the HTTP status in ccxt's handle_errors
    ("bitstamp", "error_ratelimit"): ccxt.ExchangeError, ("kraken", "error_ratelimit"): ccxt.DDoSProtection,
}


@pytest.mark.parametrize(("exchange_id", "kind"), sorted(RAISES))
def test_fault_raises_exact_ccxt_class(exchange_id: str, kind: str, emu: ExchangeEmulator,
                                       gappy: dict[str, list[Candle]]) -> None:
    ex = ccxt_client(exchange_id, emu.base_url)
    ex.load_markets()
    since = gappy["BTC/USD"][0][0]
    emu.add_fault(kind, times=1, path=OHLC_PATH[exchange_id])
    with pytest.raises(RAISES[(exchange_id, kind)]) as info:
        ex.fetch_ohlcv("BTC/USD", "1m", since=since)
    assert type(info.value) is RAISES[(exchange_id, kind)]
    assert ex.fetch_ohlcv("BTC/USD", "1m", since=since)  # times=1: the next request is served normally
    assert [r.fault for r in emu.requests if r.fault] == [kind]
    ex.close()


@pytest.mark.parametrize("kind", ["empty", "garbage", "malformed"])
def test_silent_faults_return_empty_list(client: ccxt.Exchange, emu: ExchangeEmulator, kind: str,
                                         gappy: dict[str, list[Candle]]) -> None:
    since = gappy["BTC/USD"][0][0]
    client.load_markets()
    emu.add_fault(kind, times=1)
    assert client.fetch_ohlcv("BTC/USD", "1m", since=since) == []
    assert len(client.fetch_ohlcv("BTC/USD", "1m", since=since)) > 500


def test_empty_markets_answer_leaves_ccxt_without_markets(client: ccxt.Exchange, emu: ExchangeEmulator) -> None:
    emu.add_fault("empty", times=2)
    client.load_markets()
    assert client.symbols == []
    with pytest.raises(ccxt.BadSymbol):  # fetch_* only reloads when markets is None, not when empty
        client.fetch_ticker("BTC/USD")


def test_timeout_fault(client: ccxt.Exchange, emu: ExchangeEmulator) -> None:
    client.load_markets()
    client.timeout = 300
    emu.timeout_s = 1.0
    emu.add_fault("timeout", times=1)
    # RequestTimeout itself is the proof: an answer that came in time would not raise it.
    with pytest.raises(ccxt.RequestTimeout):
        client.fetch_ohlcv("BTC/USD", "1m", limit=5)
    assert len(client.fetch_ohlcv("BTC/USD", "1m", limit=5)) == 5


def test_times_n_affects_exactly_n_matching_requests(client: ccxt.Exchange, emu: ExchangeEmulator) -> None:
    client.load_markets()
    emu.add_fault("http500", times=3, path=OHLC_PATH[client.id])
    outcomes: list[bool] = []
    for _ in range(5):
        assert client.fetch_ticker("BTC/USD")["last"]  # path filter: tickers are untouched
        try:
            client.fetch_ohlcv("BTC/USD", "1m", limit=3)
            outcomes.append(True)
        except ccxt.ExchangeNotAvailable:
            outcomes.append(False)
    assert outcomes == [False, False, False, True, True]
    assert sum(1 for r in emu.requests if r.fault == "http500" and r.status == 500) == 3


def test_symbol_filter_and_outage_until_cleared(client: ccxt.Exchange, emu: ExchangeEmulator) -> None:
    client.load_markets()
    emu.add_fault("http503", symbol="BTC/EUR")
    for _ in range(3):
        assert client.fetch_ohlcv("BTC/USD", "1m", limit=2)
        with pytest.raises(ccxt.ExchangeNotAvailable):
            client.fetch_ohlcv("BTC/EUR", "1m", limit=2)
    emu.clear_faults()
    assert client.fetch_ohlcv("BTC/EUR", "1m", limit=2)


def test_faults_checked_in_order_added(client: ccxt.Exchange, emu: ExchangeEmulator) -> None:
    client.load_markets()
    emu.add_fault("http503", times=1)
    emu.add_fault("drop", times=1)
    with pytest.raises(ccxt.ExchangeNotAvailable):
        client.fetch_ohlcv("BTC/USD", "1m", limit=2)
    with pytest.raises(ccxt.NetworkError):
        client.fetch_ohlcv("BTC/USD", "1m", limit=2)
    assert client.fetch_ohlcv("BTC/USD", "1m", limit=2)
    assert [r.status for r in emu.requests[-3:]] == [503, "drop", 200]


def test_probability_is_seeded_and_reproducible(gappy: dict[str, list[Candle]]) -> None:
    patterns: list[list[int]] = []
    for _ in range(2):
        with ExchangeEmulator(gappy) as emu:
            emu.seed(1234)
            emu.add_fault("http502", probability=0.5)
            patterns.append([_no_proxy_get(emu.base_url + "/api/v2/ticker/btcusd/")[0] for _ in range(40)])
    assert patterns[0] == patterns[1]
    assert set(patterns[0]) == {200, 502} and 8 <= patterns[0].count(502) <= 32


def _wait_for_hang(emu: ExchangeEmulator) -> None:
    wait_until(lambda: any(r.status == "hang" for r in emu.requests), "the hung request",
               timeout=60, every=0.01)


def _fetch_in_thread(ex: ccxt.Exchange, outcome: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        try:
            outcome["rows"] = ex.fetch_ohlcv("BTC/USD", "1m", limit=3)
        except Exception as exc:  # the test inspects whatever ccxt raised
            outcome["error"] = exc
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_stop_does_not_wait_for_a_pending_hang(client: ccxt.Exchange, emu: ExchangeEmulator) -> None:
    """The client would wait ten minutes for the hung answer: a stop that waited for it
    could not end within the generous deadline below."""
    client.load_markets()
    client.timeout = 600_000
    emu.add_fault("hang")
    outcome: dict[str, Any] = {}
    thread = _fetch_in_thread(client, outcome)
    _wait_for_hang(emu)
    stopper = threading.Thread(target=emu.stop, daemon=True)
    stopper.start()
    stopper.join(60)
    assert not stopper.is_alive(), "stop waited for the hung request"
    thread.join(60)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), ccxt.NetworkError)


def test_hang_released_by_clear_faults(client: ccxt.Exchange, emu: ExchangeEmulator) -> None:
    client.load_markets()
    client.timeout = 10_000
    emu.add_fault("hang")
    outcome: dict[str, Any] = {}
    thread = _fetch_in_thread(client, outcome)
    _wait_for_hang(emu)  # the emulator holds the request: no answer until it is released
    assert thread.is_alive() and outcome == {}
    emu.clear_faults()
    thread.join(60)
    # Rows, not the client's timeout (10 s): clear_faults() released the held request.
    assert not thread.is_alive() and len(outcome["rows"]) == 3


@pytest.mark.parametrize("exchange_id", EXCHANGES)
def test_rate_limit(exchange_id: str, gappy: dict[str, list[Candle]]) -> None:
    with ExchangeEmulator(gappy, rate_limit_per_s=5) as emu:
        ex = ccxt_client(exchange_id, emu.base_url)  # makes no request: the burst below starts the window
        expected = ccxt.DDoSProtection if exchange_id == "kraken" else ccxt.RateLimitExceeded
        limited = 0
        for _ in range(12):
            try:
                ex.fetch_ticker("BTC/USD")
            except expected:
                limited += 1
        rejected = [r for r in emu.requests if r.status == 429]
        assert limited >= 1 and limited == len(rejected)
        assert all(r.fault == "rate_limit" for r in rejected)

        def answered() -> bool:
            try:
                return ex.fetch_ticker("BTC/USD")["last"] is not None
            except expected:
                return False  # still inside the window; a refused request is not admitted

        # Requests are answered again once the one-second window has passed.
        wait_until(answered, "the rate-limit window to pass", timeout=60, every=0.1)
        assert all(r.fault == "rate_limit" for r in emu.requests if r.status == 429)
        ex.close()


# ---------------------------------------------------------------------------------------------- corruption
def _target(data: list[Candle]) -> int:
    """Index of a candle whose neighbours are one minute away, so every corruption has room to show."""
    return next(i for i in range(400, len(data) - 1)
                if data[i + 1][0] - data[i][0] == MINUTE and data[i][0] - data[i - 1][0] == MINUTE)


@pytest.mark.parametrize("kind", sorted(CORRUPTION_KINDS))
def test_corruption_as_seen_through_ccxt(client: ccxt.Exchange, emu: ExchangeEmulator, kind: str,
                                         gappy: dict[str, list[Candle]]) -> None:
    data = gappy["BTC/USD"]
    i = _target(data)
    t = data[i][0]
    since = data[i - 20][0]
    baseline = client.fetch_ohlcv("BTC/USD", "1m", since=since, limit=60)
    emu.corrupt("BTC/USD", t, kind)
    rows = client.fetch_ohlcv("BTC/USD", "1m", since=since, limit=60)
    true = list(data[i])
    others = [r for r in rows if r[0] not in (t, t + 17_000)]
    assert others == [r for r in baseline if r[0] != t][:len(others)]
    hit = [r for r in rows if r[0] in (t, t + 17_000)]
    checks = {
        "nan": lambda h: len(h) == 1 and math.isnan(h[0][4]) and h[0][:4] == true[:4],
        "inf": lambda h: len(h) == 1 and h[0][2] == math.inf,
        "negative": lambda h: len(h) == 1 and h[0][3] < 0,
        "zero": lambda h: len(h) == 1 and h[0][1] == 0.0,
        "high_lt_low": lambda h: len(h) == 1 and h[0][2] < h[0][3],
        "negative_volume": lambda h: len(h) == 1 and h[0][5] < 0,
        "duplicate": lambda h: len(h) == 2 and h[0] == true and h[1][4] != true[4] and h[1][:4] == true[:4],
        "off_grid": lambda h: len(h) == 1 and h[0] == [t + 17_000, *true[1:]],
        "out_of_order": lambda h: h == [true] and rows == baseline,  # ccxt sorts: invisible
    }
    assert checks[kind](hit), hit
    assert tuple(emu.closed_candles("BTC/USD")[i]) == data[i]  # the truth is untouched
    emu.uncorrupt_all()
    assert client.fetch_ohlcv("BTC/USD", "1m", since=since, limit=60) == baseline


def test_out_of_order_is_visible_in_the_raw_answer(emu: ExchangeEmulator, gappy: dict[str, list[Candle]]) -> None:
    data = gappy["BTC/USD"]
    i = _target(data)
    emu.corrupt("BTC/USD", data[i][0], "out_of_order")
    s = data[i - 2][0] // 1000
    _, body = _no_proxy_get(f"{emu.base_url}/api/v2/ohlc/btcusd/?step=60&start={s}&end={s + 299}&limit=5")
    stamps = [int(r["timestamp"]) * 1000 for r in json.loads(body)["data"]["ohlc"]]
    assert stamps == [data[i - 2][0], data[i - 1][0], data[i + 1][0], data[i][0], data[i + 2][0]]


def test_corrupt_rejects_unknown_candle_and_kind(emu: ExchangeEmulator, gappy: dict[str, list[Candle]]) -> None:
    with pytest.raises(ValueError):
        emu.corrupt("BTC/USD", gappy["BTC/USD"][0][0] + 1, "nan")
    with pytest.raises(ValueError):
        emu.corrupt("BTC/USD", gappy["BTC/USD"][0][0], "bogus")
    with pytest.raises(ValueError):
        emu.add_fault("bogus")


# ---------------------------------------------------------------------------------------------- data helpers
def test_load_csv_and_hourly_onto_minutes() -> None:
    hourly = load_csv(HOURLY_USD)
    assert len(hourly) > 27_000
    assert all(b[0] - a[0] == 3_600_000 for a, b in zip(hourly, hourly[1:], strict=False))
    start = 1_609_459_200_000
    minutes = hourly_onto_minutes(hourly[:5000], start)
    assert [c[0] for c in minutes] == [start + k * MINUTE for k in range(5000)]
    assert [c[1:] for c in minutes] == [c[1:] for c in hourly[:5000]]
    with pytest.raises(ValueError):
        hourly_onto_minutes(hourly[:5], start + 1)
