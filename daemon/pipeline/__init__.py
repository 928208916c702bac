"""One tick: the candle-source protocol, ingest, the candle window, the model set, the
tick itself. Never imports ccxt."""
