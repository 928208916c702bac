"""Configuration: defaults < TOML file < TICKCAST_SECTION__KEY env vars < CLI flags.

Every key is declared once in `KEYS` with its type, default and check, so the
loader, the env parser, the error messages and `deploy/config.example.toml`
cannot drift apart. Unknown keys are refused: a typo silently ignored is a
setting the operator believes in but does not have.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import clock, timeframes
from .errors import ConfigError

Check = Callable[[Any], str | None]  # returns a complaint, or None when fine


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be positive"


def _nonneg(v: Any) -> str | None:
    return None if v >= 0 else "must not be negative"


def _symbols(v: list[str]) -> str | None:
    if not v:
        return "needs at least one symbol"
    for s in v:
        if not re.fullmatch(r"[A-Z0-9]{2,12}/[A-Z0-9]{2,12}", s):
            return f"{s!r} is not a unified ccxt symbol like 'BTC/USD'"
    if len(set(v)) != len(v):
        return "lists a symbol twice"
    return None


def _timeframe(v: str) -> str | None:
    try:
        timeframes.to_ms(v)
    except ValueError as e:
        return str(e)
    return None


def _api_url(v: str) -> str | None:
    if v == "":
        return None
    u = urlsplit(v)
    if u.scheme not in ("http", "https") or not u.hostname:
        return f"{v!r} is not scheme://host[:port]"
    if u.path not in ("", "/") or u.query:
        return "must be scheme://host[:port] only; the exchange's own API path is kept"
    return None


def _horizons(v: list[int]) -> str | None:
    if not v:
        return "needs at least one horizon"
    if any(h <= 0 for h in v):
        return "horizons must be positive numbers of candles"
    if len(set(v)) != len(v):
        return "lists a horizon twice"
    if max(v) > 10_000:
        return "horizons above 10000 candles are not supported"
    return None


def _choice(*options: str) -> Check:
    def check(v: str) -> str | None:
        return None if v in options else f"must be one of {', '.join(options)}"

    return check


def _clock(v: str) -> str | None:
    try:
        clock.from_spec(v)
    except ValueError as e:
        return str(e)
    return None


@dataclass(frozen=True)
class Key:
    section: str
    name: str
    type: type
    default: Any
    check: Check | None = None
    item_type: type | None = None  # for lists
    doc: str = ""

    @property
    def dotted(self) -> str:
        return f"{self.section}.{self.name}"


KEYS: list[Key] = [
    Key("exchange", "id", str, "bitstamp", doc="any ccxt id whose markets hold the symbols"),
    Key("exchange", "symbols", list, ["BTC/USD", "BTC/EUR"], _symbols, str),
    Key("exchange", "timeframe", str, "1m", _timeframe),
    Key("exchange", "api_url", str, "", _api_url, doc="replaces the exchange's REST host"),
    Key("exchange", "timeout_ms", int, 10000, _positive),
    Key("exchange", "rate_limit", bool, True, doc="ccxt's built-in request throttle"),
    Key("exchange", "max_retries", int, 5, _nonneg, doc="retries per request on network faults"),
    Key("exchange", "backoff_max_s", float, 30.0, _positive, doc="cap of the retry backoff"),
    Key("storage", "url", str, "sqlite:///tickcast.db",
        lambda v: None if v.strip() else "must not be empty"),
    Key("storage", "busy_timeout_ms", int, 10000, _positive,
        doc="how long a write waits for another process's lock"),
    Key("model", "horizons", list, [1, 5, 15, 30, 60], _horizons, int),
    Key("model", "lookback", int, 240, lambda v: None if v >= 8 else "must be at least 8"),
    Key("model", "train_window", int, 20160, _positive),
    Key("model", "retrain_every", int, 60, _positive),
    Key("model", "device", str, "auto", _choice("auto", "cpu", "cuda")),
    Key("model", "rnn", str, "gru", _choice("gru", "lstm")),
    Key("model", "hidden", int, 32, _positive, doc="RNN state size"),
    Key("model", "layers", int, 2, _positive),
    Key("model", "dropout", float, 0.1, lambda v: None if 0 <= v < 1 else "must be in [0, 1)"),
    Key("model", "patch", int, 4, _positive, doc="candles per encoder step"),
    Key("model", "learning_rate", float, 1e-3, _positive),
    Key("model", "batch_size", int, 128, _positive),
    Key("model", "initial_steps", int, 300, _positive, doc="optimiser steps of a first training"),
    Key("model", "retrain_steps", int, 20, _positive, doc="optimiser steps of a warm-start"),
    Key("model", "seed", int, 0),
    Key("model", "checkpoint_dir", str, "", doc="empty: a folder beside the store"),
    Key("model", "keep_checkpoints", int, 5, _positive),
    Key("model", "threads", int, 0, _nonneg, doc="torch CPU threads for training; 0: auto"),
    Key("model", "max_fill", int, 5, _nonneg,
        doc="longest run of confirmed no-trade candles filled flat inside a window"),
    Key("daemon", "poll_delay_s", float, 2.0, _nonneg, doc="seconds after a candle closes"),
    Key("daemon", "heartbeat_minutes", int, 60, _positive),
    Key("daemon", "clock", str, "wall", _clock, doc="'wall', or 'scaled:...' for tests/demos"),
    Key("daemon", "log_level", str, "info", _choice("debug", "info", "warning", "error")),
]
_BY_NAME = {(k.section, k.name): k for k in KEYS}
SECTIONS = sorted({k.section for k in KEYS})


@dataclass(frozen=True)
class Settings:
    values: Mapping[str, Any]
    # Where each value came from ("default", a file path, "env", "flag"), for messages.
    sources: Mapping[str, str] = field(default_factory=dict)

    def __getitem__(self, dotted: str) -> Any:
        return self.values[dotted]

    @property
    def symbols(self) -> list[str]:
        return list(self.values["exchange.symbols"])

    @property
    def timeframe(self) -> str:
        return str(self.values["exchange.timeframe"])

    @property
    def timeframe_ms(self) -> int:
        return timeframes.to_ms(self.timeframe)

    @property
    def exchange(self) -> str:
        return str(self.values["exchange.id"])

    @property
    def storage_url(self) -> str:
        return str(self.values["storage.url"])

    @property
    def horizons(self) -> list[int]:
        return sorted(self.values["model.horizons"])

    def replace(self, **dotted_values: Any) -> Settings:
        """A copy with some keys changed (keys given with '__' for '.')."""
        vals = dict(self.values)
        src = dict(self.sources)
        for k, v in dotted_values.items():
            key = k.replace("__", ".")
            vals[key] = v
            src[key] = "override"
        return _checked(vals, src)


def _coerce(key: Key, raw: Any, origin: str) -> Any:
    """Turn a TOML or env value into the key's type, or raise ConfigError naming the key."""
    where = f"{key.dotted} (from {origin})"
    if isinstance(raw, str) and origin == "env":
        raw = _parse_env(key, raw, where)
    if key.type is bool:
        if isinstance(raw, bool):
            return raw
        raise ConfigError(f"{where}: expected true or false, got {raw!r}")
    if key.type is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(f"{where}: expected a whole number, got {raw!r}")
        return raw
    if key.type is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {raw!r}")
        if not math.isfinite(raw):
            raise ConfigError(f"{where}: expected a finite number, got {raw!r}")
        return float(raw)
    if key.type is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: expected a string, got {raw!r}")
        return raw
    if key.type is list:
        if not isinstance(raw, list):
            raise ConfigError(f"{where}: expected a list, got {raw!r}")
        out = []
        for item in raw:
            if key.item_type is int and (isinstance(item, bool) or not isinstance(item, int)):
                raise ConfigError(f"{where}: expected whole numbers, got {item!r}")
            if key.item_type is str and not isinstance(item, str):
                raise ConfigError(f"{where}: expected strings, got {item!r}")
            out.append(item)
        return out
    raise AssertionError(key)


