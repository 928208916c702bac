"""The volatility prior at the minute: calendar, next-candle mix, EWMAs, checkpoint format."""

from __future__ import annotations

import json

import numpy as np
import pytest

from forecaster import windows
from forecaster.base import History
from forecaster.ewma import _ewma_1d, ewma, ewma_last_many
from forecaster.scaling import Normaliser
from forecaster.season import calendar_profiles, minute_index, shrunk_factors
from forecaster.volatility import FAST_SPEEDS, VolPrior, variance_proxy
from forecaster.volfit import fit_mix, qlike_weights

MINUTE = 60_000
HOUR = 3_600_000
T0 = 1_677_628_800_000  # 2023-03-01 00:00 UTC, a Wednesday


def _garch_vol(n: int, rng: np.random.Generator) -> np.ndarray:
    """A clustering volatility path (log-AR(1), stationary spread 0.3), ~1e-4 a minute."""
    lv = np.zeros(n)
    e = rng.standard_normal(n)
    for i in range(1, n):
        lv[i] = 0.995 * lv[i - 1] + 0.03 * e[i]
    return 1e-4 * np.exp(lv)


def _minute_pair(n: int, seed: int, *, hour_factor: dict[int, float] | None = None,
                 minute_factor: dict[int, float] | None = None,
                 thin_noise: float = 0.0) -> History:
    """Two symbols sharing one volatility path (and returns correlated 0.85), with
    optional calendar effects; the second one optionally thin (noise on top)."""
    rng = np.random.default_rng(seed)
    ts = T0 + np.arange(n, dtype=np.int64) * MINUTE
    sd = _garch_vol(n, rng)
    hour = (ts // HOUR) % 24
    slot = (ts % HOUR) // MINUTE
    for k, f in (hour_factor or {}).items():
        sd = np.where(hour == k, sd * f, sd)
    for k, f in (minute_factor or {}).items():
        sd = np.where(slot == k, sd * f, sd)
    z = rng.standard_normal((n, 2))
    z[:, 1] = 0.85 * z[:, 0] + np.sqrt(1 - 0.85 ** 2) * z[:, 1]
    r = sd[:, None] * z
    r[:, 1] += thin_noise * sd * rng.standard_normal(n)
    close = 20_000 * np.exp(np.cumsum(r, axis=0))
    opn = np.vstack([close[:1], close[:-1]])
    wig = np.abs(sd[:, None] * rng.standard_normal((n, 2))) * 0.5
    high = np.maximum(opn, close) * np.exp(wig)
    low = np.minimum(opn, close) * np.exp(-wig)
    return History(ts, close, np.ones((n, 2)), ("A", "B"), MINUTE, opn, high, low)


def test_the_calendar_finds_a_real_hour_and_minute_effect_and_keeps_noise_near_one() -> None:
    h = _minute_pair(14 * 1440, 1, hour_factor={14: 2.0}, minute_factor={0: 1.8})
    prof, minute = calendar_profiles(variance_proxy(h, 0.5), h.ts, MINUTE)
    assert prof.shape == (48, 2) and minute.shape == (60, 2)
    # True variance factors: 4 and 3.2 against the rest. Fourteen days of one hour are
    # fourteen observations of it: the estimate keeps a good part of the effect, not all.
    for s in (0, 1):
        assert int(np.argmax(prof[:24, s])) == 14 and int(np.argmax(minute[:, s])) == 0
        assert 1.8 < prof[14, s] / np.delete(prof[:24, s], 14).mean() < 4.5
        assert 2.0 < minute[0, s] / minute[1:, s].mean() < 3.6
    flat = _minute_pair(7 * 1440, 2)
    p2, m2 = calendar_profiles(variance_proxy(flat, 0.5), flat.ts, MINUTE)
    # No effect: the empirical-Bayes shrinkage keeps noise away (unshrunk cell means of a
    # week of minutes spread by ±20 % and more).
    assert np.max(np.abs(m2 - 1)) < 0.15
    assert np.max(np.abs(p2[:24] / p2[:24].mean() - 1)) < 0.35


def test_shrinkage_keeps_everything_with_plenty_of_groups_and_nothing_with_one() -> None:
    rng = np.random.default_rng(3)
    # 2,000 days of hourly candles, hour 1 half as large again as the others.
    cell = np.tile(np.arange(24), 2000)
    group = np.repeat(np.arange(2000), 24)
    a = np.abs(rng.standard_normal(48_000)) * np.where(cell == 1, 1.5, 1.0)
    f = shrunk_factors(a, cell, group, 24)
    assert f[1] / np.delete(f, 1).mean() == pytest.approx(1.5, rel=0.05)
    # One group: no observation can be told from its group's own level.
    np.testing.assert_array_equal(shrunk_factors(a, cell, np.zeros(48_000), 24), np.ones(24))


def test_hourly_and_daily_candles_have_a_single_minute_slot() -> None:
    assert minute_index(np.array([0, HOUR, 5 * HOUR]), HOUR).tolist() == [0, 0, 0]
    n = 24 * 60
    ts = T0 + np.arange(n, dtype=np.int64) * HOUR
    x = np.abs(np.random.default_rng(4).standard_normal((n, 1))) * 1e-4
    prof, minute = calendar_profiles(x, ts, HOUR)
    assert minute.shape == (1, 1) and minute[0, 0] == 1.0
    day = T0 + np.arange(400, dtype=np.int64) * 86_400_000
    prof_d, _ = calendar_profiles(np.abs(x[:400]), day, 86_400_000)
    assert np.all(prof_d[1:24] == prof_d[1, 0])  # unseen hours: no factor at all


def test_the_mix_leans_on_the_liquid_market_for_the_thin_one_and_forecasts_better() -> None:
    h = _minute_pair(12 * 1440, 5, thin_noise=1.5)
    prior0 = VolPrior(0.94, 0.995, 0.9, 0.5, np.ones((48, 2)), MINUTE)
    xd = prior0.deseasonalised(h)
    own = np.stack([ewma(xd, lam) for lam in FAST_SPEEDS])
    from forecaster.volatility import mix_features

    feats = mix_features(own, ewma(xd, 0.998, seed_n=200))
    cut = 8 * 1440
    mix = fit_mix(xd[:cut], feats[:, :cut])
    assert mix is not None and mix.shape == (2, 2 * len(FAST_SPEEDS))
    k = len(FAST_SPEEDS)
    # B's own proxy is noisy: its next-candle level takes more from A than A takes from B.
    assert mix[1, k:].sum() / mix[1].sum() > mix[0, k:].sum() / mix[0].sum()
    # Out of sample (the last four days), by QLIKE on B's next proxy: the mix beats the
    # plain 0.94 EWMA of B's own proxy.
    now = np.einsum("kns,sk->ns", feats, mix)[cut:-1, 1]
    plain = own[FAST_SPEEDS.index(0.94), cut:-1, 1]
    y = xd[cut + 1:, 1]

    def qlike(s2: np.ndarray) -> float:
        return float(np.mean(y / s2 + np.log(s2)))

    assert qlike(now) < qlike(plain) - 0.01


def test_qlike_weights_are_non_negative_and_recover_a_known_mix() -> None:
    rng = np.random.default_rng(6)
    f = np.abs(rng.standard_normal((20_000, 3))) + 0.05
    y = (f @ np.array([0.2, 0.0, 0.8])) * rng.standard_normal(20_000) ** 2
    b = qlike_weights(f, y)
    assert np.all(b >= 0)
    np.testing.assert_allclose(b, [0.2, 0.0, 0.8], atol=0.05)


@pytest.fixture(scope="module")
def fitted() -> tuple[History, Normaliser]:
    h = _minute_pair(6 * 1440, 7, hour_factor={15: 1.6}, thin_noise=1.0)
    ends = windows.valid_ends(h, 240, 60)
    return h, Normaliser.fit(h, ends[ends >= 100], 60)


def test_a_fitted_minute_prior_has_a_calendar_and_a_mix(fitted: tuple[History, Normaliser]
                                                        ) -> None:
    _, norm = fitted
    p = norm.prior
    assert p.minute_profile is not None and p.minute_profile.shape == (60, 2)
    assert p.mix is not None and p.psi in (0.0, 0.5)
    assert np.all(p.mix >= 0) and np.any(p.mix > 0)


def test_states_last_is_the_last_row_of_states_and_levels_are_the_plain_ewmas(
        fitted: tuple[History, Normaliser]) -> None:
    h, norm = fitted
    p = norm.prior
    tail = h.tail(2000)
    full = p.states(tail)
    last = p.states_last(tail)
    for a, b in zip(full, last, strict=True):
        np.testing.assert_allclose(a[-1], b, rtol=1e-10)
    fast, slow = p.levels(tail)
    x = p.deseasonalised(tail)
    np.testing.assert_allclose(fast, ewma(x, p.lam_fast), rtol=1e-12)
    np.testing.assert_allclose(slow, ewma(x, p.lam_slow, seed_n=200), rtol=1e-12)
    np.testing.assert_allclose(p.levels_last(tail)[0], fast[-1], rtol=1e-10)


def test_states_at_a_row_use_nothing_after_it(fitted: tuple[History, Normaliser]) -> None:
    h, norm = fitted
    cut = len(h) // 2
    early = norm.prior.states(h.rows(slice(0, cut + 1)))
    full = norm.prior.states(h)
    for a, b in zip(early, full, strict=True):
        np.testing.assert_array_equal(a, b[: cut + 1])


def test_the_path_starts_from_now_and_its_lead_fades_by_psi() -> None:
    mix = np.ones((1, 2 * len(FAST_SPEEDS)))
    p = VolPrior(0.94, 0.995, 0.9, 0.5, np.ones((48, 1)), HOUR, None, mix, psi=0.5)
    fast, slow, now = np.array([[2.0]]), np.array([[1.0]]), np.array([[4.0]])
    one = np.diff(p.path(fast, slow, np.array([T0]), 3, now)[0, :, 0], prepend=0.0)
    np.testing.assert_allclose(one, [4.0, 1 + 0.9 * 1 + 0.5 * 2, 1 + 0.81 + 0.25 * 2])
    # Without `now` (or without a mix) the path is the two-level one of earlier versions.
    plain = np.diff(p.path(fast, slow, np.array([T0]), 3)[0, :, 0], prepend=0.0)
    np.testing.assert_allclose(plain, [2.0, 1.9, 1.81])


def test_the_prior_and_the_normaliser_round_trip_through_json(
        fitted: tuple[History, Normaliser]) -> None:
    h, norm = fitted
    back = Normaliser.from_json(json.loads(json.dumps(norm.to_json())))
    a, b = norm.scales_last(h, 60), back.scales_last(h, 60)
    np.testing.assert_array_equal(a.path_sd, b.path_sd)
    np.testing.assert_array_equal(a.regime, b.regime)
    assert back.prior.psi == norm.prior.psi


def test_a_prior_saved_before_the_mix_existed_still_loads_and_bad_shapes_are_refused() -> None:
    old = {"lam_fast": 0.94, "lam_slow": 0.995, "phi": 0.9, "range_weight": 0.5,
           "profile": np.ones((48, 2)).tolist(), "step_ms": MINUTE}
    p = VolPrior.from_json(old)
    assert p.mix is None and p.minute_profile is None and p.psi == 0.0
    with pytest.raises(ValueError):
        VolPrior.from_json({**old, "mix": np.ones((2, 3)).tolist()})
    with pytest.raises(ValueError):
        VolPrior.from_json({**old, "minute_profile": [[1.0, np.nan]] * 60})


@pytest.mark.parametrize("n", [5_000, 40_077])
def test_the_blocked_ewma_equals_the_recursion_on_long_series(n: int) -> None:
    x = np.random.default_rng(n).random(n)
    ref = np.empty(n)
    s = 0.3
    for i, v in enumerate(x):
        s = 0.97 * s + 0.03 * v
        ref[i] = s
    np.testing.assert_allclose(_ewma_1d(x, 0.97, 0.3), ref, rtol=1e-11)


def test_ewma_last_many_equals_ewma_at_each_speed() -> None:
    x = np.random.default_rng(9).random((3000, 2))
    x[::7, 0] = np.nan
    many = ewma_last_many(x, (0.8, 0.99), seed_n=30)
    for i, lam in enumerate((0.8, 0.99)):
        np.testing.assert_allclose(many[i], ewma(x, lam)[-1], rtol=1e-10)
