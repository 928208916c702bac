"""`tickcast status`: per exchange and timeframe in the store, whether a daemon runs on it
(and where), each symbol's newest candle and lag, the model's age and the last training's
outcome, and the 24 h MASE per symbol at the shortest horizon; durations for people, numbers
(seconds, milliseconds) in `--json`.

It only reads: the store is opened read-only (`wiring.open_store(read_only=True)`: nothing
is created, migrated or written, an older store is refused) and nothing heavy is imported
(no torch, ccxt, numpy or pandas), so it answers at once.
"""

from __future__ import annotations

import json
from typing import Any

from daemon import wiring
from daemon.config.settings import Settings
from daemon.core import errors, timeframes
from daemon.core.clock import from_spec, iso
from storage import StoreCorrupt, accuracy, candles, dialect, forecasts, runs

DAY_MS = 86_400_000
MODEL = "seq2seq"


def duration(seconds: float | None) -> str:
    """A duration for people: the two largest units, rounded down.

    >>> [duration(s) for s in (0, 45, 180, 3 * 3600 + 720, 2 * 86400 + 4 * 3600 + 59)]
    ['0 s', '45 s', '3 min', '3 h 12 min', '2 d 4 h']
    >>> duration(178796944), duration(None)
    ('5 y 244 d', '-')
    """
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    units = (("y", 365 * 86400), ("d", 86400), ("h", 3600), ("min", 60), ("s", 1))
    for i, (name, size) in enumerate(units[:-1]):
        if s >= size:
            big, rest = divmod(s, size)
            small_name, small_size = units[i + 1]
            small = rest // small_size
            return f"{big} {name}" + (f" {small} {small_name}" if small else "")
    return f"{s} s"


def _age_s(now: int, ms: int | None) -> float | None:
    return None if ms is None else max(0, now - ms) / 1000


def status_data(cfg: Settings, now: int, *, recent_mae: bool = True) -> dict[str, Any]:
    """What `status` shows; `recent_mae` False leaves out `mae_24h` (a day of rows by
    target time, 0.1 s on a year of minutes), which only `--json` gives."""
    url = cfg.storage.url
    store = wiring.open_configured_store(cfg, now, read_only=True)
    try:
        with store.read("status") as conn:
            data = _read(conn, now, recent_mae=recent_mae)
        data["store"] = store.display_url
        data["backend"] = store.backend
    finally:
        store.close()
    for g in data["groups"]:
        holder = dialect.writer_lock_holder(url, g["exchange"], g["timeframe"])
        g["daemon"] = {"running": holder is not None, "holder": holder}
    data["daemon_running"] = any(g["daemon"]["running"] for g in data["groups"]) or \
        (not data["groups"] and dialect.lock_is_held(url))
    # The configured series' model and training at the top, as before several series.
    mine = [g for g in data["groups"] if (g["exchange"], g["timeframe"])
            == (cfg.exchange.id, cfg.exchange.timeframe)] or data["groups"]
    data["model"] = mine[0]["model"] if mine else None
    data["last_training"] = mine[0]["last_training"] if mine else None
    return data


