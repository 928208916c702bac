"""`[metrics] listen` on a real `tickcast run`: /metrics parsed with prometheus_client's own
parser and checked against the store, /healthz through an exchange that hangs and recovers,
scrapers that never send or never read, and a real Prometheus server scraping the daemon.

Every wait polls for the behaviour with a generous deadline; assertions are about what
happened, never about how long it took.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import ROOT, wait_until
from tests.helpers.daemon import DaemonHarness

PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"


def start_with_metrics(h: DaemonHarness) -> str:
    """Start the daemon with metrics on a free port; returns its base URL."""
    h.extra_env["TICKCAST_METRICS__LISTEN"] = "127.0.0.1:0"
    h.start()
    found: list[str] = []

    def url() -> bool:
        m = re.search(r"serving /metrics and /healthz on (http://\S+)", h.log())
        if m:
            found.append(m.group(1))
        return bool(m)

    h.wait_for(url, "the metrics URL in the log")
    return found[0]


def get(url: str, timeout: float = 10) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - 127.0.0.1
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def scrape(base: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels), read by prometheus_client."""
    code, text = get(base + "/metrics")
    assert code == 200
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def by_label(samples: dict[Any, float], name: str, label: str) -> dict[str, float]:
    return {dict(k[1])[label]: v for k, v in samples.items() if k[0] == name}


def value(samples: dict[Any, float], name: str) -> float:
    (v,) = [v for k, v in samples.items() if k[0] == name]
    return v


def health(base: str) -> tuple[int, dict[str, Any]]:
    code, text = get(base + "/healthz")
    return code, json.loads(text)


# The `harness` fixture's daemon at 20x: a candle period is 3 wall seconds, so the health
# limit (two periods plus the poll delay) is not at the mercy of a busy test machine.
pytestmark = pytest.mark.harness(speed=20.0, watchdog_usec=None)


