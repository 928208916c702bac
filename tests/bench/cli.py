"""Start-up time of the commands people type (README: Benchmarks, issue 11): whole commands as
subprocesses, the median of N runs each.

    python tests/bench/cli.py              # 9 runs of each command
    python tests/bench/cli.py --runs 3     # a smoke run

Timed: `tickcast --help`, `tickcast <command> --help` for every command, `tickcast status`
and `status --json` on a small store (the real BTC/USD minute sample, 3,887 candles) and on
a replay store (candles, forecasts, training runs), and `tickcast report` on that replay
store. The replay store is made first by a short `tickcast replay` of 300 hourly candles of
the bundled pair with a small model (not timed). Targets: `--help` <= 0.3 s, `status`
<= 0.6 s. Also reported: whether `status` imported torch, ccxt, numpy or pandas.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import ROOT, emit

COMMANDS = ("run", "backfill", "import", "replay", "report", "status")
MINUTES = ROOT / "tests/data/coinbase_BTC-USD_1m_2018-04-04_2018-04-06.csv.gz"
HOURLY = {s: ROOT / f"daemon/sample/bitstamp_{s}_1h_2017-11_2020-12.csv.gz"
          for s in ("BTC-USD", "BTC-EUR")}
SMALL_MODEL = ("[model]\nlookback = 16\nhorizons = [1, 3, 6]\ntrain_window = 240\n"
               "retrain_every = 24\ninitial_steps = 40\nretrain_steps = 8\nhidden = 8\n"
               "batch_size = 32\nthreads = 1\ndevice = \"cpu\"\n")
HELP_TARGET_S = 0.3
STATUS_TARGET_S = 0.6


def tickcast() -> list[str]:
    """The console script beside this Python, else `python -m daemon`."""
    script = Path(sys.executable).with_name("tickcast")
    return [str(script)] if script.exists() else [sys.executable, "-m", "daemon"]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith("TICKCAST_") and k != "STATE_DIRECTORY"}


def run(args: list[str]) -> float:
    t0 = time.perf_counter()
    p = subprocess.run([*tickcast(), *args], capture_output=True, text=True, env=env(),
                       cwd=ROOT)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"tickcast {' '.join(args)} exited {p.returncode}:\n{p.stderr[-2000:]}")
    return wall


def timed(args: list[str], runs: int) -> dict[str, float]:
    run(args)  # warm the page cache; not counted
    times = [run(args) for _ in range(runs)]
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4),
            "max_s": round(max(times), 4)}


def make_stores(tmp: Path) -> tuple[Path, Path]:
    small = tmp / "small.db"
    subprocess.run([*tickcast(), "--db", str(small), "import", str(MINUTES)], check=True,
                   capture_output=True, env=env(), cwd=ROOT)
    data = []
    for name, path in HOURLY.items():
        with gzip.open(path, "rt") as f:
            lines = f.read().splitlines()
        out = tmp / f"bitstamp_{name}_1h_bench.csv"
        out.write_text("\n".join([lines[0], *lines[-300:]]) + "\n")
        data.append(str(out))
    cfg = tmp / "small.toml"
    cfg.write_text(SMALL_MODEL)
    replay = tmp / "replay.db"
    start = _ts_of(Path(data[0]), 260)
    subprocess.run([*tickcast(), "--config", str(cfg), "replay", "--data", *data, "--start",
                    start, "--out", str(replay)], check=True, capture_output=True, env=env(),
                   cwd=ROOT)
    return small, replay


def _ts_of(csv: Path, row: int) -> str:
    ts_ms = int(csv.read_text().splitlines()[row + 1].split(",")[0])
    return time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime(ts_ms / 1000))


def heavy_imports(db: Path) -> list[str]:
    code = ("import sys, io, contextlib\nfrom daemon.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    main(['--db', {str(db)!r}, 'status'])\n"
            "print(','.join(m for m in ('torch', 'ccxt', 'numpy', 'pandas') "
            "if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=env(), cwd=ROOT, check=True)
    return [m for m in p.stdout.strip().split(",") if m]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tickcast-bench-cli-"))
    try:
        small, replay = make_stores(tmp)
        res: dict[str, Any] = {"runs": args.runs, "command": " ".join(tickcast())}
        cases = {"--help": ["--help"]}
        cases.update({f"{c} --help": [c, "--help"] for c in COMMANDS})
        cases.update({
            "status (small store)": ["--db", str(small), "status"],
            "status --json (small store)": ["--db", str(small), "status", "--json"],
            "status (replay store)": ["--db", str(replay), "status"],
            "status --json (replay store)": ["--db", str(replay), "status", "--json"],
            "report (replay store)": ["--db", str(replay), "report"],
        })
        times = {}
        for name, argv in cases.items():
            times[name] = timed(argv, args.runs)
            print(f"{name:<30} median {times[name]['median_s'] * 1000:7.1f} ms", flush=True)
        res["times"] = times
        helps = [t["median_s"] for n, t in times.items() if n.endswith("--help")]
        status = [t["median_s"] for n, t in times.items() if n.startswith("status")]
        res["help_max_median_s"] = max(helps)
        res["status_max_median_s"] = max(status)
        res["help_target_met"] = max(helps) <= HELP_TARGET_S
        res["status_target_met"] = max(status) <= STATUS_TARGET_S
        res["status_heavy_imports"] = heavy_imports(small)
        res["replay_store_bytes"] = replay.stat().st_size
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    emit(res)


if __name__ == "__main__":
    main()
