"""Property tests for windows, volatility estimates and normalisation (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from forecaster import training, windows
from forecaster.base import History
from forecaster.scaling import CLIP, Normaliser, Scales
from forecaster.volatility import VolPrior, ewma, ewma_last

STEP = 60_000


@st.composite
def histories(draw: st.DrawFn) -> tuple[History, int, int]:
    n = draw(st.integers(5, 120))
    s = draw(st.integers(1, 3))
    lookback = draw(st.integers(1, 12))
    horizon = draw(st.integers(1, 8))
    logp = draw(arrays(np.float64, (n, s), elements=st.floats(-0.05, 0.05)))
    close = 100 * np.exp(np.cumsum(logp, axis=0))
    holes = draw(st.lists(st.integers(0, n - 1), max_size=6))
    close[holes, draw(st.integers(0, s - 1))] = np.nan
    vol = np.abs(draw(arrays(np.float64, (n, s), elements=st.floats(0, 50))))
    t0 = draw(st.integers(0, 10**7)) * STEP
    h = History(t0 + np.arange(n, dtype=np.int64) * STEP, close, vol,
                tuple(f"S{i}/USD" for i in range(s)), STEP)
    return h, lookback, horizon


@given(histories())
@settings(max_examples=150, deadline=None)
def test_valid_ends_never_cross_a_hole_and_miss_no_clean_window(case: tuple[History, int, int]) -> None:
    h, lookback, horizon = case
    ends = windows.valid_ends(h, lookback, horizon)
    finite = np.all(np.isfinite(h.close), axis=1)
    expected = [t for t in range(lookback, len(h) - horizon)
                if finite[t - lookback:t + horizon + 1].all()]
    assert ends.tolist() == expected
    assert np.all(np.diff(ends) > 0)


@given(histories())
@settings(max_examples=100, deadline=None)
def test_shapes_and_order_of_inputs_and_targets(case: tuple[History, int, int]) -> None:
    """The one gather (training, validation, the prequential record and live forecasts all
    use it): rows t-L+1 .. t in time order, returns and ranges in units of the issue-time
    volatility, volume standardised, clipped, NaN-free; targets close[t+k] / close[t]."""
    h, lookback, horizon = case
    ends = windows.valid_ends(h, lookback, horizon)
    feats = windows.row_features(h)
    s = len(h.symbols)
    assert feats.shape == (len(h), 3 * s + windows.TIME_FEATURES)
    norm = Normaliser(VolPrior(0.94, 0.995, 0.9, 0.5, np.ones((48, s)), STEP), np.full(s, 0.5),
                      np.full(s, 2.0), s, np.ones((horizon, s)))
    w = training.build(h, feats, ends, norm, horizon, torch.device("cpu"))
    x = training.gather(w, torch.arange(len(ends)), lookback).numpy()
    y = windows.targets(h.close, ends, horizon)
    fut = windows.future_time(h.ts[ends], STEP, horizon)
    assert x.shape == (len(ends), lookback, feats.shape[1]) and np.all(np.isfinite(x))
    assert y.shape == (len(ends), horizon, s)
    assert fut.shape == (len(ends), horizon, windows.TIME_FEATURES)
    for i, t in enumerate(ends):
        rows = feats[t - lookback + 1:t + 1]
        assert np.all(np.isfinite(rows[:, :s]))  # no input return touches a hole
        want = rows.copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            want[:, :2 * s] = rows[:, :2 * s] / np.tile(w.scales.sigma1[i], 2)
        want[:, 2 * s:3 * s] = (rows[:, 2 * s:3 * s] - 0.5) / 2.0
        want = np.nan_to_num(np.clip(want, -CLIP, CLIP), nan=0.0)
        np.testing.assert_allclose(x[i], want, rtol=1e-6, atol=1e-6)
        for k in range(1, horizon + 1):
            np.testing.assert_allclose(y[i, k - 1], np.log(h.close[t + k] / h.close[t]), atol=1e-12)
        np.testing.assert_allclose(fut[i], windows.time_features(h.ts[t] + STEP * np.arange(1, horizon + 1)))


@given(arrays(np.float64, st.tuples(st.integers(1, 20), st.integers(1, 10), st.integers(1, 3)),
              elements=st.floats(-0.5, 0.5)),
       arrays(np.float64, 3, elements=st.floats(1e-5, 0.2)))
def test_target_normalisation_round_trips(y: np.ndarray, sd: np.ndarray) -> None:
    m, horizon, s = y.shape
    norm = Normaliser(VolPrior(0.94, 0.995, 0.9, 0.5, np.ones((48, s)), STEP), np.zeros(s),
                      np.ones(s), s, np.ones((horizon, s)))
    path = np.broadcast_to(sd[:s] * np.sqrt(np.arange(1, horizon + 1))[:, None],
                           (m, horizon, s))
    sc = Scales(path[:, 0, :], path, np.zeros((m, s)))
    np.testing.assert_allclose(norm.unscale(norm.targets(y, sc), sc), y, rtol=1e-12, atol=1e-15)
    q = np.stack([y - 0.1, y, y + 0.1], axis=-1)
    back = norm.unscale(np.stack([norm.targets(q[..., j], sc) for j in range(3)], axis=-1), sc)
    np.testing.assert_allclose(back, q, rtol=1e-12, atol=1e-15)


@given(arrays(np.float64, st.tuples(st.integers(1, 400), st.integers(1, 3)),
              elements=st.floats(0, 1) | st.just(np.nan)),
       st.floats(0.5, 0.999))
@settings(max_examples=80, deadline=None)
def test_blocked_ewma_equals_the_plain_recursion_and_skips_missing_values(
        x: np.ndarray, lam: float) -> None:
    got = ewma(x, lam, seed_n=5)
    last = ewma_last(x, lam, seed_n=5)
    for j in range(x.shape[1]):
        col = x[:, j]
        state, seen = np.nan, 0
        for i, v in enumerate(col):
            if np.isfinite(v):
                seen += 1  # the first 5 values: their running mean; then the recursion
                state = v if seen == 1 else (state * (seen - 1) + v) / seen if seen <= 5 \
                    else lam * state + (1 - lam) * v
            if seen:
                assert got[i, j] == pytest.approx(state, rel=1e-9, abs=1e-12)
            else:
                assert np.isnan(got[i, j])  # nothing seen yet: no estimate, not a made-up one
        if seen:
            assert last[j] == pytest.approx(state, rel=1e-9, abs=1e-12)


@given(histories())
@settings(max_examples=40, deadline=None)
def test_volatility_levels_at_a_row_use_nothing_after_it(case: tuple[History, int, int]) -> None:
    h, _, _ = case
    n = len(h)
    prior = VolPrior(0.9, 0.99, 0.9, 0.5, np.ones((48, len(h.symbols))), STEP)
    fast, slow = prior.levels(h)
    cut = n // 2
    f2, s2 = prior.levels(h.rows(slice(0, cut + 1)))
    np.testing.assert_array_equal(fast[: cut + 1], f2)
    np.testing.assert_array_equal(slow[: cut + 1], s2)
