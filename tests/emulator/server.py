"""A local HTTP exchange that speaks the public REST dialects ccxt's ``bitstamp`` and ``kraken`` use.

Standard library only, so it can also run inside a daemon's test subprocess without extra
dependencies.  Bitstamp lives under ``/api/v2/...`` and Kraken under ``/0/public/...``; both are
served by the same instance from the same candle set.

After ccxt parsing (``fetch_ohlcv`` rows ``[ts_ms, o, h, l, c, v]``, sorted by ts, filtered to
``ts >= since``), the corruptions from :meth:`ExchangeEmulator.corrupt` look like this:

* ``nan``             close is ``float('nan')`` (served as the string ``"NaN"``)
* ``inf``             high is ``float('inf')`` (served as the string ``"1e309"``)
* ``negative``        low is negative
* ``zero``            open is ``0.0``
* ``high_lt_low``     high < low (the two are swapped; nudged apart when equal)
* ``negative_volume`` volume is negative
* ``duplicate``       two rows with the same ts; the first is true, the second has another close
* ``off_grid``        the row's ts is the true ts + 17 000 ms; no row at the true ts
* ``out_of_order``    INVISIBLE after ccxt: ``parse_ohlcvs`` sorts by ts; only the raw JSON shows it

Faults from :meth:`ExchangeEmulator.add_fault`, as ccxt 4.5 reports them (bitstamp / kraken):

* ``http429``         RateLimitExceeded (HTML body) / DDoSProtection (``EAPI:Rate limit exceeded`` body)
* ``http500/502/503`` ExchangeNotAvailable;  ``http504``: RequestTimeout (ccxt's HTTP-status table)
* ``timeout``         RequestTimeout when the client timeout < ``timeout_s``, else a normal answer
* ``hang``            RequestTimeout at the client timeout; NetworkError if stop() closes it first;
                      a normal answer if clear_faults() releases it first
* ``drop``            NetworkError (connection closed without a status line)
* ``malformed``       no exception: fetch_ohlcv returns [] (ccxt swallows the JSON error), ticker fields None,
                      load_markets ends with no markets
* ``empty``           no exception: fetch_ohlcv returns [], ticker fields None, load_markets ends with no markets
* ``garbage``         like ``empty``, except bitstamp's load_markets raises ExchangeError (parseCurrencies)
* ``error_payload``   ExchangeError / ExchangeNotAvailable (``EGeneral:Internal error`` is mapped so)
* ``error_badsymbol`` ExchangeError (bitstamp's table has no BadSymbol entry) / BadSymbol
* ``error_auth``      AuthenticationError / AuthenticationError
* ``error_ratelimit`` ExchangeError (HTTP 400, bitstamp code 400.002) / DDoSProtection
"""
from __future__ import annotations

import bisect
import json
import math
import random
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Candle = tuple[int, float, float, float, float, float]

FAULT_KINDS = frozenset({
    "http429", "http500", "http502", "http503", "http504", "timeout", "hang", "drop",
    "malformed", "empty", "garbage", "error_payload", "error_badsymbol", "error_auth",
    "error_ratelimit",
})
CORRUPTION_KINDS = frozenset({
    "nan", "negative", "zero", "high_lt_low", "duplicate", "out_of_order", "off_grid",
    "negative_volume", "inf",
})

# (base, quote, bitstamp id, kraken id, kraken altname, description); ETH/USD is listed so that
# clients are exercised with more than the two markets they care about.
_MARKETS: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("BTC", "USD", "btcusd", "XXBTZUSD", "XBTUSD", "Bitcoin / U.S. dollar"),
    ("BTC", "EUR", "btceur", "XXBTZEUR", "XBTEUR", "Bitcoin / Euro"),
    ("ETH", "USD", "ethusd", "XETHZUSD", "ETHUSD", "Ether / U.S. dollar"),
)
_KRAKEN_ASSETS = {"BTC": ("XXBT", "XBT", 10), "ETH": ("XETH", "ETH", 10),
                  "USD": ("ZUSD", "USD", 4), "EUR": ("ZEUR", "EUR", 4)}
