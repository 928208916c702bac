"""Daemon benchmark (issue 5): steady-state RSS of a real `tickcast run` after 1,000 ticks
against the exchange emulator on an accelerated clock, its growth between tick 500 and
tick 1,000, and tick latency p50/p99 with and without a retrain running in parallel.

    python tests/bench/daemon_rss.py [--ticks 1000] [--speed 240]

Targets: RSS under 600 MB, growth under 5 %.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import ROOT, emit

from daemon.core.clock import ScaledClock
from tests.emulator import ExchangeEmulator, hourly_onto_minutes, load_csv
from tests.helpers import write_config

MINUTE = 60_000
T0 = 1_704_067_200_000  # 2024-01-01: real hourly candles laid onto minutes from here


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, default=1000)
    ap.add_argument("--speed", type=float, default=240.0, help="simulated minutes per minute")
    args = ap.parse_args()
    hourly = {s: load_csv(ROOT / f"daemon/sample/bitstamp_{s.replace('/', '-')}_1h_2017-11_2020-12.csv.gz")
              for s in ("BTC/USD", "BTC/EUR")}
    data = {s: hourly_onto_minutes(r, T0) for s, r in hourly.items()}
    history = 20_160 + 300  # a full default training window before the start
    clock = ScaledClock(T0 + history * MINUTE, time.time(), args.speed)
    with tempfile.TemporaryDirectory() as d, ExchangeEmulator(data, now_ms=clock.now_ms) as emu:
        tmp = Path(d)
        cfg = write_config(tmp / "c.toml", {
            "exchange": {"api_url": emu.base_url, "rate_limit": False, "timeout_ms": 5000},
            "daemon": {"clock": clock.spec(), "poll_delay_s": 1.0, "heartbeat_minutes": 60},
        })
        log_path = tmp / "daemon.log"
        with open(log_path, "w") as log:
            p = subprocess.Popen([sys.executable, "-m", "daemon", "-v", "--config", str(cfg),
                                  "--db", str(tmp / "live.db"), "run"], cwd=ROOT, stdout=log,
                                 stderr=subprocess.STDOUT)
            rss: dict[int, float] = {}
            t0 = time.time()
            while True:
                time.sleep(0.5)
                n = len(re.findall(r"tick \d+ done", log_path.read_text()))
                for mark in (100, 250, 500, 750, 1000, args.ticks):
                    if n >= mark and mark not in rss and mark <= args.ticks:
                        rss[mark] = rss_mb(p.pid)
                if n >= args.ticks or p.poll() is not None:
                    break
                if time.time() - t0 > 3 * args.ticks * 60 / args.speed + 600:
                    break
            p.terminate()
            code = p.wait(30)
        text = log_path.read_text()
    lat = [(float(m.group(1)), bool(m.group(2))) for m in
           re.finditer(r"tick \d+ done in ([\d.]+) ms( \(training running\))?", text)]
    steady = np.array([ms for ms, _ in lat[5:]])  # after the catch-up
    during = np.array([ms for ms, tr in lat[5:] if tr])
    alone = np.array([ms for ms, tr in lat[5:] if not tr])
    trainings = re.findall(r"training (?:\S+ )?(accepted|rejected|failed) in ([\d.]+)s", text)

    def pct(a: np.ndarray, q: float) -> float | None:
        return round(float(np.percentile(a, q)), 1) if len(a) else None

    emit({
        "benchmark": "daemon_rss",
        "ticks": len(lat),
        "exit_code": code,
        "speed": args.speed,
        "rss_mb": {str(k): round(v, 1) for k, v in sorted(rss.items())},
        "rss_growth_500_to_1000_pct": round(100 * (rss[1000] - rss[500]) / rss[500], 2)
        if 500 in rss and 1000 in rss else None,
        "tick_ms_p50": pct(steady, 50), "tick_ms_p99": pct(steady, 99),
        "tick_ms_p50_during_training": pct(during, 50),
        "tick_ms_p99_during_training": pct(during, 99),
        "tick_ms_p50_no_training": pct(alone, 50),
        "ticks_during_training": len(during),
        "trainings": len(trainings),
        "training_s_mean": round(float(np.mean([float(s) for _, s in trainings])), 2)
        if trainings else None,
        "targets": {"rss_mb": 600, "growth_pct": 5},
    })


if __name__ == "__main__":
    main()
