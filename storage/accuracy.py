"""Running accuracy sums (`forecast_accuracy_daily`): kept by the scoring transaction,
read by `forecast_accuracy`, `report`, `status` and the metrics.

One row per model, exchange, symbol, timeframe, horizon and UTC day of issue time holds
the sums every number of the view is made of (views.SUMS). Exactly the rows the view
used to average count, from the same definitions (views.accuracy_from_rows_sql):

- a forecast adds its own terms once, in the transaction that scores it (the UPDATE's
  RETURNING names exactly the rows it moved from unscored to scored, so a rolled-back
  transaction adds nothing and a row is never scored, hence never counted, twice);
- the paired terms of MASE and interval skill need the forecast *and* its naive twin
  (same exchange, symbol, timeframe, issue time and horizon) scored. They are added by
  whichever of the two is scored last: a forecast scored while its twin is already scored
  adds the pair; a naive row scored later (a late score, a twin inserted after its target
  candle existed) adds the pair of every other model's row at its key scored before it;
  rows scored in the same transaction add their pair once, from the model's side.

Deleting old rows (storage.keep_forecast_rows_days) leaves the sums alone: they keep the
history. `fill` recomputes them from the rows (the migration that adds them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import bindparam, delete, func, select, text
from sqlalchemy.engine import Connection

from .schema import accuracy_daily, forecasts
from .views import DAY_MS, SUMS, accuracy_since_sql, accuracy_sql, row_sums_sql

log = logging.getLogger("tickcast.storage")

# The columns the scoring UPDATE returns for each row it scored.
SCORED_COLUMNS = (forecasts.c.id, forecasts.c.model, forecasts.c.exchange, forecasts.c.symbol,
                  forecasts.c.timeframe, forecasts.c.issued_ts, forecasts.c.horizon,
                  forecasts.c.lower, forecasts.c.upper, forecasts.c.actual, forecasts.c.error)
NAIVE = "naive"
_IN_CHUNK = 400  # issue times per lookup statement (SQLite's old 999-variable limit)
_N_SUMS = len(SUMS)
_COL = {c: i for i, c in enumerate(SUMS)}

_TWINS = (select(*SCORED_COLUMNS)
          .where(forecasts.c.exchange == bindparam("exchange"),
                 forecasts.c.timeframe == bindparam("timeframe"),
                 forecasts.c.issued_ts.in_(bindparam("issued", expanding=True)),
                 forecasts.c.actual.is_not(None)))


def _upsert_sql() -> str:
    key = ("model", "exchange", "symbol", "timeframe", "horizon", "day_ts")
    cols = (*key, *SUMS, "first_issued_ts", "last_issued_ts")
    t = accuracy_daily.name
    sets = [f"{c} = {t}.{c} + excluded.{c}" for c in SUMS]
    sets.append(f"first_issued_ts = CASE WHEN excluded.first_issued_ts < {t}.first_issued_ts "
                f"THEN excluded.first_issued_ts ELSE {t}.first_issued_ts END")
    sets.append(f"last_issued_ts = CASE WHEN excluded.last_issued_ts > {t}.last_issued_ts "
                f"THEN excluded.last_issued_ts ELSE {t}.last_issued_ts END")
    return (f"INSERT INTO {t} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)}) "
            f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {', '.join(sets)}")


_UPSERT = text(_upsert_sql())  # the same text on SQLite (3.24+) and PostgreSQL


def interval_score(lower: float, upper: float, actual: float) -> float:
    """views._interval_score_sql in Python, term for term (the same float result)."""
    return ((upper - lower) + 10.0 * (lower - actual if lower > actual else 0)
            + 10.0 * (actual - upper if actual > upper else 0))


def add_scored(conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
    """Add the rows just scored (SCORED_COLUMNS, in this transaction) to the sums."""
    if not rows:
        return
    rows = sorted(rows, key=lambda r: r[0])  # one order of additions, whatever the driver's
    batch = {r[0] for r in rows}
    scored = _scored_at_keys(conn, rows)
    deltas: dict[tuple[Any, ...], list[Any]] = {}
    for r in rows:
        _own(deltas, r)
        key = (r[2], r[3], r[4], r[5], r[6])
        twins = scored.get(key, ())
        naive = next((t for t in twins if t[1] == NAIVE), None)
        if naive is not None:
            _pair(deltas, r, naive)
        if r[1] == NAIVE:
            for f in twins:
                if f[1] != NAIVE and f[0] not in batch:  # scored before its naive twin
                    _pair(deltas, f, r)
    conn.execute(_UPSERT, [_params(k, v) for k, v in deltas.items()])


def _scored_at_keys(conn: Connection, rows: Sequence[Sequence[Any]]
                    ) -> dict[tuple[Any, ...], list[Sequence[Any]]]:
    """Every scored row (this transaction's included) at the keys of `rows`."""
    wanted: dict[tuple[str, str], set[int]] = {}
    for r in rows:
        wanted.setdefault((r[2], r[4]), set()).add(int(r[5]))
    keys = {(r[2], r[3], r[4], r[5], r[6]) for r in rows}
    out: dict[tuple[Any, ...], list[Sequence[Any]]] = {}
    for (exchange, timeframe), issued in wanted.items():
        times = sorted(issued)
        for i in range(0, len(times), _IN_CHUNK):
            for t in conn.execute(_TWINS, {"exchange": exchange, "timeframe": timeframe,
                                           "issued": times[i:i + _IN_CHUNK]}):
                key = (t[2], t[3], t[4], t[5], t[6])
                if key in keys:
                    out.setdefault(key, []).append(tuple(t))
    return out


def _slot(deltas: dict[tuple[Any, ...], list[Any]], r: Sequence[Any]) -> list[Any]:
    issued = int(r[5])
    k = (r[1], r[2], r[3], r[4], int(r[6]), issued - issued % DAY_MS)
    d = deltas.get(k)
    if d is None:
        d = deltas[k] = [0] * _N_SUMS + [issued, issued]
    else:
        d[-2], d[-1] = min(d[-2], issued), max(d[-1], issued)
    return d


def _own(deltas: dict[tuple[Any, ...], list[Any]], r: Sequence[Any]) -> None:
    lower, upper, actual, error = r[7], r[8], float(r[9]), float(r[10])
    d = _slot(deltas, r)
    d[_COL["n"]] += 1
    d[_COL["sum_abs_error"]] += abs(error)
    d[_COL["sum_sq_error"]] += error * error
    d[_COL["sum_abs_pct_error"]] += abs(error) / actual
    d[_COL["sum_error"]] += error
    if lower is not None:
        d[_COL["n_banded"]] += 1
        d[_COL["n_in_band"]] += 1 if lower <= actual <= upper else 0
        d[_COL["sum_interval_score"]] += interval_score(lower, upper, actual)


def _pair(deltas: dict[tuple[Any, ...], list[Any]], f: Sequence[Any],
          n: Sequence[Any]) -> None:
    """The paired terms of forecast `f` with its scored naive twin `n`, into f's sums."""
    d = _slot(deltas, f)
    d[_COL["n_paired"]] += 1
    d[_COL["sum_abs_error_paired"]] += abs(float(f[10]))
    d[_COL["sum_abs_error_naive"]] += abs(float(n[10]))
    if f[7] is not None and n[7] is not None:
        d[_COL["n_band_paired"]] += 1
        d[_COL["sum_interval_score_paired"]] += interval_score(f[7], f[8], float(f[9]))
        d[_COL["sum_interval_score_naive"]] += interval_score(n[7], n[8], float(n[9]))


def _params(k: tuple[Any, ...], v: list[Any]) -> dict[str, Any]:
    p = dict(zip(("model", "exchange", "symbol", "timeframe", "horizon", "day_ts"), k,
                 strict=True))
    p.update(zip(SUMS, v[:_N_SUMS], strict=True))
    for c in SUMS:
        if not c.startswith("n"):
            p[c] = float(p[c])
    p["first_issued_ts"], p["last_issued_ts"] = v[-2], v[-1]
    return p


# -- the first fill -----------------------------------------------------------------------

Progress = Callable[[int, int], None]  # (days done, days in all)
FILL_DAYS = 7  # days of issue times per statement


def fill(conn: Connection, progress: Progress | None = None) -> int:
    """Recompute every daily sum from the scored rows (replacing what is there), a week of
    issue times per statement; returns the rows of sums written. `progress(done, total)`
    after each week (in days); without it, a log line every four weeks."""
    conn.execute(delete(accuracy_daily))
    lo, hi = conn.execute(select(func.min(forecasts.c.issued_ts),
                                 func.max(forecasts.c.issued_ts))).one()
    if lo is None:
        return 0
    first, last = int(lo) - int(lo) % DAY_MS, int(hi) - int(hi) % DAY_MS
    total = (last - first) // DAY_MS + 1
    cols = ", ".join(c.name for c in accuracy_daily.c)
    sql = (f"INSERT INTO {accuracy_daily.name} ({cols}) "
           + row_sums_sql("f.issued_ts >= :lo AND f.issued_ts < :hi"))
    stmt = text(sql)
    written = 0
    for k, start in enumerate(range(first, last + DAY_MS, FILL_DAYS * DAY_MS)):
        res = conn.execute(stmt, {"lo": start, "hi": start + FILL_DAYS * DAY_MS})
        written += max(res.rowcount or 0, 0)
        done = min(total, (start - first) // DAY_MS + FILL_DAYS)
        if progress is not None:
            progress(done, total)
        elif k % 4 == 3 or done == total:
            log.info("accuracy sums: %d of %d days of forecasts", done, total)
    return written


# -- reading ------------------------------------------------------------------------------

def first_day_at_or_after(ts: int) -> int:
    """The first UTC midnight at or after `ts` (epoch ms)."""
    return ts if ts % DAY_MS == 0 else ts - ts % DAY_MS + DAY_MS


def read(conn: Connection, since: int | None = None, *,
         horizon: int | None = None) -> list[dict[str, Any]]:
    """Rows of forecast_accuracy; with `since`, over forecasts issued at or after it: the
    rows of the partial first day plus the daily sums of the days after it (and with
    `horizon`, of that horizon only)."""
    if since is None:
        assert horizon is None, "horizon goes with since"
        res = conn.execute(text(accuracy_sql()))
    else:
        p = {"since": since, "day": first_day_at_or_after(since), "horizon": horizon}
        res = conn.execute(text(accuracy_since_sql(horizon=horizon is not None)), p)
    return [dict(r._mapping) for r in res]


def horizons_since(conn: Connection, since: int) -> dict[tuple[str, str], list[int]]:
    """Per (exchange, timeframe), the horizons of the daily sums of the days that overlap
    issue times from `since` on, ascending: a superset of the horizons scored since then,
    read without touching a forecast row."""
    d = accuracy_daily.c
    q = (select(d.exchange, d.timeframe, d.horizon).distinct()
         .where(d.day_ts >= since - since % DAY_MS)
         .order_by(d.exchange, d.timeframe, d.horizon))
    out: dict[tuple[str, str], list[int]] = {}
    for ex, tf, h in conn.execute(q):
        out.setdefault((ex, tf), []).append(int(h))
    return out


def rows_from(conn: Connection) -> int | None:
    """The oldest issue time of a forecast row still stored (older ones may have been
    deleted by retention while their sums stay)."""
    v = conn.execute(select(func.min(forecasts.c.issued_ts))).scalar()
    return None if v is None else int(v)


def sums_from(conn: Connection) -> int | None:
    """The oldest issue time the sums cover."""
    v = conn.execute(select(func.min(accuracy_daily.c.first_issued_ts))).scalar()
    return None if v is None else int(v)
