"""The frozen DDL of each schema version, per back-end: exactly the text that shipped.

Later changes to schema.py arrive as new migration steps, never by editing these.
"""

from __future__ import annotations

from .dialect import POSTGRESQL, SQLITE

# Version 1 exactly as it shipped. Frozen as text: later changes to schema.py must
# arrive as new steps, never by editing this.
_V1_SQLITE = [
    """CREATE TABLE candles (
    exchange VARCHAR(32) NOT NULL,
    symbol VARCHAR(32) NOT NULL,
    timeframe VARCHAR(8) NOT NULL,
    ts BIGINT NOT NULL,
    open FLOAT NOT NULL,
    high FLOAT NOT NULL,
    low FLOAT NOT NULL,
    close FLOAT NOT NULL,
    volume FLOAT NOT NULL,
    CONSTRAINT candles_pk PRIMARY KEY (exchange, symbol, timeframe, ts),
    CONSTRAINT candles_open_finite_positive CHECK (open > 0 AND open < 1e300),
    CONSTRAINT candles_high_finite_positive CHECK (high > 0 AND high < 1e300),
    CONSTRAINT candles_low_finite_positive CHECK (low > 0 AND low < 1e300),
    CONSTRAINT candles_close_finite_positive CHECK (close > 0 AND close < 1e300),
    CONSTRAINT candles_high_ge_low CHECK (high >= low),
    CONSTRAINT candles_open_close_in_range
        CHECK (low <= open AND open <= high AND low <= close AND close <= high),
    CONSTRAINT candles_volume_finite CHECK (volume >= 0 AND volume < 1e300),
    CONSTRAINT candles_ts_nonneg CHECK (ts >= 0)
) WITHOUT ROWID""",
    """CREATE TABLE empty_candles (
    exchange VARCHAR(32) NOT NULL,
    symbol VARCHAR(32) NOT NULL,
    timeframe VARCHAR(8) NOT NULL,
    ts BIGINT NOT NULL,
    checked_at BIGINT NOT NULL,
    CONSTRAINT empty_candles_pk PRIMARY KEY (exchange, symbol, timeframe, ts)
) WITHOUT ROWID""",
    """CREATE TABLE forecasts (
    id INTEGER NOT NULL,
    model VARCHAR(32) NOT NULL,
    model_version VARCHAR(64) NOT NULL,
    exchange VARCHAR(32) NOT NULL,
    symbol VARCHAR(32) NOT NULL,
    timeframe VARCHAR(8) NOT NULL,
    issued_ts BIGINT NOT NULL,
    target_ts BIGINT NOT NULL,
    horizon INTEGER NOT NULL,
    yhat FLOAT NOT NULL,
    lower FLOAT,
    upper FLOAT,
    created_at BIGINT NOT NULL,
    actual FLOAT,
    error FLOAT,
    scored_at BIGINT,
    PRIMARY KEY (id),
    CONSTRAINT forecasts_key UNIQUE (model, exchange, symbol, timeframe, issued_ts, horizon),
    CONSTRAINT forecasts_horizon_positive CHECK (horizon > 0),
    CONSTRAINT forecasts_target_after_issue CHECK (target_ts > issued_ts),
    CONSTRAINT forecasts_yhat_finite_positive CHECK (yhat > 0 AND yhat < 1e300),
    CONSTRAINT forecasts_interval_ordered CHECK ((lower IS NULL AND upper IS NULL) OR
        (lower > 0 AND upper < 1e300 AND lower <= yhat AND yhat <= upper)),
    CONSTRAINT forecasts_scored_consistently CHECK (
        (actual IS NULL AND error IS NULL AND scored_at IS NULL) OR
        (actual > 0 AND actual < 1e300 AND error IS NOT NULL AND scored_at IS NOT NULL))
)""",
    "CREATE INDEX forecasts_unscored ON forecasts (exchange, symbol, timeframe, target_ts) "
    "WHERE actual IS NULL",
    "CREATE INDEX forecasts_issued ON forecasts (issued_ts)",
    """CREATE TABLE schema_version (
    version INTEGER NOT NULL,
    applied_at BIGINT NOT NULL,
    description TEXT NOT NULL,
    PRIMARY KEY (version)
)""",
    """CREATE TABLE store_meta (
    "key" VARCHAR(64) NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY ("key")
)""",
    """CREATE TABLE training_runs (
    id INTEGER NOT NULL,
    model VARCHAR(32) NOT NULL,
    model_version VARCHAR(64),
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    device VARCHAR(16),
    n_windows INTEGER,
    train_loss FLOAT,
    val_loss FLOAT,
    status VARCHAR(16) NOT NULL,
    exchange VARCHAR(32),
    timeframe VARCHAR(8),
    data_start_ts BIGINT,
    data_end_ts BIGINT,
    base_version VARCHAR(64),
    prev_val_loss FLOAT,
    reason TEXT,
    wall_seconds FLOAT,
    checkpoint TEXT,
    PRIMARY KEY (id),
    CONSTRAINT training_runs_status CHECK (status IN ('running', 'accepted', 'rejected', 'failed'))
)""",
]

