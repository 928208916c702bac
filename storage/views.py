"""SQL of the two public views, and the accuracy queries they share with `report`.

`forecast_accuracy` (schema version 4 on) reads the daily sums in
`forecast_accuracy_daily` (:func:`accuracy_sql`); `tickcast report --since`, `status` and
the metrics add the rows of a partial first day to the sums of the whole days after it
(:func:`accuracy_since_sql`). Both turn sums into the numbers with one expression list
(:func:`_metrics`), and the sums of rows (:func:`row_sums_sql`, what the scoring
transaction adds and the migration fills from) mirror :func:`accuracy_from_rows_sql`, the
full scan over every row that defined the view up to schema version 3 and stays the
reference the tests compare with.
"""

from __future__ import annotations

from .dialect import SQLITE, iso_time_sql

DAY_MS = 86_400_000

GROUP = ("model", "exchange", "symbol", "timeframe", "horizon")
# The summed columns of forecast_accuracy_daily, in its column order after the key.
COUNTS = ("n", "n_banded", "n_in_band", "n_paired", "n_band_paired")
SUMS = ("n", "sum_abs_error", "sum_sq_error", "sum_abs_pct_error", "sum_error", "n_banded",
        "n_in_band", "sum_interval_score", "n_paired", "sum_abs_error_paired",
        "sum_abs_error_naive", "n_band_paired", "sum_interval_score_paired",
        "sum_interval_score_naive")


def _metrics(s: str) -> str:
    """The view's columns from one row of sums per group (alias `s`): each mean is its sum
    over its count, as AVG computes it, and NULL where the old AVG had no row to average."""
    return f"""
    {s}.model AS model,
    {s}.exchange AS exchange,
    {s}.symbol AS symbol,
    {s}.timeframe AS timeframe,
    {s}.horizon AS horizon,
    {s}.n AS n,
    {s}.sum_abs_error / NULLIF({s}.n, 0) AS mae,
    SQRT({s}.sum_sq_error / NULLIF({s}.n, 0)) AS rmse,
    100.0 * ({s}.sum_abs_pct_error / NULLIF({s}.n, 0)) AS mape,
    {s}.sum_error / NULLIF({s}.n, 0) AS bias,
    CASE WHEN {s}.n_banded > 0
         THEN CAST({s}.n_in_band AS DOUBLE PRECISION) / {s}.n_banded END AS coverage,
    CASE WHEN {s}.n_paired > 0
         THEN ({s}.sum_abs_error_paired / {s}.n_paired)
              / NULLIF({s}.sum_abs_error_naive / {s}.n_paired, 0) END AS mase,
    {s}.n_paired AS n_paired,
    {s}.first_issued_ts AS first_issued_ts,
    {s}.last_issued_ts AS last_issued_ts,
    CASE WHEN {s}.n_banded > 0 THEN {s}.sum_interval_score / {s}.n_banded END AS interval_score,
    CASE WHEN {s}.n_band_paired > 0
         THEN ({s}.sum_interval_score_paired / {s}.n_band_paired)
              / NULLIF({s}.sum_interval_score_naive / {s}.n_band_paired, 0) END
        AS interval_skill"""


def _summed(t: str) -> str:
    """SUM of every summed column of `t` per group (counts stay BIGINT on PostgreSQL,
    whose SUM of BIGINT is NUMERIC), with the first and last issue times."""
    cols = [f"CAST(SUM({t}.{c}) AS BIGINT) AS {c}" if c in COUNTS else f"SUM({t}.{c}) AS {c}"
            for c in SUMS]
    return ", ".join([*(f"{t}.{g} AS {g}" for g in GROUP), *cols,
                      f"MIN({t}.first_issued_ts) AS first_issued_ts",
                      f"MAX({t}.last_issued_ts) AS last_issued_ts"])


def accuracy_sql() -> str:
    """The forecast_accuracy view (schema version 4 on): the daily sums of every day."""
    group = ", ".join(f"d.{g}" for g in GROUP)
    return f"""
SELECT{_metrics("s")}
FROM (SELECT {_summed("d")} FROM forecast_accuracy_daily AS d GROUP BY {group}) AS s
"""


