"""Point a real ccxt exchange instance at the emulator (the project keeps its own copy of this logic)."""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import ccxt


def rewrite_urls(value: Any, base_url: str) -> Any:
    """Replace scheme://host[:port] of every URL found in ``value`` (str, dict or list) by ``base_url``."""
    if isinstance(value, str):
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return value
        return base_url.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
    if isinstance(value, dict):
        return {k: rewrite_urls(v, base_url) for k, v in value.items()}
    if isinstance(value, list):
        return [rewrite_urls(v, base_url) for v in value]
    return value


def ccxt_client(exchange_id: str, base_url: str, timeout_ms: int = 2000) -> ccxt.Exchange:
    import ccxt  # imported lazily: the server half of this package must work without ccxt

    exchange: ccxt.Exchange = getattr(ccxt, exchange_id)({"enableRateLimit": False, "timeout": timeout_ms})
    exchange.urls["api"] = rewrite_urls(copy.deepcopy(exchange.urls["api"]), base_url)
    # An HTTP(S)_PROXY in the environment must never see requests meant for 127.0.0.1.
    exchange.session.trust_env = False
    return exchange