# Version 1 for PostgreSQL: the same tables in PostgreSQL's types. Frozen likewise.
_V1_POSTGRESQL = [
    """CREATE TABLE candles (
    exchange VARCHAR(32) NOT NULL,
    symbol VARCHAR(32) NOT NULL,
    timeframe VARCHAR(8) NOT NULL,
    ts BIGINT NOT NULL,
    open DOUBLE PRECISION NOT NULL,
    high DOUBLE PRECISION NOT NULL,
    low DOUBLE PRECISION NOT NULL,
    close DOUBLE PRECISION NOT NULL,
    volume DOUBLE PRECISION NOT NULL,
    CONSTRAINT candles_pk PRIMARY KEY (exchange, symbol, timeframe, ts),
    CONSTRAINT candles_open_finite_positive CHECK (open > 0 AND open < 1e300),
    CONSTRAINT candles_high_finite_positive CHECK (high > 0 AND high < 1e300),
    CONSTRAINT candles_low_finite_positive CHECK (low > 0 AND low < 1e300),
    CONSTRAINT candles_close_finite_positive CHECK (close > 0 AND close < 1e300),
    CONSTRAINT candles_high_ge_low CHECK (high >= low),
    CONSTRAINT candles_open_close_in_range
        CHECK (low <= open AND open <= high AND low <= close AND close <= high),
    CONSTRAINT candles_volume_finite CHECK (volume >= 0 AND volume < 1e300),
    CONSTRAINT candles_ts_nonneg CHECK (ts >= 0)
)""",
    """CREATE TABLE empty_candles (
    exchange VARCHAR(32) NOT NULL,
    symbol VARCHAR(32) NOT NULL,
    timeframe VARCHAR(8) NOT NULL,
    ts BIGINT NOT NULL,
    checked_at BIGINT NOT NULL,
    CONSTRAINT empty_candles_pk PRIMARY KEY (exchange, symbol, timeframe, ts)
)""",
    """CREATE TABLE forecasts (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY,
    model VARCHAR(32) NOT NULL,
    model_version VARCHAR(64) NOT NULL,
    exchange VARCHAR(32) NOT NULL,
    symbol VARCHAR(32) NOT NULL,
    timeframe VARCHAR(8) NOT NULL,
    issued_ts BIGINT NOT NULL,
    target_ts BIGINT NOT NULL,
    horizon INTEGER NOT NULL,
    yhat DOUBLE PRECISION NOT NULL,
    lower DOUBLE PRECISION,
    upper DOUBLE PRECISION,
    created_at BIGINT NOT NULL,
    actual DOUBLE PRECISION,
    error DOUBLE PRECISION,
    scored_at BIGINT,
    PRIMARY KEY (id),
    CONSTRAINT forecasts_key UNIQUE (model, exchange, symbol, timeframe, issued_ts, horizon),
    CONSTRAINT forecasts_horizon_positive CHECK (horizon > 0),
    CONSTRAINT forecasts_target_after_issue CHECK (target_ts > issued_ts),
    CONSTRAINT forecasts_yhat_finite_positive CHECK (yhat > 0 AND yhat < 1e300),
    CONSTRAINT forecasts_interval_ordered CHECK ((lower IS NULL AND upper IS NULL) OR
        (lower > 0 AND upper < 1e300 AND lower <= yhat AND yhat <= upper)),
    CONSTRAINT forecasts_scored_consistently CHECK (
        (actual IS NULL AND error IS NULL AND scored_at IS NULL) OR
        (actual > 0 AND actual < 1e300 AND error IS NOT NULL AND scored_at IS NOT NULL))
)""",
    "CREATE INDEX forecasts_unscored ON forecasts (exchange, symbol, timeframe, target_ts) "
    "WHERE actual IS NULL",
    "CREATE INDEX forecasts_issued ON forecasts (issued_ts)",
    """CREATE TABLE schema_version (
    version INTEGER NOT NULL,
    applied_at BIGINT NOT NULL,
    description TEXT NOT NULL,
    PRIMARY KEY (version)
)""",
    """CREATE TABLE store_meta (
    "key" VARCHAR(64) NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY ("key")
)""",
    """CREATE TABLE training_runs (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY,
    model VARCHAR(32) NOT NULL,
    model_version VARCHAR(64),
    started_at BIGINT NOT NULL,
    finished_at BIGINT,
    device VARCHAR(16),
    n_windows INTEGER,
    train_loss DOUBLE PRECISION,
    val_loss DOUBLE PRECISION,
    status VARCHAR(16) NOT NULL,
    exchange VARCHAR(32),
    timeframe VARCHAR(8),
    data_start_ts BIGINT,
    data_end_ts BIGINT,
    base_version VARCHAR(64),
    prev_val_loss DOUBLE PRECISION,
    reason TEXT,
    wall_seconds DOUBLE PRECISION,
    checkpoint TEXT,
    PRIMARY KEY (id),
    CONSTRAINT training_runs_status CHECK (status IN ('running', 'accepted', 'rejected', 'failed'))
)""",
]

