"""`[metrics] listen`: the HTTP side of the live daemon's metrics (README: Operating it).

`/metrics` is prometheus_client's own exposition of `metrics.DaemonMetrics.registry`
(text or OpenMetrics, as the scraper's Accept header asks); `/healthz` answers 200 with a
small JSON body while the daemon does its job and 503 with the same body otherwise.

Nothing here can hold up a tick. The server runs on its own threads, one per connection,
each with a socket timeout, at most `MAX_CONNECTIONS` at once (more are closed at once);
a scraper that connects and never sends, or never reads, only ties up its own thread until
the timeout. The rolling accuracy and the store size are read from the store on the
exporter's own thread, at most once a minute of the daemon's clock, through read
transactions that take no lock a tick needs (SQLite WAL readers never block the writer).
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import disable_created_metrics
from prometheus_client.exposition import choose_encoder

from daemon.config.settings import Settings
from daemon.config.values import split_listen
from daemon.core.clock import Clock
from daemon.core.errors import ConfigError, TemporaryFailure
from daemon.core.series import Series
from daemon.live.metrics import DaemonMetrics, StoreSnapshot
from daemon.live.ticker import TickLoop
from daemon.pipeline.modelset import ModelSet
from storage import StorageError, Store, forecasts, runs

log = logging.getLogger("tickcast.live")

REFRESH_S = 60.0  # daemon seconds between two reads of the rolling accuracy
CLIENT_TIMEOUT_S = 10.0  # a connection that does not send or read for this long is closed
MAX_CONNECTIONS = 64


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    metrics: DaemonMetrics

    def __init__(self, host: str, port: int) -> None:
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__((host, port), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):  # too many open connections: drop this one
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("metrics: connection from %s failed", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers
    timeout = CLIENT_TIMEOUT_S
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - inherited name
        log.debug("metrics: %s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        m = self.server.metrics
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._send(200, encoder(m.registry), content_type, body)
        elif path == "/healthz":
            healthy, data = m.health()
            self._send(200 if healthy else 503, (json.dumps(data) + "\n").encode(),
                       "application/json", body)
        elif path == "/":
            self._send(200, b"tickcast: /metrics /healthz\n", "text/plain; charset=utf-8", body)
        else:
            self._send(404, b"not found: try /metrics or /healthz\n",
                       "text/plain; charset=utf-8", body)

    def _send(self, code: int, data: bytes, content_type: str, body: bool) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(data)


def bind(listen: str) -> _Server:
    """The listening socket of `metrics.listen`: refused as a configuration error (78)
    unless the address is only busy (75: an old instance may still be stopping)."""
    host, port = split_listen(listen)
    try:
        return _Server(host, port)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise TemporaryFailure(f"metrics.listen: {listen} is already in use") from e
        raise ConfigError(f"metrics.listen: cannot listen on {listen}: "
                          f"{e.strerror or e}") from e


class Exporter:
    """The metrics of one `tickcast run`: the registry, the HTTP server and the thread
    that reads the rolling accuracy. Built at the end of the daemon's start-up (the socket
    is bound then, so a bad address is refused before READY); `start()` serves."""

    def __init__(self, cfg: Settings, *, store: Store, series: Series, models: ModelSet,
                 ticker: TickLoop, clock: Clock, speed: float,
                 newest: dict[str, int | None]) -> None:
        disable_created_metrics()  # no *_created series: nothing here needs them
        self.store = store
        self.series = series
        self.clock = clock
        self.window_ms = cfg.metrics.window_hours * 3_600_000
        self.refresh_every_s = REFRESH_S / speed
        with store.read("metrics start-up") as conn:
            in_a_row = {m.name: runs.unaccepted_in_a_row(conn, m.name, series.exchange,
                                                         series.timeframe) for m in models}
        self.metrics = DaemonMetrics(
            series=series, models=models, ticker=ticker, clock=clock, speed=speed,
            poll_delay_s=cfg.daemon.poll_delay_s, window_hours=cfg.metrics.window_hours,
            newest=newest, rejected_in_a_row=in_a_row)
        self.server = bind(cfg.metrics.listen)
        self.server.metrics = self.metrics
        self.stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._failing = False

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{'[' + host + ']' if ':' in host else host}:{port}"

    def start(self) -> None:
        for name, target in (("metrics-http", self._serve), ("metrics-store", self._refresh)):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        log.info("metrics: serving /metrics and /healthz on %s", self.url)

    def _serve(self) -> None:
        self.server.serve_forever(poll_interval=0.2)

    def _refresh(self) -> None:
        while not self.stop.is_set():
            self.refresh_once()
            self.stop.wait(self.refresh_every_s)

    def refresh_once(self) -> None:
        """Read the rolling accuracy and the store size (the exporter's thread)."""
        s = self.series
        now = self.clock.now_ms()
        try:
            with self.store.read("metrics: rolling accuracy") as conn:
                rows = forecasts.accuracy(conn, since=now - self.window_ms)
            size = self.store.store_size_bytes()
        except StorageError as e:
            if not self._failing:
                log.warning("metrics: cannot read the rolling accuracy: %s", e)
            self._failing = True
            return
        self._failing = False
        mine = tuple(r for r in rows if r["exchange"] == s.exchange
                     and r["timeframe"] == s.timeframe)
        self.metrics.refresh(StoreSnapshot(mine, size, self.metrics.snapshot.window_hours, now))

    def tick_done(self, rep: Any, duration_s: float) -> None:
        try:
            self.metrics.tick_done(rep, duration_s)
        except Exception:  # noqa: BLE001 - a metrics bug must not fail the tick
            log.exception("metrics: could not record the tick")

    def training_done(self, outcomes: Any) -> None:
        self.metrics.training_done(outcomes)

    def close(self) -> None:
        self.stop.set()
        if self._threads:
            self.server.shutdown()
        self.server.server_close()
