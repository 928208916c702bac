"""The forecasters: a contract suite over every model, the baselines' formulas, what the
seq2seq must do on synthetic series, training guards, checkpoints, devices."""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import random
from typing import Any

import numpy as np
import pytest
import torch

from forecaster import checkpoint, training
from forecaster.band import Z80
from forecaster.base import (
    Accepted,
    Forecaster,
    History,
    NotEnoughData,
    RejectCode,
    Rejected,
    Stopped,
    Trainable,
)
from forecaster.baselines import Drift, Naive
from forecaster.linear import Linear
from forecaster.seq2seq import Seq2SeqForecaster
from tests.helpers.forecaster import (
    STEP,
    SYMS,
    T0,
    candles_from_returns,
    garch_returns,
    sine_pair,
    small_config,
)

HORIZONS = [1, 3, 8]


def adopted(f: Seq2SeqForecaster, h: History, **kw: Any) -> Accepted:
    out = f.learn(h, **kw)
    assert isinstance(out, Accepted), out
    f.adopt(out.candidate)
    return out


@pytest.fixture(scope="module")
def trained() -> Seq2SeqForecaster:
    f = Seq2SeqForecaster(small_config())
    adopted(f, sine_pair())
    return f


def forecasters(trained: Seq2SeqForecaster) -> list[Any]:
    lin = Linear(SYMS, STEP, HORIZONS)
    lin.adopt(adopted(lin, sine_pair(noise=0.001)).candidate)
    return [trained, Naive(context=200), Drift(context=200), lin]


# -- the contract every model keeps ----------------------------------------------------

@pytest.mark.parametrize("which", ["seq2seq", "naive", "drift", "linear"])
def test_contract_every_horizon_finite_for_every_symbol(trained: Seq2SeqForecaster,
                                                        which: str) -> None:
    f = {x.name: x for x in forecasters(trained)}[which]
    assert isinstance(f, Forecaster)
    out = f.forecast(sine_pair(noise=0.001), HORIZONS)
    assert {(o.symbol, o.horizon) for o in out} == {(s, k) for s in SYMS for k in HORIZONS}
    for o in out:
        assert np.isfinite(o.yhat) and o.yhat > 0
        if which == "linear":  # a point floor: no band (NULL in the store)
            assert o.lower is None and o.upper is None
            continue
        assert o.lower is not None and o.upper is not None
        assert 0 < o.lower <= o.yhat <= o.upper
    assert isinstance(f.version, str) and f.version


@pytest.mark.parametrize("which", ["seq2seq", "linear"])
def test_contract_learn_does_not_mutate_its_input(trained: Seq2SeqForecaster, which: str) -> None:
    f = copy.deepcopy({x.name: x for x in forecasters(trained)}[which])
    h = sine_pair(noise=0.001)
    before = [a.copy() for a in (h.ts, h.close, h.volume, h.high, h.low, h.open)]
    out = f.learn(h)
    assert isinstance(out, (Accepted, Rejected))
    for a, b in zip(before, (h.ts, h.close, h.volume, h.high, h.low, h.open), strict=True):
        assert np.array_equal(a, b)


def test_contract_checkpoint_round_trip_gives_identical_forecasts(
        trained: Seq2SeqForecaster) -> None:
    other = Seq2SeqForecaster(small_config())
    other.loads(trained.dumps())
    assert other.version == trained.version
    h = sine_pair(noise=0.001)
    assert other.forecast(h, HORIZONS) == trained.forecast(h, HORIZONS)


def test_contract_fresh_and_trained_differ(trained: Seq2SeqForecaster) -> None:
    fresh = Seq2SeqForecaster(small_config())
    assert not fresh.ready and fresh.version == "untrained"
    with pytest.raises(NotEnoughData):
        fresh.forecast(sine_pair(), HORIZONS)
    other = Seq2SeqForecaster(small_config(seed=5))
    adopted(other, sine_pair(1200))
    assert other.version != trained.version


# -- the baselines are exactly their formulas -------------------------------------------

