"""The one pipeline: replay without look-ahead, scoring against actuals, resume, accuracy."""

from __future__ import annotations

import logging
import math
import sqlite3
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from daemon.commands import replay
from daemon.commands.backfill import Span, backfill_symbol
from daemon.core.series import Series
from daemon.pipeline.modelset import ModelSet
from daemon.pipeline.tick import Pipeline
from daemon.sources.exchange import CcxtSource
from storage import Store
from tests.emulator import ExchangeEmulator
from tests.helpers import (
    HOUR,
    MINUTE,
    ROOT,
    SCRIPT_CFG,
    T0,
    env_without,
    issued_ticks,
    kill_9_once,
    make_input,
    rows,
    small_cfg,
    write_config,
    write_data,
)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory,
             pair: dict[str, list[Any]]) -> tuple[Path, replay.ReplayResult]:
    out = tmp_path_factory.mktemp("full") / "full.db"
    inp = make_input(pair)
    res = replay.run(small_cfg(), inp, start=pair["BTC/USD"][300][0], end=None, out=str(out),
                     show_progress=False)
    return out, res


def test_replay_issues_every_model_every_horizon_and_retrains(full_run: tuple[Path, Any],
                                                             pair: dict[str, list[Any]]) -> None:
    out, res = full_run
    assert res.ticks == 400 and res.retrains >= 400 // 24
    con = sqlite3.connect(out)
    got = con.execute("select model, symbol, horizon, count(*) from forecasts "
                      "group by 1, 2, 3").fetchall()
    assert {(m, s, h) for m, s, h, _ in got} == {
        (m, s, h) for m in ("seq2seq", "naive", "drift", "linear") for s in pair
        for h in (1, 3, 6)}
    assert all(n == 400 for *_, n in got)
    runs = con.execute("select status, count(*) from training_runs group by 1").fetchall()
    assert dict(runs).get("accepted", 0) >= 1
    # every seq2seq row names a version that was accepted and has its checkpoint
    bad = con.execute("select count(*) from forecasts f where model = 'seq2seq' and not exists "
                      "(select 1 from training_runs t where t.model_version = f.model_version "
                      "and t.status = 'accepted')").fetchone()[0]
    assert bad == 0
    # the newest accepted model's checkpoint is in the store, with its bytes
    (version,) = con.execute("select model_version from training_runs where status = "
                             "'accepted' order by id desc limit 1").fetchone()
    assert con.execute("select length(data) > 1000 from checkpoints where model_version = ?",
                       (version,)).fetchone() == (1,)


def test_prefix_property_forecasts_do_not_depend_on_later_data(
        tmp_path: Path, full_run: tuple[Path, Any], pair: dict[str, list[Any]]) -> None:
    """Replay on data ending at T equals replay on longer data for every issued_ts <= T."""
    out_full, _ = full_run
    n = 520
    t_cut = pair["BTC/USD"][n - 1][0]
    out = tmp_path / "cut.db"
    replay.run(small_cfg(), make_input(pair, n), start=pair["BTC/USD"][300][0], end=None,
               out=str(out), show_progress=False)
    where = f"issued_ts <= {t_cut}"
    cols = "model, model_version, symbol, issued_ts, horizon, yhat, lower, upper, created_at"
    a = sqlite3.connect(out_full).execute(
        f"select {cols} from forecasts where {where} order by 1, 3, 4, 5").fetchall()
    b = sqlite3.connect(out).execute(
        f"select {cols} from forecasts where {where} order by 1, 3, 4, 5").fetchall()
    assert len(a) == len(b) == 4 * 2 * 3 * (n - 300)  # 4 models, 2 symbols, 3 horizons
    assert a == b


