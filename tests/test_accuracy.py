"""The running accuracy sums (issue 19) on both back-ends: after any history of inserts,
scores, late scores, rolled-back scoring transactions and several exchanges, the daily sums
equal a full recomputation from the rows, and forecast_accuracy (and `--since`) equals the
old full-scan view (views.accuracy_from_rows_sql, kept as the reference). Deleting old rows
leaves the sums alone; the migration that adds the sums fills them from existing rows."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from sqlalchemy import text

from storage import Store, accuracy, candles, forecasts, migrations, views
from storage.forecasts import ForecastRow
from tests.helpers.stores import new_store

STEP = 60_000
DAY = 86_400_000
T = 1_700_000_000_000 - 1_700_000_000_000 % DAY + DAY - 40 * STEP  # 40 minutes before a midnight
GROUP = ("model", "exchange", "symbol", "timeframe", "horizon")
DAILY_KEY = (*GROUP, "day_ts")


class Boom(Exception):
    pass


def _close(x: Any, y: Any) -> bool:
    if isinstance(x, float) or isinstance(y, float):
        if x is None or y is None:
            return x is y
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9)
    return bool(x == y)


def _same(got: list[dict[str, Any]], want: list[dict[str, Any]], key: tuple[str, ...]) -> None:
    g = {tuple(r[k] for k in key): r for r in got}
    w = {tuple(r[k] for k in key): r for r in want}
    assert g.keys() == w.keys()
    for k, row in w.items():
        assert list(g[k]) == list(row), k  # same columns, same order
        bad = {c: (g[k][c], v) for c, v in row.items() if not _close(g[k][c], v)}
        assert not bad, (k, bad)


def _reference(conn: Any, since: int | None = None) -> list[dict[str, Any]]:
    sql = views.accuracy_from_rows_sql(since_param="since" if since is not None else None)
    return [dict(r._mapping) for r in conn.execute(text(sql), {"since": since})]


def _daily(conn: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(text(
        "SELECT * FROM forecast_accuracy_daily"))]


def _daily_from_rows(conn: Any) -> list[dict[str, Any]]:
    return [dict(r._mapping) for r in conn.execute(text(views.row_sums_sql()))]


def check_sums(store: Store, rng: random.Random) -> None:
    """Daily sums == recomputation; the view and `since` reads == the full-scan reference."""
    with store.read() as conn:
        _same(_daily(conn), _daily_from_rows(conn), DAILY_KEY)
        _same(accuracy.read(conn), _reference(conn), GROUP)
        _same([dict(r._mapping) for r in conn.execute(text("SELECT * FROM forecast_accuracy"))],
              _reference(conn), GROUP)
        for since in (T, T + 40 * STEP, T + rng.randrange(0, 200) * STEP + rng.randrange(STEP)):
            _same(forecasts.accuracy(conn, since), _reference(conn, since), GROUP)


def _walk(n: int, rng: random.Random, start: float) -> list[tuple[int, float, float, float,
                                                                   float, float]]:
    out, price = [], start
    for i in range(n):
        o = price
        price = max(1.0, price * math.exp(rng.gauss(0, 0.01)))
        hi, lo = max(o, price) * 1.002, min(o, price) * 0.998
        out.append((T + i * STEP, o, hi, lo, price, 1.0))
    return out


def random_history(store: Store, rng: random.Random, *, ticks: int = 150) -> None:
    """A store lived through: two exchanges, two symbols, four models (one without a band),
    candles arriving late and some never, naive twins missing or inserted after their
    target candle exists (scored later than the model's row), scoring transactions that
    fail before their commit and run again, scoring with and without the exchange filter."""
    exchanges = ["bitstamp", "kraken"]
    symbols = ["BTC/USD", "BTC/EUR"]
    models = ["seq2seq", "naive", "drift", "linear"]
    horizons = [1, 2, 5]
    series = {(ex, sym): _walk(ticks + 10, rng, 100.0 + 50 * rng.random())
              for ex in exchanges for sym in symbols}
    held: dict[tuple[str, str], list[Any]] = {k: [] for k in series}  # candles not yet stored
    late_naive: list[ForecastRow] = []
    for i in range(ticks):
        now = T + (i + 1) * STEP + 2_000
        with store.write() as conn:
            for (ex, sym), rows in series.items():
                c = rows[i]
                if rng.random() < 0.08:
                    held[(ex, sym)].append(c)  # arrives later (an outage, then a backfill)
                elif rng.random() < 0.02:
                    pass  # never arrives: its forecasts stay unscored
                else:
                    candles.insert(conn, ex, sym, "1m", [c])
                if held[(ex, sym)] and rng.random() < 0.3:
                    candles.insert(conn, ex, sym, "1m", held[(ex, sym)])
                    held[(ex, sym)] = []
        fc: list[ForecastRow] = []
        for (ex, sym), rows in series.items():
            last = rows[i][4]
            for m in models:
                if rng.random() < 0.1:
                    continue  # this model skipped this tick
                for h in horizons:
                    yhat = last * math.exp(rng.gauss(0, 0.005))
                    band = None if m == "linear" or rng.random() < 0.05 else \
                        rng.uniform(0.001, 0.03)
                    lo, hi = (None, None) if band is None else (yhat * (1 - band),
                                                                yhat * (1 + band))
                    row = ForecastRow(m, f"{m}-1", ex, sym, "1m", rows[i][0],
                                      rows[i][0] + h * STEP, h, yhat, lo, hi, now)
                    if m == "naive" and rng.random() < 0.1:
                        late_naive.append(row)  # inserted a few ticks later
                    else:
                        fc.append(row)
        if late_naive and rng.random() < 0.2:
            fc += late_naive
            late_naive = []
        if rng.random() < 0.1:  # a crash before the commit: nothing of it may count
            with pytest.raises(Boom), store.write() as conn:
                forecasts.score(conn, now, "1m", STEP, exchange=rng.choice(exchanges))
                forecasts.insert(conn, fc)
                raise Boom
        with store.write() as conn:
            if rng.random() < 0.2:
                forecasts.score(conn, now)  # every exchange, every target stored
            else:
                for ex in exchanges:
                    forecasts.score_by_model(conn, now, "1m", STEP, exchange=ex)
            forecasts.insert(conn, fc)
    with store.write() as conn:  # the rest arrives; the last naive twins too
        for (ex, sym), rows in held.items():
            candles.insert(conn, ex, sym, "1m", rows)
        forecasts.insert(conn, late_naive)
    with store.write() as conn:
        forecasts.score(conn, T + (ticks + 20) * STEP)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_daily_sums_equal_a_recomputation_from_the_rows(store_url: str, stores: list[Store],
                                                        seed: int) -> None:
    rng = random.Random(seed)
    s = new_store(stores, store_url)
    s.open(now_ms=T)
    random_history(s, rng)
    with s.read() as conn:
        n_scored = conn.execute(text("select count(*) from forecasts where actual is not null")
                                ).scalar()
        late = conn.execute(text(
            "select count(*) from forecasts f join forecasts n on n.model = 'naive' "
            "and n.exchange = f.exchange and n.symbol = f.symbol and n.timeframe = f.timeframe "
            "and n.issued_ts = f.issued_ts and n.horizon = f.horizon "
            "where f.model <> 'naive' and n.scored_at > f.scored_at")).scalar()
        unscored = conn.execute(text("select count(*) from forecasts where actual is null")
                                ).scalar()
    assert n_scored > 5000 and late > 20 and unscored > 0, (n_scored, late, unscored)
    check_sums(s, rng)


def test_without_returning_the_sums_are_the_same(tmp_path: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite before 3.35 has no UPDATE ... RETURNING: the rows are read first under the
    write lock, and the sums come out the same."""
    s = Store(str(tmp_path / "old-sqlite.db"))
    s.open(now_ms=T)
    monkeypatch.setattr(s.engine.dialect, "update_returning", False)
    rng = random.Random(4)
    random_history(s, rng, ticks=60)
    check_sums(s, rng)
    s.close()


def test_naive_mase_is_exactly_one_and_paired_counts_follow_the_twins(
        store_url: str, stores: list[Store]) -> None:
    s = new_store(stores, store_url)
    s.open(now_ms=T)
    random_history(s, random.Random(7), ticks=60)
    with s.read() as conn:
        rows = forecasts.accuracy(conn)
    assert {r["mase"] for r in rows if r["model"] == "naive"} == {1.0}
    assert {r["interval_skill"] for r in rows if r["model"] == "naive"} == {1.0}
    assert all(r["interval_score"] is None and r["coverage"] is None
               for r in rows if r["model"] == "linear")
    assert all(r["n_paired"] < r["n"] for r in rows if r["model"] != "naive")


def test_deleting_old_rows_keeps_the_sums(store_url: str, stores: list[Store]) -> None:
    s = new_store(stores, store_url)
    s.open(now_ms=T)
    random_history(s, random.Random(11), ticks=80)
    with s.read() as conn:
        before = _daily(conn)
        view = accuracy.read(conn)
        unscored = conn.execute(text("select count(*) from forecasts where actual is null")
                                ).scalar()
    cut = T + 50 * STEP
    deleted, after = 0, None
    while True:
        with s.write() as conn:
            n, after = forecasts.delete_scored(conn, "bitstamp", "1m", cut, after=after,
                                               limit=97)
        deleted += n
        if n < 97:
            break
    assert deleted > 1000
    with s.read() as conn:
        _same(_daily(conn), before, DAILY_KEY)
        _same(accuracy.read(conn), view, GROUP)
        left = conn.execute(text(
            "select count(*) from forecasts where exchange = 'bitstamp' and issued_ts < :c "
            "and actual is not null"), {"c": cut}).scalar()
        assert left == 0
        assert conn.execute(text("select count(*) from forecasts where actual is null")
                            ).scalar() == unscored  # unscored rows stay
        assert accuracy.rows_from(conn) == T  # kraken's rows are all still there
        assert accuracy.sums_from(conn) == T


_V3_SCORE = """UPDATE forecasts SET
    actual = (SELECT c.close FROM candles c WHERE c.exchange = forecasts.exchange
              AND c.symbol = forecasts.symbol AND c.timeframe = forecasts.timeframe
              AND c.ts = forecasts.target_ts),
    error = (SELECT c.close FROM candles c WHERE c.exchange = forecasts.exchange
             AND c.symbol = forecasts.symbol AND c.timeframe = forecasts.timeframe
             AND c.ts = forecasts.target_ts) - yhat,
    scored_at = :now
WHERE actual IS NULL AND target_ts <= :cap AND EXISTS (
    SELECT 1 FROM candles c WHERE c.exchange = forecasts.exchange
    AND c.symbol = forecasts.symbol AND c.timeframe = forecasts.timeframe
    AND c.ts = forecasts.target_ts)"""


def test_the_migration_fills_the_sums_from_a_version_3_store(
        store_url: str, stores: list[Store]) -> None:
    """A store scored by the version-3 code (no sums yet) upgrades to sums equal to the
    rows, with progress reported; scoring after the upgrade keeps them equal."""
    rng = random.Random(5)
    s = new_store(stores, store_url)
    assert migrations.migrate(s.engine, now_ms=T, target=3) == 3
    data = _walk(3 * 1440, rng, 100.0)  # three days: several daily rows per group
    rows = [ForecastRow(m, f"{m}-1", "bitstamp", "BTC/USD", "1m", c[0], c[0] + h * STEP, h,
                        c[4] * (1 + rng.gauss(0, 0.002)), c[4] * 0.99, c[4] * 1.01, c[0])
            for c in data[:-5] for m in ("naive", "seq2seq") for h in (1, 5)
            if not (m == "naive" and rng.random() < 0.05)]
    with s.write() as conn:
        candles.insert(conn, "bitstamp", "BTC/USD", "1m", data[:-100])
        forecasts.insert(conn, rows)
        conn.execute(text(_V3_SCORE), {"now": T, "cap": data[-50][0]})
    heard: list[tuple[str, int, int]] = []
    assert s.open(now_ms=T, progress=lambda *a: heard.append(a)) == migrations.LATEST
    assert heard and heard[-1][0] == "accuracy sums" and heard[-1][1] == heard[-1][2]
    check_sums(s, rng)
    with s.write() as conn:
        candles.insert(conn, "bitstamp", "BTC/USD", "1m", data[-100:])
        assert forecasts.score(conn, data[-1][0] + STEP, "1m", STEP) > 0
    check_sums(s, rng)


def test_a_long_upgrade_at_start_tells_systemd_it_is_still_starting(tmp_path: Any) -> None:
    """Filling the sums of a year of minutes takes minutes, once: the daemon's start-up
    pushes systemd's start timeout ahead at each step and says how far it got."""
    from daemon import wiring
    from daemon.live.notify import Notifier
    from daemon.live.service import upgrade_progress
    from tests.helpers import wait_until
    from tests.helpers.daemon import Notifications

    db = tmp_path / "old.db"
    s = Store(str(db))
    migrations.migrate(s.engine, now_ms=T, target=3)
    data = _walk(3 * 1440, random.Random(3), 100.0)
    with s.write() as conn:
        candles.insert(conn, "bitstamp", "BTC/USD", "1m", data)
        forecasts.insert(conn, [ForecastRow("naive", "naive-2", "bitstamp", "BTC/USD", "1m",
                                            c[0], c[0] + STEP, 1, c[4], None, None, c[0])
                                for c in data[:-1]])
        conn.execute(text(_V3_SCORE), {"now": T, "cap": data[-1][0]})
    s.close()
    heard = Notifications(tmp_path / "notify")
    try:
        notifier = Notifier({"NOTIFY_SOCKET": str(heard.path)})
        store = wiring.open_store(str(db), T, progress=upgrade_progress(notifier))
        store.close()
        wait_until(lambda: any("of 4 days" in m for m in heard.statuses()), "the last step")
        assert heard.has("EXTEND_TIMEOUT_USEC=60000000")
        assert heard.statuses()[-1] == "upgrading the store: accuracy sums, 4 of 4 days"
    finally:
        heard.close()


def _readme_sqlite_queries() -> dict[str, str]:
    import re

    from tests.helpers import ROOT

    block = (ROOT / "README.md").read_text().split("### Queries you will want", 1)[1]
    block = block.split("```sql", 1)[1].split("```", 1)[0]
    out = {}
    for chunk in re.split(r"\n(?=-- \d+\.)", block.strip()):
        head, sql = chunk.split("\n", 1)
        if not head.rstrip().endswith("(PostgreSQL)"):
            out[head.split(".")[0].lstrip("- ")] = sql.strip().rstrip(";")
    return out


def test_what_users_run_reads_indexes_and_sums_not_every_row(tmp_path: Any) -> None:
    """SQLite's plans, which no machine's speed changes: the README queries, the view and
    the rolling accuracy never walk the forecasts table or a whole index of it (query 6
    reads the partial index of waiting rows as written; query 1 seeks per series; the
    partial first day is a range of issue times)."""
    s = Store(str(tmp_path / "p.db"))
    s.open(now_ms=T)
    random_history(s, random.Random(2), ticks=30)
    queries = _readme_sqlite_queries()
    assert set(queries) == {"1", "2", "3", "4", "5", "6"}
    queries["view"] = "SELECT * FROM forecast_accuracy"
    queries["since"] = views.accuracy_since_sql()
    with s.read() as conn:
        plans = {k: [r[-1] for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql),
                                                 {"since": T + 1, "day": T + DAY})]
                 for k, sql in queries.items()}
    for k, plan in plans.items():
        # forecasts is `forecasts`, `f`, `n` or `l` in these queries; `d` is the sums
        walks = [p for p in plan if p.split()[:1] == ["SCAN"]
                 and p.split()[1] in ("forecasts", "f", "n", "l")
                 and "forecasts_waiting" not in p]
        assert walks == [], (k, plan)
    assert plans["6"] == ["SCAN forecasts USING INDEX forecasts_waiting"]
    assert any("forecasts_issued (issued_ts>? AND issued_ts<?)" in p for p in plans["since"])
    assert not any("forecasts" in p.split() for p in plans["view"])
    s.close()
