"""The store's tables: a public interface, users write SQL against these names.

All times are integer milliseconds since the epoch, UTC. Renaming a column is a
breaking change for users' SQL: add, never rename (SPEC §6).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# "finite" without relying on isfinite(): SQLite stores NaN as NULL (caught by
# NOT NULL) and an infinity compares above any finite bound.
_FINITE_PRICE = "{c} > 0 AND {c} < 1e300"

candles = Table(
    "candles",
    metadata,
    Column("exchange", String(32), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("timeframe", String(8), nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("open", Float, nullable=False),
    Column("high", Float, nullable=False),
    Column("low", Float, nullable=False),
    Column("close", Float, nullable=False),
    Column("volume", Float, nullable=False),
    PrimaryKeyConstraint("exchange", "symbol", "timeframe", "ts", name="candles_pk"),
    *[
        CheckConstraint(_FINITE_PRICE.format(c=c), name=f"candles_{c}_finite_positive")
        for c in ("open", "high", "low", "close")
    ],
    CheckConstraint("high >= low", name="candles_high_ge_low"),
    CheckConstraint(
        "low <= open AND open <= high AND low <= close AND close <= high",
        name="candles_open_close_in_range",
    ),
    CheckConstraint("volume >= 0 AND volume < 1e300", name="candles_volume_finite"),
    CheckConstraint("ts >= 0", name="candles_ts_nonneg"),
    sqlite_with_rowid=False,
)

# Candle times the exchange answered for without a candle (no trades that minute:
# Coinbase and Kraken omit such bars). Remembered so gap repair does not ask again.
empty_candles = Table(
    "empty_candles",
    metadata,
    Column("exchange", String(32), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("timeframe", String(8), nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("checked_at", BigInteger, nullable=False),
    PrimaryKeyConstraint("exchange", "symbol", "timeframe", "ts", name="empty_candles_pk"),
    sqlite_with_rowid=False,
)

forecasts = Table(
    "forecasts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(32), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("exchange", String(32), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("timeframe", String(8), nullable=False),
    Column("issued_ts", BigInteger, nullable=False),
    Column("target_ts", BigInteger, nullable=False),
    Column("horizon", Integer, nullable=False),
    Column("yhat", Float, nullable=False),
    Column("lower", Float),
    Column("upper", Float),
    Column("created_at", BigInteger, nullable=False),
    Column("actual", Float),
    Column("error", Float),
    Column("scored_at", BigInteger),
    UniqueConstraint(
        "model", "exchange", "symbol", "timeframe", "issued_ts", "horizon", name="forecasts_key"
    ),
    CheckConstraint("horizon > 0", name="forecasts_horizon_positive"),
    CheckConstraint("target_ts > issued_ts", name="forecasts_target_after_issue"),
    CheckConstraint(_FINITE_PRICE.format(c="yhat"), name="forecasts_yhat_finite_positive"),
    CheckConstraint(
        "(lower IS NULL AND upper IS NULL) OR "
        "(lower > 0 AND upper < 1e300 AND lower <= yhat AND yhat <= upper)",
        name="forecasts_interval_ordered",
    ),
    CheckConstraint(
        "(actual IS NULL AND error IS NULL AND scored_at IS NULL) OR "
        "(actual > 0 AND actual < 1e300 AND error IS NOT NULL AND scored_at IS NOT NULL)",
        name="forecasts_scored_consistently",
    ),
)

# The hot scoring query looks for unscored rows by target candle.
Index(
    "forecasts_unscored",
    forecasts.c.exchange,
    forecasts.c.symbol,
    forecasts.c.timeframe,
    forecasts.c.target_ts,
    sqlite_where=forecasts.c.actual.is_(None),
    postgresql_where=forecasts.c.actual.is_(None),
)
Index("forecasts_issued", forecasts.c.issued_ts)
Index("forecasts_target", forecasts.c.target_ts)  # schema version 2

training_runs = Table(
    "training_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(32), nullable=False),
    Column("model_version", String(64)),
    Column("started_at", BigInteger, nullable=False),
    Column("finished_at", BigInteger),
    Column("device", String(16)),
    Column("n_windows", Integer),
    Column("train_loss", Float),
    Column("val_loss", Float),
    Column("status", String(16), nullable=False),
    # Added beyond SPEC §6 (additions only): what the run saw and why it ended so.
    Column("exchange", String(32)),
    Column("timeframe", String(8)),
    Column("data_start_ts", BigInteger),
    Column("data_end_ts", BigInteger),
    Column("base_version", String(64)),
    Column("prev_val_loss", Float),
    Column("reason", Text),
    Column("wall_seconds", Float),
    Column("checkpoint", Text),
    CheckConstraint(
        "status IN ('running', 'accepted', 'rejected', 'failed')", name="training_runs_status"
    ),
)

# Accepted models, so that a daemon on any host, in any working directory, serves the newest
# model of its exchange and timeframe. `data` holds tensors and JSON only (a torch zip read
# back with weights_only=True); it is committed together with its training_runs row.
checkpoints = Table(
    "checkpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(32), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("exchange", String(32), nullable=False),
    Column("timeframe", String(8), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("format_version", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    UniqueConstraint("model", "exchange", "timeframe", "model_version", name="checkpoints_key"),
)

# Small key/value facts about the store itself (who created it, replay inputs).
store_meta = Table(
    "store_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("applied_at", BigInteger, nullable=False),
    Column("description", Text, nullable=False),
)
