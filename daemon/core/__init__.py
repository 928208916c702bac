"""Foundations: errors and exit codes, the clock, timeframes, the series value, candle
checks, crash points, logging, progress. They import nothing else of `daemon`."""