_BITSTAMP_SYMBOL = {m[2]: f"{m[0]}/{m[1]}" for m in _MARKETS}
_KRAKEN_SYMBOL = {m[3]: f"{m[0]}/{m[1]}" for m in _MARKETS}
_KRAKEN_CANONICAL = {**{m[3]: m[3] for m in _MARKETS}, **{m[4]: m[3] for m in _MARKETS}}

_BITSTAMP_OHLC = re.compile(r"^/api/v2/ohlc/([^/]+)/?$")
_BITSTAMP_TICKER = re.compile(r"^/api/v2/ticker/([^/]+)/?$")
_BITSTAMP_MARKETS = re.compile(r"^/api/v2/(markets|trading-pairs-info)/?$")

_BITSTAMP_MAX_LIMIT = 1000
_KRAKEN_MAX_ROWS = 720
_POLL_S = 0.05
_SERVE_POLL_S = 0.01  # short, because shutdown() waits for the serve loop's next poll


@dataclass
class RequestRecord:
    wall: float                 # time.time() at arrival
    mono: float                 # time.monotonic() at arrival
    path: str
    query: dict[str, str]
    status: int | str           # HTTP status sent, or 'drop' / 'hang'
    fault: str | None           # fault kind applied ('rate_limit' for the built-in limiter)
    symbol: str | None


@dataclass
class _Fault:
    kind: str
    times: int | None
    probability: float | None
    path: str | None
    symbol: str | None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    emulator: ExchangeEmulator

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        # Clients giving up mid-answer is the point of the timeout faults; anything else is a bug
        # in the emulator that the self-tests should see rather than a traceback on stderr.
        if not isinstance(exc, OSError):
            self.emulator.internal_errors.append(repr(exc))


class _Handler(BaseHTTPRequestHandler):
    # HTTP/1.0 closes the connection after every answer, so no keep-alive socket outlives a test
    # and a dropped connection is never a stale pooled one that urllib3 might silently retry.
    protocol_version = "HTTP/1.0"
    timeout = 10
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature is inherited
        pass

    def handle(self) -> None:
        emu = self.server.emulator
        with emu._lock:
            emu._in_flight += 1
        try:
            super().handle()
        finally:
            with emu._lock:
                emu._in_flight -= 1

    def do_GET(self) -> None:
        self.server.emulator._serve(self)


def _num(x: float) -> str:
    # Strings like the real APIs; repr() round-trips floats exactly, and NaN/inf are spelled so
    # that ccxt's float() parsing turns them into nan/inf instead of dropping them.
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "1e309" if x > 0 else "-1e309"
    return repr(float(x))


def _partial(c: Candle) -> Candle:
    """What the exchange shows for a still-open candle: never the final close, so storing it is detectable."""
    ts, o, _h, low, close, v = c
    pc = round((o + close) / 2, 8)
    if pc == close:
        tick = max(abs(close) * 1e-4, 1e-8)
        pc = close - tick if close - tick >= low else close + tick
    return (ts, o, max(o, pc), min(o, pc), pc, v * 0.37)


