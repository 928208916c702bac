"""Candle sources: the exchange through ccxt (`exchange`, `calls`: the only importers of
ccxt) and the in-memory candles of a replay (`replay`)."""