def test_metrics_agree_with_the_store_and_healthz_follows_a_hanging_exchange(
        harness: DaemonHarness) -> None:
    h = harness
    p = None
    base = start_with_metrics(h)
    p = h.procs[-1]

    def forecast_counts() -> dict[str, tuple[int, int]]:
        return {m: (n, s) for m, n, s in h.query(
            "select model, count(*), sum(actual is not null) from forecasts group by model")}

    h.wait_for(lambda: set(forecast_counts()) == {"seq2seq", "naive", "drift", "linear"}
               and all(s > 0 for _, s in forecast_counts().values()),
               "scored forecasts of all four models")
    wait_until(lambda: health(base)[0] == 200, "/healthz 200 while the daemon works",
               timeout=120, on_timeout=lambda: str(health(base)))
    code, body = health(base)
    assert body["status"] == "ok" and body["problems"] == []
    assert set(body["symbols"]) == {"BTC/USD", "BTC/EUR"}
    assert all(s["lag_s"] is not None and s["lag_s"] <= body["limit_s"]
               for s in body["symbols"].values())
    assert body["last_tick_age_s"] is not None and body["model_version"]

    # Scrapers that connect and send nothing, or ask and never read, while ticks go on.
    addr = urllib.parse.urlsplit(base)
    where = (addr.hostname, addr.port)
    idle = [socket.create_connection(where) for _ in range(8)]
    stuck = []
    for _ in range(4):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        s.connect(where)
        s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        stuck.append(s)
    try:
        ticks0 = value(scrape(base), "tickcast_ticks_total")
        newest0 = h.newest_common()
        h.wait_for(lambda: value(scrape(base), "tickcast_ticks_total") >= ticks0 + 3,
                   "three more ticks while scrapers hang")
        assert h.newest_common() >= newest0 + 2 * 60_000
        assert health(base)[0] == 200
    finally:
        for s in idle + stuck:
            s.close()

    # The exchange hangs every request: ticks still complete (each request times out), but
    # no candle arrives, so the daemon is unhealthy; and the store holds still meanwhile.
    h.emu.add_fault("hang")
    wait_until(lambda: health(base)[0] == 503, "/healthz 503 while the exchange hangs",
               timeout=180, on_timeout=lambda: str(health(base)))
    code, body = health(base)
    assert body["status"] == "unhealthy" and any("newest candle" in x or "no tick" in x
                                                 for x in body["problems"])
    assert {s["exchange_error"] for s in body["symbols"].values()} <= {"timeout", None}
    assert set(body) >= {"last_tick_age_s", "symbols", "model_version", "training"}

    # Once the training thread is idle and no tick adds anything, the counters must be
    # exactly what the store holds (a fresh store: this process wrote all of it).
    def mismatches() -> list[str]:
        m = scrape(base)
        fc = forecast_counts()
        runs = dict(h.query("select status, count(*) from training_runs group by status"))
        newest = dict(h.query("select symbol, max(ts) from candles group by symbol"))
        checks = {
            "training running": (value(m, "tickcast_training_running"), 0.0),
            "candles": (by_label(m, "tickcast_candles_stored_total", "symbol"),
                        {s: float(n) for s, n in
                         h.query("select symbol, count(*) from candles group by symbol")}),
            "forecasts": (by_label(m, "tickcast_forecasts_stored_total", "model"),
                          {k: float(n) for k, (n, _) in fc.items()}),
            "scored": (by_label(m, "tickcast_forecasts_scored_total", "model"),
                       {k: float(s) for k, (_, s) in fc.items()}),
            "training runs": ({k: v for k, v in
                               by_label(m, "tickcast_training_runs_total", "status").items()
                               if v}, {k: float(v) for k, v in runs.items()}),
            "training durations": (value(m, "tickcast_training_duration_seconds_count"),
                                   float(sum(runs.values()))),
            "tick durations": (value(m, "tickcast_tick_duration_seconds_count"),
                               value(m, "tickcast_ticks_total")),
            "newest candles": (by_label(m, "tickcast_last_candle_timestamp_seconds", "symbol"),
                               {s: ts / 1000 for s, ts in newest.items()}),
        }
        out = [f"{k}: metrics {a} != store {b}" for k, (a, b) in checks.items() if a != b]
        if by_label(m, "tickcast_exchange_errors_total", "kind").get("timeout", 0) < 2:
            out.append("fewer than two timed-out fetches counted yet")
        return out

    found: list[list[str]] = []
    wait_until(lambda: not found.append(mismatches()) and not found[-1],
               "the counters to agree with the quiet store", timeout=180,
               on_timeout=lambda: "\n".join(found[-1]))
    m = scrape(base)
    assert value(m, "tickcast_ticks_total") > 0
    info = [dict(k[1]) for k in m if k[0] == "tickcast_model_info"]
    accepted = h.query("select model_version from training_runs where status = 'accepted' "
                       "and model = 'seq2seq' order by id desc limit 1")
    assert {"model": "seq2seq", "version": accepted[0][0], "device": "cpu"} in info
    assert value(m, "tickcast_store_size_bytes") > 0
    mase = {(dict(k[1])["model"], dict(k[1])["symbol"], dict(k[1])["horizon"]): v
            for k, v in m.items() if k[0] == "tickcast_forecast_mase"}
    assert mase[("naive", "BTC/USD", "1")] == pytest.approx(1.0)
    assert {k[0] for k in mase} == {"seq2seq", "naive", "drift", "linear"}
    assert any(k[0] == "tickcast_forecast_interval_skill" for k in m)

    # The exchange recovers: healthy again.
    h.emu.clear_faults()
    wait_until(lambda: health(base)[0] == 200, "/healthz 200 after the exchange recovers",
               timeout=180, on_timeout=lambda: str(health(base)))
    assert h.stop(p) == 0


def _prometheus() -> str | None:
    return shutil.which("prometheus")


@pytest.mark.skipif(_prometheus() is None,
                    reason="Prometheus is not installed (Debian: apt-get install prometheus; "
                           ".ci/run installs it where it runs as root)")