class ExchangeEmulator:
    """Serves ``candles`` (symbol -> sorted true candles) as Bitstamp and Kraken would, at clock ``now``."""

    def __init__(self, candles: dict[str, list[Candle]], *, timeframe_ms: int = 60_000,
                 now_ms: int | Callable[[], int] | None = None,
                 kraken_recent_only: bool = False, rate_limit_per_s: float | None = None) -> None:
        self.timeframe_ms = timeframe_ms
        self.kraken_recent_only = kraken_recent_only
        self.rate_limit_per_s = rate_limit_per_s
        self.timeout_s = 3.0
        self.requests: list[RequestRecord] = []
        self.internal_errors: list[str] = []
        self.base_url = ""
        self._lock = threading.RLock()
        self._data: dict[str, list[Candle]] = {}
        self._ts: dict[str, list[int]] = {}
        for symbol, rows in candles.items():
            ordered = sorted((int(r[0]), *map(float, r[1:])) for r in rows)
            self._data[symbol] = ordered  # type: ignore[assignment]
            self._ts[symbol] = [r[0] for r in ordered]
        self._clock: Callable[[], int] | None = now_ms if callable(now_ms) else None
        if isinstance(now_ms, int):
            self._fixed_now = now_ms
        else:
            # No clock given: just after the data, so every candle is closed.
            ends = [ts[-1] for ts in self._ts.values() if ts]
            self._fixed_now = max(ends) + timeframe_ms if ends else int(time.time() * 1000)
        self._faults: list[_Fault] = []
        self._corrupt: dict[tuple[str, int], str] = {}
        self._rng = random.Random(0)
        self._admitted: deque[float] = deque()
        self._hang_release = threading.Event()
        self._stopping = threading.Event()
        self._in_flight = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> str:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.emulator = self
        self._server = server
        self._stopping.clear()
        self.base_url = f"http://127.0.0.1:{server.server_address[1]}"
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": _SERVE_POLL_S},
                                        name="exchange-emulator", daemon=True)
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        server = self._server
        if server is None:
            return
        self._stopping.set()  # wakes 'hang' and 'timeout' handlers, which then close without answering
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        # Give handlers that were sleeping in a fault a moment to notice and close their sockets.
        deadline = time.monotonic() + 1.0
        while self._in_flight and time.monotonic() < deadline:
            time.sleep(0.01)
        self._server = None

    def __enter__(self) -> ExchangeEmulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ clock and data
    def set_now(self, now_ms: int) -> None:
        with self._lock:
            self._clock = None
            self._fixed_now = int(now_ms)

    def advance(self, ms: int) -> None:
        with self._lock:
            self.set_now(self.now_ms() + ms)

    def now_ms(self) -> int:
        clock = self._clock
        return int(clock()) if clock is not None else self._fixed_now

    def closed_candles(self, symbol: str) -> list[Candle]:
        now = self.now_ms()
        with self._lock:
            rows = self._data.get(symbol, [])
            return rows[:bisect.bisect_right(self._ts.get(symbol, []), now - self.timeframe_ms)]

    def open_candle(self, symbol: str) -> Candle | None:
        """The partial version served for the candle containing now, or None if that minute has no candle."""
        now = self.now_ms()
        floor = now - now % self.timeframe_ms
        with self._lock:
            ts = self._ts.get(symbol, [])
            i = bisect.bisect_left(ts, floor)
            return _partial(self._data[symbol][i]) if i < len(ts) and ts[i] == floor else None

    def remove(self, symbol: str, ts_from: int, ts_to: int) -> None:
        with self._lock:
            ts = self._ts[symbol]
            lo, hi = bisect.bisect_left(ts, ts_from), bisect.bisect_left(ts, ts_to)
            del self._data[symbol][lo:hi]
            del ts[lo:hi]

    def corrupt(self, symbol: str, ts_ms: int, kind: str) -> None:
        if kind not in CORRUPTION_KINDS:
            raise ValueError(f"unknown corruption {kind!r}")
        with self._lock:
            ts = self._ts.get(symbol, [])
            i = bisect.bisect_left(ts, ts_ms)
            if i >= len(ts) or ts[i] != ts_ms:
                raise ValueError(f"{symbol} has no candle at {ts_ms}")
            self._corrupt[(symbol, ts_ms)] = kind

    def uncorrupt_all(self) -> None:
        with self._lock:
            self._corrupt.clear()

    # ------------------------------------------------------------------ faults
    def add_fault(self, kind: str, *, times: int | None = None, probability: float | None = None,
                  path: str | None = None, symbol: str | None = None) -> None:
        """Inject ``kind`` (see the module docstring) into matching requests.

        ``times``: only the next N matching requests; ``probability``: each matching request with
        probability p (RNG seeded via :meth:`seed`); neither: every matching request until
        :meth:`clear_faults`.  ``path`` is a substring of the request path, ``symbol`` a unified
        symbol.  The first matching fault in insertion order wins.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}")
        with self._lock:
            self._faults.append(_Fault(kind, times, probability, path, symbol))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            # Wake requests parked by 'hang'; later hangs wait on a fresh event.
            self._hang_release.set()
            self._hang_release = threading.Event()

    def seed(self, seed: int) -> None:
        with self._lock:
            self._rng = random.Random(seed)

    def request_count(self, path_contains: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if path_contains is None or path_contains in r.path)

    def _pick_fault(self, path: str, symbol: str | None) -> str | None:
        with self._lock:
            for f in self._faults:
                if f.path is not None and f.path not in path:
                    continue
                if f.symbol is not None and f.symbol != symbol:
                    continue
                if f.times is not None and f.times <= 0:
                    continue
                if f.probability is not None and self._rng.random() >= f.probability:
                    continue
                if f.times is not None:
                    f.times -= 1
                return f.kind
            return None

    def _rate_limited(self) -> bool:
        if self.rate_limit_per_s is None:
            return False
        now = time.monotonic()
        with self._lock:
            while self._admitted and self._admitted[0] <= now - 1.0:
                self._admitted.popleft()
            if len(self._admitted) >= self.rate_limit_per_s:
                return True
            self._admitted.append(now)
            return False

    def _wait(self, seconds: float | None, release: threading.Event | None) -> bool:
        """Sleep for a fault; returns True if stop() interrupted it."""
        deadline = None if seconds is None else time.monotonic() + seconds
        while not self._stopping.is_set():
            if release is not None and release.is_set():
                return False
            left = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
            if left <= 0:
                return False
            self._stopping.wait(left)
        return True

    # ------------------------------------------------------------------ request handling
    def _serve(self, h: _Handler) -> None:
        split = urlsplit(h.path)
        path = split.path
        query = {k: v[-1] for k, v in parse_qs(split.query, keep_blank_values=True).items()}
        kraken = path.startswith("/0/")
        symbol = self._symbol_of(kraken, path, query)
        rec = RequestRecord(time.time(), time.monotonic(), path, query, 0, None, symbol)
        if self._rate_limited():
            rec.status, rec.fault = 429, "rate_limit"
            self._record(rec)
            self._send(h, 429, *self._http_error(kraken, 429))
            return
        fault = self._pick_fault(path, symbol)
        rec.fault = fault
        try:
            status, payload = self._route(kraken, path, query, symbol)
        except Exception as exc:  # a bug here must surface in the tests, not kill the connection
            self.internal_errors.append(repr(exc))
            status, payload = 500, {"error": ["EGeneral:Internal error"]} if kraken else {"error": repr(exc)}
        if fault is None:
            rec.status = status
            self._record(rec)
            self._send_json(h, status, payload)
            return
        if fault == "drop":
            rec.status = "drop"
            self._record(rec)
            h.close_connection = True
            return
        if fault in ("hang", "timeout"):
            rec.status = "hang" if fault == "hang" else status
            self._record(rec)
            with self._lock:
                release = self._hang_release
            stopped = self._wait(None, release) if fault == "hang" else self._wait(self.timeout_s, None)
            if not stopped:
                self._send_json(h, status, payload)
            return
        if fault.startswith("http"):
            code = int(fault[4:])
            rec.status = code
            self._record(rec)
            self._send(h, code, *self._http_error(kraken, code))
            return
        rec.status = 400 if fault == "error_ratelimit" and not kraken else 200
        self._record(rec)
        if fault == "malformed":
            # A proper prefix of a JSON object or array is never valid JSON: models a truncated transfer.
            text = json.dumps(payload)
            self._send(h, 200, text[: max(1, len(text) // 2)].encode(), "application/json")
        elif fault == "garbage":
            self._send_json(h, 200, [{"foo": 1}, "unexpected"])
        elif fault == "empty":
            self._send_json(h, 200, self._empty(kraken, path, symbol))
        else:
            self._send_json(h, rec.status, self._error_payload(kraken, fault))

    def _record(self, rec: RequestRecord) -> None:
        with self._lock:
            self.requests.append(rec)

    def _send_json(self, h: _Handler, status: int, payload: Any) -> None:
        self._send(h, status, json.dumps(payload).encode(), "application/json")

    @staticmethod
    def _send(h: _Handler, status: int, body: bytes, content_type: str) -> None:
        try:
            h.send_response(status)
            h.send_header("Content-Type", content_type)
            h.send_header("Content-Length", str(len(body)))
            h.send_header("Connection", "close")
            h.end_headers()
            h.wfile.write(body)
        except OSError:
            pass  # the client already gave up (that is what the timeout faults are for)

    @staticmethod
    def _http_error(kraken: bool, code: int) -> tuple[bytes, str]:
        if kraken and code == 429:
            return json.dumps({"error": ["EAPI:Rate limit exceeded"]}).encode(), "application/json"
        # An HTML page like a CDN/load balancer sends, so ccxt falls through to its HTTP-status table
        # (a Bitstamp JSON error body would be turned into a plain ExchangeError by handle_errors).
        return f"<html><body><h1>{code}</h1>emulated failure</body></html>".encode(), "text/html"

    @staticmethod
    def _error_payload(kraken: bool, kind: str) -> Any:
        if kraken:
            message = {"error_payload": "EGeneral:Internal error", "error_badsymbol": "EQuery:Invalid asset pair",
                       "error_auth": "EAPI:Invalid key", "error_ratelimit": "EAPI:Rate limit exceeded"}[kind]
            return {"error": [message]}
        reason, code = {"error_payload": ("Something went wrong on our side.", "API0000"),
                        # ccxt's bitstamp table has no BadSymbol entry: this yields a plain ExchangeError
                        "error_badsymbol": ("Invalid currency pair.", "API0012"),
                        "error_auth": ("API key not found", "API0001"),
                        "error_ratelimit": ("Rate limit exceeded", "400.002")}[kind]
        return {"status": "error", "reason": reason, "code": code}

    def _empty(self, kraken: bool, path: str, symbol: str | None) -> Any:
        if kraken:
            if path.endswith("/OHLC") and symbol is not None:
                kid = next(m[3] for m in _MARKETS if f"{m[0]}/{m[1]}" == symbol)
                return {"error": [], "result": {kid: [], "last": self.now_ms() // 1000}}
            return {"error": [], "result": {}}
        if _BITSTAMP_OHLC.match(path):
            return {"data": {"pair": symbol, "ohlc": []}}
        return [] if _BITSTAMP_MARKETS.match(path) else {}

    @staticmethod
    def _symbol_of(kraken: bool, path: str, query: dict[str, str]) -> str | None:
        if kraken:
            pair = _KRAKEN_CANONICAL.get(query.get("pair", "").split(",")[0])
            return _KRAKEN_SYMBOL.get(pair) if pair else None
        m = _BITSTAMP_OHLC.match(path) or _BITSTAMP_TICKER.match(path)
        return _BITSTAMP_SYMBOL.get(m.group(1)) if m else None

    def _route(self, kraken: bool, path: str, query: dict[str, str], symbol: str | None) -> tuple[int, Any]:
        if kraken:
            if path == "/0/public/Assets":
                return 200, {"error": [], "result": {
                    aid: {"aclass": "currency", "altname": alt, "decimals": dec, "display_decimals": min(dec, 5),
                          "status": "enabled"} for aid, alt, dec in _KRAKEN_ASSETS.values()}}
            if path == "/0/public/AssetPairs":
                return 200, {"error": [], "result": {m[3]: self._kraken_pair(m) for m in _MARKETS}}
            if path == "/0/public/Time":
                return 200, {"error": [], "result": {"unixtime": self.now_ms() // 1000}}
            if path in ("/0/public/OHLC", "/0/public/Ticker"):
                if symbol is None:
                    return 200, {"error": ["EQuery:Unknown asset pair"]}
                if path.endswith("OHLC"):
                    return self._kraken_ohlc(query, symbol)
                return 200, {"error": [], "result": self._kraken_tickers(query)}
            return 404, {"error": ["EGeneral:Unknown method"]}
        if _BITSTAMP_MARKETS.match(path):
            return 200, [self._bitstamp_market(m) for m in _MARKETS]
        if _BITSTAMP_OHLC.match(path) or _BITSTAMP_TICKER.match(path):
            if symbol is None:
                return 404, {"status": "error", "reason": "Invalid currency pair.", "code": "404.002"}
            if _BITSTAMP_TICKER.match(path):
                return 200, self._bitstamp_ticker(symbol)
            return self._bitstamp_ohlc(query, symbol)
        return 404, {"status": "error", "reason": f"Not found: {path}", "code": "404.001"}

    # ------------------------------------------------------------------ payload builders
    @staticmethod
    def _bitstamp_market(m: tuple[str, str, str, str, str, str]) -> dict[str, Any]:
        return {"name": f"{m[0]}/{m[1]}", "market_symbol": m[2], "url_symbol": m[2], "base_currency": m[0],
                "base_decimals": 8, "counter_currency": m[1], "counter_decimals": 2, "minimum_order_value": "10",
                "trading": "Enabled", "instant_order_counter_decimals": 2, "instant_and_market_orders": "Enabled",
                "description": m[5], "market_type": "SPOT"}

    @staticmethod
    def _kraken_pair(m: tuple[str, str, str, str, str, str]) -> dict[str, Any]:
        return {"altname": m[4], "wsname": f"{_KRAKEN_ASSETS[m[0]][1]}/{m[1]}", "aclass_base": "currency",
                "base": _KRAKEN_ASSETS[m[0]][0], "aclass_quote": "currency", "quote": _KRAKEN_ASSETS[m[1]][0],
                "lot": "unit", "cost_decimals": 5, "pair_decimals": 1, "lot_decimals": 8, "lot_multiplier": 1,
                "leverage_buy": [2, 3], "leverage_sell": [2, 3], "fees": [[0, 0.4], [10000, 0.35]],
                "fees_maker": [[0, 0.25], [10000, 0.2]], "fee_volume_currency": "ZUSD", "margin_call": 80,
                "margin_stop": 40, "ordermin": "0.0001", "costmin": "0.5", "tick_size": "0.1", "status": "online"}

    def _visible(self, symbol: str, now: int) -> list[Candle]:
        """Candles with open time <= now; the one containing now is replaced by its partial version."""
        with self._lock:
            ts, rows = self._ts.get(symbol, []), self._data.get(symbol, [])
            out = rows[:bisect.bisect_right(ts, now)]
        if out and out[-1][0] + self.timeframe_ms > now:
            out[-1] = _partial(out[-1])
        return out

    def _served(self, symbol: str, rows: list[Candle]) -> list[list[float]]:
        """Apply corruptions: true candles stay untouched, only the served copies change."""
        with self._lock:
            marks = {ts: k for (sym, ts), k in self._corrupt.items() if sym == symbol}
        out: list[list[float]] = []
        swaps: list[int] = []
        for c in rows:
            row = [float(x) for x in c]
            kind = marks.get(c[0])
            if kind == "nan":
                row[4] = math.nan
            elif kind == "inf":
                row[2] = math.inf
            elif kind == "negative":
                row[3] = -abs(row[3]) if row[3] else -1.0
            elif kind == "zero":
                row[1] = 0.0
            elif kind == "negative_volume":
                row[5] = -abs(row[5]) if row[5] else -1.0
            elif kind == "high_lt_low":
                row[2], row[3] = row[3], row[2]
                if row[2] >= row[3]:
                    row[2] = row[3] - max(abs(row[3]) * 1e-3, 0.01)
            elif kind == "off_grid":
                row[0] += 17_000
            elif kind == "out_of_order":
                swaps.append(len(out))
            out.append(row)
            if kind == "duplicate":
                dup = list(row)
                dup[4] = row[4] + max(abs(row[4]) * 5e-4, 0.01)
                out.append(dup)
        for i in swaps:
            if i + 1 < len(out):
                out[i], out[i + 1] = out[i + 1], out[i]
        return out

    def _bitstamp_ohlc(self, query: dict[str, str], symbol: str) -> tuple[int, Any]:
        try:
            step = int(query.get("step", "60"))
            limit = min(max(int(query.get("limit", str(_BITSTAMP_MAX_LIMIT))), 1), _BITSTAMP_MAX_LIMIT)
            start = int(query["start"]) * 1000 if "start" in query else None
            end = int(query["end"]) * 1000 if "end" in query else None
        except ValueError:
            return 400, {"status": "error", "reason": "Invalid parameters.", "code": "400.001"}
        if step * 1000 != self.timeframe_ms:
            return 400, {"status": "error", "reason": f"Invalid step {step}.", "code": "400.001"}
        rows = self._visible(symbol, self.now_ms())
        if start is not None:
            rows = rows[bisect.bisect_left([r[0] for r in rows], start):]
        if end is not None:
            # When end is given the real API counts back from it, even if start is given too.
            rows = rows[:bisect.bisect_right([r[0] for r in rows], end)][-limit:]
        elif start is not None:
            rows = rows[:limit]
        else:
            rows = rows[-limit:]
        keys = ("timestamp", "open", "high", "low", "close", "volume")
        ohlc = [dict(zip(keys, [str(int(r[0]) // 1000), *map(_num, r[1:])])) for r in self._served(symbol, rows)]
        return 200, {"data": {"pair": symbol, "ohlc": ohlc}}

    def _kraken_ohlc(self, query: dict[str, str], symbol: str) -> tuple[int, Any]:
        try:
            interval = int(query.get("interval", "1"))
            since = int(float(query["since"]) * 1000) if query.get("since") else None
        except ValueError:
            return 200, {"error": ["EGeneral:Invalid arguments"]}
        if interval * 60_000 != self.timeframe_ms:
            return 200, {"error": ["EGeneral:Invalid arguments"]}
        now = self.now_ms()
        rows = self._visible(symbol, now)
        if self.kraken_recent_only:
            # The real API only keeps the latest 720 intervals, whatever `since` says.
            floor = now - now % self.timeframe_ms
            rows = [r for r in rows if r[0] > floor - _KRAKEN_MAX_ROWS * self.timeframe_ms]
        if since is not None:
            # Kraken's since is exclusive; ccxt compensates by sending since - interval.
            rows = [r for r in rows if r[0] > since][:_KRAKEN_MAX_ROWS]
        else:
            rows = rows[-_KRAKEN_MAX_ROWS:]
        closed = [r[0] for r in rows if r[0] + self.timeframe_ms <= now]
        last = closed[-1] // 1000 if closed else (since if since is not None else now) // 1000
        out = [[int(r[0]) // 1000, _num(r[1]), _num(r[2]), _num(r[3]), _num(r[4]),
                _num((r[2] + r[3] + r[4]) / 3), _num(r[5]), 1 + int(abs(r[5]) * 10) if math.isfinite(r[5]) else 1]
               for r in self._served(symbol, rows)]
        kid = next(m[3] for m in _MARKETS if f"{m[0]}/{m[1]}" == symbol)
        return 200, {"error": [], "result": {kid: out, "last": last}}

    def _day_stats(self, symbol: str) -> dict[str, float] | None:
        closed = self.closed_candles(symbol)
        if not closed:
            return None
        cutoff = self.now_ms() - 86_400_000
        day = closed[bisect.bisect_left([c[0] for c in closed], cutoff):] or closed[-1:]
        vol = sum(c[5] for c in day)
        vwap = sum(c[4] * c[5] for c in day) / vol if vol else day[-1][4]
        return {"last": closed[-1][4], "open": day[0][1], "high": max(c[2] for c in day),
                "low": min(c[3] for c in day), "volume": vol, "vwap": vwap, "count": float(len(day))}

    def _bitstamp_ticker(self, symbol: str) -> dict[str, Any]:
        s = self._day_stats(symbol)
        base: dict[str, Any] = {"timestamp": str(self.now_ms() // 1000), "pair": symbol}
        if s is None:
            return base
        return {**base, "last": _num(s["last"]), "open": _num(s["open"]), "high": _num(s["high"]),
                "low": _num(s["low"]), "volume": _num(s["volume"]), "vwap": _num(s["vwap"]),
                "bid": _num(s["last"] - 0.5), "ask": _num(s["last"] + 0.5), "open_24": _num(s["open"]),
                "percent_change_24": _num(round((s["last"] / s["open"] - 1) * 100, 2) if s["open"] else 0.0)}

    def _kraken_tickers(self, query: dict[str, str]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for raw in query.get("pair", "").split(","):
            kid = _KRAKEN_CANONICAL.get(raw)
            s = self._day_stats(_KRAKEN_SYMBOL[kid]) if kid else None
            if kid is None or s is None:
                continue
            last, n = s["last"], int(s["count"])
            result[kid] = {"a": [_num(last + 0.5), "1", "1.000"], "b": [_num(last - 0.5), "1", "1.000"],
                           "c": [_num(last), "0.00100000"], "v": [_num(s["volume"])] * 2,
                           "p": [_num(s["vwap"])] * 2, "t": [n, n], "l": [_num(s["low"])] * 2,
                           "h": [_num(s["high"])] * 2, "o": _num(s["open"])}
        return result
