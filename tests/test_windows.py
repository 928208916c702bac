"""Property tests for windows and scaling (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from forecaster import windows
from forecaster.base import History
from forecaster.scaling import Scaler

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
    h, lookback, horizon = case
    ends = windows.valid_ends(h, lookback, horizon)
    feats = windows.raw_features(h)
    s = len(h.symbols)
    assert feats.shape == (len(h), 2 * s + windows.TIME_FEATURES)
    x = windows.gather(feats, ends, lookback)
    y = windows.targets(h.close, ends, horizon)
    fut = windows.future_time(h.ts[ends], STEP, horizon)
    assert x.shape == (len(ends), lookback, feats.shape[1])
    assert y.shape == (len(ends), horizon, s)
    assert fut.shape == (len(ends), horizon, windows.TIME_FEATURES)
    for i, t in enumerate(ends):
        # inputs are rows t-L+1 .. t in time order, targets close[t+k] / close[t]
        assert np.array_equal(x[i], feats[t - lookback + 1:t + 1], equal_nan=True)
        assert np.all(np.isfinite(x[i][:, :s]))  # no input return touches a hole
        for k in range(1, horizon + 1):
            np.testing.assert_allclose(y[i, k - 1], np.log(h.close[t + k] / h.close[t]), atol=1e-12)
        np.testing.assert_allclose(fut[i], windows.time_features(h.ts[t] + STEP * np.arange(1, horizon + 1)))


@given(arrays(np.float64, st.tuples(st.integers(1, 20), st.integers(1, 10), st.integers(1, 3)),
              elements=st.floats(-0.5, 0.5)),
       arrays(np.float64, 3, elements=st.floats(1e-5, 0.2)))
def test_target_scaling_round_trips(y: np.ndarray, sigma: np.ndarray) -> None:
    s = y.shape[2]
    sc = Scaler(np.zeros(2 * s + 4), np.ones(2 * s + 4), sigma[:s])
    np.testing.assert_allclose(sc.unscale_targets(sc.scale_targets(y)), y, rtol=1e-12, atol=1e-15)
    q = np.stack([y - 0.1, y, y + 0.1], axis=-1)
    back = sc.unscale_targets(np.stack([sc.scale_targets(q[..., j]) for j in range(3)], axis=-1))
    np.testing.assert_allclose(back, q, rtol=1e-12, atol=1e-15)


@given(histories())
@settings(max_examples=60, deadline=None)
def test_scaler_fit_uses_only_the_rows_it_is_given(case: tuple[History, int, int]) -> None:
    h, _, _ = case
    feats = windows.raw_features(h)
    half = len(h) // 2
    a = Scaler.fit(feats[:half], len(h.symbols))
    poisoned = feats.copy()
    poisoned[half:] = 1e6  # what comes after the training window must not matter
    b = Scaler.fit(poisoned[:half], len(h.symbols))
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.std, b.std)
    np.testing.assert_array_equal(a.sigma, b.sigma)
    assert np.all(np.isfinite(a.inputs(feats[:half])[np.isfinite(feats[:half])]))
    assert np.all(np.abs(a.inputs(np.nan_to_num(poisoned))) <= 8.0)
