"""How long a replay of issue 18's held-out shape takes: 15,840 minutes after 14,400 of history.

    python tests/bench/tiled.py                  # the whole command, shipped defaults
    python tests/bench/tiled.py --days 1         # a smoke run: one day after the history

The bundled development pair (`tests/bench/data/coinbase_BTC-*_1m_2023-03-01_2023-03-10`,
10 days) is too short for that shape, so it is tiled to 21 days: days 11-20 repeat days
1-10 and day 21 repeats day 1, each copy's prices scaled so that it opens at the previous
copy's last close (the no-trade holes stay where they were). A timing stand-in only: the
repeated days say nothing about forecast quality (that is `minute.py`). Then
`python -m daemon replay` of the last `--days` days (11 by default) with no config file (the
shipped defaults), as a child process; its wall time is what a user waits for. The last
line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from _common import ROOT, emit

DATA = ROOT / "tests" / "bench" / "data"
DAY = 86_400_000
DAYS = 21
HISTORY_DAYS = 10


def tile(src: Path, dst: Path) -> int:
    """Write `src` (10 days of 1-minute candles) tiled to DAYS days into `dst`; rows kept."""
    with gzip.open(src, "rt") as f:
        a = np.loadtxt(f, delimiter=",", skiprows=1)
    t0, span = int(a[0, 0]), 10 * DAY
    parts, prev = [a], a
    for k in range(1, -(-DAYS * DAY // span)):
        b = a.copy()
        b[:, 0] += k * span
        b[:, 1:5] *= prev[-1, 4] / a[0, 1]
        parts.append(b)
        prev = b
    t = np.concatenate(parts)
    t = t[t[:, 0] < t0 + DAYS * DAY]
    with gzip.open(dst, "wt") as g:
        g.write("ts_ms,open,high,low,close,volume\n")
        for r in t:
            g.write(f"{int(r[0])},{r[1]:.2f},{r[2]:.2f},{r[3]:.2f},{r[4]:.2f},{r[5]:.8f}\n")
    return len(t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=DAYS - HISTORY_DAYS,
                    help="days replayed after the 10 days of history")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="tickcast-tiled-") as tmp:
        files, rows = [], {}
        for sym in ("USD", "EUR"):
            src = DATA / f"coinbase_BTC-{sym}_1m_2023-03-01_2023-03-10.csv.gz"
            dst = Path(tmp) / f"coinbase_BTC-{sym}_1m_2023-03-01_2023-03-21.csv.gz"
            rows[f"BTC/{sym}"] = tile(src, dst)
            files.append(dst)
        first = datetime(2023, 3, 1, tzinfo=UTC).timestamp() * 1000 + HISTORY_DAYS * DAY
        start = datetime.fromtimestamp(first / 1000, UTC).strftime("%Y-%m-%dT%H:%MZ")
        end = datetime.fromtimestamp((first + args.days * DAY) / 1000, UTC).strftime(
            "%Y-%m-%dT%H:%MZ")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("TICKCAST_") and k != "STATE_DIRECTORY"}
        cmd = [sys.executable, "-m", "daemon", "replay", "--data", *map(str, files),
               "--start", start, "--end", end, "--out", str(Path(tmp) / "tiled.db")]
        print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
        t = time.monotonic()
        with open(Path(tmp) / "replay.log", "w") as log:
            rc = subprocess.run(cmd, cwd=tmp, env=env, stdout=log, stderr=None).returncode
        wall = time.monotonic() - t
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"replay of {args.days * 1440} minutes after {HISTORY_DAYS * 1440}: {wall:.1f} s "
          f"({wall / 60:.1f} min), exit {rc}, peak RSS {peak:.0f} MB", flush=True)
    emit({"bench": "tiled", "minutes": args.days * 1440, "history_minutes": HISTORY_DAYS * 1440,
          "rows": rows, "start": start, "end": end, "replay_rc": rc, "wall_s": round(wall, 1),
          "peak_rss_mb": round(peak, 1), "target_s": 25 * 60})
    if rc != 0:
        sys.exit(rc)


if __name__ == "__main__":
    main()