def _parse_env(key: Key, text: str, where: str) -> Any:
    """Env values are text: parse them as the TOML value they stand for.

    Lists may be written TOML-style ("[1, 5]") or bare ("1,5" / "BTC/USD,BTC/EUR").
    """
    s = text.strip()
    if key.type is str:
        return text
    if key.type is list and not s.startswith("["):
        items = [p.strip() for p in s.split(",") if p.strip()]
        if key.item_type is str:
            return items
        s = "[" + ", ".join(items) + "]"
    try:
        return tomllib.loads(f"v = {s}")["v"]
    except tomllib.TOMLDecodeError:
        raise ConfigError(f"{where}: cannot read {text!r} as a {key.type.__name__}") from None


def _checked(values: dict[str, Any], sources: dict[str, str]) -> Settings:
    for key in KEYS:
        v = values[key.dotted]
        complaint = key.check(v) if key.check else None
        if complaint:
            origin = sources.get(key.dotted, "default")
            raise ConfigError(f"{key.dotted} (from {origin}): {complaint}")
    # Cross-key rules.
    hmax = max(values["model.horizons"])
    need = values["model.lookback"] + hmax + 1
    if values["model.train_window"] < need + 16:
        raise ConfigError(
            f"model.train_window (from {sources.get('model.train_window', 'default')}): "
            f"{values['model.train_window']} candles cannot hold enough windows of lookback "
            f"{values['model.lookback']} + horizon {hmax}; use at least {need + 16}"
        )
    return Settings(values, sources)


