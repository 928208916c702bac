"""Ingest benchmark: `tickcast import` of a 1M-candle CSV.gz timed END TO END as a
subprocess (process start-up to exit, what a user waits for), beside raw sqlite3.executemany
of pre-parsed tuples into the same schema measured in the same run; the in-process import
and the storage layer alone; backfill through ccxt from the local emulator. With
TICKCAST_TEST_PG_URL set (a server the script may create databases on, e.g.
`python tests/pg_server.py run -- python tests/bench/ingest.py`), also PostgreSQL: the
storage layer's COPY path beside its executemany path, and the whole command (COPY).

    python tests/bench/ingest.py [--rows 1000000] [--backfill-minutes 20000] [--pg-only]

Targets (issues 10 and 11): the command >= 150,000 candles/s end to end on SQLite and on
PostgreSQL, and >= 0.8 of the raw executemany rate on SQLite.
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, emit, peak_rss_mb

from daemon.commands.backfill import backfill_command
from daemon.config import settings
from daemon.files.importer import import_file
from storage import Store, candles
from tests.emulator import ExchangeEmulator, hourly_onto_minutes, load_csv

MINUTE = 60_000
T0 = 1_577_836_800_000  # 2020-01-01


def real_rows(n: int) -> list[tuple[int, float, float, float, float, float]]:
    """n candles on a 1m grid: the real hourly BTC/USD series, cycled with a price offset
    so that consecutive cycles join without a jump."""
    src = load_csv(ROOT / "daemon/sample/bitstamp_BTC-USD_1h_2017-11_2020-12.csv.gz")
    out = []
    scale = 1.0
    i = 0
    while len(out) < n:
        c = src[i % len(src)]
        if i and i % len(src) == 0:
            scale *= src[-1][4] / src[0][1]
        out.append((T0 + len(out) * MINUTE, c[1] * scale, c[2] * scale, c[3] * scale,
                    c[4] * scale, c[5]))
        i += 1
    return out


def write_csv(path: Path, rows: list[tuple[int, float, float, float, float, float]]) -> None:
    with open(path, "w") as f:
        f.write("ts_ms,open,high,low,close,volume\n")
        for r in rows:
            f.write(f"{r[0]},{r[1]:.2f},{r[2]:.2f},{r[3]:.2f},{r[4]:.2f},{r[5]:.8f}\n")


def raw_rate(db: Path, rows: list[tuple[int, float, float, float, float, float]]) -> float:
    """Plain sqlite3.executemany into the same schema, same pragmas, same 100k chunks."""
    Store(str(db)).open(T0)
    con = sqlite3.connect(db, isolation_level=None)
    con.execute("pragma journal_mode=wal")
    con.execute("pragma synchronous=full")
    params = [("bitstamp", "BTC/USD", "1m", *r) for r in rows]
    t = time.perf_counter()
    for k in range(0, len(params), 100_000):
        con.execute("begin immediate")
        con.executemany("insert into candles (exchange, symbol, timeframe, ts, open, high, low, "
                        "close, volume) values (?,?,?,?,?,?,?,?,?) on conflict do nothing",
                        params[k:k + 100_000])
        con.execute("commit")
    dt = time.perf_counter() - t
    assert con.execute("select count(*) from candles").fetchone()[0] == len(rows)
    con.close()
    return len(rows) / dt


def command_rate(db: str, path: Path, rows: int) -> float:
    """`python -m daemon import FILE` as a user runs it: process start-up to exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "daemon", "--db", db, "import", str(path)],
                       capture_output=True, text=True, cwd=ROOT, env=env)
    dt = time.perf_counter() - t
    assert p.returncode == 0 and f"{rows} stored" in p.stdout, (p.stdout, p.stderr[-2000:])
    return rows / dt


def store_rate(db: Path, rows: list[tuple[int, float, float, float, float, float]]) -> float:
    """The project's storage layer alone (no CSV parsing): candles.insert in 100k chunks."""
    s = Store(str(db))
    s.open(T0)
    t = time.perf_counter()
    for k in range(0, len(rows), 100_000):
        with s.write() as conn:
            candles.insert(conn, "bitstamp", "BTC/USD", "1m", rows[k:k + 100_000])
    return len(rows) / (time.perf_counter() - t)


def pg_rates(admin_url: str, rows: list[tuple[int, float, float, float, float, float]],
             csv_path: Path, gz_path: Path) -> dict[str, object]:
    """PostgreSQL: candles.insert_columns through COPY and through executemany (same 100k
    chunks, one transaction each, a fresh series each), the CSV import in process, then the
    whole command on the CSV.gz into a fresh database (COPY), end to end."""
    from tests.pg_server import create_database, drop_database

    url = create_database(admin_url, prefix="tickcast_bench_")
    s = Store(url)
    try:
        s.open(T0)
        out: dict[str, object] = {}
        for method, sym in (("copy", "BTC/USD"), ("executemany", "BTC/EUR")):
            t = time.perf_counter()
            for k in range(0, len(rows), 100_000):
                cols = [list(c) for c in zip(*rows[k:k + 100_000], strict=True)]
                with s.write() as conn:
                    r = candles.insert_columns(conn, "bitstamp", sym, "1m", cols, method=method)
                assert r.inserted == len(cols[0])
            out[f"{method}_candles_per_s"] = round(len(rows) / (time.perf_counter() - t))
        out["copy_vs_executemany"] = round(
            out["copy_candles_per_s"] / out["executemany_candles_per_s"], 2)  # type: ignore[operator]
        t = time.perf_counter()
        res = import_file(s, csv_path, symbol="BTC/GBP", exchange=None, timeframe=None,
                          default_exchange="bitstamp")
        assert res.error is None and res.stored == len(rows), res
        out["import_in_process_candles_per_s"] = round(len(rows) / (time.perf_counter() - t))
        fresh = create_database(admin_url, prefix="tickcast_bench_")
        try:
            out["command_gz_end_to_end_candles_per_s"] = round(
                command_rate(fresh, gz_path, len(rows)))
        finally:
            drop_database(admin_url, fresh)
        with s.read() as conn:
            out["server"] = conn.exec_driver_sql("SHOW server_version").scalar()
            out["fsync"] = conn.exec_driver_sql("SHOW fsync").scalar()
        out["store_bytes"] = s.store_size_bytes()
        return out
    finally:
        s.close()
        drop_database(admin_url, url)