def test_scored_rows_carry_the_actual_close_and_never_come_early(
        full_run: tuple[Path, Any], pair: dict[str, list[Any]]) -> None:
    out, _ = full_run
    close = {(s, r[0]): r[4] for s, rs in pair.items() for r in rs}
    last = pair["BTC/USD"][-1][0]
    n_scored = 0
    for (_model, _v, _e, sym, _tf, issued, target, h, yhat, _lo, _hi, created, actual, error,
         scored_at) in rows(out):
        assert target == issued + h * HOUR
        assert created == issued + HOUR  # created at the simulated close of the issue candle
        if target > last:
            assert actual is None and error is None and scored_at is None
            continue
        n_scored += 1
        assert actual == close[(sym, target)]
        assert error == pytest.approx(actual - yhat, abs=1e-9)
        assert scored_at >= target + HOUR  # not before the target candle closed
    assert n_scored > 6000


def test_the_history_kept_between_ticks_gives_the_rows_of_fresh_reads(
        tmp_path: Path, pair: dict[str, list[Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-memory window (read only what is new each tick) must be invisible in the
    rows: a replay that reads every history afresh from the store gives the same forecasts,
    also around a missing candle that gets filled as a confirmed no-trade candle."""
    from daemon.pipeline import history

    # BTC/EUR skips minutes as a thin market does: each run is confirmed as no-trade when
    # the next candle arrives, inside the rows the window already holds.
    inp = make_input(pair, 430, drop={"BTC/EUR": [352, 353, 361, 370, 371, 372, 384, 398, 399]})
    start = pair["BTC/USD"][330][0]
    cached = tmp_path / "cached.db"
    real_read = history._read
    read_rows = {"n": 0}

    def counted(store: Any, series: Any, first: int, end_ts: int, check: Any = None) -> Any:
        read_rows["n"] += (end_ts - first) // series.step_ms + 1
        return real_read(store, series, first, end_ts, check)

    monkeypatch.setattr(history, "_read", counted)
    replay.run(small_cfg(), inp, start=start, end=None, out=str(cached), show_progress=False)
    # ~100 ticks: each reads its new rows, not the 240-row training window again
    assert read_rows["n"] < 3 * 240 + 5 * 100, read_rows
    monkeypatch.setattr(history, "_read", real_read)
    reads = {"n": 0}

    def fresh(self: history.CandleWindow, end_ts: int, n: int) -> Any:
        reads["n"] += 1
        return history.load(self.store, self.series, end_ts, n, self.max_fill)

    monkeypatch.setattr(history.CandleWindow, "history", fresh)
    uncached = tmp_path / "fresh.db"
    replay.run(small_cfg(), inp, start=start, end=None, out=str(uncached), show_progress=False)
    assert reads["n"] > 100
    assert rows(cached) == rows(uncached)
    assert len(rows(cached)) > 1000


def test_confirmed_no_trade_runs_are_filled_by_the_rule_run_by_run() -> None:
    """The vectorised fill against the rule read literally, one run at a time: a maximal
    run of confirmed-empty missing candles, at most max_fill long, after a stored close, takes
    that close as open/high/low/close and volume 0; every other cell stays as it is."""
    import numpy as np

    from daemon.pipeline.history import fill_confirmed_empty

    def by_runs(x: Any, empty: Any, max_fill: int) -> int:
        filled = 0
        for j in range(x.shape[2]):
            i = 0
            while i < x.shape[1]:
                if not (empty[i, j] and math.isnan(x[3, i, j])):
                    i += 1
                    continue
                k = i
                while k < x.shape[1] and empty[k, j] and math.isnan(x[3, k, j]):
                    k += 1
                if i > 0 and math.isfinite(x[3, i - 1, j]) and k - i <= max_fill:
                    x[:4, i:k, j] = x[3, i - 1, j]
                    x[4, i:k, j] = 0.0
                    filled += k - i
                i = k
        return filled

    rng = np.random.default_rng(7)
    runs = 0
    for _ in range(500):
        n, s = int(rng.integers(1, 50)), int(rng.integers(1, 3))
        x = rng.random((5, n, s)) + 1.0
        missing = rng.random((n, s)) < rng.random()
        x[:, missing] = np.nan
        empty = missing & (rng.random((n, s)) < 0.8)
        max_fill = int(rng.integers(0, 6))
        want = x.copy()
        got = x.copy()
        expected = by_runs(want, empty, max_fill)
        assert fill_confirmed_empty(got, empty, max_fill) == expected
        assert np.array_equal(got, want, equal_nan=True)
        runs += expected > 0
    assert runs > 100  # the trials did fill runs, not only leave gaps alone


def test_a_forecast_whose_target_never_arrives_stays_unscored(tmp_path: Path,
                                                              pair: dict[str, list[Any]]) -> None:
    missing = 350
    inp = make_input(pair, 420, drop={"BTC/EUR": [missing]})
    out = tmp_path / "hole.db"
    replay.run(small_cfg(), inp, start=pair["BTC/USD"][330][0], end=None, out=str(out),
               show_progress=False)
    t_missing = pair["BTC/EUR"][missing][0]
    waiting = rows(out, f"symbol = 'BTC/EUR' and target_ts = {t_missing}")
    assert waiting and all(r[12] is None for r in waiting)
    others = rows(out, f"symbol = 'BTC/USD' and target_ts = {t_missing}")
    assert others and all(r[12] is not None for r in others)


def test_forecast_accuracy_view_equals_a_plain_python_computation(full_run: tuple[Path, Any]) -> None:
    out, _ = full_run
    data = rows(out, "actual is not null")
    naive = {(r[3], r[5], r[7]): r[13] for r in data if r[0] == "naive"}
    groups: dict[tuple[str, str, int], list[tuple[Any, ...]]] = defaultdict(list)
    for r in data:
        groups[(r[0], r[3], r[7])].append(r)
    con = sqlite3.connect(out)
    view = {(m, s, h): rest for m, s, h, *rest in con.execute(
        "select model, symbol, horizon, n, mae, rmse, mape, bias, coverage, mase, "
        "interval_score, interval_skill from forecast_accuracy")}
    naive_band = {(r[3], r[5], r[7]): (r[9], r[10], r[12]) for r in data if r[0] == "naive"}

    def score(lo: float, hi: float, y: float) -> float:
        return (hi - lo) + 10 * max(lo - y, 0.0) + 10 * max(y - hi, 0.0)

    assert set(view) == set(groups)
    for key, rs in groups.items():
        errs = [r[13] for r in rs]
        n = len(errs)
        mae = sum(abs(e) for e in errs) / n
        rmse = math.sqrt(sum(e * e for e in errs) / n)
        mape = 100 * sum(abs(r[13]) / r[12] for r in rs) / n
        bias = sum(errs) / n
        cov_rows = [r for r in rs if r[9] is not None]
        paired = [(abs(r[13]), abs(naive[(r[3], r[5], r[7])])) for r in rs]
        mase = (sum(p[0] for p in paired) / len(paired)) / (sum(p[1] for p in paired) / len(paired))
        got = view[key]
        assert got[0] == n
        for g, w in zip(got[1:6], (mae, rmse, mape, bias), strict=False):
            assert g == pytest.approx(w, rel=1e-9, abs=1e-12), key
        assert got[6] == pytest.approx(mase, rel=1e-9), key
        if not cov_rows:  # a model without a band (linear): no band figures at all
            assert got[5] is None and got[7] is None and got[8] is None, key
            continue
        cov = sum(r[9] <= r[12] <= r[10] for r in cov_rows) / len(cov_rows)
        iscore = sum(score(r[9], r[10], r[12]) for r in cov_rows) / len(cov_rows)
        both = [(score(r[9], r[10], r[12]), score(*naive_band[(r[3], r[5], r[7])]))
                for r in cov_rows]
        iskill = sum(b[0] for b in both) / sum(b[1] for b in both)
        for g, w in zip((got[5], got[7], got[8]), (cov, iscore, iskill), strict=True):
            assert g == pytest.approx(w, rel=1e-9, abs=1e-12), key
    assert view[("naive", "BTC/USD", 1)][6] == pytest.approx(1.0)
    assert view[("naive", "BTC/USD", 1)][8] == pytest.approx(1.0)


class _Double:
    """A model that is nothing but the protocol: learns a counter, forecasts close × 1.01."""

    name = "double"
    joint = False
    context = 10

    def __init__(self) -> None:
        self.learned = 0

    @property
    def version(self) -> str:
        return f"double-{self.learned}"

    @property
    def ready(self) -> bool:
        return self.learned > 0

    def learn(self, history: Any, *, should_stop: Any = None) -> Any:
        from forecaster.base import Accepted, TrainStats

        return Accepted(self.learned + 1, f"double-{self.learned + 1}", "counted",
                        TrainStats(n_windows=len(history)))

    def adopt(self, candidate: Any) -> None:
        self.learned = candidate

    def forecast(self, history: Any, horizons: list[int]) -> list[Any]:
        from forecaster.base import Forecast

        last = float(history.close[-1, 0])
        return [Forecast(history.symbols[0], h, last * 1.01, None, None) for h in horizons]

    def dumps(self, candidate: Any = None) -> bytes:
        return str(candidate if candidate is not None else self.learned).encode()

    def loads(self, data: bytes) -> None:
        self.learned = int(data)


class _Shy(_Double):
    """Rejects its first training (as a first model on too little data would)."""

    name = "shy"

    def learn(self, history: Any, *, should_stop: Any = None) -> Any:
        from forecaster.base import RejectCode, Rejected, TrainStats

        self.tries = getattr(self, "tries", 0) + 1
        if self.tries == 1:
            return Rejected(RejectCode.NOT_ENOUGH_DATA, "not yet", TrainStats())
        return super().learn(history)


def test_after_a_rejected_first_training_the_next_attempt_comes_within_a_few_candles(
        tmp_path: Path, pair: dict[str, list[Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.pipeline import modelset as models
    from daemon.pipeline.tick import FIRST_RETRY

    monkeypatch.setitem(models.REGISTRY, "shy", lambda cfg, series: _Shy())
    out = tmp_path / "shy.db"
    cfg = small_cfg(**{"model.models": ["naive", "shy"], "model.retrain_every": 24})
    replay.run(cfg, make_input(pair, 400), start=pair["BTC/USD"][330][0], end=None,
               out=str(out), show_progress=False)
    con = sqlite3.connect(out)
    runs = con.execute("select status, data_end_ts from training_runs order by id").fetchall()
    assert [st for st, _ in runs[:2]] == ["rejected", "accepted"]
    assert runs[1][1] - runs[0][1] == FIRST_RETRY * HOUR < 24 * HOUR
    assert runs[2][1] - runs[1][1] == 24 * HOUR  # once a model exists: every retrain_every


def test_a_model_added_through_the_config_is_learned_forecast_and_stored(
        tmp_path: Path, pair: dict[str, list[Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    from daemon.pipeline import modelset as models

    monkeypatch.setitem(models.REGISTRY, "double", lambda cfg, series: _Double())
    out = tmp_path / "double.db"
    cfg = small_cfg(**{"model.models": ["naive", "double"]})
    replay.run(cfg, make_input(pair, 400), start=pair["BTC/USD"][330][0], end=None,
               out=str(out), show_progress=False)
    con = sqlite3.connect(out)
    got = dict(con.execute("select model, count(*) from forecasts group by model").fetchall())
    assert got == {"naive": 70 * 2 * 3, "double": 70 * 2 * 3}
    runs = con.execute("select model, status, model_version from training_runs "
                       "order by id").fetchall()
    assert runs and all(m == "double" and st == "accepted" for m, st, _ in runs)
    versions = {v for (v,) in con.execute("select distinct model_version from forecasts "
                                          "where model = 'double'")}
    assert versions <= {v for *_, v in runs}
    # its checkpoint is in the store: a new process would serve the same version
    (data,) = con.execute("select data from checkpoints where model = 'double' "
                          "order by id desc limit 1").fetchone()
    assert int(data) == len(runs)
    for yhat, close in con.execute(
            "select f.yhat, c.close from forecasts f join candles c on c.symbol = "
            "f.symbol and c.ts = f.issued_ts where f.model = 'double'"):
        assert yhat == pytest.approx(close * 1.01)


def test_report_since_matches_a_filtered_computation(full_run: tuple[Path, Any],
                                                     pair: dict[str, list[Any]]) -> None:
    from daemon.commands.report import accuracy

    out, _ = full_run
    since = pair["BTC/USD"][500][0]
    got = {(r["model"], r["symbol"], r["horizon"]): r for r in accuracy(Store(str(out)), since)}
    data = rows(out, f"actual is not null and issued_ts >= {since}")
    for key in got:
        errs = [abs(r[13]) for r in data if (r[0], r[3], r[7]) == key]
        assert got[key]["n"] == len(errs)
        assert got[key]["mae"] == pytest.approx(sum(errs) / len(errs), rel=1e-9)


def test_a_replay_killed_with_sigkill_and_restarted_ends_with_the_same_rows(
        tmp_path: Path, pair: dict[str, list[Any]]) -> None:
    """Each run is killed once it has committed a few more ticks than the last one left:
    a point the test observes in the store, so every kill lands mid-replay on any machine."""
    files = write_data(tmp_path, pair, 460)
    cfg = write_config(tmp_path / "c.toml", SCRIPT_CFG)
    base = [sys.executable, "-m", "daemon", "--config", str(cfg), "replay", "--data",
            *map(str, files), "--start", "2020-01-14"]
    env = env_without()
    clean = tmp_path / "clean.db"
    p = subprocess.run([*base, "--out", str(clean)], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    want = rows(clean)
    total = issued_ticks(clean)
    killed = tmp_path / "killed.db"
    for kill_at in (total // 4, total // 2, 3 * total // 4):
        proc = subprocess.Popen([*base, "--out", str(killed)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
        kill_9_once(proc, lambda k=kill_at: issued_ticks(killed) >= k,
                    f"{kill_at} of {total} ticks committed")
        assert issued_ticks(killed) < total, "killed after the last tick; it proves nothing"
    p = subprocess.run([*base, "--out", str(killed)], capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    got = rows(killed)
    assert len(got) == len(set(got))
    assert got == want
    con = sqlite3.connect(killed)
    assert con.execute("pragma integrity_check").fetchone()[0] == "ok"
    dup = con.execute("select count(*) from (select 1 from forecasts group by model, symbol, "
                      "issued_ts, horizon having count(*) > 1)").fetchone()[0]
    assert dup == 0


def test_replay_refuses_the_live_store_and_another_replays_store(
        tmp_path: Path, pair: dict[str, list[Any]]) -> None:
    from daemon.core.errors import UsageError

    live = tmp_path / "live.db"
    with pytest.raises(UsageError, match="live store"):
        replay.run(small_cfg(), make_input(pair, 400), start=None, end=None, out=str(live),
                   live_url=f"sqlite:///{live}", show_progress=False)
    out = tmp_path / "r.db"
    replay.run(small_cfg(), make_input(pair, 340), start=pair["BTC/USD"][330][0], end=None,
               out=str(out), show_progress=False)
    with pytest.raises(UsageError, match="other inputs"):
        replay.run(small_cfg(), make_input(pair, 350), start=pair["BTC/USD"][330][0], end=None,
                   out=str(out), show_progress=False)


def test_a_window_with_a_hole_is_not_forecast_from_and_resumes_after_backfill(
        tmp_path: Path, minutes: dict[str, list[Any]], caplog: pytest.LogCaptureFixture) -> None:
    """Live path with real ccxt: a hole in the window stops seq2seq (logged); backfill heals it."""
    cfg = small_cfg(**{"exchange.timeframe": "1m"})
    now = T0 + 1200 * MINUTE + 5_000
    with ExchangeEmulator({s: list(r) for s, r in minutes.items()}, now_ms=now) as emu:
        store = Store(str(tmp_path / "live.db"))
        store.open(now)
        src = CcxtSource("bitstamp", api_url=emu.base_url, rate_limit=False, max_retries=2,
                         backoff_max_s=0.01)
        series = Series("bitstamp", tuple(minutes), "1m")
        models = ModelSet(cfg, series)
        pipe = Pipeline(cfg, store, src, models, series)
        rep = pipe.tick(now)
        assert rep.training is not None
        assert {o.model: o.status for o in rep.training} == {"seq2seq": "accepted",
                                                              "linear": "accepted"}
        assert "seq2seq" in rep.issued
        # cut a hole into the last lookback window of BTC/EUR, as a lost page would
        con = sqlite3.connect(store.path)  # type: ignore[arg-type]
        con.execute("delete from candles where symbol = 'BTC/EUR' and ts between ? and ?",
                    (now - 10 * MINUTE, now - 8 * MINUTE))
        con.commit()
        con.close()
        emu.advance(MINUTE)
        caplog.set_level(logging.WARNING)
        rep = pipe.tick(emu.now_ms())
        assert "seq2seq" not in rep.issued and "hole" in rep.skipped["seq2seq"]
        assert "not forecasting" in caplog.text
        assert {"naive", "drift"} <= set(rep.issued)
        backfill_symbol(store, src, series, "BTC/EUR", Span(None, None, emu.now_ms(), 240))
        rep = pipe.tick(emu.now_ms())
        assert rep.issued.get("seq2seq") == emu.now_ms() - emu.now_ms() % MINUTE - MINUTE


def test_the_readme_queries_run_on_a_real_replay_store(full_run: tuple[Path, Any]) -> None:
    """The SQL users copy from the README must keep working against the schema."""
    import re

    out, _ = full_run
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"### Queries you will want\s+```sql\n(.*?)```", readme, re.S)
    assert block, "README lost its example queries"
    by_hand = re.search(r"Query 5 by hand.*?```sql\n(.*?)```", readme, re.S)
    assert by_hand, "README lost the interval score by hand"
    (mine,) = sqlite3.connect(out).execute(by_hand.group(1)).fetchone()
    (view,) = sqlite3.connect(out).execute(
        "select interval_score from forecast_accuracy where model = 'seq2seq' and "
        "symbol = 'BTC/USD' and horizon = 1").fetchone()
    assert mine == pytest.approx(view, rel=1e-12)
    queries = [q.strip() for q in block.group(1).split(";")
               if q.strip() and "(PostgreSQL)" not in q]  # its SQLite twin runs here
    assert len(queries) == 6
    con = sqlite3.connect(out)
    results = [con.execute(q).fetchall() for q in queries]
    assert all(results[i] for i in range(5)), "queries 1-5 must return rows on a replay"
    assert {r[2] for r in results[4]} == {"seq2seq", "naive", "drift"}  # linear has no band
    waiting = dict((m, n) for m, _s, n, _t in results[5])
    assert set(waiting) == {"seq2seq", "naive", "drift", "linear"}  # the last wait for actuals


def test_report_prints_the_table_writes_json_and_draws_the_plot(
        full_run: tuple[Path, Any], cli: Any, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    import json

    out, _ = full_run
    png = tmp_path / "acc.png"
    assert cli("--db", str(out), "report", "--plot", str(png)) == 0
    text = capsys.readouterr().out
    assert "seq2seq" in text and "naive" in text and "MASE" in text and "cov80" in text
    assert png.stat().st_size > 20_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli("--db", str(out), "report", "--json", "--since", "2020-01-20") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["since"] == "2020-01-20T00:00:00Z"
    assert {r["model"] for r in data["rows"]} == {"seq2seq", "naive", "drift", "linear"}
    assert all(r["first_issued_ts"] >= 1579478400000 for r in data["rows"])


def test_linear_forecasts_right_after_a_confirmed_no_trade_gap(tmp_path: Path,
                                                              pair: dict[str, list[Any]]) -> None:
    """Two BTC/EUR candles missing (no trades, confirmed when the next one arrives) are
    filled flat inside the slice a model reads only after a stored candle: `linear` reads
    more than its last three candles so that the very next issue times still forecast."""
    inp = make_input(pair, 400, drop={"BTC/EUR": [340, 341]})
    out = tmp_path / "gap.db"
    replay.run(small_cfg(), inp, start=pair["BTC/USD"][330][0], end=None, out=str(out),
               show_progress=False)
    issued = {r[5] for r in rows(out, "model = 'linear'")}
    for k in (342, 343, 344):
        assert pair["BTC/EUR"][k][0] in issued, k
