"""Candle sources: the exchange through ccxt (the only importer of ccxt)."""
