"""`tickcast report --plot`: four panels a person can read at a glance.

(a) per symbol, the latest forecast as a fan (median and 80 % band over every horizon)
after the last few days of actual closes; (b) a readable recent stretch of one-step
forecasts and their band against the actuals; (c) MASE and interval skill by horizon per
model (below 1 beats naive); (d) coverage by horizon against the 80 % line.
Drawing only: `report.plot` reads the data (`storage.reports`) and hands it over.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from daemon.core.errors import UsageError

MODEL_ORDER = {"seq2seq": 0, "linear": 1, "naive": 2, "drift": 3}
COLOURS = {"seq2seq": "tab:blue", "linear": "tab:purple", "naive": "tab:orange",
           "drift": "tab:green"}


@dataclass
class Fan:
    """The newest forecast of one model for one symbol, and the closes before it."""

    symbol: str
    model: str
    issued_ts: int
    closes: list[tuple[int, float]]  # (ts, close) of the last few days, ascending
    path: list[tuple[int, float, float | None, float | None]]  # (target_ts, yhat, lo, hi)


@dataclass
class Stretch:
    """One-step forecasts of one symbol over a recent stretch, per model."""

    symbol: str
    horizon: int
    actual: list[tuple[int, float]] = field(default_factory=list)  # (target_ts, close)
    models: dict[str, list[tuple[int, float, float | None, float | None]]] = field(
        default_factory=dict)  # model -> (target_ts, yhat, lo, hi)


def _t(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _order(models: Any) -> list[str]:
    return sorted(models, key=lambda m: (MODEL_ORDER.get(m, 9), m))


def pyplot() -> Any:
    """matplotlib's pyplot, drawing to files only; UsageError when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise UsageError("--plot needs matplotlib: pip install 'tickcast[plot]'") from e
    return plt


def draw(path: Path, fans: list[Fan], stretches: list[Stretch],
         accuracy: list[dict[str, Any]], since_text: str) -> None:
    plt = pyplot()

    symbols = sorted({f.symbol for f in fans} | {s.symbol for s in stretches})
    n_sym = max(len(symbols), 1)
    fig = plt.figure(figsize=(13, 4.2 * n_sym + 4.2), constrained_layout=True)
    grid = fig.add_gridspec(n_sym + 1, 2)
    for i, sym in enumerate(symbols):
        _fan(fig.add_subplot(grid[i, 0]), [f for f in fans if f.symbol == sym], sym)
        _stretch(fig.add_subplot(grid[i, 1]),
                 next((s for s in stretches if s.symbol == sym), None), sym, since_text)
    _skill(fig.add_subplot(grid[n_sym, 0]), accuracy)
    _coverage(fig.add_subplot(grid[n_sym, 1]), accuracy)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _fan(ax: Any, fans: list[Fan], sym: str) -> None:
    if not fans:
        ax.set_title(f"{sym}: no forecast yet")
        return
    closes = max(fans, key=lambda f: len(f.closes)).closes
    if closes:
        ax.plot([_t(t) for t, _ in closes], [c for _, c in closes], color="black", lw=1.0,
                label="close")
    for f in sorted(fans, key=lambda f: MODEL_ORDER.get(f.model, 9)):
        if not f.path:
            continue
        last = next((c for t, c in reversed(f.closes) if t <= f.issued_ts), None)
        ts = [f.issued_ts] + [p[0] for p in f.path]
        med = ([last] if last is not None else [f.path[0][1]]) + [p[1] for p in f.path]
        colour = COLOURS.get(f.model)
        # seq2seq on top: its median often is the last close, exactly naive's line
        ax.plot([_t(t) for t in ts], med, color=colour, lw=1.4, label=f"{f.model} median",
                zorder=3 if f.model == "seq2seq" else 2, ls="--" if f.model == "seq2seq" else "-")
        if f.model == "seq2seq" and all(p[2] is not None for p in f.path):
            lo = med[:1] + [p[2] for p in f.path]
            hi = med[:1] + [p[3] for p in f.path]
            ax.fill_between([_t(t) for t in ts], lo, hi, color=colour, alpha=0.25,
                            label="seq2seq 80% band")
    ax.set_title(f"{sym}: latest forecast, issued {_t(fans[0].issued_ts):%Y-%m-%d %H:%M} UTC",
                 fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)


def _times(ms: list[int]) -> Any:
    """Epoch milliseconds as numpy datetime64 (UTC): matplotlib converts an array of them
    at once, where a list of datetimes costs it seconds for a week of minutes."""
    import numpy as np

    return np.asarray(ms, dtype="datetime64[ms]")


def _stretch(ax: Any, s: Stretch | None, sym: str, since_text: str) -> None:
    if s is None or not s.actual:
        ax.set_title(f"{sym}: no scored forecasts, {since_text}", fontsize=10)
        return
    ax.plot(_times([t for t, _ in s.actual]), [a for _, a in s.actual], color="black", lw=1.0,
            label="actual close")
    for model in _order(s.models):
        rows = s.models[model]
        t = _times([r[0] for r in rows])
        colour = COLOURS.get(model)
        ax.plot(t, [r[1] for r in rows], color=colour, lw=0.9, label=f"{model}")
        if model in ("seq2seq", "naive") and rows and all(r[2] is not None for r in rows):
            ax.fill_between(t, [r[2] for r in rows], [r[3] for r in rows], color=colour,
                            alpha=0.18 if model == "seq2seq" else 0.10,
                            label=f"{model} 80% band")
    ax.set_title(f"{sym}: {s.horizon}-step forecasts vs actual, {since_text}", fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    ax.tick_params(axis="x", labelrotation=20, labelsize=8)


def _by_model(rows: list[dict[str, Any]], key: str) -> dict[str, dict[int, list[float]]]:
    out: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        if r.get(key) is not None:
            out.setdefault(r["model"], {}).setdefault(r["horizon"], []).append(float(r[key]))
    return out


def _skill(ax: Any, rows: list[dict[str, Any]]) -> None:
    mase, skill = _by_model(rows, "mase"), _by_model(rows, "interval_skill")
    for model in _order(set(mase) | set(skill)):
        colour = COLOURS.get(model)
        for data, style, label in ((mase, "-o", "MASE"), (skill, "--s", "interval skill")):
            pts = sorted((h, sum(v) / len(v)) for h, v in data.get(model, {}).items())
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=colour,
                        label=f"{model} {label}")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xlabel("horizon (candles)")
    ax.set_title("MASE and interval skill by horizon (mean over symbols; below 1 beats naive)",
                 fontsize=10)
    ax.legend(fontsize=8, ncol=2)


def _coverage(ax: Any, rows: list[dict[str, Any]]) -> None:
    cov = _by_model(rows, "coverage")
    for model in _order(cov):
        pts = sorted((h, sum(v) / len(v)) for h, v in cov[model].items())
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color=COLOURS.get(model),
                label=model)
    ax.axhline(0.8, color="grey", lw=0.8, label="80% target")
    ax.set_ylim(0.5, 1.0)
    ax.set_xlabel("horizon (candles)")
    ax.set_title("share of actuals inside the 80% band, by horizon", fontsize=10)
    ax.legend(fontsize=8)
