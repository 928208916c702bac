"""Local Bitstamp/Kraken REST emulator for tests that drive real ccxt clients over HTTP."""
from .client import ccxt_client, rewrite_urls
from .data import hourly_onto_minutes, load_csv
from .server import CORRUPTION_KINDS, FAULT_KINDS, Candle, ExchangeEmulator, RequestRecord

__all__ = ["CORRUPTION_KINDS", "FAULT_KINDS", "Candle", "ExchangeEmulator", "RequestRecord",
           "ccxt_client", "hourly_onto_minutes", "load_csv", "rewrite_urls"]