def test_baseline_bands_equal_the_riskmetrics_formula_computed_by_hand() -> None:
    rng = np.random.default_rng(4)
    closes = 100 * np.exp(np.cumsum(0.01 * rng.standard_normal(45)))
    h = History(T0 + np.arange(45) * STEP, np.stack([closes, closes * 0.9], 1),
                np.ones((45, 2)), SYMS, STEP)
    lam = 0.9
    r = np.diff(np.log(closes))
    var = float(np.mean(r[:30] ** 2))  # seeded with the mean of the first 30 squared returns
    for x in r[30:]:
        var = lam * var + (1 - lam) * x * x
    sigma = math.sqrt(var)
    for model in (Naive(context=100, ewma_lambda=lam), Drift(context=100, ewma_lambda=lam)):
        for o in model.forecast(h, [1, 4]):
            if o.symbol != "BTC/USD":
                continue
            half = Z80 * sigma * math.sqrt(o.horizon)
            assert o.lower == pytest.approx(o.yhat * math.exp(-half), rel=1e-12)
            assert o.upper == pytest.approx(o.yhat * math.exp(half), rel=1e-12)
            if model.name == "naive":
                assert o.yhat == closes[-1]


def test_drift_is_the_textbook_slope_over_its_context_and_skips_holes() -> None:
    h = sine_pair(500, noise=0.003)
    d = {(o.symbol, o.horizon): o.yhat for o in Drift(context=300).forecast(h, [1, 10])}
    c = h.close[-300:, 0]
    slope = (math.log(c[-1]) - math.log(c[0])) / 299
    assert d[("BTC/USD", 10)] == pytest.approx(c[-1] * math.exp(10 * slope), rel=1e-12)
    holed = h.close.copy()
    holed[-300, 0] = np.nan  # the first point is missing: the slope starts one later
    hh = History(h.ts, holed, h.volume, SYMS, STEP)
    d2 = {(o.symbol, o.horizon): o.yhat for o in Drift(context=300).forecast(hh, [10])}
    slope2 = (math.log(c[-1]) - math.log(c[1])) / 298
    assert d2[("BTC/USD", 10)] == pytest.approx(c[-1] * math.exp(10 * slope2), rel=1e-12)


def test_baselines_have_nothing_to_learn() -> None:
    for m in (Naive(), Drift()):
        assert isinstance(m, Forecaster) and not isinstance(m, Trainable)
    assert isinstance(Seq2SeqForecaster(small_config()), Trainable)
    assert Naive().version == "naive-2" and Drift().version == "drift-2"


# -- what the seq2seq must do on synthetic series ---------------------------------------

def _walk_forecasts(f: Seq2SeqForecaster, h: History, start: int,
                    horizons: list[int]) -> list[tuple[int, Any]]:
    out = []
    for end in range(start, len(h) - max(horizons), 3):
        for o in f.forecast(h.rows(slice(0, end + 1)), horizons):
            out.append((end, o))
    return out


def test_on_a_random_walk_the_median_is_the_last_close_and_the_band_covers_80() -> None:
    rng = np.random.default_rng(11)
    h = candles_from_returns(0.002 * rng.standard_normal((3600, 2)))
    f = Seq2SeqForecaster(small_config())
    adopted(f, h.rows(slice(0, 1800)))
    got = _walk_forecasts(f, h, 1800, [1, 4, 8])
    inside = []
    for end, o in got:
        s = SYMS.index(o.symbol)
        assert o.yhat == h.close[end, s]  # no skill, no move: exactly the last close
        y = h.close[end + o.horizon, s]
        inside.append(o.lower <= y <= o.upper)
    assert 0.75 <= float(np.mean(inside)) <= 0.85, np.mean(inside)


def test_on_volatility_clustering_the_band_beats_a_constant_width_band() -> None:
    h = candles_from_returns(garch_returns(4000, seed=3))
    f = Seq2SeqForecaster(small_config())
    adopted(f, h.rows(slice(0, 2000)))
    got = _walk_forecasts(f, h, 2000, [1, 8])
    for k in (1, 8):
        rows = [(end, o) for end, o in got if o.horizon == k]
        lc = np.log(h.close)
        moves = np.array([lc[e + k, SYMS.index(o.symbol)] - lc[e, SYMS.index(o.symbol)]
                          for e, o in rows])
        lo = np.array([math.log(o.lower / h.close[e, SYMS.index(o.symbol)]) for e, o in rows])
        hi = np.array([math.log(o.upper / h.close[e, SYMS.index(o.symbol)]) for e, o in rows])
        ours = np.mean((hi - lo) + 10 * np.maximum(lo - moves, 0) + 10 * np.maximum(moves - hi, 0))
        # The best constant band in hindsight: the 80 % quantile of |move| on these rows.
        c = np.quantile(np.abs(moves), 0.8)
        const = np.mean(2 * c + 10 * np.maximum(np.abs(moves) - c, 0))
        assert ours < 0.95 * const, (k, ours, const)