def backfill_rate(tmp: Path, minutes: int) -> dict[str, float]:
    hourly = {s: load_csv(ROOT / f"daemon/sample/bitstamp_{s.replace('/', '-')}_1h_2017-11_2020-12.csv.gz")
              for s in ("BTC/USD", "BTC/EUR")}
    data = {s: hourly_onto_minutes(r[:minutes], T0) for s, r in hourly.items()}
    now = T0 + minutes * MINUTE + 1000
    out = {}
    for ex in ("bitstamp", "kraken"):
        with ExchangeEmulator(data, now_ms=now) as emu:
            cfg = settings.load(None, env={}, overrides={
                "exchange.id": ex, "exchange.api_url": emu.base_url,
                "exchange.rate_limit": False, "daemon.clock": f"fixed:{now}",
                "storage.url": str(tmp / f"bf-{ex}.db")})
            t = time.perf_counter()
            code = backfill_command(cfg, T0, None)
            dt = time.perf_counter() - t
            assert code == 0
            out[ex] = 2 * minutes / dt
            out[f"{ex}_requests"] = emu.request_count()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--backfill-minutes", type=int, default=20_000)
    ap.add_argument("--pg-only", action="store_true",
                    help="only the PostgreSQL figures (needs TICKCAST_TEST_PG_URL)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    pg_url = os.environ.get("TICKCAST_TEST_PG_URL")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows = real_rows(args.rows)
        csv_path = tmp / "bitstamp_BTC-USD_1m_bench.csv"
        write_csv(csv_path, rows)
        gz_path = tmp / "bitstamp_BTC-EUR_1m_bench.csv.gz"
        with open(csv_path, "rb") as src, gzip.open(gz_path, "wb", compresslevel=6) as dst:
            dst.write(src.read())
        parsed_rows = [tuple(float(x) if i else int(x) for i, x in enumerate(line.split(",")))
                       for line in csv_path.read_text().splitlines()[1:]]
        pg = (pg_rates(pg_url, parsed_rows, csv_path, gz_path)  # type: ignore[arg-type]
              if pg_url else None)
        if args.pg_only:
            if pg is None:
                raise SystemExit("--pg-only needs TICKCAST_TEST_PG_URL")
            emit({"benchmark": "ingest", "rows": args.rows, "postgresql": pg,
                  "peak_rss_mb": round(peak_rss_mb(), 1)})
            return
        raw = raw_rate(tmp / "raw.db", parsed_rows)  # type: ignore[arg-type]
        storage_only = store_rate(tmp / "store.db", parsed_rows)  # type: ignore[arg-type]
        # The command end to end, between two raw runs (the machine may be shared).
        e2e = command_rate(str(tmp / "command.db"), gz_path, args.rows)
        raw2 = raw_rate(tmp / "raw2.db", parsed_rows)  # type: ignore[arg-type]
        e2e_csv = command_rate(str(tmp / "command-csv.db"), csv_path, args.rows)
        s = Store(str(tmp / "import.db"))
        s.open(T0)
        t = time.perf_counter()
        res = import_file(s, csv_path, symbol=None, exchange=None, timeframe=None,
                          default_exchange="bitstamp")
        dt = time.perf_counter() - t
        assert res.error is None and res.stored == args.rows, res
        t = time.perf_counter()
        res_gz = import_file(s, gz_path, symbol=None, exchange=None, timeframe=None,
                             default_exchange="bitstamp")
        dt_gz = time.perf_counter() - t
        assert res_gz.stored == args.rows
        bf = backfill_rate(tmp, args.backfill_minutes)
    import_rate = args.rows / dt
    raw_mean = (raw + raw2) / 2
    emit({
        "benchmark": "ingest",
        "rows": args.rows,
        "command_gz_end_to_end_candles_per_s": round(e2e),
        "command_csv_end_to_end_candles_per_s": round(e2e_csv),
        "raw_executemany_candles_per_s": round(raw_mean),
        "raw_executemany_runs": [round(raw), round(raw2)],
        "command_gz_vs_raw": round(e2e / raw_mean, 3),
        "import_in_process_csv_candles_per_s": round(import_rate),
        "import_in_process_gz_candles_per_s": round(args.rows / dt_gz),
        "storage_layer_candles_per_s": round(storage_only),
        "backfill_candles_per_s": {k: round(v) for k, v in bf.items()},
        "postgresql": pg,
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "targets": {"command_gz_end_to_end_candles_per_s": 150_000, "command_gz_vs_raw": 0.8},
    })


if __name__ == "__main__":
    main()
