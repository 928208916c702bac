"""Hostile inputs (hypothesis) and security: precise errors or clean rejections, never a
traceback, never a partial silent write."""

from __future__ import annotations

import ast
import gzip
import logging
import math
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.config import settings as cfgmod
from daemon.core.errors import ConfigError
from daemon.core.logs import _Formatter
from daemon.core.validate import check, check_rows
from daemon.files.importer import import_file
from storage import Store
from tests.helpers import ROOT

T = 1_700_000_040_000
HEADER = "ts_ms,open,high,low,close,volume"

# -- candle validation --------------------------------------------------------------

values = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**15, 10**15),
                   st.none(), st.text(max_size=4), st.booleans())


@given(st.lists(st.lists(values, min_size=0, max_size=7), max_size=40),
       st.integers(0, 2 * 10**12))
def test_validation_of_exchange_rows_never_raises_and_keeps_only_valid_candles(
        rows: list[list[Any]], now: int) -> None:
    c = check_rows(rows, 60_000, now)  # type: ignore[arg-type]
    assert len(c.ts) + len(c.rejected) + c.open_dropped + c.duplicates == len(rows)
    assert np.all(np.diff(c.ts) > 0)
    for t, (o, h, lo, cl, v) in zip(c.ts.tolist(), c.ohlcv.tolist(), strict=True):
        assert t % 60_000 == 0 and t + 60_000 <= now
        assert all(math.isfinite(x) and x > 0 for x in (o, h, lo, cl))
        assert lo <= min(o, cl) <= max(o, cl) <= h and math.isfinite(v) and v >= 0
    for r in c.rejected:
        assert r.reason and "\n" not in r.reason


@given(st.integers(1, 300), st.data())
def test_validation_is_exact_on_arrays(n: int, data: st.DataObject) -> None:
    ts = T + 60_000 * np.arange(n, dtype=np.float64)
    base = np.array([100.0, 102.0, 98.0, 101.0, 3.0])
    ohlcv = np.tile(base, (n, 1))
    bad = data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n))
    for i in bad:
        col = data.draw(st.integers(0, 4))
        wrong = [-1.0, float("nan"), float("inf")] + ([0.0] if col < 4 else [])  # 0 volume is fine
        ohlcv[i, col] = data.draw(st.sampled_from(wrong))
    c = check(ts, ohlcv, 60_000)
    assert sorted(r.index for r in c.rejected) == sorted(bad)
    assert len(c.ts) == n - len(bad)


# -- CSV import -----------------------------------------------------------------------

field = st.one_of(
    st.sampled_from(["100", "101.5", "0", "-3", "abc", "", "nan", "inf", "1e400", " 99 "]),
    st.floats(0.01, 1e6).map(lambda x: f"{x:.2f}"),
)


@st.composite
def csv_files(draw: st.DrawFn) -> tuple[bytes, str]:
    header = draw(st.sampled_from([HEADER, HEADER.upper(), "ts,open,high,low,close,volume",
                                   "ts_ms,open,high,low,close", ""]))
    lines = [header]
    for i in range(draw(st.integers(0, 30))):
        kind = draw(st.sampled_from(["good", "good", "good", "field", "short", "long", "blank",
                                     "secs", "dup"]))
        ts = T + 60_000 * i
        good = f"{ts},100,102,99,101,1.5"
        lines.append({
            "good": good,
            "field": ",".join([str(ts)] + [draw(field) for _ in range(5)]),
            "short": f"{ts},100,102",
            "long": good + ",7,8",
            "blank": "",
            "secs": f"{ts // 1000},100,102,99,101,1.5",
            "dup": lines[-1] if len(lines) > 1 else good,
        }[kind])
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    text = eol.join(lines) + draw(st.sampled_from(["", eol]))
    if draw(st.booleans()):
        text = "\ufeff" + text
    raw = text.encode()
    name = draw(st.sampled_from(["bitstamp_BTC-USD_1m_x.csv", "bitstamp_BTC-USD_1m_x.csv.gz"]))
    if name.endswith(".gz"):
        raw = gzip.compress(raw)
    return raw, name


@given(csv_files())
@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_hostile_csv_import_is_all_or_valid_rows_never_a_traceback(
        tmp_path: Path, case: tuple[bytes, str]) -> None:
    raw, name = case
    d = tmp_path / uuid.uuid4().hex  # a fresh store for every example
    d.mkdir()
    f = d / name
    f.write_bytes(raw)
    store = Store(str(d / "h.db"))
    store.open(T)
    res = import_file(store, f, symbol=None, exchange=None, timeframe=None,
                      default_exchange="bitstamp")
    con = sqlite3.connect(d / "h.db")
    stored = con.execute("select count(*) from candles").fetchone()[0]
    con.close()
    if res.error is not None:
        assert stored == 0, "a refused file must store nothing"
        assert str(f) in res.error
        return
    assert stored == res.stored
    assert res.stored + res.unchanged + res.conflicts + res.rejected <= res.lines
    assert stored > 0


