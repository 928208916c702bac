"""SQL of the two public views, and the accuracy query they share with `report`.

`forecast_accuracy` and `tickcast report --since` must never disagree, so both
are rendered from :func:`accuracy_sql`.
"""

from __future__ import annotations

from .dialect import SQLITE, iso_time_sql


def accuracy_sql(*, since_param: str | None = None) -> str:
    """Accuracy per model, exchange, symbol, timeframe and horizon over scored forecasts.

    ``mase`` divides the model's MAE by the MAE of ``naive`` on exactly the same
    symbol, horizon and issue times (rows without a scored naive twin are left
    out of both sides), so below 1 beats the random walk.

    ``interval_score`` is the mean 80 % interval score over scored rows with a band:
    (upper - lower) + 10 (lower - actual)+ + 10 (actual - upper)+, lower is better.
    ``interval_skill`` divides it by naive's on the same issue times (both banded and
    scored), as ``mase`` does for the MAE: below 1 is a better band than naive's.
    Written with CASE rather than MAX/GREATEST so it reads the same on every back-end,
    and every fraction is DOUBLE PRECISION on every back-end (a bare ``1.0`` would make
    PostgreSQL's coverage NUMERIC).
    """
    since = f" AND f.issued_ts >= :{since_param}" if since_param else ""
    score_f = _interval_score_sql("f")
    score_n = _interval_score_sql("n")
    paired = "f.lower IS NOT NULL AND n.lower IS NOT NULL AND n.error IS NOT NULL"
    return f"""
SELECT
    f.model AS model,
    f.exchange AS exchange,
    f.symbol AS symbol,
    f.timeframe AS timeframe,
    f.horizon AS horizon,
    COUNT(*) AS n,
    AVG(ABS(f.error)) AS mae,
    SQRT(AVG(f.error * f.error)) AS rmse,
    100.0 * AVG(ABS(f.error) / f.actual) AS mape,
    AVG(f.error) AS bias,
    AVG(CASE WHEN f.lower IS NULL THEN NULL
             WHEN f.actual >= f.lower AND f.actual <= f.upper THEN CAST(1 AS DOUBLE PRECISION)
             ELSE CAST(0 AS DOUBLE PRECISION) END) AS coverage,
    AVG(CASE WHEN n.error IS NULL THEN NULL ELSE ABS(f.error) END)
        / NULLIF(AVG(ABS(n.error)), 0) AS mase,
    COUNT(n.error) AS n_paired,
    MIN(f.issued_ts) AS first_issued_ts,
    MAX(f.issued_ts) AS last_issued_ts,
    AVG(CASE WHEN f.lower IS NULL THEN NULL ELSE {score_f} END) AS interval_score,
    AVG(CASE WHEN {paired} THEN {score_f} ELSE NULL END)
        / NULLIF(AVG(CASE WHEN {paired} THEN {score_n} ELSE NULL END), 0) AS interval_skill
FROM forecasts AS f
LEFT JOIN forecasts AS n
    ON n.model = 'naive'
   AND n.exchange = f.exchange
   AND n.symbol = f.symbol
   AND n.timeframe = f.timeframe
   AND n.issued_ts = f.issued_ts
   AND n.horizon = f.horizon
   AND n.actual IS NOT NULL
WHERE f.actual IS NOT NULL{since}
GROUP BY f.model, f.exchange, f.symbol, f.timeframe, f.horizon
"""


def _interval_score_sql(t: str) -> str:
    """The 80 % interval score of one row of table alias `t` (portable SQL)."""
    return (f"(({t}.upper - {t}.lower)"
            f" + 10.0 * CASE WHEN {t}.lower > {t}.actual THEN {t}.lower - {t}.actual ELSE 0 END"
            f" + 10.0 * CASE WHEN {t}.actual > {t}.upper THEN {t}.actual - {t}.upper ELSE 0 END)")


def forecast_errors_sql(kind: str = SQLITE) -> str:
    """Scored forecasts with readable times and absolute / percentage errors, for back-end
    `kind` ('sqlite' or 'postgresql': only the time formatting differs)."""
    return f"""
SELECT
    f.id AS id,
    f.model AS model,
    f.model_version AS model_version,
    f.exchange AS exchange,
    f.symbol AS symbol,
    f.timeframe AS timeframe,
    f.horizon AS horizon,
    f.issued_ts AS issued_ts,
    {iso_time_sql('f.issued_ts', kind)} AS issued_at,
    f.target_ts AS target_ts,
    {iso_time_sql('f.target_ts', kind)} AS target_at,
    f.yhat AS yhat,
    f.lower AS lower,
    f.upper AS upper,
    f.actual AS actual,
    f.error AS error,
    ABS(f.error) AS abs_error,
    100.0 * ABS(f.error) / f.actual AS abs_pct_error,
    100.0 * f.error / f.actual AS pct_error,
    CASE WHEN f.lower IS NULL THEN NULL
         WHEN f.actual >= f.lower AND f.actual <= f.upper THEN 1 ELSE 0 END AS in_interval,
    {iso_time_sql('f.created_at', kind)} AS created_at,
    {iso_time_sql('f.scored_at', kind)} AS scored_at
FROM forecasts AS f
WHERE f.actual IS NOT NULL
"""