def accuracy_since_sql(*, horizon: bool = False) -> str:
    """forecast_accuracy over forecasts issued at or after `:since`: the rows issued in
    [since, day) (`:day` is the first UTC midnight at or after `since`) summed like the
    daily sums, plus the daily sums of the days from `:day` on. With `horizon`, only the
    forecasts of horizon `:horizon`."""
    group = ", ".join(f"u.{g}" for g in GROUP)
    only = " AND f.horizon = :horizon" if horizon else ""
    rows = row_sums_sql(f"f.issued_ts >= :since AND f.issued_ts < :day{only}", by_day=False)
    days = (f"SELECT {_summed('d')} FROM forecast_accuracy_daily AS d WHERE d.day_ts >= :day"
            f"{only.replace('f.', 'd.')} GROUP BY {', '.join(f'd.{g}' for g in GROUP)}")
    return f"""
SELECT{_metrics("s")}
FROM (SELECT {_summed("u")} FROM ({rows} UNION ALL {days}) AS u GROUP BY {group}) AS s
"""


def row_sums_sql(where: str = "", *, by_day: bool = True) -> str:
    """The sums of forecast_accuracy_daily computed from the scored rows (alias `f`, each
    with its naive twin `n` when that one is scored) that satisfy `where` (code constants
    and bind parameters only): per group and UTC day of issue time with `by_day` (the
    columns of forecast_accuracy_daily, in order), else per group."""
    score_f = _interval_score_sql("f")
    score_n = _interval_score_sql("n")
    paired = "f.lower IS NOT NULL AND n.lower IS NOT NULL AND n.error IS NOT NULL"
    day = f"f.issued_ts - (f.issued_ts % {DAY_MS})"
    keys = [f"f.{g}" for g in GROUP] + ([day] if by_day else [])
    cond = f" AND {where}" if where else ""
    return f"""SELECT
    f.model AS model, f.exchange AS exchange, f.symbol AS symbol, f.timeframe AS timeframe,
    f.horizon AS horizon,{f" {day} AS day_ts," if by_day else ""}
    COUNT(*) AS n,
    SUM(ABS(f.error)) AS sum_abs_error,
    SUM(f.error * f.error) AS sum_sq_error,
    SUM(ABS(f.error) / f.actual) AS sum_abs_pct_error,
    SUM(f.error) AS sum_error,
    COUNT(f.lower) AS n_banded,
    SUM(CASE WHEN f.lower IS NOT NULL AND f.actual >= f.lower AND f.actual <= f.upper
             THEN 1 ELSE 0 END) AS n_in_band,
    SUM(CASE WHEN f.lower IS NULL THEN 0.0 ELSE {score_f} END) AS sum_interval_score,
    COUNT(n.error) AS n_paired,
    SUM(CASE WHEN n.error IS NULL THEN 0.0 ELSE ABS(f.error) END) AS sum_abs_error_paired,
    SUM(CASE WHEN n.error IS NULL THEN 0.0 ELSE ABS(n.error) END) AS sum_abs_error_naive,
    SUM(CASE WHEN {paired} THEN 1 ELSE 0 END) AS n_band_paired,
    SUM(CASE WHEN {paired} THEN {score_f} ELSE 0.0 END) AS sum_interval_score_paired,
    SUM(CASE WHEN {paired} THEN {score_n} ELSE 0.0 END) AS sum_interval_score_naive,
    MIN(f.issued_ts) AS first_issued_ts,
    MAX(f.issued_ts) AS last_issued_ts
FROM forecasts AS f
LEFT JOIN forecasts AS n
    ON n.model = 'naive'
   AND n.exchange = f.exchange
   AND n.symbol = f.symbol
   AND n.timeframe = f.timeframe
   AND n.issued_ts = f.issued_ts
   AND n.horizon = f.horizon
   AND n.actual IS NOT NULL
WHERE f.actual IS NOT NULL{cond}
GROUP BY {", ".join(keys)}"""


def accuracy_from_rows_sql(*, since_param: str | None = None) -> str:
    """Accuracy per model, exchange, symbol, timeframe and horizon over scored forecasts,
    computed from every row: the forecast_accuracy view of schema versions 1 to 3 (their
    frozen migration steps create it) and the reference the daily sums are tested against.

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