def test_a_noiseless_sine_pair_is_forecast_within_a_small_error(
        trained: Seq2SeqForecaster) -> None:
    h = sine_pair(2000)
    errs, naive = [], []
    for end in range(1600, 1990, 7):
        for o in trained.forecast(h.rows(slice(0, end + 1)), HORIZONS):
            s = SYMS.index(o.symbol)
            errs.append(abs(math.log(o.yhat / h.close[end + o.horizon, s])))
            naive.append(abs(math.log(h.close[end, s] / h.close[end + o.horizon, s])))
    assert np.mean(errs) < 0.3 * np.mean(naive), (np.mean(errs), np.mean(naive))


def test_same_data_and_seed_give_the_same_forecasts_on_cpu() -> None:
    h = sine_pair(900, noise=0.002)
    a, b = Seq2SeqForecaster(small_config()), Seq2SeqForecaster(small_config())
    adopted(a, h)
    adopted(b, h)
    assert a.version == b.version
    assert a.forecast(h, HORIZONS) == b.forecast(h, HORIZONS)
    c = Seq2SeqForecaster(small_config(seed=1))
    adopted(c, h)
    assert c.version != a.version


# -- guards ---------------------------------------------------------------------------

def _weights(f: Seq2SeqForecaster) -> dict[str, torch.Tensor]:
    assert f.fitted is not None
    return {k: v.clone() for k, v in f.fitted.net.state_dict().items()}


def test_a_retrain_worse_than_the_current_model_on_validation_is_rejected(
        trained: Seq2SeqForecaster, monkeypatch: pytest.MonkeyPatch) -> None:
    f = copy.deepcopy(trained)
    version = f.version

    h = sine_pair(1600, noise=0.0005, seed=3)
    current = f.fitted
    real = training.predict_raw

    def oracle(net: Any, w: Any, norm: Any, lookback: int) -> np.ndarray:
        if current is None or net is not current.net:
            return real(net, w, norm, lookback)
        # The current model "knows" every outcome: nothing can beat it.
        ends = w.ends.numpy()
        k = np.minimum(ends[:, None] + np.arange(1, 9)[None, :], len(h) - 1)
        moves = np.log(h.close[k] / h.close[ends][:, None])
        return np.stack([moves - 1e-6, moves, moves + 1e-6], axis=-1)

    monkeypatch.setattr(training, "predict_raw", oracle)
    out = f.learn(h)
    assert isinstance(out, Rejected) and out.code is RejectCode.WORSE_THAN_CURRENT
    assert out.stats.val_loss is not None and out.stats.prev_val_loss is not None
    assert out.stats.val_loss > out.stats.prev_val_loss
    assert f.version == version


def test_an_accepted_retrain_was_not_worse_on_validation(trained: Seq2SeqForecaster) -> None:
    f = copy.deepcopy(trained)
    out = f.learn(sine_pair(1600, noise=0.0005, seed=3))
    assert out.stats.val_loss is not None and out.stats.prev_val_loss is not None
    assert isinstance(out, (Accepted, Rejected))
    assert (out.stats.val_loss <= out.stats.prev_val_loss) == isinstance(out, Accepted)


def test_nan_in_a_training_batch_leaves_the_weights_unchanged(
        trained: Seq2SeqForecaster, monkeypatch: pytest.MonkeyPatch) -> None:
    f = copy.deepcopy(trained)
    before, version = _weights(f), f.version
    real = training.gather
    calls = {"n": 0}

    def poisoned(w: Any, pos: torch.Tensor, lookback: int) -> torch.Tensor:
        x = real(w, pos, lookback)
        calls["n"] += 1
        if calls["n"] == 5:
            x = x.clone()
            x[0, 0, 0] = float("nan")
        return x

    monkeypatch.setattr(training, "gather", poisoned)
    out = f.learn(sine_pair(1500, noise=0.001, seed=5))
    assert isinstance(out, Rejected) and out.code is RejectCode.NON_FINITE
    assert f.version == version
    assert all(torch.equal(before[k], v) for k, v in _weights(f).items())


