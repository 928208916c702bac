"""What a configuration value may be: the declaration of a key, the checks `KEYS` names, and
turning TOML or environment text into a key's type.

Kept apart from `settings.py` so that the list of keys and the section types there stay
short enough to read at a glance. Every complaint is returned, or raised, with the key's
dotted name: the operator must be told which line to fix.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from daemon.core import clock, timeframes
from daemon.core.errors import ConfigError

Check = Callable[[Any], str | None]  # returns a complaint, or None when fine

SYMBOL_RE = re.compile(r"[A-Z0-9]{2,12}/[A-Z0-9]{2,12}")  # ccxt's unified form, e.g. BTC/USD


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


# -- checks ------------------------------------------------------------------------------

def positive(v: Any) -> str | None:
    return None if v > 0 else "must be positive"


def nonneg(v: Any) -> str | None:
    return None if v >= 0 else "must not be negative"


def at_least(n: int) -> Check:
    return lambda v: None if v >= n else f"must be at least {n}"


def fraction(v: float) -> str | None:
    return None if 0 <= v < 1 else "must be in [0, 1)"


def not_blank(v: str) -> str | None:
    return None if v.strip() else "must not be empty"


def symbols(v: list[str]) -> str | None:
    if not v:
        return "needs at least one symbol"
    for s in v:
        if not SYMBOL_RE.fullmatch(s):
            return f"{s!r} is not a unified ccxt symbol like 'BTC/USD'"
    if len(set(v)) != len(v):
        return "lists a symbol twice"
    return None


def timeframe(v: str) -> str | None:
    try:
        timeframes.to_ms(v)
    except ValueError as e:
        return str(e)
    return None


def api_url(v: str) -> str | None:
    if v == "":
        return None
    u = urlsplit(v)
    if u.scheme not in ("http", "https") or not u.hostname:
        return f"{v!r} is not scheme://host[:port]"
    if u.path not in ("", "/") or u.query:
        return "must be scheme://host[:port] only; the exchange's own API path is kept"
    return None


def open_unit(v: float) -> str | None:
    return None if 0 < v < 1 else "must be between 0 and 1 (exclusive)"


def models(v: list[str]) -> str | None:
    """Model names only; whether each is known is checked when the models are built (a
    test double or a plug-in registers itself after the settings are read)."""
    if not v:
        return "needs at least one model"
    if len(set(v)) != len(v):
        return "lists a model twice"
    for name in v:
        if not re.fullmatch(r"[a-z][a-z0-9_-]{0,31}", name):
            return f"{name!r} is not a model name like 'seq2seq'"
    return None


def horizons(v: list[int]) -> str | None:
    if not v:
        return "needs at least one horizon"
    if any(h <= 0 for h in v):
        return "horizons must be positive numbers of candles"
    if len(set(v)) != len(v):
        return "lists a horizon twice"
    if max(v) > 10_000:
        return "horizons above 10000 candles are not supported"
    return None


def choice(*options: str) -> Check:
    def check(v: str) -> str | None:
        return None if v in options else f"must be one of {', '.join(options)}"

    return check


def split_listen(v: str) -> tuple[str, int]:
    """'host:port' (IPv6 as '[::1]:9464') as (host, port); raises ValueError.

    >>> split_listen("127.0.0.1:9464"), split_listen("[::1]:0")
    (('127.0.0.1', 9464), ('::1', 0))
    """
    host, sep, port = v.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{v!r} is not host:port (port 0-65535; 0 picks a free one)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{v!r}: write an IPv6 address in brackets, e.g. [::1]:9464")
    if not host or any(c.isspace() or c in "/[]" for c in host):
        raise ValueError(f"{v!r}: {host!r} is not a host name or address")
    return host, int(port)


def listen(v: str) -> str | None:
    if v == "":
        return None
    try:
        split_listen(v)
    except ValueError as e:
        return str(e)
    return None


def clock_spec(v: str) -> str | None:
    try:
        clock.from_spec(v)
    except ValueError as e:
        return str(e)
    return None


# -- coercion --------------------------------------------------------------------------

def coerce(key: Key, raw: Any, origin: str) -> Any:
    """Turn a TOML or env value into the key's type, or raise ConfigError naming the key."""
    where = f"{key.dotted} (from {origin})"
    if isinstance(raw, str) and origin == "env":
        raw = parse_text(key, raw, where)
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
        if not isinstance(raw, (list, tuple)):
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


def parse_text(key: Key, text: str, where: str) -> Any:
    """Text (an env variable, a benchmark's --set) read as the TOML value it stands for.

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


def toml_text(v: Any) -> str:
    """A default value as it is written in the example config.

    >>> toml_text(["BTC/USD"]), toml_text(True), toml_text(0.1)
    ('["BTC/USD"]', 'true', '0.1')
    """
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(f'"{x}"' if isinstance(x, str) else str(x) for x in v) + "]"
    return repr(v)
