"""A year of 1-minute data in a store, as a live daemon leaves it after a year (issue 19).

    python tests/bench/yearstore.py --out /work/bench-stores/year.db            # 365 days
    python tests/bench/yearstore.py --out /work/bench-stores/month.db --days 30
    python tests/bench/yearstore.py --out postgresql://u@h/db --days 30        # PostgreSQL

What it holds, for `--days` days of minutes ending at `--end` (default 2025-01-01T00:00Z):

- `candles`: two symbols (BTC/USD, BTC/EUR on bitstamp, 1m), one candle a minute each
  (525,600 a year), a random walk with a daily volatility cycle, EUR following USD;
  open = previous close, low <= open, close <= high, positive volume.
- `forecasts`: at every candle time, for each model (`--models`, default seq2seq, naive,
  drift, linear), symbol and horizon (`--horizons`, default 1, 5, 15, 30, 60) one row in
  the daemon's shape: `yhat` the last close (naive, seq2seq's median), the drift or a small
  linear move (drift, linear), an 80 % band centre x exp(+-1.2816 sigma sqrt(h)) from the
  recent volatility, `created_at` 2 s after the candle closed, the model's version (seq2seq
  and linear: the version of their newest accepted training run), and, where the target
  candle is stored, `actual`, `error = actual - yhat` and `scored_at` 2 s after the target
  closed. So nearly every row is scored; the rows whose target lies past the last candle
  (a few hundred) wait for their actual, as in a live store. Rows go in tick by tick,
  model by model, as `Pipeline.tick` inserts them (the table's physical order is the
  daemon's). 21.0 M rows a year with four models.
- `training_runs`: a retrain every 60 candles for seq2seq (about 40 % accepted, the rest
  rejected as not better) and linear (accepted), with the columns the daemon fills;
  `checkpoints`: the newest 5 accepted per model (seq2seq 200 kB, linear 4 kB, random
  bytes: no command here loads them).

How: a documented fast generator, not the daemon. The schema is made by the project's own
migrations (`storage.migrations.migrate`), by default at schema version 3 (`--schema`), the
version a year-old store has; the rows are generated with numpy and written with the
driver's bulk paths (sqlite3 executemany in large transactions; PostgreSQL COPY). A year
takes about 4-6 minutes on the 2-core development box. Then, unless `--no-migrate`, the
store is opened by this tickcast (`Store.open`), which migrates it to the current schema,
and the migration's wall time is reported: the upgrade a year-old store goes through once.

Build stores outside the repository (e.g. /work/bench-stores/), never commit them. The last
line printed is one JSON object: rows, sizes, build and migration seconds, the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from _common import emit

from daemon.core.clock import parse_time
from storage import Store, dialect, migrations

EXCHANGE, TIMEFRAME, STEP = "bitstamp", "1m", 60_000
SYMBOLS = ("BTC/USD", "BTC/EUR")
START_PRICE = {"BTC/USD": 42_000.0, "BTC/EUR": 38_500.0}
Z80 = 1.2815515655446004
RETRAIN_EVERY = 60
KEEP_CHECKPOINTS = 5
CHUNK_TICKS = 7 * 1440  # ticks generated and written per transaction

F_COLS = ["model", "model_version", "exchange", "symbol", "timeframe", "issued_ts", "target_ts",
          "horizon", "yhat", "lower", "upper", "created_at", "actual", "error", "scored_at"]
C_COLS = ["exchange", "symbol", "timeframe", "ts", "open", "high", "low", "close", "volume"]
R_COLS = ["model", "model_version", "started_at", "finished_at", "device", "n_windows",
          "train_loss", "val_loss", "status", "exchange", "timeframe", "data_start_ts",
          "data_end_ts", "base_version", "prev_val_loss", "reason", "wall_seconds", "checkpoint"]
K_COLS = ["model", "model_version", "exchange", "timeframe", "created_at", "format_version",
          "data"]


# -- the numbers ---------------------------------------------------------------------------

def make_candles(n: int, start: int, rng: np.random.Generator) -> dict[str, dict[str, Any]]:
    """Per symbol: ts, open, high, low, close, volume arrays and the per-candle volatility."""
    ts = start + np.arange(n, dtype=np.int64) * STEP
    hour = (ts // 3_600_000) % 24
    sigma = 0.0006 * (1.0 + 0.4 * np.sin(2 * np.pi * (hour - 8) / 24))
    z_usd = rng.standard_normal(n)
    out = {}
    for sym in SYMBOLS:
        z = z_usd if sym == "BTC/USD" else 0.9 * z_usd + np.sqrt(1 - 0.81) * rng.standard_normal(n)
        r = sigma * z
        close = START_PRICE[sym] * np.exp(np.cumsum(r))
        opn = np.concatenate([[START_PRICE[sym]], close[:-1]])
        wig = sigma * np.abs(rng.standard_normal((2, n))) * 0.6
        high = np.maximum(opn, close) * np.exp(wig[0])
        low = np.minimum(opn, close) * np.exp(-wig[1])
        vol = np.exp(rng.standard_normal(n)) * 2.0
        # recent volatility as a forecaster sees it: RMS of the last 60 one-step log returns
        lr = np.concatenate([[0.0], np.diff(np.log(close))])
        c2 = np.concatenate([[0.0], np.cumsum(lr * lr)])
        k = np.arange(1, n + 1)
        lo = np.maximum(k - 60, 0)
        vol_hat = np.sqrt((c2[k] - c2[lo]) / np.maximum(k - lo, 1))
        vol_hat = np.where(vol_hat > 0, vol_hat, 0.0006)
        out[sym] = {"ts": ts, "open": opn, "high": high, "low": low, "close": close,
                    "volume": vol, "logc": np.log(close), "sigma": vol_hat}
    return out


def version_string(prefix: str, at_ms: int) -> str:
    stamp = datetime.fromtimestamp(at_ms / 1000, tz=UTC).strftime("%Y%m%dT%H%MZ")
    return f"{stamp}-{hashlib.sha1(f'{prefix}{at_ms}'.encode()).hexdigest()[:8]}" \
        if prefix == "seq2seq" else f"{prefix}-1-{stamp}"


def training_plan(n: int, start: int, models: list[str], rng: np.random.Generator
                  ) -> tuple[list[tuple[Any, ...]], dict[str, np.ndarray], dict[str, list[str]]]:
    """training_runs rows, and per trained model the version in use at every tick."""
    runs: list[tuple[Any, ...]] = []
    in_use: dict[str, np.ndarray] = {}
    names: dict[str, list[str]] = {}
    for model in (m for m in models if m in ("seq2seq", "linear")):
        idx = np.zeros(n, dtype=np.int64)
        versions = [version_string(model, start)]
        current, val = versions[0], 0.41
        for i in range(RETRAIN_EVERY, n, RETRAIN_EVERY):
            t = start + i * STEP
            accept = model == "linear" or rng.random() < 0.4
            new_val = val * (1 + rng.normal(0, 0.01))
            wall = float(rng.uniform(0.8, 1.6)) if model == "seq2seq" else 0.02
            finished = t + STEP + 2000 + int(wall * 1000)
            if accept:
                version = version_string(model, t)
                versions.append(version)
                reason = "better than current" if model == "seq2seq" else "refitted"
                runs.append((model, version, t + STEP + 2000, finished, "cpu", 20_000,
                             new_val * 1.02, new_val, "accepted", EXCHANGE, TIMEFRAME,
                             t - 20_160 * STEP, t, current, val, reason, wall, None))
                current, val = version, new_val
            else:
                runs.append((model, None, t + STEP + 2000, finished, "cpu", 20_000,
                             new_val * 1.02, new_val, "rejected", EXCHANGE, TIMEFRAME,
                             t - 20_160 * STEP, t, current, val,
                             f"worse-than-current: validation {new_val:.5f} worse than current "
                             f"{val:.5f}; keeping {current}", wall, None))
            # forecasts issued after the run finished use the new version
            idx[i + 1:] = len(versions) - 1
        in_use[model], names[model] = idx, versions
    return runs, in_use, names


def forecast_chunk(c: dict[str, dict[str, Any]], lo: int, hi: int, n: int, models: list[str],
                   horizons: np.ndarray, versions: dict[str, np.ndarray],
                   names: dict[str, list[str]]) -> list[list[Any]]:
    """The forecasts issued at ticks lo..hi-1 as columns (F_COLS), in insert order: tick,
    model, symbol, horizon."""
    T, M, S, H = hi - lo, len(models), len(SYMBOLS), len(horizons)
    shape = (T, M, S, H)
    i = np.arange(lo, hi)[:, None, None, None]
    h = horizons[None, None, None, :]
    tgt = i + h
    scored = tgt < n
    tgt_c = np.minimum(tgt, n - 1)
    close = np.stack([c[s]["close"] for s in SYMBOLS])  # (S, n)
    logc = np.stack([c[s]["logc"] for s in SYMBOLS])
    sig = np.stack([c[s]["sigma"] for s in SYMBOLS])
    ts = c[SYMBOLS[0]]["ts"]
    s_idx = np.arange(S)[None, None, :, None]
    last = close[s_idx, i]
    sigma = sig[s_idx, i]
    w = np.minimum(i, 20_160)
    mu = np.where(w > 0, (logc[s_idx, i] - logc[s_idx, i - w]) / np.maximum(w, 1), 0.0)
    r1 = logc[s_idx, i] - logc[s_idx, np.maximum(i - 1, 0)]
    yhat = np.empty(shape)
    width = np.empty(shape)
    for k, m in enumerate(models):
        if m == "drift":
            yhat[:, k] = (last * np.exp(mu * h))[:, 0]
        elif m == "linear":
            yhat[:, k] = (last * np.exp(-0.02 * r1 * np.minimum(h, 2)))[:, 0]
        else:
            yhat[:, k] = np.broadcast_to(last, (T, 1, S, H))[:, 0]
        width[:, k] = np.broadcast_to(sigma * (0.93 if m == "seq2seq" else 1.0), (T, 1, S, 1))[:, 0]
    half = Z80 * width * np.sqrt(h)
    lower, upper = yhat * np.exp(-half), yhat * np.exp(half)
    actual = np.where(scored, close[s_idx, tgt_c], np.nan)
    actual = np.broadcast_to(actual, shape)
    error = actual - yhat
    issued = np.broadcast_to(ts[i], shape)
    target = issued + np.broadcast_to(h, shape) * STEP
    created = issued + STEP + 2000
    scored_at = np.where(np.broadcast_to(scored, shape), target + STEP + 2000, 0)
    model_col = np.broadcast_to(np.array(models, dtype=object)[None, :, None, None], shape)
    ver = np.empty(shape, dtype=object)
    for k, m in enumerate(models):
        if m in versions:
            table = np.array(names[m], dtype=object)
            ver[:, k] = table[versions[m][lo:hi]][:, None, None]
        else:
            ver[:, k] = f"{m}-2"
    sym_col = np.broadcast_to(np.array(SYMBOLS, dtype=object)[None, None, :, None], shape)
    cols: list[list[Any]] = [
        model_col.ravel().tolist(), ver.ravel().tolist(), [EXCHANGE] * yhat.size,
        sym_col.ravel().tolist(), [TIMEFRAME] * yhat.size, issued.ravel().tolist(),
        target.ravel().tolist(), np.broadcast_to(h, shape).ravel().tolist(),
        yhat.ravel().tolist(), lower.ravel().tolist(), upper.ravel().tolist(),
        created.ravel().tolist(), actual.ravel().tolist(), error.ravel().tolist(),
        scored_at.ravel().tolist()]
    if not scored.all():
        flat = np.broadcast_to(scored, shape).ravel()
        for j in np.flatnonzero(~flat).tolist():
            for col in (12, 13, 14):
                cols[col][j] = None
    return cols


# -- writing ---------------------------------------------------------------------------------

class SqliteWriter:
    def __init__(self, path: Path) -> None:
        self.con = sqlite3.connect(str(path), isolation_level=None)
        self.con.execute("PRAGMA journal_mode = WAL")
        self.con.execute("PRAGMA synchronous = OFF")
        self.con.execute("PRAGMA cache_size = -1000000")  # 1 GB: index inserts stay in memory

    def rows(self, table: str, cols: list[str], rows: Any) -> None:
        marks = ", ".join("?" for _ in cols)
        self.con.execute("BEGIN")
        self.con.executemany(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({marks})", rows)
        self.con.execute("COMMIT")

    def close(self) -> None:
        self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.con.close()


class PgWriter:
    def __init__(self, url: str) -> None:
        import psycopg

        from storage.dialect.urls import _parse

        u = _parse(url)
        self.con = psycopg.connect(host=u.host, port=u.port, user=u.username,
                                   password=u.password, dbname=u.database, autocommit=False)

    def rows(self, table: str, cols: list[str], rows: Any) -> None:
        with self.con.cursor() as cur:
            with cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp:
                for r in rows:
                    cp.write_row(r)
        self.con.commit()

    def close(self) -> None:
        self.con.close()


def build(url: str, days: int, end: int, models: list[str], horizons: list[int], schema: int,
          seed: int) -> dict[str, Any]:
    n = days * 1440
    start = end - n * STEP
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    store = Store(url)
    migrations.migrate(store.engine, now_ms=start, target=schema)
    store.close()
    path = dialect.sqlite_path(url)
    w: Any = SqliteWriter(path) if path is not None else PgWriter(url)
    c = make_candles(n, start, rng)
    for sym in SYMBOLS:
        d = c[sym]
        w.rows("candles", C_COLS, zip([EXCHANGE] * n, [sym] * n, [TIMEFRAME] * n,
                                      d["ts"].tolist(), d["open"].tolist(), d["high"].tolist(),
                                      d["low"].tolist(), d["close"].tolist(),
                                      d["volume"].tolist(), strict=True))
    runs, versions, names = training_plan(n, start, models, rng)
    hz = np.asarray(horizons, dtype=np.int64)
    written = 0
    for lo in range(0, n, CHUNK_TICKS):
        hi = min(n, lo + CHUNK_TICKS)
        cols = forecast_chunk(c, lo, hi, n, models, hz, versions, names)
        w.rows("forecasts", F_COLS, zip(*cols, strict=True))
        written += len(cols[0])
        print(f"forecasts: {written:,} rows, {hi / n:.0%} of the ticks, "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    # training runs in time order; the newest KEEP_CHECKPOINTS accepted per model keep bytes
    runs.sort(key=lambda r: (r[2], r[0]))
    w.rows("training_runs", R_COLS, runs)
    ckpts = []
    for model in {r[0] for r in runs}:
        acc = [r for r in runs if r[0] == model and r[8] == "accepted"][-KEEP_CHECKPOINTS:]
        size = 200_000 if model == "seq2seq" else 4_000
        ckpts += [(model, r[1], EXCHANGE, TIMEFRAME, r[3], 2, rng.bytes(size)) for r in acc]
    w.rows("checkpoints", K_COLS, ckpts)
    w.close()
    return {"candles": 2 * n, "forecasts": written, "training_runs": len(runs),
            "checkpoints": len(ckpts), "unscored": int(sum(
                max(0, h) for h in horizons) * len(models) * len(SYMBOLS)),
            "build_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="SQLite path, or postgresql:// URL (empty db)")
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--end", default="2025-01-01T00:00Z", help="the open time after the last candle")
    ap.add_argument("--models", default="seq2seq,naive,drift,linear")
    ap.add_argument("--horizons", default="1,5,15,30,60")
    ap.add_argument("--schema", type=int, default=3,
                    help="schema version the rows are written at (3: before issue 19)")
    ap.add_argument("--no-migrate", action="store_true",
                    help="leave the store at --schema (to time the upgrade elsewhere)")
    ap.add_argument("--seed", type=int, default=19)
    ap.add_argument("--force", action="store_true", help="replace an existing SQLite file")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    path = dialect.sqlite_path(args.out)
    if path is not None:
        if path.exists():
            if not args.force:
                raise SystemExit(f"{path} exists (--force replaces it)")
            for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
                if p.exists():
                    os.remove(p)
        path.parent.mkdir(parents=True, exist_ok=True)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    horizons = [int(h) for h in args.horizons.split(",")]
    out = build(args.out, args.days, parse_time(args.end), models, horizons, args.schema,
                args.seed)
    out.update({"benchmark": "yearstore", "store": dialect.display_url(args.out),
                "days": args.days, "models": models, "horizons": horizons,
                "schema_built": args.schema})
    if not args.no_migrate:
        s = Store(args.out)
        t = time.perf_counter()
        out["schema"] = s.open(parse_time(args.end))
        out["migrate_s"] = round(time.perf_counter() - t, 1)
        s.close()
    s = Store(args.out)
    out["size_bytes"] = s.store_size_bytes()
    s.close()
    emit(out)


if __name__ == "__main__":
    main()