def _apply_table(values: dict[str, Any], sources: dict[str, str], data: Mapping[str, Any],
                 origin: str) -> None:
    for section, body in data.items():
        if section not in SECTIONS:
            known = ", ".join(SECTIONS)
            raise ConfigError(f"{section} (in {origin}): unknown section; known: {known}")
        if not isinstance(body, dict):
            raise ConfigError(f"{section} (in {origin}): expected a [{section}] table")
        for name, raw in body.items():
            key = _BY_NAME.get((section, name))
            if key is None:
                known = ", ".join(k.name for k in KEYS if k.section == section)
                raise ConfigError(f"{section}.{name} (in {origin}): unknown key; known: {known}")
            values[key.dotted] = _coerce(key, raw, origin)
            sources[key.dotted] = origin


def load(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings; raises ConfigError naming the offending key."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {k.dotted: k.default for k in KEYS}
    sources: dict[str, str] = {}
    if path is not None:
        p = Path(path)
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8-sig"))
        except FileNotFoundError:
            raise ConfigError(f"--config: file not found: {p}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"--config: cannot read {p}: {e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"--config: {p} is not valid TOML: {e}") from None
        _apply_table(values, sources, data, str(p))
    for name, text in sorted(env.items()):
        if not name.startswith("TICKCAST_") or "__" not in name:
            continue
        section, _, key_name = name[len("TICKCAST_"):].lower().partition("__")
        key = _BY_NAME.get((section, key_name))
        if key is None:
            raise ConfigError(f"{name}: no configuration key {section}.{key_name}")
        values[key.dotted] = _coerce(key, text, "env")
        sources[key.dotted] = "env"
    # The store follows systemd's StateDirectory unless set explicitly.
    state_dir = env.get("STATE_DIRECTORY")
    if state_dir and "storage.url" not in sources:
        first = state_dir.split(":")[0]
        values["storage.url"] = f"sqlite:///{Path(first) / 'tickcast.db'}"
        sources["storage.url"] = "STATE_DIRECTORY"
    for dotted, v in (overrides or {}).items():
        if v is None:
            continue
        section, _, key_name = dotted.partition(".")
        key = _BY_NAME[(section, key_name)]
        values[dotted] = _coerce(key, v, "flag")
        sources[dotted] = "flag"
    return _checked(values, sources)


def example_toml() -> str:
    """The documented config file, generated from KEYS."""
    out: list[str] = []
    for section in ("exchange", "storage", "model", "daemon"):
        out.append(f"[{section}]")
        for k in (k for k in KEYS if k.section == section):
            v = k.default
            if isinstance(v, bool):
                text = "true" if v else "false"
            elif isinstance(v, str):
                text = f'"{v}"'
            elif isinstance(v, list):
                text = "[" + ", ".join(f'"{x}"' if isinstance(x, str) else str(x) for x in v) + "]"
            else:
                text = repr(v)
            line = f"{k.name} = {text}"
            out.append(f"{line:<40}# {k.doc}" if k.doc else line)
        out.append("")
    return "\n".join(out)
