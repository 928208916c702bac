"""What users wait for, on a month and on a year of 1-minute data (issue 19).

    python tests/bench/yearstore.py --out /work/bench-stores/month.db --days 30
    python tests/bench/yearstore.py --out /work/bench-stores/year.db
    python tests/bench/scale.py --month /work/bench-stores/month.db --year /work/bench-stores/year.db

For each store (built by yearstore.py, migrated to this code's schema), whole commands as
subprocesses, the median of `--runs` (3): `tickcast status`, `status --json`, `report`,
`report --json`, `report --plot`, `report --since <7 days before the newest forecast>`,
`tickcast import` of a small file (60 new candles of one symbol, into a copy of the store:
it opens the store for writing), each README query ("Queries you will want", the SQLite
spelling of query 6) and `SELECT * FROM forecast_accuracy` through Python's sqlite3 in a
subprocess. Then the per-tick store cost on a copy of each store: `Pipeline.tick` of the
live code (two symbols; the baselines naive and drift forecast, no training) fed the
next minute of a continuing random walk, with its parts timed (ingest, newest candle,
candle window, scoring with the accuracy sums, storing forecasts), plus the metrics refresh
the exporter runs every minute (the rolling 24 h accuracy and the store size); p50 and
p90 over `--ticks` ticks after one warm-up. Last, EXPLAIN QUERY PLAN of every README query
and of every statement a tick ran on the year store (the SQL as SQLite's trace saw it).

`report --json` is compared with a recomputation from the rows (the full-scan SQL the view
used up to schema version 3) on each store: `report_json_equals_rows` (relative 1e-9).

Targets (issue 19, the year store): status <= 0.6 s; report and --json <= 2 s;
--since 7 days <= 1 s; --plot <= 5 s; each README query and SELECT * FROM
forecast_accuracy <= 1 s; the year's tick within 1.2x of the month's. The copies are made
beside the stores and removed. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import ROOT, emit

QUERY_RUNNER = """
import sqlite3, sys, time
t = time.perf_counter()
con = sqlite3.connect(sys.argv[1])
rows = con.execute(sys.stdin.read()).fetchall()
print(len(rows), time.perf_counter() - t)
"""
DAY = 86_400_000
STEP = 60_000


def tickcast() -> list[str]:
    script = Path(sys.executable).with_name("tickcast")
    return [str(script)] if script.exists() else [sys.executable, "-m", "daemon"]


def env(extra: dict[str, str] | None = None) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items()
           if not k.startswith("TICKCAST_") and k != "STATE_DIRECTORY"}
    out.update(extra or {})
    return out


def timed(cmd: list[str], *, stdin: str | None = None, extra: dict[str, str] | None = None,
          ok: tuple[int, ...] = (0,)) -> tuple[float, str, float]:
    """Wall seconds, stdout and CPU seconds (user + sys) of one whole command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env(extra),
                       cwd=ROOT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode not in ok:
        raise SystemExit(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, p.stdout, cpu


class Job:
    """One thing timed on each store: `prepare()` (untimed) returns the command's kwargs."""

    def __init__(self, key: str, make: Any) -> None:
        self.key = key
        self.make = make  # (store name) -> (cmd, kwargs, cleanup or None)


def interleaved(jobs: list[Job], names: list[str], runs: int) -> dict[str, dict[str, Any]]:
    """Each job `runs` times on each store, the stores alternating run by run, so a busy
    moment of the machine falls on both alike: median and best wall seconds, median CPU."""
    wall: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    for job in jobs:
        for _ in range(runs):
            for name in names:
                cmd, kw, cleanup = job.make(name)
                w, _, c = timed(cmd, **kw)
                if cleanup is not None:
                    cleanup()
                wall.setdefault((name, job.key), []).append(w)
                cpu.setdefault((name, job.key), []).append(c)
    out: dict[str, dict[str, Any]] = {n: {"best_s": {}, "cpu_s": {}} for n in names}
    for (name, key), ws in wall.items():
        out[name][key] = round(statistics.median(ws), 3)
        out[name]["best_s"][key] = round(min(ws), 3)
        out[name]["cpu_s"][key] = round(statistics.median(cpu[(name, key)]), 3)
    return out


def readme_queries() -> list[tuple[str, str]]:
    """(label, SQL) of the README's queries that run on SQLite."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("### Queries you will want", 1)[1].split("```sql", 1)[1]
    block = block.split("```", 1)[0]
    out = []
    for chunk in re.split(r"\n(?=-- \d+\.)", block.strip()):
        head, sql = chunk.split("\n", 1)
        if head.rstrip().endswith("(PostgreSQL)"):
            continue
        sql = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
        out.append((head.split(".")[0].lstrip("- ").strip(), sql.strip().rstrip(";")))
    return out


def store_facts(db: Path) -> dict[str, Any]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        newest = con.execute("select max(issued_ts) from forecasts").fetchone()[0]
        n = con.execute("select sum(n) from forecast_accuracy_daily").fetchone()[0]
        unscored = con.execute("select count(*) from forecasts where actual is null").fetchone()[0]
        candles = con.execute("select max(ts) from candles").fetchone()[0]
    finally:
        con.close()
    return {"newest_issued_ts": newest, "scored_forecasts": n, "unscored": unscored,
            "newest_candle_ts": candles, "bytes": db.stat().st_size}


def jobs(stores: dict[str, Path], facts: dict[str, dict[str, Any]], work: Path) -> list[Job]:
    def command(key: str, *args: str, live: bool = False) -> Job:
        def make(name: str) -> Any:
            f = facts[name]
            extra = {"TICKCAST_DAEMON__CLOCK": f"fixed:{f['newest_candle_ts'] + STEP + 30_000}"}
            since = time.strftime("%Y-%m-%dT%H:%MZ",
                                  time.gmtime((f["newest_issued_ts"] - 7 * DAY) / 1000))
            argv = [a.replace("{since}", since).replace("{png}", str(work / f"{name}.png"))
                    for a in args]
            return ([*tickcast(), "--db", str(stores[name]), *argv],
                    {"extra": extra if live else None}, None)
        return Job(key, make)

    def query(key: str, sql: str) -> Job:
        return Job(key, lambda name: ([sys.executable, "-c", QUERY_RUNNER, str(stores[name])],
                                      {"stdin": sql}, None))

    def small_import(name: str) -> Any:
        """`tickcast import` of 60 new candles into a copy of the store (opened for writing)."""
        csv = work / "bitstamp_BTC-USD_1m_small.csv"
        start = facts[name]["newest_candle_ts"] + STEP
        csv.write_text("ts_ms,open,high,low,close,volume\n" + "".join(
            f"{start + i * STEP},100,101,99,100.5,1.5\n" for i in range(60)))
        copy = work / "import.db"
        shutil.copyfile(stores[name], copy)
        os.sync()  # else the first fsync of the store writes the whole fresh copy back

        def cleanup() -> None:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{copy}{suffix}").unlink(missing_ok=True)

        return [*tickcast(), "--db", str(copy), "import", str(csv)], {}, cleanup

    out = [
        command("status_s", "status", live=True),
        command("status_json_s", "status", "--json", live=True),
        command("report_s", "report"),
        command("report_json_s", "report", "--json"),
        command("report_since_7d_s", "report", "--since", "{since}"),
        command("report_plot_s", "report", "--plot", "{png}"),
        Job("import_small_file_s", small_import),
    ]
    for label, sql in readme_queries():
        out.append(query(f"readme_query_{label}_s", sql))
    out.append(query("select_forecast_accuracy_s", "SELECT * FROM forecast_accuracy"))
    return out


def report_json_equals_rows(db: Path) -> bool:
    from sqlalchemy import text

    from storage import Store, views

    _, stdout, _ = timed([*tickcast(), "--db", str(db), "report", "--json"])
    got = json.loads(stdout)["rows"]
    s = Store(str(db), read_only=True)
    try:
        with s.read() as conn:
            want = [dict(r._mapping) for r in conn.execute(text(views.accuracy_from_rows_sql()))]
    finally:
        s.close()
    key = ("model", "exchange", "symbol", "timeframe", "horizon")
    g = {tuple(r[k] for k in key): r for r in got}
    w = {tuple(r[k] for k in key): r for r in want}
    if g.keys() != w.keys():
        return False
    for k, row in w.items():
        for c, v in row.items():
            x = g[k][c]
            if isinstance(v, float) or isinstance(x, float):
                if (v is None) != (x is None) or (v is not None and not math.isclose(
                        x, v, rel_tol=1e-9, abs_tol=1e-12)):
                    return False
            elif x != v:
                return False
    return True


# -- the tick --------------------------------------------------------------------------------

class Timers:
    """Wall seconds spent inside wrapped functions (outermost call only, per name)."""

    def __init__(self) -> None:
        self.total: dict[str, float] = {}
        self._depth: dict[str, int] = {}

    def wrap(self, owner: Any, attr: str, name: str) -> None:
        fn = getattr(owner, attr)

        def timed(*a: Any, **k: Any) -> Any:
            self._depth[name] = self._depth.get(name, 0) + 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self._depth[name] -= 1
                if self._depth[name] == 0:
                    self.total[name] = self.total.get(name, 0.0) + time.perf_counter() - t0

        setattr(owner, attr, timed)


class TickRig:
    """Pipeline.tick on a copy of one store, continuing its series by a random walk."""

    def __init__(self, name: str, db: Path, ticks: int, work: Path, trace: bool) -> None:
        from sqlalchemy import event

        from daemon.config import settings
        from daemon.files.replay_data import replay_input
        from daemon.pipeline import tick as pipeline
        from daemon.pipeline.modelset import ModelSet
        from daemon.sources.replay import ReplaySource
        from storage import Store, candles

        self.copy = work / f"tick-{name}.db"
        shutil.copyfile(db, self.copy)
        os.sync()  # else the first checkpoint's fsync writes the whole fresh copy back
        cfg = settings.load(None, env={}, overrides={
            "model.models": ["naive", "drift"], "model.retrain_every": 10**9})
        self.store = store = Store(str(self.copy))
        store.open(0)
        rng = np.random.default_rng(5)
        data = {}
        with store.read() as conn:
            for sym in ("BTC/EUR", "BTC/USD"):
                newest = candles.newest_ts(conn, "bitstamp", sym, "1m")
                assert newest is not None
                past = candles.range_rows(conn, "bitstamp", sym, "1m",
                                          newest - cfg.model.train_window * STEP, newest + 1)
                last = past[-1][4]
                ts = [r[0] for r in past] + [newest + (i + 1) * STEP for i in range(ticks + 2)]
                closes = last * np.exp(np.cumsum(rng.normal(0, 6e-4, ticks + 2)))
                opens = np.concatenate([[last], closes[:-1]])
                new = [(o, max(o, c) * 1.0002, min(o, c) * 0.9998, c, 1.0)
                       for o, c in zip(opens.tolist(), closes.tolist(), strict=True)]
                ohlcv = np.asarray([r[1:] for r in past] + new, dtype=np.float64)
                data[sym] = (np.asarray(ts, dtype=np.int64), ohlcv)
                start = newest
        inp = replay_input("bitstamp", "1m", data, "scale bench")
        self.pipe = pipeline.Pipeline(cfg, store, ReplaySource(inp.series.exchange, inp.data), ModelSet(cfg, inp.series),
                                      inp.series)
        self.now = start + STEP + 2000
        self.pipe.tick(self.now)  # warm-up: loads the window (not measured)
        self.traced: list[str] = []
        self.trace = trace
        if trace:
            def _trace(dbapi_conn: Any, _r: Any) -> None:
                dbapi_conn.set_trace_callback(self.traced.append)

            self._trace = _trace
            event.listen(store.engine, "connect", _trace)
            store.engine.dispose()  # new connections, traced
        self.times: list[float] = []
        self.refresh: list[float] = []
        self.parts: dict[str, list[float]] = {}
        self.k = 0

    def tick(self, timers: Timers) -> None:
        from sqlalchemy import event

        from storage import forecasts

        self.k += 1
        timers.total.clear()
        t = time.perf_counter()
        rep = self.pipe.tick(self.now + self.k * STEP)
        self.times.append((time.perf_counter() - t) * 1000)
        assert rep.forecasts == 20, rep
        for name, v in timers.total.items():
            self.parts.setdefault(name, []).append(v * 1000)
        t = time.perf_counter()  # what the exporter's thread reads every minute
        with self.store.read("metrics: rolling accuracy") as conn:
            rows = forecasts.accuracy(conn, since=self.now + self.k * STEP - 24 * 3_600_000)
        self.store.store_size_bytes()
        self.refresh.append((time.perf_counter() - t) * 1000)
        assert rows
        if self.trace and self.k == 1:
            self.store.engine.dispose()
            event.remove(self.store.engine, "connect", self._trace)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "tick_p50_ms": round(float(np.percentile(self.times, 50)), 2),
            "tick_p90_ms": round(float(np.percentile(self.times, 90)), 2),
            "metrics_refresh_p50_ms": round(float(np.percentile(self.refresh, 50)), 2),
            "parts_p50_ms": {n: round(float(np.percentile(v, 50)), 2)
                             for n, v in self.parts.items()},
        }
        out["tick_and_refresh_p50_ms"] = round(out["tick_p50_ms"]
                                               + out["metrics_refresh_p50_ms"], 2)
        if self.trace:
            out["plans"] = explain(self.copy, self.traced)
        return out

    def status_job(self) -> Any:
        """`status` on the copy, which now ends minutes after a midnight: its 24 h window
        is nearly a whole day of rows before the sums start (the worst case)."""
        live = {"TICKCAST_DAEMON__CLOCK": f"fixed:{self.now + (self.k + 1) * STEP + 30_000}"}
        return [*tickcast(), "--db", str(self.copy), "status"], {"extra": live}, None

    def close(self) -> None:
        self.store.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.copy}{suffix}").unlink(missing_ok=True)


def tick_costs(stores: dict[str, Path], ticks: int, runs: int, work: Path) -> dict[str, Any]:
    """The tick on every store, the stores alternating tick by tick."""
    from daemon.pipeline import history
    from daemon.pipeline import tick as pipeline
    from storage import forecasts

    timers = Timers()
    timers.wrap(pipeline.Pipeline, "ingest", "ingest")
    timers.wrap(pipeline.Pipeline, "newest", "newest candle")
    timers.wrap(history.CandleWindow, "refresh", "candle window")
    timers.wrap(forecasts, "score_by_model", "scoring with the accuracy sums")
    timers.wrap(forecasts, "insert_by_model", "storing forecasts")
    rigs = {name: TickRig(name, db, ticks, work, trace=name == "year")
            for name, db in stores.items()}
    try:
        for _ in range(ticks):
            for rig in rigs.values():
                rig.tick(timers)
        out = {name: rig.summary() for name, rig in rigs.items()}
        after = interleaved([Job("status_minutes_after_midnight_s",
                                 lambda name: rigs[name].status_job())], list(rigs), runs)
        for name in rigs:
            out[name]["status_minutes_after_midnight_s"] = after[name][
                "status_minutes_after_midnight_s"]
        return out
    finally:
        for rig in rigs.values():
            rig.close()


def explain(db: Path, statements: list[str]) -> dict[str, list[str]]:
    """EXPLAIN QUERY PLAN of each distinct statement (bound values inlined by the trace)."""
    con = sqlite3.connect(str(db))
    out: dict[str, list[str]] = {}
    try:
        for sql in statements:
            head = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
            if head not in ("SELECT", "INSERT", "UPDATE", "DELETE", "WITH"):
                continue
            short = re.sub(r"\s+", " ", sql)
            short = re.sub(r"\(VALUES .*\) WHERE true", "(VALUES (...), ...) WHERE true", short)
            # one entry per statement shape: bound values as ?
            short = re.sub(r"'[^']*'|\b\d+(\.\d+)?(e[-+]?\d+)?\b", "?", short)
            short = re.sub(r"\?(, \?)+", "?, ...", short)
            if short[:400] in out:
                continue
            try:
                out[short[:400]] = [r[-1] for r in con.execute("EXPLAIN QUERY PLAN " + sql)]
            except sqlite3.Error as e:
                out[short[:400]] = [f"({e})"]
    finally:
        con.close()
    return out


def readme_plans(db: Path) -> dict[str, list[str]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {label: [r[-1] for r in con.execute("EXPLAIN QUERY PLAN " + sql)]
                for label, sql in [*readme_queries(), ("forecast_accuracy",
                                                       "SELECT * FROM forecast_accuracy")]}
    finally:
        con.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--month", type=Path, required=True)
    ap.add_argument("--year", type=Path, required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ticks", type=int, default=120)
    ap.add_argument("--skip-commands", action="store_true", help="only the ticks and plans")
    args = ap.parse_args()
    result: dict[str, Any] = {"benchmark": "scale", "runs": args.runs, "ticks": args.ticks}
    stores = {"month": args.month, "year": args.year}
    facts = {name: store_facts(db) for name, db in stores.items()}
    with tempfile.TemporaryDirectory(dir=args.year.parent) as d:
        work = Path(d)
        for name, db in stores.items():
            result[name] = {"store": str(db), **facts[name]}
        if not args.skip_commands:
            got = interleaved(jobs(stores, facts, work), list(stores), args.runs)
            for name, db in stores.items():
                result[name].update(got[name])
                result[name]["report_json_equals_rows"] = report_json_equals_rows(db)
            result["load_average_after_commands"] = os.getloadavg()
            print(json.dumps({n: result[n] for n in stores}), flush=True)
        ticks = tick_costs(stores, args.ticks, args.runs, work)
        for name in stores:
            result[name]["tick"] = ticks[name]
        result["load_average_after_ticks"] = os.getloadavg()
        result["readme_plans_year"] = readme_plans(args.year)
    m, y = result["month"]["tick"], result["year"]["tick"]
    result["tick_year_over_month"] = round(y["tick_p50_ms"] / m["tick_p50_ms"], 3)
    result["tick_and_refresh_year_over_month"] = round(
        y["tick_and_refresh_p50_ms"] / m["tick_and_refresh_p50_ms"], 3)
    emit(result)


if __name__ == "__main__":
    main()
