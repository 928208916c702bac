"""`tickcast status`: last candle and lag per series, the model, the last training, recent
error; durations for people, numbers in `--json`."""

from __future__ import annotations

import json
from typing import Any

from storage import candles, dialect, forecasts, runs

from . import errors, timeframes, wiring
from .clock import from_spec, iso
from .settings import Settings


def status_data(cfg: Settings, now: int) -> dict[str, Any]:
    url = cfg.storage.url
    store = wiring.open_configured_store(cfg, now, must_exist=True)
    out: dict[str, Any] = {"store": url, "now": iso(now), "series": [],
                           "daemon_running": dialect.lock_is_held(url)}
    with store.read() as conn:
        for ex, sym, tf in candles.series(conn):
            newest = candles.newest_ts(conn, ex, sym, tf)
            step = timeframes.to_ms(tf)
            lag = None if newest is None else max(0, now - (newest + step))
            out["series"].append({
                "exchange": ex, "symbol": sym, "timeframe": tf,
                "candles": candles.count(conn, ex, sym, tf),
                "newest_ts": newest, "newest": iso(newest),
                "lag_s": None if lag is None else lag // 1000,
            })
        out["pending_forecasts"] = forecasts.pending_count(conn)
        acc = runs.latest(conn, "seq2seq", status="accepted")
        last = runs.latest(conn, "seq2seq")
        out["model"] = None if acc is None else {
            "version": acc["model_version"], "trained_at": iso(acc["finished_at"]),
            "data_end": iso(acc["data_end_ts"]), "device": acc["device"],
            "val_loss": acc["val_loss"],
        }
        out["last_training"] = None if last is None else {
            "status": last["status"], "reason": last["reason"],
            "finished_at": iso(last["finished_at"]),
            "model_version": last["model_version"], "train_loss": last["train_loss"],
            "val_loss": last["val_loss"],
        }
        out["mae_24h"] = forecasts.recent_mae(conn, now - 86_400_000)
    store.close()
    return out


def status_text(data: dict[str, Any]) -> str:
    running = "running" if data["daemon_running"] else "not running"
    lines = [f"store {data['store']}  (daemon {running})"]
    if not data["series"]:
        lines.append("no candles stored yet")
    for s in data["series"]:
        lag = "-" if s["lag_s"] is None else f"{s['lag_s']}s"
        lines.append(f"  {s['exchange']:<10} {s['symbol']:<9} {s['timeframe']:<4} "
                     f"{s['candles']:>9} candles, newest {s['newest']}, lag {lag}")
    m = data["model"]
    lines.append(f"model: {'none yet (baselines only)' if m is None else m['version']}"
                 + ("" if m is None else f", trained {m['trained_at']} on data to "
                                         f"{m['data_end']} ({m['device']})"))
    t = data["last_training"]
    if t is not None:
        lines.append(f"last training: {t['status']} at {t['finished_at']}"
                     + (f" ({t['reason']})" if t["reason"] else ""))
    lines.append(f"forecasts waiting for their actual: {data['pending_forecasts']}")
    if data["mae_24h"]:
        lines.append("MAE over the last 24 h (model, symbol, horizon, n, MAE):")
        for r in data["mae_24h"]:
            lines.append(f"  {r['model']:<8} {r['symbol']:<9} h={r['horizon']:<4} "
                         f"n={r['n']:<6} {r['mae']:.4f}")
    return "\n".join(lines)


def status_command(cfg: Settings, as_json: bool) -> int:
    now = from_spec(cfg.daemon.clock).now_ms()
    data = status_data(cfg, now)
    print(json.dumps(data, indent=2) if as_json else status_text(data))
    return errors.EXIT_OK
