"""What the models can learn, and the evidence that decides whether the seq2seq's median
may leave the last close: the cross-market lead of issue 18, the median gate's error rates,
the prequential record, and the `linear` floor."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from forecaster import calibration, checkpoint, evidence
from forecaster.base import Accepted, History
from forecaster.linear import Linear
from forecaster.seq2seq import Seq2SeqForecaster
from tests.helpers.forecaster import STEP, SYMS, T0, candles_from_returns, small_config


def lead_lag(n: int, seed: int, b: float = 0.5, noise: float = 0.8) -> History:
    """A is a random walk; B's next return is b × A's last return plus noise (sd `noise` ×
    A's): the lead a joint model of two markets exists to learn. The best forecast of B one
    step ahead has MASE noise / sqrt(b² + noise²) (0.848 here); A cannot be forecast."""
    rng = np.random.default_rng(seed)
    a = 0.001 * rng.standard_normal(n)
    e = 0.001 * noise * rng.standard_normal(n)
    bb = e.copy()
    bb[1:] += b * a[:-1]
    return candles_from_returns(np.stack([a, bb], axis=1))


def _mase_h1(f: object, h: History, start: int, context: int) -> dict[str, float]:
    """Out-of-sample MASE one step ahead per symbol, forecasting at every row from `start`."""
    err: dict[str, list[float]] = {s: [] for s in SYMS}
    naive: dict[str, list[float]] = {s: [] for s in SYMS}
    for end in range(start, len(h) - 1):
        for o in f.forecast(h.rows(slice(max(0, end + 1 - context), end + 1)), [1]):  # type: ignore[attr-defined]
            s = SYMS.index(o.symbol)
            y = h.close[end + 1, s]
            err[o.symbol].append(abs(o.yhat - y))
            naive[o.symbol].append(abs(h.close[end, s] - y))
    return {s: float(np.mean(err[s]) / np.mean(naive[s])) for s in SYMS}


# -- the seq2seq learns the lead, and only the lead ----------------------------------------

def test_the_network_learns_a_cross_market_lead_and_serves_it_only_where_it_is_real() -> None:
    h = lead_lag(6000, seed=2)
    f = Seq2SeqForecaster(small_config(epochs=2.0, dropout=0.1, horizons=(1, 3, 8)))
    out = f.learn(h.rows(slice(0, 3600)))
    assert isinstance(out, Accepted), out
    f.adopt(out.candidate)
    cells = {(c["symbol"], c["horizon"]): c for c in out.stats.evidence["cells"]}
    assert cells[("BTC/EUR", 1)]["moved"] and cells[("BTC/EUR", 1)]["gain"] < -0.05
    assert not any(c["moved"] for (s, _), c in cells.items() if s == "BTC/USD")
    mase = _mase_h1(f, h, 3600, f.context)
    assert mase["BTC/EUR"] <= 0.90, mase
    assert mase["BTC/USD"] == 1.0  # a random walk: exactly the last close, every time
    assert "median moves at BTC/EUR h1" in out.reason


# -- the median gate: its false-positive rate, and the edge it can see ---------------------

def test_the_gate_moves_a_median_without_skill_in_at_most_one_retrain_in_twenty() -> None:
    """The worst case of "no skill": a median exactly as good as the last close (d has
    mean 0), ten cells, overlapping 5-step windows in half of them. Bonferroni at 5 %."""
    rng = np.random.default_rng(0)
    trials, n = 400, 2000
    moved = 0
    for _ in range(trials):
        iid = rng.standard_normal((n + 4, 10))
        d = iid[4:].copy()
        d[:, 5:] = sum(iid[4 - j:n + 4 - j, 5:] for j in range(5)) / math.sqrt(5)  # MA(4)
        cells = calibration.median_gate(0.3 * d, np.ones((n, 10)), [1, 5], tuple("ABCDE"))
        moved += any(c.moved for c in cells)
    assert moved / trials <= 0.08, moved  # nominal 0.05; 0.08 is 2.7 binomial sd above


def test_the_gate_sees_a_one_percent_edge_on_ten_thousand_windows() -> None:
    assert calibration.min_detectable(10_000) == pytest.approx(0.0103, abs=1e-4)
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(100):
        d = 0.3 * rng.standard_normal((10_000, 10))
        d[:, 3] -= 0.0103  # one cell has an edge of 1.03 % of the MAE
        cells = calibration.median_gate(d, np.ones((10_000, 10)), [1, 5], tuple("ABCDE"))
        hits += cells[3].moved
        assert not any(c.moved for i, c in enumerate(cells) if i != 3 and c.gain > 0)
    assert hits >= 65  # 80 % power by design; 65 is 3.75 binomial sd below


def test_too_few_windows_are_not_judged() -> None:
    d = -np.ones((calibration.MIN_N - 1, 2))
    assert [c.moved for c in calibration.median_gate(d, np.ones_like(d), [1], ("A", "B"))] \
        == [False, False]


# -- the prequential record --------------------------------------------------------------

def _walk(n: int, seed: int = 3) -> History:
    return candles_from_returns(0.001 * np.random.default_rng(seed).standard_normal((n, 2)))


def test_the_record_judges_each_issue_time_once_when_its_outcome_is_known() -> None:
    h = _walk(400)
    lc = np.log(h.close)
    calls: list[np.ndarray] = []

    def predict(ends: np.ndarray) -> np.ndarray:  # a median of +0.001 everywhere
        calls.append(ends)
        return np.full((len(ends), 4), 0.001)

    rec = evidence.Record.empty(int(h.ts[199]), 4)
    rec = evidence.extend(rec, h.rows(slice(0, 300)), 10, [1, 5], predict)
    assert calls[0].tolist() == list(range(200, 300))  # the issue times after the record
    assert rec.ts.tolist() == (h.ts[200:295]).tolist()  # outcomes of h5 known up to 294
    assert rec.pending_ts.tolist() == h.ts[295:300].tolist()
    y1 = lc[201, 0] - lc[200, 0]
    assert rec.d[0, 0] == pytest.approx(abs(y1 - 0.001) - abs(y1), rel=1e-5)
    y5 = lc[205, 1] - lc[200, 1]
    assert rec.d[0, 3] == pytest.approx(abs(y5 - 0.001) - abs(y5), rel=1e-5)
    assert rec.y_abs[0, 3] == pytest.approx(abs(y5), rel=1e-5)
    again = evidence.extend(rec, h.rows(slice(0, 300)), 10, [1, 5], predict)
    assert again is rec and len(calls) == 1  # nothing new: nothing predicted twice
    rec2 = evidence.extend(rec, h.rows(slice(50, 400)), 10, [1, 5], predict, keep=150)
    assert calls[1].tolist() == list(range(250, 350))  # rows of the new slice: 300..399
    assert rec2.ts.tolist() == h.ts[245:395].tolist()  # pending resolved, trimmed to 150
    assert rec2.end_ts == int(h.ts[399])
    d, y = rec2.before(int(h.ts[300]))
    assert len(d) == 55 and d.dtype == np.float64
    t = rec2.to_tensors()
    back = evidence.Record.from_tensors(t, rec2.end_ts, 4)
    assert np.array_equal(back.d, rec2.d) and np.array_equal(back.pending_ts, rec2.pending_ts)
    with pytest.raises(ValueError, match="cells"):
        evidence.Record.from_tensors(t, rec2.end_ts, 6)


def test_a_warm_retrain_extends_the_record_and_the_checkpoint_keeps_it() -> None:
    h = lead_lag(3000, seed=4)
    f = Seq2SeqForecaster(small_config(horizons=(1, 3, 8)))
    f.adopt(f.learn(h.rows(slice(0, 2000))).candidate)  # type: ignore[union-attr]
    assert f.fitted is not None and len(f.fitted.record.ts) == 0
    out = f.learn(h.rows(slice(0, 2600)))
    assert isinstance(out, Accepted), out
    rec = out.candidate.record
    assert rec.end_ts == int(h.ts[2599]) and len(rec.ts) == 600 - 8 + 1 - 1
    assert out.stats.evidence["n_record"] > 0
    g = Seq2SeqForecaster(small_config(horizons=(1, 3, 8)))
    g.loads(f.dumps(out.candidate))
    assert g.fitted is not None
    assert np.array_equal(g.fitted.record.d, rec.d, equal_nan=True)
    assert g.fitted.evidence == out.candidate.evidence


# -- linear: the cross-market floor --------------------------------------------------------

def test_linear_finds_the_lead_and_beats_the_last_close_where_it_exists() -> None:
    h = lead_lag(6000, seed=5)
    m = Linear(SYMS, STEP, [1, 5], lags=2)
    out = m.learn(h.rows(slice(0, 4000)))
    assert isinstance(out, Accepted)
    m.adopt(out.candidate)
    cells = {(c["symbol"], c["horizon"]): c for c in out.stats.evidence["cells"]}
    # features: r_USD(t), r_EUR(t), r_USD(t-1), r_EUR(t-1): B follows A's last return
    assert cells[("BTC/EUR", 1)]["coef"][0] == pytest.approx(0.5, abs=0.05)
    mase = _mase_h1(m, h, 4000, m.context)
    assert mase["BTC/EUR"] <= 0.87 and 0.99 <= mase["BTC/USD"] <= 1.01, mase


def test_linear_on_a_random_walk_stays_near_the_last_close() -> None:
    h = _walk(6000, seed=6)
    m = Linear(SYMS, STEP, [1, 5])
    out = m.learn(h.rows(slice(0, 4000)))
    assert isinstance(out, Accepted)
    m.adopt(out.candidate)
    mase = _mase_h1(m, h, 4000, m.context)
    assert all(0.99 <= v <= 1.01 for v in mase.values()), mase
    # Whatever penalty validation picked, the slopes it found on noise are small.
    assert all(abs(b) < 0.06 for c in out.stats.evidence["cells"] for b in c["coef"])


def test_linear_checkpoints_round_trip_and_refuse_another_model() -> None:
    h = lead_lag(1500, seed=7)
    m = Linear(SYMS, STEP, [1, 5])
    m.adopt(m.learn(h).candidate)  # type: ignore[union-attr]
    other = Linear(SYMS, STEP, [1, 5])
    other.loads(m.dumps())
    assert other.version == m.version and other.forecast(h, [1, 5]) == m.forecast(h, [1, 5])
    with pytest.raises(checkpoint.CheckpointError, match="horizons"):
        Linear(SYMS, STEP, [1, 3]).loads(m.dumps())
    holed = h.close.copy()
    holed[-2, 0] = np.nan
    from forecaster.base import NotEnoughData
    with pytest.raises(NotEnoughData):
        m.forecast(History(h.ts, holed, h.volume, SYMS, STEP), [1])
    assert T0 % STEP == 0


# -- through the daemon's own pipeline: the stored median moves, and says why -------------

def test_a_replay_stores_a_seq2seq_median_that_follows_the_lead_and_says_why(
        tmp_path: Path) -> None:
    import json
    import sqlite3

    from daemon.commands import replay
    from daemon.files import replay_data
    from tests.helpers import small_cfg

    h = lead_lag(3200, seed=8)
    data = {}
    for j, sym in enumerate(SYMS):
        ohlcv = np.stack([h.open[:, j], h.high[:, j], h.low[:, j], h.close[:, j],
                          np.ones(len(h))], axis=1)
        data[sym] = (h.ts.astype(np.int64), ohlcv)
    inp = replay_data.replay_input("bitstamp", "1m", data, "lead-lag")
    cfg = small_cfg(**{"model.lookback": 32, "model.horizons": [1, 5],
                       "model.train_window": 2000, "model.retrain_every": 300,
                       "model.hidden": 16, "model.batch_size": 64, "model.epochs": 2.0,
                       "model.initial_steps": 1000, "model.retrain_steps": 100,
                       "model.learning_rate": 3e-3, "model.max_fill": 0})
    out = tmp_path / "lead.db"
    replay.run(cfg, inp, start=int(h.ts[2000]), end=None, out=str(out), show_progress=False)
    con = sqlite3.connect(out)
    mase = dict(con.execute("select model || ' ' || symbol, mase from forecast_accuracy "
                            "where horizon = 1").fetchall())
    assert mase["seq2seq BTC/EUR"] < 0.93 and mase["linear BTC/EUR"] < 0.93, mase
    assert mase["seq2seq BTC/USD"] == 1.0, mase  # the leading market: nothing to learn
    moved = con.execute(
        "select count(*) from forecasts s join forecasts n on n.model = 'naive' and "
        "n.symbol = s.symbol and n.issued_ts = s.issued_ts and n.horizon = s.horizon "
        "where s.model = 'seq2seq' and s.symbol = 'BTC/EUR' and s.horizon = 1 "
        "and s.yhat != n.yhat").fetchone()[0]
    assert moved > 900  # nearly every one of the ~1,200 ticks
    evid = [json.loads(e) for (e,) in con.execute(
        "select evidence from training_runs where model = 'seq2seq' and status = 'accepted'")]
    assert evid and all("cells" in e for e in evid)
    first = {(c["symbol"], c["horizon"]): c for c in evid[0]["cells"]}
    assert first[("BTC/EUR", 1)]["moved"] and not first[("BTC/USD", 1)]["moved"]
    from daemon.commands.status import status_data, status_text

    cfg_s = small_cfg(**{"storage.url": f"sqlite:///{out}", "exchange.timeframe": "1m"})
    data = status_data(cfg_s, int(h.ts[-1]) + 60_000)
    text = status_text(data)
    assert "median: moves off the last close at BTC/EUR h1" in text, text
    assert [c["symbol"] for c in data["model"]["median"]["moved"]][:1] == ["BTC/EUR"]