def test_a_diverging_training_never_replaces_the_weights(trained: Seq2SeqForecaster) -> None:
    f = copy.deepcopy(trained)
    f.config = dataclasses.replace(f.config, learning_rate=1e4)
    before = _weights(f)
    out = f.learn(sine_pair(1500, noise=0.001, seed=6))
    if isinstance(out, Accepted):
        f.adopt(out.candidate)  # at most a refreshed prior around the same network
    assert all(torch.equal(before[k], v) for k, v in _weights(f).items())


def test_too_little_data_is_refused_with_a_reason() -> None:
    f = Seq2SeqForecaster(small_config())
    out = f.learn(sine_pair(60))
    assert isinstance(out, Rejected) and out.code is RejectCode.NOT_ENOUGH_DATA
    assert not f.ready


def test_a_first_training_on_real_sized_history_is_accepted() -> None:
    rng = np.random.default_rng(2)
    h = candles_from_returns(garch_returns(1440, seed=9) + 1e-4 * rng.standard_normal((1440, 2)))
    out = Seq2SeqForecaster(small_config(lookback=60, horizon=15)).learn(h)
    assert isinstance(out, Accepted), out


def test_a_window_with_a_hole_is_not_forecast_from(trained: Seq2SeqForecaster) -> None:
    h = sine_pair()
    close = h.close.copy()
    close[-5, 1] = np.nan
    with pytest.raises(NotEnoughData, match="hole"):
        trained.forecast(History(h.ts, close, h.volume, SYMS, STEP), HORIZONS)


def test_stop_request_ends_training_without_a_new_model(trained: Seq2SeqForecaster) -> None:
    f = copy.deepcopy(trained)
    out = f.learn(sine_pair(noise=0.001), should_stop=lambda: True)
    assert isinstance(out, Stopped) and f.version == trained.version


# -- checkpoints ---------------------------------------------------------------------

def test_checkpoint_of_another_configuration_is_refused_and_the_model_kept(
        trained: Seq2SeqForecaster) -> None:
    data = trained.dumps()
    other = Seq2SeqForecaster(small_config(hidden=24))
    with pytest.raises(checkpoint.CheckpointError, match="another configuration.*hidden"):
        other.loads(data)
    assert not other.ready
    keep = copy.deepcopy(trained)
    wrong = Seq2SeqForecaster(small_config(lookback=40))
    adopted(wrong, sine_pair())
    with pytest.raises(checkpoint.CheckpointError, match="lookback"):
        keep.loads(wrong.dumps())
    assert keep.version == trained.version


def _torch_bytes(obj: Any) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_newer_and_older_checkpoint_formats_are_refused() -> None:
    with pytest.raises(checkpoint.CheckpointError, match="newer"):
        Seq2SeqForecaster(small_config()).loads(
            _torch_bytes({"format": checkpoint.FORMAT + 1, "meta": "{}", "state": {}}))
    old = _torch_bytes({"format": 1, "meta": '{"model": "seq2seq"}', "state": {}})
    with pytest.raises(checkpoint.CheckpointError, match="older"):
        Seq2SeqForecaster(small_config()).loads(old)


class _Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch /tmp/tickcast-pwned",))