V1 = {SQLITE: _V1_SQLITE, POSTGRESQL: _V1_POSTGRESQL}

_V3_SQLITE = [
    """CREATE TABLE checkpoints (
    id INTEGER NOT NULL,
    model VARCHAR(32) NOT NULL,
    model_version VARCHAR(64) NOT NULL,
    exchange VARCHAR(32) NOT NULL,
    timeframe VARCHAR(8) NOT NULL,
    created_at BIGINT NOT NULL,
    format_version INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT checkpoints_key UNIQUE (model, exchange, timeframe, model_version)
)""",
]

_V3_POSTGRESQL = [
    """CREATE TABLE checkpoints (
    id BIGINT GENERATED BY DEFAULT AS IDENTITY,
    model VARCHAR(32) NOT NULL,
    model_version VARCHAR(64) NOT NULL,
    exchange VARCHAR(32) NOT NULL,
    timeframe VARCHAR(8) NOT NULL,
    created_at BIGINT NOT NULL,
    format_version INTEGER NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (id),
    CONSTRAINT checkpoints_key UNIQUE (model, exchange, timeframe, model_version)
)""",
]

V3 = {SQLITE: _V3_SQLITE, POSTGRESQL: _V3_POSTGRESQL}


def _v4(float_type: str, without_rowid: str) -> list[str]:
    return [
        f"""CREATE TABLE forecast_accuracy_daily (
    model VARCHAR(32) NOT NULL,
    exchange VARCHAR(32) NOT NULL,
    symbol VARCHAR(32) NOT NULL,
    timeframe VARCHAR(8) NOT NULL,
    horizon INTEGER NOT NULL,
    day_ts BIGINT NOT NULL,
    n BIGINT NOT NULL,
    sum_abs_error {float_type} NOT NULL,
    sum_sq_error {float_type} NOT NULL,
    sum_abs_pct_error {float_type} NOT NULL,
    sum_error {float_type} NOT NULL,
    n_banded BIGINT NOT NULL,
    n_in_band BIGINT NOT NULL,
    sum_interval_score {float_type} NOT NULL,
    n_paired BIGINT NOT NULL,
    sum_abs_error_paired {float_type} NOT NULL,
    sum_abs_error_naive {float_type} NOT NULL,
    n_band_paired BIGINT NOT NULL,
    sum_interval_score_paired {float_type} NOT NULL,
    sum_interval_score_naive {float_type} NOT NULL,
    first_issued_ts BIGINT NOT NULL,
    last_issued_ts BIGINT NOT NULL,
    CONSTRAINT forecast_accuracy_daily_pk
        PRIMARY KEY (model, exchange, symbol, timeframe, horizon, day_ts)
){without_rowid}""",
        "CREATE INDEX forecasts_waiting ON forecasts (model, symbol, target_ts) "
        "WHERE actual IS NULL",
    ]


# Version 4: the daily accuracy sums and the index of waiting forecasts (the view and the
# sums' first fill are the step's code, storage/migrations.py).
V4 = {SQLITE: _v4("FLOAT", " WITHOUT ROWID"), POSTGRESQL: _v4("DOUBLE PRECISION", "")}
