"""`tickcast report`: the accuracy table (from the same SQL as the forecast_accuracy view),
and an optional plot of forecasts against actuals (`report_plot`, matplotlib)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from daemon import wiring
from daemon.config.settings import Settings
from daemon.core import errors
from daemon.core.clock import iso
from daemon.core.timeframes import to_ms
from storage import Store, forecasts, reports
from storage import accuracy as sums

log = logging.getLogger("tickcast.commands")

MODEL_ORDER = {"seq2seq": 0, "naive": 1, "drift": 2}


def accuracy(store: Store, since: int | None = None) -> list[dict[str, Any]]:
    """Rows of forecast_accuracy, optionally for forecasts issued since a time (from the
    daily sums, plus the rows of a partial first day)."""
    with store.read("accuracy") as conn:
        rows = forecasts.accuracy(conn, since)
    rows.sort(key=lambda r: (r["exchange"], r["symbol"], r["timeframe"], r["horizon"],
                             MODEL_ORDER.get(r["model"], 9), r["model"]))
    return rows


def _f(x: float | None, fmt: str) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)


def _verdict(ratio: float | None) -> str:
    if ratio is None:
        return ""
    return "better" if ratio < 0.9995 else ("worse" if ratio > 1.0005 else "same")


def table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table: MASE and interval skill below 1 beat the last close (naive)."""
    if not rows:
        return "no scored forecasts yet"
    head = (f"{'symbol':<9} {'tf':<3} {'h':>3} {'model':<8} {'n':>6} {'MAE':>10} {'RMSE':>10} "
            f"{'MAPE%':>7} {'bias':>9} {'MASE':>6} {'cov80':>6} {'int.score':>10} "
            f"{'skill':>6}  median / band vs naive")
    out = [head, "-" * len(head)]
    last_key = None
    for r in rows:
        key = (r["symbol"], r["horizon"])
        if last_key is not None and key != last_key:
            out.append("")
        last_key = key
        verdict = "" if r["model"] == "naive" else \
            f"{_verdict(r['mase'])} / {_verdict(r['interval_skill']) or 'no band'}"
        out.append(
            f"{r['symbol']:<9} {r['timeframe']:<3} {r['horizon']:>3} {r['model']:<8} "
            f"{r['n']:>6} {_f(r['mae'], '10.3f')} {_f(r['rmse'], '10.3f')} "
            f"{_f(r['mape'], '7.3f')} {_f(r['bias'], '9.3f')} {_f(r['mase'], '6.3f')} "
            f"{_f(None if r['coverage'] is None else 100 * r['coverage'], '5.1f')}% "
            f"{_f(r['interval_score'], '10.3f')} {_f(r['interval_skill'], '6.3f')}  {verdict}")
    out.append("")
    out.append("MASE = MAE / naive's MAE on the same issue times (below 1 beats the last close). "
               "cov80 = share of actuals inside the 80% band.")
    out.append("int.score = mean of (upper - lower) + 10 x how far the actual fell outside the "
               "band; skill = that / naive's on the same issue times (below 1: a better band).")
    return "\n".join(out)


STRETCH_MS = 7 * 86_400_000  # default plot stretch: the last 7 days of issue times


def plot(store: Store, path: Path, since: int | None, rows: list[dict[str, Any]]) -> None:
    """The four panels of `report_plot` from the store."""
    from daemon.commands import report_plot as panels

    with store.read("plot data") as conn:
        which = reports.busiest_series(conn)
        newest = reports.newest_issue(conn)
        fans: list[panels.Fan] = []
        stretches: list[panels.Stretch] = []
        if which is not None and newest is not None:
            exchange, timeframe = which
            step = to_ms(timeframe)
            start = since if since is not None else newest - STRETCH_MS
            latest = reports.newest_forecasts(conn, exchange, timeframe)
            horizons = sorted({r["horizon"] for r in latest})
            back = max(4 * max(horizons, default=1), 48) * step
            for (model, sym), group in _groups(latest, ("model", "symbol")).items():
                issued = group[0]["issued_ts"]
                fans.append(panels.Fan(sym, model, issued,
                                       reports.closes(conn, exchange, sym, timeframe,
                                                      issued - back, issued),
                                       [(r["target_ts"], r["yhat"], r["lower"], r["upper"])
                                        for r in group]))
            h1 = horizons[0] if horizons else 1
            for sym, group in _groups(reports.scored_stretch(conn, exchange, timeframe, h1,
                                                             start), ("symbol",)).items():
                st = panels.Stretch(sym[0], h1)
                seen: set[int] = set()
                for r in group:
                    st.models.setdefault(r["model"], []).append(
                        (r["target_ts"], r["yhat"], r["lower"], r["upper"]))
                    if r["target_ts"] not in seen:
                        seen.add(r["target_ts"])
                        st.actual.append((r["target_ts"], r["actual"]))
                st.actual.sort()
                stretches.append(st)
    since_text = f"issued since {iso(since)}" if since is not None else \
        "the last 7 days of issue times"
    panels.draw(path, fans, stretches, rows, since_text)


def _groups(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[Any, list[dict[str, Any]]]:
    out: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        k = tuple(r[x] for x in keys)
        out.setdefault(k, []).append(r)
    return out


def rows_kept(store: Store) -> dict[str, Any]:
    """From when forecast rows exist, beside from when the accuracy sums count: they differ
    once storage.keep_forecast_rows_days deleted old rows (the sums keep them)."""
    with store.read("stored range") as conn:
        rows, counted = sums.rows_from(conn), sums.sums_from(conn)
    return {"forecast_rows_from": iso(rows) if rows is not None else None,
            "forecast_rows_from_ms": rows,
            "rows_deleted_before": rows is not None and counted is not None and counted < rows}


def describe_kept(kept: dict[str, Any]) -> str:
    """One line when old rows were deleted, else ''."""
    if not kept["rows_deleted_before"]:
        return ""
    return (f"forecast rows exist from {kept['forecast_rows_from']} on (older ones were deleted,"
            " storage.keep_forecast_rows_days); the accuracy above still counts them")


def describe_range(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    first = min(r["first_issued_ts"] for r in rows)
    last = max(r["last_issued_ts"] for r in rows)
    return f"forecasts issued {iso(first)} .. {iso(last)}"


def report_command(cfg: Settings, since: int | None, plot_path: str | None,
                   as_json: bool) -> int:
    if plot_path:
        from daemon.commands.report_plot import pyplot

        pyplot()  # matplotlib is optional: say so before opening anything
    store = wiring.open_configured_store(cfg, 0, read_only=True)
    try:
        rows = accuracy(store, since)
        kept = rows_kept(store)
        if plot_path:
            plot(store, Path(plot_path), since, rows)
    finally:
        store.close()
    if as_json:
        print(json.dumps({"since": iso(since) if since is not None else None, "rows": rows,
                          **kept}, indent=2))
    else:
        print(table(rows))
        if rows:
            print(describe_range(rows))
        if describe_kept(kept):
            print(describe_kept(kept))
        if plot_path:
            print(f"plot written to {plot_path}")
    return errors.EXIT_OK