def test_a_pickle_that_would_run_code_is_refused() -> None:
    marker = "/tmp/tickcast-pwned"
    if os.path.exists(marker):
        os.unlink(marker)
    data = _torch_bytes({"format": 2, "meta": "{}", "state": {"w": torch.zeros(1)},
                         "x": _Exploit()})
    assert b"system" in data  # really a code-running pickle (zip with data.pkl)
    with pytest.raises(checkpoint.CheckpointError, match="refused"):
        checkpoint.loads(data, "evil")
    assert not os.path.exists(marker)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_checkpoints_are_refused(trained: Seq2SeqForecaster, damage: str) -> None:
    data = trained.dumps()
    bad = {"truncate": data[: len(data) // 2], "garbage": os.urandom(2000), "empty": b""}[damage]
    with pytest.raises(checkpoint.CheckpointError):
        Seq2SeqForecaster(small_config()).loads(bad)


def test_random_bytes_are_always_refused_as_a_checkpoint() -> None:
    """Damaged bytes fail inside torch's unpickler in many ways (IndexError, KeyError, a
    warning about an odd pickle protocol...); every one must become CheckpointError, or a
    corrupted checkpoint would crash the daemon's start-up instead of falling back."""
    rng = random.Random(7)
    for _ in range(400):
        with pytest.raises(checkpoint.CheckpointError):
            checkpoint.loads(rng.randbytes(rng.choice([50, 300, 5000])), "random")


def _devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _devices())
def test_the_same_checkpoint_loads_on_every_available_device(
        trained: Seq2SeqForecaster, device: str) -> None:
    f = Seq2SeqForecaster(small_config(device=device))
    f.loads(trained.dumps())
    assert f.fitted is not None
    assert next(f.fitted.net.parameters()).device.type == device
    a = f.forecast(sine_pair(), HORIZONS)
    b = trained.forecast(sine_pair(), HORIZONS)
    for x, y in zip(a, b, strict=True):
        assert x.yhat == pytest.approx(y.yhat, rel=1e-5)


def test_cuda_asked_for_without_a_gpu_is_a_clear_error() -> None:
    from forecaster.device import DeviceError, resolve

    if torch.cuda.is_available():
        assert resolve("cuda").type == "cuda"
    else:
        with pytest.raises(DeviceError, match="no CUDA"):
            resolve("cuda")
    assert resolve("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


def _without_network_weight(trained: Seq2SeqForecaster) -> Seq2SeqForecaster:
    """A copy of `trained` whose model in use lets none of its network's output in."""
    f = copy.deepcopy(trained)
    assert f.fitted is not None
    f.adopt(dataclasses.replace(f.fitted, alpha=np.zeros_like(f.fitted.alpha),
                                gamma=np.zeros_like(f.fitted.gamma)))
    assert f.fitted is not None and not f.fitted.uses_network
    return f


def test_without_network_weight_the_forecast_skips_the_network_and_is_identical(
        trained: Seq2SeqForecaster, monkeypatch: pytest.MonkeyPatch) -> None:
    f = _without_network_weight(trained)
    assert f.fitted is not None
    h = sine_pair(noise=0.001)
    skipped = f.forecast(h, HORIZONS)
    monkeypatch.setattr(type(f.fitted), "uses_network", property(lambda self: True))
    assert f.forecast(h, HORIZONS) == skipped


def test_a_retrain_scores_the_model_in_use_as_it_serves_without_running_an_unused_network(
        trained: Seq2SeqForecaster, monkeypatch: pytest.MonkeyPatch) -> None:
    f = _without_network_weight(trained)
    in_use = f.fitted
    assert in_use is not None
    h = sine_pair(1600, noise=0.0005, seed=3)
    real = training.predict_raw
    ran: list[bool] = []
    used: list[Any] = []

    def watched(net: Any, *a: Any, **kw: Any) -> np.ndarray:
        ran.append(net is used[-1])
        return real(net, *a, **kw)

    def learn_a_copy() -> Any:
        g = copy.deepcopy(f)
        assert g.fitted is not None
        used.append(g.fitted.net)
        return g.learn(h)

    monkeypatch.setattr(training, "predict_raw", watched)
    skipped = learn_a_copy()
    unused = sum(ran)
    monkeypatch.setattr(type(in_use), "uses_network", property(lambda self: True))
    ran.clear()
    run_anyway = learn_a_copy()
    # The network in use still extends the prequential record (the gate's evidence), but
    # scoring it on the validation slice as it serves does not run it when nothing uses it.
    assert sum(ran) == unused + 1
    # The same served loss either way: the gates let none of that network's output in.
    assert skipped.stats.prev_val_loss is not None
    assert skipped.stats.prev_val_loss == run_anyway.stats.prev_val_loss
    assert skipped.stats.val_loss == run_anyway.stats.val_loss
