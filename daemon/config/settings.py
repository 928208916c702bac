"""Configuration: defaults < TOML file < TICKCAST_SECTION__KEY env vars < CLI flags.

Every key is declared once in `KEYS` with its type, default and check, so the loader, the env
parser, the error messages and `deploy/config.example.toml` cannot drift apart. Code reads
the result as typed attributes (`cfg.model.lookback`), never by string. Adding a key is two
lines: its `Key(...)` below and a field of the same name in its section's dataclass (a test
fails when the two disagree).

Unknown keys are refused: a typo silently ignored is a setting the operator believes in but
does not have.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from daemon.config import values as v
from daemon.config.values import Key
from daemon.core.errors import ConfigError
from daemon.core.series import Series

KEYS: list[Key] = [
    Key("exchange", "id", str, "bitstamp", doc="any ccxt id whose markets hold the symbols"),
    Key("exchange", "symbols", list, ["BTC/USD", "BTC/EUR"], v.symbols, str),
    Key("exchange", "timeframe", str, "1m", v.timeframe),
    Key("exchange", "api_url", str, "", v.api_url, doc="replaces the exchange's REST host"),
    Key("exchange", "timeout_ms", int, 10000, v.positive),
    Key("exchange", "rate_limit", bool, True, doc="ccxt's built-in request throttle"),
    Key("exchange", "max_retries", int, 5, v.nonneg, doc="retries per request on network faults"),
    Key("exchange", "backoff_max_s", float, 30.0, v.positive, doc="cap of the retry backoff"),
    Key("storage", "url", str, "sqlite:///tickcast.db", v.not_blank),
    Key("storage", "statement_timeout_ms", int, 60000, v.nonneg,
        doc="PostgreSQL: longest statement before it is cancelled; 0: the server's own"),
    Key("storage", "busy_timeout_ms", int, 10000, v.positive,
        doc="how long a write waits for another process's lock"),
    Key("storage", "keep_forecast_rows_days", int, 0, v.nonneg,
        doc="delete scored forecasts issued more than this many days ago (hourly, in small "
            "batches; the accuracy sums keep their history); 0: keep every row"),
    Key("model", "horizons", list, [1, 5, 15, 30, 60], v.horizons, int),
    Key("model", "lookback", int, 240, v.at_least(8)),
    Key("model", "train_window", int, 20160, v.positive),
    Key("model", "retrain_every", int, 60, v.positive),
    Key("model", "device", str, "auto", v.choice("auto", "cpu", "cuda")),
    Key("model", "rnn", str, "gru", v.choice("gru", "lstm")),
    Key("model", "hidden", int, 32, v.positive, doc="RNN state size"),
    Key("model", "layers", int, 2, v.positive),
    Key("model", "dropout", float, 0.1, v.fraction),
    Key("model", "patch", int, 4, v.positive, doc="candles per encoder step"),
    Key("model", "linear_lags", int, 2, v.positive,
        doc="last returns of every symbol that `linear` and the network's highway read"),
    Key("model", "learning_rate", float, 1e-3, v.positive),
    Key("model", "batch_size", int, 64, v.positive),
    Key("model", "epochs", float, 4.0, v.positive,
        doc="passes over the training windows of a first training"),
    Key("model", "retrain_epochs", float, 0.1, v.positive,
        doc="passes over the training windows of a warm start "
            "(0.1: at a retrain every 60 candles, 2.4 passes a day of minutes)"),
    Key("model", "initial_steps", int, 2000, v.positive,
        doc="most optimiser steps of a first training (its time budget)"),
    Key("model", "retrain_steps", int, 500, v.positive,
        doc="most optimiser steps of a warm start (its time budget)"),
    Key("model", "seed", int, 0),
    Key("model", "checkpoint_dir", str, "",
        doc="unused: models live in the store; kept so old configs load"),
    Key("model", "keep_checkpoints", int, 5, v.positive),
    Key("model", "threads", int, 0, v.nonneg, doc="torch CPU threads for training; 0: auto"),
    Key("model", "models", list, ["seq2seq", "naive", "drift", "linear"], v.models, str,
        doc="the models forecast, each with its own rows"),
    Key("model", "baseline_ewma_lambda", float, 0.94, v.open_unit,
        doc="RiskMetrics decay of the baselines' volatility, per candle"),
    Key("model", "max_fill", int, 5, v.nonneg,
        doc="longest run of confirmed no-trade candles filled flat inside a window"),
    Key("daemon", "poll_delay_s", float, 2.0, v.nonneg, doc="seconds after a candle closes"),
    Key("daemon", "heartbeat_minutes", int, 60, v.positive),
    Key("daemon", "clock", str, "wall", v.clock_spec,
        doc="'wall', or 'scaled:...' for tests/demos"),
    Key("daemon", "log_level", str, "info", v.choice("debug", "info", "warning", "error")),
    Key("metrics", "listen", str, "", v.listen,
        doc='host:port of /metrics and /healthz, e.g. "127.0.0.1:9464"; off when empty'),
    Key("metrics", "window_hours", int, 24, v.positive,
        doc="rolling accuracy window of the tickcast_forecast_* gauges (issue times)"),
]
_BY_NAME = {(k.section, k.name): k for k in KEYS}


# -- one frozen dataclass per section: the fields are the keys, in KEYS order -------------
# Lists are held as tuples so a loaded configuration cannot be changed by accident.

@dataclass(frozen=True)
class ExchangeSettings:
    id: str
    symbols: tuple[str, ...]
    timeframe: str
    api_url: str
    timeout_ms: int
    rate_limit: bool
    max_retries: int
    backoff_max_s: float


@dataclass(frozen=True)
class StorageSettings:
    url: str
    statement_timeout_ms: int
    busy_timeout_ms: int
    keep_forecast_rows_days: int


@dataclass(frozen=True)
class ModelSettings:
    horizons: tuple[int, ...]
    lookback: int
    train_window: int
    retrain_every: int
    device: str
    rnn: str
    hidden: int
    layers: int
    dropout: float
    patch: int
    linear_lags: int
    learning_rate: float
    batch_size: int
    epochs: float
    retrain_epochs: float
    initial_steps: int
    retrain_steps: int
    seed: int
    checkpoint_dir: str
    keep_checkpoints: int
    threads: int
    models: tuple[str, ...]
    baseline_ewma_lambda: float
    max_fill: int


@dataclass(frozen=True)
class DaemonSettings:
    poll_delay_s: float
    heartbeat_minutes: int
    clock: str
    log_level: str


@dataclass(frozen=True)
class MetricsSettings:
    listen: str
    window_hours: int


SECTIONS: dict[str, type] = {"exchange": ExchangeSettings, "storage": StorageSettings,
                             "model": ModelSettings, "daemon": DaemonSettings,
                             "metrics": MetricsSettings}


@dataclass(frozen=True)
class Settings:
    exchange: ExchangeSettings
    storage: StorageSettings
    model: ModelSettings
    daemon: DaemonSettings
    metrics: MetricsSettings
    # Where each value came from ("default", a file path, "env", "flag"), for messages.
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def series(self) -> Series:
        """The configured exchange, symbols and timeframe (the live daemon's series)."""
        return Series(self.exchange.id, self.exchange.symbols, self.exchange.timeframe)

    def dotted(self, section: str | None = None) -> dict[str, Any]:
        """Every value by its dotted key (of one section), lists as lists: for fingerprints."""
        return {k.dotted: _thawed(getattr(getattr(self, k.section), k.name)) for k in KEYS
                if section in (None, k.section)}


def _thawed(x: Any) -> Any:
    return list(x) if isinstance(x, tuple) else x


def declaration_problems() -> list[str]:
    """Where KEYS and the section dataclasses disagree (names, order or types)."""
    types = {int: "int", float: "float", str: "str", bool: "bool"}
    problems = []
    for section, cls in SECTIONS.items():
        keys = [k for k in KEYS if k.section == section]
        got = [(f.name, str(f.type)) for f in fields(cls)]
        want = [(k.name, f"tuple[{types[k.item_type]}, ...]" if k.type is list  # type: ignore[index]
                 else types[k.type]) for k in keys]
        if got != want:
            problems.append(f"[{section}]: KEYS declare {want}, {cls.__name__} has {got}")
    unknown = {k.section for k in KEYS} - set(SECTIONS)
    problems += [f"[{s}]: in KEYS but has no section dataclass" for s in sorted(unknown)]
    return problems


def _checked(values: dict[str, Any], sources: dict[str, str]) -> Settings:
    for key in KEYS:
        complaint = key.check(values[key.dotted]) if key.check else None
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
    parts = {section: cls(**{k.name: tuple(values[k.dotted]) if k.type is list
                             else values[k.dotted] for k in KEYS if k.section == section})
             for section, cls in SECTIONS.items()}
    return Settings(**parts, sources=sources)


def _apply_table(values: dict[str, Any], sources: dict[str, str], data: Mapping[str, Any],
                 origin: str) -> None:
    for section, body in data.items():
        if section not in SECTIONS:
            known = ", ".join(sorted(SECTIONS))
            raise ConfigError(f"{section} (in {origin}): unknown section; known: {known}")
        if not isinstance(body, dict):
            raise ConfigError(f"{section} (in {origin}): expected a [{section}] table")
        for name, raw in body.items():
            key = _BY_NAME.get((section, name))
            if key is None:
                known = ", ".join(k.name for k in KEYS if k.section == section)
                raise ConfigError(f"{section}.{name} (in {origin}): unknown key; known: {known}")
            values[key.dotted] = v.coerce(key, raw, origin)
            sources[key.dotted] = origin


def load(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings; raises ConfigError naming the offending key.

    `overrides` are dotted keys (`{"model.lookback": 16}`) with typed values, as the CLI
    flags give them; None values are ignored.
    """
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
        values[key.dotted] = v.coerce(key, text, "env")
        sources[key.dotted] = "env"
    store_url = _systemd_store_url(env)
    if store_url and "storage.url" not in sources:
        values["storage.url"] = store_url
        sources["storage.url"] = "STATE_DIRECTORY"
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        values[dotted] = v.coerce(key_of(dotted), value, "flag")
        sources[dotted] = "flag"
    return _checked(values, sources)


def load_for_command(config: str | None, db: str | None, exchange_url: str | None,
                     env: Mapping[str, str]) -> Settings:
    """The settings of a `tickcast` command: its global flags, else their env variables
    (TICKCAST_CONFIG, TICKCAST_DB), else what systemd's directories say."""
    config = config or env.get("TICKCAST_CONFIG") or _systemd_config_file(env)
    db = db or env.get("TICKCAST_DB") or None
    return load(config, env, {"storage.url": db, "exchange.api_url": exchange_url})


# -- systemd's directories: the one place that reads them ----------------------------------

def _systemd_config_file(env: Mapping[str, str]) -> str | None:
    """Under systemd (ConfigurationDirectory=tickcast): /etc/tickcast/config.toml when the
    operator wrote one; the defaults serve otherwise."""
    directory = env.get("CONFIGURATION_DIRECTORY")
    if not directory:
        return None
    candidate = Path(directory.split(":")[0]) / "config.toml"
    return str(candidate) if candidate.is_file() else None


def _systemd_store_url(env: Mapping[str, str]) -> str | None:
    """Under systemd (StateDirectory=tickcast) the store lives in the state directory,
    unless storage.url is set explicitly."""
    directory = env.get("STATE_DIRECTORY")
    if not directory:
        return None
    return f"sqlite:///{Path(directory.split(':')[0]) / 'tickcast.db'}"


def key_of(dotted: str) -> Key:
    section, _, name = dotted.partition(".")
    key = _BY_NAME.get((section, name))
    if key is None:
        raise ConfigError(f"{dotted}: no such configuration key")
    return key


def parse_override(dotted: str, text: str) -> Any:
    """A `key=value` given as text (benchmarks' --set), read like an env variable."""
    return v.parse_text(key_of(dotted), text, dotted)


def example_toml() -> str:
    """The documented config file, generated from KEYS."""
    out: list[str] = []
    for section in SECTIONS:
        out.append(f"[{section}]")
        for k in (k for k in KEYS if k.section == section):
            line = f"{k.name} = {v.toml_text(k.default)}"
            out.append(f"{line:<40}# {k.doc}" if k.doc else line)
        out.append("")
    return "\n".join(out)