def test_a_huge_file_imports_in_chunks(tmp_path: Path) -> None:
    n = 250_000
    f = tmp_path / "bitstamp_BTC-EUR_1m_big.csv"
    ts = T + 60_000 * np.arange(n)
    with open(f, "w") as out:
        out.write(HEADER + "\n")
        out.writelines(f"{t},100,102,99,101,1.5\n" for t in ts.tolist())
    store = Store(str(tmp_path / "big.db"))
    store.open(T)
    res = import_file(store, f, symbol=None, exchange=None, timeframe=None,
                      default_exchange="bitstamp")
    assert res.error is None and res.stored == n


# -- configuration files ----------------------------------------------------------------

toml_scalar = st.one_of(st.integers(-10**6, 10**6), st.floats(allow_nan=False), st.booleans(),
                        st.text(max_size=12), st.lists(st.integers(-5, 100), max_size=4),
                        st.lists(st.text(max_size=8), max_size=3))


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return str(v)


@given(st.dictionaries(st.sampled_from(["exchange", "storage", "model", "daemon", "other"]),
                       st.dictionaries(st.sampled_from(
                           ["id", "symbols", "timeframe", "lookback", "horizons", "url",
                            "train_window", "device", "clock", "hidden", "nonsense",
                            "timeout_ms", "retrain_every"]), toml_scalar, max_size=4),
                       max_size=4))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
def test_hostile_config_files_load_or_name_the_key(tmp_path: Path,
                                                   doc: dict[str, dict[str, Any]]) -> None:
    text = "\n".join(f"[{s}]\n" + "\n".join(f"{k} = {_toml(v)}" for k, v in body.items())
                     for s, body in doc.items())
    f = tmp_path / "c.toml"
    f.write_text(text + "\n")
    try:
        s = cfgmod.load(f, env={})
    except ConfigError as e:
        msg = str(e)
        # either the key is named, or (text the test wrote that TOML itself rejects) the
        # file and the position are
        assert any(sec in msg for sec in doc) or ("not valid TOML" in msg and "line" in msg), msg
        return
    assert s.model.lookback >= 8 and s.model.horizons and s.exchange.symbols


# -- security ----------------------------------------------------------------------------

def test_secrets_are_masked_in_log_lines() -> None:
    fmt = _Formatter("%(message)s")
    for msg in ["exchange said apiKey=abc123def", "{'secret': 'hunter2'}",
                "password: s3cr3t in headers", "token=XYZ"]:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, msg, None, None)
        out = fmt.format(rec)
        assert "abc123def" not in out and "hunter2" not in out and "s3cr3t" not in out
        assert "XYZ" not in out and "***" in out


def test_symbols_cannot_smuggle_sql(tmp_path: Path, cli: Any) -> None:
    db = tmp_path / "s.db"
    f = tmp_path / "p.csv"
    f.write_text(f"{HEADER}\n{T},100,102,99,101,1.5\n")
    assert cli("--db", str(db), "import", str(f), "--symbol",
               "BTC/USD'; DROP TABLE candles;--") == 2
    assert cli("--db", str(db), "import", str(f), "--symbol", "BTC/USD") == 0
    con = sqlite3.connect(db)
    assert con.execute("select count(*) from candles").fetchone()[0] == 1


SQL_CALLS = {"execute", "exec_driver_sql", "text", "executemany"}
# f-strings that build SQL only from code constants (table/column names, view bodies).
ALLOWED_FSTRING_SQL = {
    ("storage/dialect/statements.py", "quick_check"),
    ("storage/dialect/engine.py", "_create_sqlite"), ("storage/dialect/engine.py", "_on_connect"),
    ("storage/migrations.py", "_create_views"),
    # copy-store: table and column names of storage.schema's tables, quoted by the dialect.
    ("storage/dialect/pg_copy.py", "copy_upsert"), ("storage/dialect/statements.py", "reset_identity"),
}


def test_no_sql_is_built_from_runtime_strings() -> None:
    """Every SQL string passed to the driver is a constant or built from code constants."""
    offenders = []
    for path in sorted(ROOT.glob("*/**/*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if not rel.startswith(("daemon/", "storage/", "forecaster/")):
            continue
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if (isinstance(node, ast.Call) and node.args
                        and isinstance(node.args[0], ast.JoinedStr)):
                    name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                    if name in SQL_CALLS and (rel, func.name) not in ALLOWED_FSTRING_SQL:
                        offenders.append(f"{rel}:{node.lineno} in {func.name}")
    assert offenders == []


def test_the_store_with_its_checkpoints_is_owner_only(tmp_path: Path) -> None:
    """Checkpoints live inside the store, so the store file's mode covers them; its WAL and
    lock files get the same."""
    from storage import dialect

    s = Store(str(tmp_path / "perm" / "x.db"))
    s.open(T)
    lock = dialect.acquire_instance_lock(s.url)
    for p in (tmp_path / "perm").iterdir():
        assert p.stat().st_mode & 0o077 == 0, p.name
    assert lock is not None
    lock.release()
    s.close()