def _read(conn: Any, now: int, *, recent_mae: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"now": iso(now), "now_ms": now, "series": [], "groups": []}
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for ex, sym, tf in candles.series(conn):
        newest = candles.newest_ts(conn, ex, sym, tf)
        step = timeframes.to_ms(tf)
        lag = None if newest is None else max(0, now - (newest + step))
        s = {"exchange": ex, "symbol": sym, "timeframe": tf,
             "candles": candles.count(conn, ex, sym, tf), "newest_ts": newest,
             "newest": iso(newest), "lag_ms": lag,
             "lag_s": None if lag is None else lag // 1000}
        out["series"].append(s)
        groups.setdefault((ex, tf), {"exchange": ex, "timeframe": tf, "symbols": []})[
            "symbols"].append(sym)
    newest_issued = forecasts.max_issued(conn)
    rows = [] if newest_issued is None else _shortest_horizon(conn, newest_issued - DAY_MS + 1)
    for (ex, tf), g in groups.items():
        g["model"] = _model(conn, now, ex, tf)
        g["last_training"] = _last_training(conn, now, ex, tf)
        g["mase_24h"] = _mase(rows, ex, tf)
        out["groups"].append(g)
    out["mase_window"] = None if newest_issued is None else {
        "since_ms": newest_issued - DAY_MS + 1, "until_ms": newest_issued,
        "until": iso(newest_issued)}
    out["pending_forecasts"] = forecasts.pending_count(conn)
    if recent_mae:
        out["mae_24h"] = forecasts.recent_mae(conn, now - DAY_MS)
    return out


def _shortest_horizon(conn: Any, since: int) -> list[dict[str, Any]]:
    """forecast_accuracy since a time at the shortest horizon scored since then, per
    exchange and timeframe (all `status` shows): the daily sums name the candidates in
    ascending order, and the first with rows in the window is the shortest."""
    out: list[dict[str, Any]] = []
    by_h: dict[int, list[dict[str, Any]]] = {}
    for (ex, tf), horizons in accuracy.horizons_since(conn, since).items():
        for h in horizons:
            if h not in by_h:
                by_h[h] = forecasts.accuracy(conn, since, horizon=h)
            mine = [r for r in by_h[h] if r["exchange"] == ex and r["timeframe"] == tf]
            if mine:
                out += mine
                break
    return out


def _model(conn: Any, now: int, ex: str, tf: str) -> dict[str, Any] | None:
    acc = runs.latest(conn, MODEL, status="accepted", exchange=ex, timeframe=tf)
    if acc is None:
        return None
    return {"model": MODEL, "version": acc["model_version"],
            "trained_at": iso(acc["finished_at"]), "trained_at_ms": acc["finished_at"],
            "age_s": _age_s(now, acc["finished_at"]),
            "data_end": iso(acc["data_end_ts"]), "data_end_ms": acc["data_end_ts"],
            "device": acc["device"], "val_loss": acc["val_loss"],
            "median": _median(acc.get("evidence"))}


def _median(evidence: str | None) -> dict[str, Any] | None:
    """Why the model's median moves off the last close where it does, from the evidence its
    training run recorded (per symbol and horizon: the MAE gain against the last close, its
    standard error, the windows it rests on, the threshold it had to clear)."""
    if not evidence:
        return None
    try:
        cells = json.loads(evidence).get("cells", [])
    except (ValueError, AttributeError):
        return None
    judged = [c for c in cells if c.get("gain") is not None and c.get("se")]
    best = min(judged, key=lambda c: c["gain"] / c["se"], default=None)
    return {"moved": [c for c in cells if c.get("moved")], "best": best, "cells": cells}


def _median_text(m: dict[str, Any] | None) -> str | None:
    if m is None:
        return None
    def cell(c: dict[str, Any]) -> str:
        return (f"{c['symbol']} h{c['horizon']} {100 * c['gain']:+.2f}% ± {100 * c['se']:.2f}% "
                f"of MAE (n={c['n']:,})")
    if m["moved"]:
        return "  median: moves off the last close at " + "; ".join(cell(c) for c in m["moved"])
    if m["best"] is None:
        return "  median: the last close (too few out-of-sample windows to judge yet)"
    b = m["best"]
    return (f"  median: the last close everywhere; closest {cell(b)}, needed a gain beyond "
            f"{b['z']:.2f} standard errors")


def _last_training(conn: Any, now: int, ex: str, tf: str) -> dict[str, Any] | None:
    last = runs.latest(conn, MODEL, exchange=ex, timeframe=tf)
    if last is None:
        return None
    return {"model": MODEL, "status": last["status"], "reason": last["reason"],
            "finished_at": iso(last["finished_at"]), "finished_at_ms": last["finished_at"],
            "age_s": _age_s(now, last["finished_at"]),
            "model_version": last["model_version"], "train_loss": last["train_loss"],
            "val_loss": last["val_loss"], "wall_s": last["wall_seconds"],
            "unaccepted_in_a_row": runs.unaccepted_in_a_row(conn, MODEL, ex, tf)}


def _mase(rows: list[dict[str, Any]], ex: str, tf: str) -> list[dict[str, Any]]:
    """Every model but naive (whose MASE is 1 by definition) at the shortest horizon."""
    mine = [r for r in rows if r["exchange"] == ex and r["timeframe"] == tf]
    if not mine:
        return []
    h = min(r["horizon"] for r in mine)
    return [{"symbol": r["symbol"], "model": r["model"], "horizon": h, "n": r["n_paired"],
             "mase": r["mase"], "interval_skill": r["interval_skill"]}
            for r in sorted(mine, key=lambda r: (r["symbol"], r["model"]))
            if r["horizon"] == h and r["model"] != "naive"]


def status_text(data: dict[str, Any]) -> str:
    lines = [f"store {data['store']} ({data['backend']})"]
    if not data["groups"]:
        running = "a daemon holds it" if data["daemon_running"] else "no daemon running"
        lines.append(f"no candles stored yet; {running}")
    for g in data["groups"]:
        lines.extend(_group_text(g, data))
    lines.append(f"forecasts waiting for their actual: {data['pending_forecasts']:,}")
    if "integrity" in data:
        lines.append("integrity check: " + ("ok" if data["integrity"]["ok"] else
                                            "FAILED: " + "; ".join(data["integrity"]["problems"])))
    return "\n".join(lines)


def _group_text(g: dict[str, Any], data: dict[str, Any]) -> list[str]:
    d = g["daemon"]
    running = f"daemon running ({d['holder']})" if d["running"] else "daemon not running"
    lines = [f"{g['exchange']} {g['timeframe']}: {running}"]
    for s in data["series"]:
        if (s["exchange"], s["timeframe"]) != (g["exchange"], g["timeframe"]):
            continue
        lines.append(f"  {s['symbol']:<9} {s['candles']:>10,} candles, newest {s['newest']}, "
                     f"lag {duration(None if s['lag_ms'] is None else s['lag_ms'] / 1000)}")
    m = g["model"]
    if m is None:
        lines.append("  model: none yet (baselines only)")
    else:
        lines.append(f"  model: {m['model']} {m['version']}, {duration(m['age_s'])} old "
                     f"(trained on data to {m['data_end']}, {m['device']})")
        median = _median_text(m.get("median"))
        if median:
            lines.append(median)
    t = g["last_training"]
    if t is not None:
        again = t["unaccepted_in_a_row"]
        streak = f"; {again} in a row since the last accepted" if again > 1 else ""
        reason = f": {t['reason']}" if t["reason"] and t["status"] != "accepted" else ""
        lines.append(f"  last training: {t['status']} {duration(t['age_s'])} ago"
                     f"{streak}{reason}")
    w = data["mase_window"]
    if g["mase_24h"]:
        h = g["mase_24h"][0]["horizon"]
        lines.append(f"  MASE over 24 h of forecasts to {w['until']}, horizon {h} "
                     "(below 1 beats the last close):")
        for sym in dict.fromkeys(r["symbol"] for r in g["mase_24h"]):
            parts = [f"{r['model']} {_num(r['mase'])} (n={r['n']:,})"
                     for r in g["mase_24h"] if r["symbol"] == sym]
            lines.append(f"    {sym:<9} " + ", ".join(parts))
    else:
        lines.append("  MASE: no scored forecasts yet")
    return lines


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def integrity(cfg: Settings) -> list[str]:
    """The store's integrity check (`status --check`): problems found, [] when fine. Only
    on request: it reads every page (SQLite PRAGMA quick_check, 12 s on a year of
    minutes), so no command runs it when it opens the store."""
    store = wiring.open_configured_store(cfg, 0, read_only=True)
    try:
        return store.check()
    finally:
        store.close()


def status_command(cfg: Settings, as_json: bool, *, check: bool = False) -> int:
    now = from_spec(cfg.daemon.clock).now_ms()
    data = status_data(cfg, now, recent_mae=as_json)
    problems: list[str] = []
    if check:
        problems = integrity(cfg)
        data["integrity"] = {"ok": not problems, "problems": problems[:20]}
    print(json.dumps(data, indent=2) if as_json else status_text(data))
    if problems:
        raise StoreCorrupt(f"store {data['store']} failed its integrity check: "
                           f"{'; '.join(problems[:5])}")
    return errors.EXIT_OK
