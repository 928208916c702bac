"""`tickcast report`: the accuracy table (from the same SQL as the forecast_accuracy view),
and an optional plot of forecasts against actuals."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from storage import Store, forecasts

from .clock import iso
from .errors import UsageError

log = logging.getLogger(__name__)

MODEL_ORDER = {"seq2seq": 0, "naive": 1, "drift": 2}


def accuracy(store: Store, since: int | None = None) -> list[dict[str, Any]]:
    """Rows of forecast_accuracy, optionally for forecasts issued since a time."""
    with store.read("accuracy") as conn:
        rows = forecasts.accuracy(conn, since)
    rows.sort(key=lambda r: (r["exchange"], r["symbol"], r["timeframe"], r["horizon"],
                             MODEL_ORDER.get(r["model"], 9), r["model"]))
    return rows


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table; MASE below 1 means better than the last close (naive)."""
    if not rows:
        return "no scored forecasts yet"
    head = (f"{'symbol':<9} {'tf':<3} {'h':>3} {'model':<8} {'n':>6} {'MAE':>10} {'RMSE':>10} "
            f"{'MAPE%':>7} {'bias':>9} {'cov80':>6} {'MASE':>6}  vs naive")
    out = [head, "-" * len(head)]
    last_key = None
    for r in rows:
        key = (r["symbol"], r["horizon"])
        if last_key is not None and key != last_key:
            out.append("")
        last_key = key
        mase = r["mase"]
        verdict = ""
        if r["model"] != "naive" and mase is not None:
            verdict = "better" if mase < 0.9995 else ("worse" if mase > 1.0005 else "same")
        out.append(
            f"{r['symbol']:<9} {r['timeframe']:<3} {r['horizon']:>3} {r['model']:<8} "
            f"{r['n']:>6} {_f(r['mae'], '10.3f')} {_f(r['rmse'], '10.3f')} "
            f"{_f(r['mape'], '7.3f')} {_f(r['bias'], '9.3f')} "
            f"{_f(None if r['coverage'] is None else 100 * r['coverage'], '5.1f')}% "
            f"{_f(mase, '6.3f')}  {verdict}")
    out.append("")
    out.append("MASE = MAE / MAE of naive on the same issue times; below 1 beats the last close. "
               "cov80 = share of actuals inside the 80% interval.")
    return "\n".join(out)


def series_for_plot(store: Store, since: int | None, horizon: int) -> dict[str, Any]:
    with store.read("plot data") as conn:
        rows = forecasts.scored_at_horizon(conn, since, horizon)
    out: dict[str, Any] = {}
    for model, sym, t, y, lo, hi, a in rows:
        d = out.setdefault(sym, {}).setdefault(model, {"t": [], "y": [], "lo": [], "hi": [],
                                                      "a": []})
        d["t"].append(t)
        d["y"].append(y)
        d["lo"].append(lo)
        d["hi"].append(hi)
        d["a"].append(a)
    return out


def pyplot() -> Any:
    """matplotlib's pyplot, drawing to files only; UsageError when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise UsageError("--plot needs matplotlib: pip install 'tickcast[plot]'") from e
    return plt


def plot(store: Store, path: Path, since: int | None, rows: list[dict[str, Any]]) -> None:
    """Forecast vs actual with the 80 % band per symbol, and MAE by horizon per model."""
    plt = pyplot()

    horizons = sorted({r["horizon"] for r in rows})
    h = horizons[0] if horizons else 1
    data = series_for_plot(store, since, h)
    symbols = sorted(data)
    fig, axes = plt.subplots(len(symbols) + 2, 1, figsize=(11, 3.2 * (len(symbols) + 2)),
                             squeeze=False)
    for ax, sym in zip(axes[:, 0], symbols, strict=False):
        models = data[sym]
        ref = models.get("naive") or next(iter(models.values()))
        tt = [datetime.fromtimestamp(t / 1000, tz=UTC) for t in ref["t"]]
        ax.plot(tt, ref["a"], color="black", lw=1.0, label="actual")
        for model, d in sorted(models.items(), key=lambda kv: MODEL_ORDER.get(kv[0], 9)):
            t = [datetime.fromtimestamp(x / 1000, tz=UTC) for x in d["t"]]
            ax.plot(t, d["y"], lw=0.8, label=f"{model} (h={h})")
            if model == "seq2seq" and all(x is not None for x in d["lo"]):
                ax.fill_between(t, d["lo"], d["hi"], alpha=0.2, label="seq2seq 80% interval")
        ax.set_title(f"{sym}: forecast {h} step(s) ahead vs actual close")
        ax.legend(loc="upper left", fontsize=8)
    for ax, key, title in ((axes[-2, 0], "mae", "error by horizon (MAE)"),
                           (axes[-1, 0], "mase", "skill by horizon (MASE: below 1 beats naive)")):
        for model in sorted({r["model"] for r in rows}, key=lambda m: MODEL_ORDER.get(m, 9)):
            for sym in symbols:
                pts = [(r["horizon"], r[key]) for r in rows if r["model"] == model and
                       r["symbol"] == sym and r[key] is not None]
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                            label=f"{model} {sym}")
        ax.set_xlabel("horizon (candles)")
        ax.set_ylabel(key.upper())
        ax.set_title(title)
        ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def describe_range(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    first = min(r["first_issued_ts"] for r in rows)
    last = max(r["last_issued_ts"] for r in rows)
    return f"forecasts issued {iso(first)} .. {iso(last)}"