def test_a_real_prometheus_scrapes_the_daemon(harness: DaemonHarness, tmp_path: Path) -> None:
    h = harness
    base = start_with_metrics(h)
    target = urllib.parse.urlsplit(base).netloc
    with socket.socket() as s:  # a free port for Prometheus itself
        s.bind(("127.0.0.1", 0))
        prom_port = s.getsockname()[1]
    cfg = tmp_path / "prometheus.yml"
    rules = PROMETHEUS_DIR / "tickcast-rules.yml"
    cfg.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files: ['{rules}']\n"
        "scrape_configs:\n  - job_name: tickcast\n    scrape_timeout: 1s\n"
        f"    static_configs:\n      - targets: ['{target}']\n")
    log = open(tmp_path / "prometheus.log", "w")  # noqa: SIM115
    prom = subprocess.Popen(
        [str(_prometheus()), f"--config.file={cfg}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{prom_port}/api/v1"
    try:
        def ticks() -> float:
            q = urllib.parse.urlencode({"query": "tickcast_ticks_total"})
            try:
                code, text = get(f"{api}/query?{q}", timeout=5)
            except OSError:
                return 0.0
            res = json.loads(text)["data"]["result"] if code == 200 else []
            return float(res[0]["value"][1]) if res else 0.0

        wait_until(lambda: ticks() > 0, "Prometheus to store tickcast_ticks_total > 0",
                   timeout=180, every=0.5,
                   on_timeout=lambda: (tmp_path / "prometheus.log").read_text()[-2000:])
        code, text = get(f"{api}/targets")
        active = json.loads(text)["data"]["activeTargets"]
        assert [t["health"] for t in active] == ["up"]
        # The shipped alert rules load into a real server.
        code, text = get(f"{api}/rules")
        names = {r["name"] for g in json.loads(text)["data"]["groups"] for r in g["rules"]}
        assert {"TickcastDaemonStalled", "TickcastSymbolLagging", "TickcastExchangeErrors",
                "TickcastRetrainingRejected", "TickcastModelWorseThanNaive"} <= names
    finally:
        prom.terminate()
        try:
            prom.wait(20)
        except subprocess.TimeoutExpired:
            prom.kill()
            prom.wait(5)
        log.close()
        h.stop(h.procs[-1])


def _promtool() -> str | None:
    return shutil.which("promtool")


@pytest.mark.skipif(_promtool() is None,
                    reason="promtool is not installed (Debian: apt-get install prometheus; "
                           ".ci/run installs it where it runs as root)")
def test_the_alert_rules_and_the_scrape_example_pass_promtool() -> None:
    tool = str(_promtool())
    for args in (["check", "rules", str(PROMETHEUS_DIR / "tickcast-rules.yml")],
                 ["check", "config", str(PROMETHEUS_DIR / "prometheus.yml")],
                 ["test", "rules", str(ROOT / "tests" / "prometheus" / "tickcast-rules.test.yml")]):
        p = subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, f"promtool {' '.join(args)}:\n{p.stdout}\n{p.stderr}"


# -- in-process: the parts, without a daemon ------------------------------------------------

class _Ticker:
    ticks = 0
    tick_errors = 0


class _Model:
    def __init__(self, name: str, version: str) -> None:
        self.name, self.version = name, version


class _Models:
    training = False
    models = [_Model("seq2seq", "v1"), _Model("naive", "naive-2")]

    def __iter__(self) -> Iterator[_Model]:
        return iter(self.models)

    def versions(self) -> dict[str, str]:
        return {m.name: m.version for m in self.models}

    @property
    def headline_version(self) -> str:
        return "v1"


def _metrics(now: int) -> Any:
    from daemon.core.clock import SimClock
    from daemon.core.series import Series
    from daemon.live.metrics import DaemonMetrics

    return DaemonMetrics(series=Series("bitstamp", ("BTC/USD", "BTC/EUR"), "1m"),
                         models=_Models(), ticker=_Ticker(), clock=SimClock(now), speed=1.0,
                         poll_delay_s=2.0, window_hours=24, newest={"BTC/USD": None},
                         rejected_in_a_row={"seq2seq": 3})


def _samples(registry: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client import generate_latest

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(generate_latest(registry).decode())
            for s in fam.samples}


def test_health_follows_ticks_and_lags() -> None:
    from daemon.core.clock import monotonic
    from daemon.pipeline.ingest import IngestStats
    from daemon.pipeline.tick import TickReport

    now = 1_700_000_000_000 - 1_700_000_000_000 % 60_000 + 3_000
    m = _metrics(now)
    ok, body = m.health()
    assert not ok and "no tick has completed yet" in body["problems"]
    assert body["limit_s"] == 122.0
    rep = TickReport(now, ingested={"BTC/USD": IngestStats(stored=5),
                                    "BTC/EUR": IngestStats(stored=4)},
                     newest={"BTC/USD": now - 3_000 - 60_000, "BTC/EUR": now - 3_000 - 60_000})
    m.tick_done(rep, 0.02)
    ok, body = m.health()
    assert ok, body
    assert body["symbols"]["BTC/USD"]["lag_s"] == 3.0 and body["training"] is False
    m.clock.set(now + 120_000)  # two minutes on: both symbols 123 s behind
    ok, body = m.health()
    assert not ok and body["problems"] == ["BTC/USD: newest candle closed 123 s ago",
                                           "BTC/EUR: newest candle closed 123 s ago"]
    m.clock.set(now)
    m.state.last_tick_mono = monotonic() - 130  # a tick hung for 130 s
    ok, body = m.health()
    assert not ok and body["problems"] == ["no tick has completed for 130 s"]
    assert _samples(m.registry)[("tickcast_healthy", ())] == 0


def test_counters_follow_reports_and_training_outcomes() -> None:
    from daemon.pipeline.ingest import IngestStats
    from daemon.pipeline.modelset import TrainOutcome
    from daemon.pipeline.tick import TickReport
    from forecaster.base import TrainStats

    now = 1_700_000_040_000
    m = _metrics(now)
    s = _samples(m.registry)
    assert s[("tickcast_training_rejected_in_a_row", (("model", "seq2seq"),))] == 3
    assert s[("tickcast_exchange_errors_total", (("exchange", "bitstamp"), ("kind", "timeout")))] == 0
    assert ("tickcast_forecast_mase", (("horizon", "1"), ("model", "naive"), ("symbol", "BTC/USD"))) not in s
    rep = TickReport(now, ingested={"BTC/USD": IngestStats(
        stored=7, rejected=2, rejected_reasons={"high < low": 2})},
        fetch_errors={"BTC/EUR": "giving up"}, fetch_error_kinds={"BTC/EUR": "timeout"},
        stored_by_model={"seq2seq": 6, "naive": 6}, scored_by_model={"naive": 2},
        newest={"BTC/USD": now - 120_000, "BTC/EUR": None})
    m.tick_done(rep, 0.5)
    m.training_done([TrainOutcome("seq2seq", "rejected", None, 1, "worse", TrainStats(), 2.0)])
    s = _samples(m.registry)
    ex = ("exchange", "bitstamp")
    assert s[("tickcast_candles_stored_total", (ex, ("symbol", "BTC/USD")))] == 7
    assert s[("tickcast_candles_rejected_total",
              (ex, ("reason", "high < low"), ("symbol", "BTC/USD")))] == 2
    assert s[("tickcast_exchange_errors_total", (ex, ("kind", "timeout")))] == 1
    assert s[("tickcast_forecasts_stored_total", (("model", "seq2seq"),))] == 6
    assert s[("tickcast_forecasts_scored_total", (("model", "naive"),))] == 2
    assert s[("tickcast_forecasts_scored_total", (("model", "seq2seq"),))] == 0
    assert s[("tickcast_last_candle_timestamp_seconds", (ex, ("symbol", "BTC/USD")))] == \
        (now - 120_000) / 1000
    assert s[("tickcast_symbol_lag_seconds", (ex, ("symbol", "BTC/USD")))] == 60.0
    assert s[("tickcast_training_runs_total", (("status", "rejected"),))] == 1
    assert s[("tickcast_training_rejected_in_a_row", (("model", "seq2seq"),))] == 4
    assert s[("tickcast_model_info", (("device", "cpu"), ("model", "seq2seq"),
                                      ("version", "v1")))] == 1
    m.training_done([TrainOutcome("seq2seq", "accepted", "v2", 2, "better",
                                  TrainStats(device="cuda:NVIDIA H200"), 3.0)])
    s = _samples(m.registry)
    assert s[("tickcast_training_rejected_in_a_row", (("model", "seq2seq"),))] == 0
    assert s[("tickcast_training_duration_seconds_count", ())] == 2
    assert ("tickcast_model_info", (("device", "cuda:NVIDIA H200"), ("model", "seq2seq"),
                                    ("version", "v1"))) in s


def test_listen_addresses_are_checked() -> None:
    from daemon.config import settings
    from daemon.core.errors import ConfigError

    for good in ("", "127.0.0.1:9464", "localhost:0", "[::1]:9464", "0.0.0.0:80"):
        assert settings.load(None, env={}, overrides={"metrics.listen": good}).metrics.listen == good
    for bad in ("9464", "127.0.0.1", ":9464", "127.0.0.1:http", "::1:9464", "h:70000", "a b:1"):
        with pytest.raises(ConfigError, match=r"metrics\.listen"):
            settings.load(None, env={}, overrides={"metrics.listen": bad})
    with pytest.raises(ConfigError, match=r"metrics\.window_hours"):
        settings.load(None, env={"TICKCAST_METRICS__WINDOW_HOURS": "0"})


def test_a_busy_port_is_temporary_and_an_unknown_host_a_config_error() -> None:
    from daemon.core.errors import ConfigError, TemporaryFailure, exit_code_for
    from daemon.live.exporter import bind

    server = bind("127.0.0.1:0")
    try:
        port = server.server_address[1]
        with pytest.raises(TemporaryFailure, match="already in use") as e:
            bind(f"127.0.0.1:{port}")
        assert exit_code_for(e.value) == 75
    finally:
        server.server_close()
    with pytest.raises(ConfigError, match=r"metrics\.listen: cannot listen") as e2:
        bind("no-such-host.invalid:9464")
    assert exit_code_for(e2.value) == 78


@pytest.mark.parametrize("returning", [True, False])
def test_scoring_counts_per_model_what_it_scores(store_url: str, returning: bool,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from storage import ForecastRow, Store, candles, forecasts

    s = Store(store_url)
    s.open(0)
    t0, step = 1_700_000_040_000, 60_000
    monkeypatch.setattr(s.engine.dialect, "update_returning",
                        returning and s.engine.dialect.update_returning)
    rows = [ForecastRow(m, "v", "bitstamp", sym, "1m", t0, t0 + h * step, h, 100.0, 90.0,
                        110.0, t0) for m in ("naive", "drift", "seq2seq")
            for sym in ("BTC/USD", "BTC/EUR") for h in (1, 2, 3)][:-2]
    with s.write() as conn:
        candles.insert(conn, "bitstamp", "BTC/USD", "1m",
                       [(t0 + h * step, 100, 101, 99, 100.5, 1) for h in (1, 2)])
        candles.insert(conn, "bitstamp", "BTC/EUR", "1m", [(t0 + step, 100, 101, 99, 100.5, 1)])
        assert forecasts.insert_by_model(conn, rows) == {"naive": 6, "drift": 6, "seq2seq": 4}
        assert forecasts.insert_by_model(conn, rows) == {"naive": 0, "drift": 0, "seq2seq": 0}
    with s.write() as conn:
        got = forecasts.score_by_model(conn, t0 + 10 * step, "1m", step)
    with s.write() as conn:
        again = forecasts.score_by_model(conn, t0 + 10 * step, "1m", step)
    s.close()
    assert got == {"naive": 3, "drift": 3, "seq2seq": 3} and sum(again.values()) == 0


def test_run_refuses_a_busy_metrics_port_before_ready(tmp_path: Path) -> None:
    from tests.helpers import run_subprocess

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        p = run_subprocess("--db", str(tmp_path / "x.db"), "run", timeout=120,
                           env={"TICKCAST_METRICS__LISTEN": f"127.0.0.1:{port}"})
    assert p.returncode == 75 and f"metrics.listen: 127.0.0.1:{port} is already in use" \
        in p.stderr, p.stderr
    p = run_subprocess("--db", str(tmp_path / "x.db"), "run", timeout=60,
                       env={"TICKCAST_METRICS__LISTEN": "localhost"})
    assert p.returncode == 78 and "metrics.listen" in p.stderr
