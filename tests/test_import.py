"""`tickcast import`: good rows stored, every bad one named, exit 65 only when nothing is usable."""

from __future__ import annotations

import gzip
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import HOURLY, run_subprocess

HEADER = "ts_ms,open,high,low,close,volume"
T = 1_700_000_040_000


def count(db: Path, symbol: str = "BTC/USD") -> int:
    con = sqlite3.connect(db)
    try:
        return con.execute("select count(*) from candles where symbol = ?", (symbol,)).fetchone()[0]
    finally:
        con.close()


def good(i: int) -> str:
    return f"{T + i * 60_000},100,102,99,101,1.5"


def test_a_bad_row_is_reported_by_line_and_the_rest_stored(tmp_path: Path, cli: Any,
                                                           caplog: pytest.LogCaptureFixture,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    lines = [HEADER, good(0), good(1), f"{T + 2 * 60_000},100,98,99,101,1.5", good(3),
             f"{T + 4 * 60_000},abc,102,99,101,1.5", good(5)]
    f = tmp_path / "prices.csv"
    f.write_text("\n".join(lines) + "\n")
    db = tmp_path / "t.db"
    assert cli("--db", str(db), "import", str(f), "--symbol", "BTC/USD") == 0
    assert count(db) == 4
    assert "line 4: high < low" in caplog.text
    assert "line 6: open is not a number: 'abc'" in caplog.text
    assert "4 stored" in capsys.readouterr().out


def test_a_file_with_no_valid_row_exits_65_and_stores_nothing(tmp_path: Path, cli: Any,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(f"{HEADER}\n{T},0,1,1,1,1\n{T + 60_000},1,0.5,2,1,1\n")
    db = tmp_path / "t.db"
    assert cli("--db", str(db), "import", str(f), "--symbol", "BTC/USD") == 65
    assert not db.exists()  # nothing stored: no store was even created
    assert "no valid row" in caplog.text and "line 2" in caplog.text


def test_wrong_header_exits_65_naming_the_header(tmp_path: Path, cli: Any,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "h.csv"
    f.write_text("time,o,h,l,c,v\n" + good(0) + "\n")
    db = tmp_path / "t.db"
    assert cli("--db", str(db), "import", str(f), "--symbol", "BTC/USD") == 65
    assert "line 1: header is 'time,o,h,l,c,v'" in caplog.text
    assert not db.exists()  # nothing stored: no store was even created


def test_seconds_instead_of_milliseconds_are_refused_not_scaled(tmp_path: Path, cli: Any,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "s.csv"
    f.write_text(HEADER + "\n" + "\n".join(f"{T // 1000 + 60 * i},1,2,0.5,1,1" for i in range(5)))
    db = tmp_path / "t.db"
    assert cli("--db", str(db), "import", str(f), "--symbol", "BTC/USD") == 65
    assert "seconds" in caplog.text
    assert not db.exists()  # nothing stored: no store was even created


def test_one_refused_file_does_not_stop_the_others(tmp_path: Path, cli: Any) -> None:
    ok = tmp_path / "bitstamp_BTC-EUR_1m_x.csv"
    ok.write_text(HEADER + "\n" + "\n".join(good(i) for i in range(3)) + "\n")
    bad = tmp_path / "bitstamp_BTC-USD_1m_x.csv"
    bad.write_text("nonsense\n")
    db = tmp_path / "t.db"
    assert cli("--db", str(db), "import", str(bad), str(ok)) == 65
    assert count(db, "BTC/EUR") == 3 and count(db, "BTC/USD") == 0


def test_bom_crlf_gzip_duplicates_and_extra_fields(tmp_path: Path, cli: Any,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    body = "\ufeff" + HEADER + "\r\n" + "\r\n".join(
        [good(0), good(1), good(1), good(2) + ",7", good(3)]) + "\r\n"
    f = tmp_path / "kraken_BTC-USD_1m_dump.csv.gz"
    with gzip.open(f, "wt", newline="") as g:
        g.write(body)
    db = tmp_path / "t.db"
    assert cli("--db", str(db), "import", str(f)) == 0
    assert count(db) == 3  # line 5 has 7 fields; the duplicate of line 3 collapses
    assert "line 5: expected 6 fields, found 7" in caplog.text
    con = sqlite3.connect(db)
    assert con.execute("select distinct exchange, timeframe from candles").fetchall() == [
        ("kraken", "1m")]


def test_import_twice_is_idempotent_and_conflicts_keep_the_stored_row(
        tmp_path: Path, cli: Any, caplog: pytest.LogCaptureFixture) -> None:
    f = tmp_path / "a.csv"
    f.write_text(HEADER + "\n" + "\n".join(good(i) for i in range(5)) + "\n")
    db = tmp_path / "t.db"
    assert cli("--db", str(db), "import", str(f), "--symbol", "BTC/USD") == 0
    g = tmp_path / "b.csv"
    g.write_text(HEADER + "\n" + f"{T},100,102,99,100.5,1.5\n")
    assert cli("--db", str(db), "import", str(g), "--symbol", "BTC/USD") == 0
    assert count(db) == 5
    assert "keeping the stored one" in caplog.text
    con = sqlite3.connect(db)
    assert con.execute("select close from candles where ts = ?", (T,)).fetchone()[0] == 101


def test_a_name_that_says_nothing_needs_the_flags(tmp_path: Path, cli: Any) -> None:
    f = tmp_path / "prices.csv"
    f.write_text(HEADER + "\n" + good(0) + "\n")
    assert cli("--db", str(tmp_path / "t.db"), "import", str(f)) == 2


def test_real_hourly_file_imports_completely_through_the_real_cli(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    p = run_subprocess("import", str(HOURLY["BTC/USD"]), "--db", str(db))
    assert p.returncode == 0, p.stderr
    assert "27499 stored" in p.stdout
    con = sqlite3.connect(db)
    assert con.execute("select exchange, symbol, timeframe, count(*) from candles").fetchone() == (
        "bitstamp", "BTC/USD", "1h", 27499)


def test_gzip_members_damage_and_progress(tmp_path: Path, cli: Any,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """Concatenated gzip members read as one file; a truncated or non-gzip .gz is refused
    (65) storing nothing; reading reports progress in plain log lines off a terminal."""
    body = [HEADER] + [good(i) for i in range(2000)]
    f = tmp_path / "bitstamp_BTC-USD_1m_parts.csv.gz"
    f.write_bytes(gzip.compress(("\n".join(body[:700]) + "\n").encode())
                  + gzip.compress(("\n".join(body[700:]) + "\n").encode()))
    db = tmp_path / "t.db"
    with caplog.at_level("INFO"):
        assert cli("--db", str(db), "import", str(f)) == 0
    assert count(db) == 2000
    assert "read bitstamp_BTC-USD_1m_parts.csv.gz" in caplog.text
    cut = tmp_path / "bitstamp_BTC-EUR_1m_cut.csv.gz"
    cut.write_bytes(gzip.compress(("\n".join(body) + "\n").encode())[:-40])
    plain = tmp_path / "bitstamp_BTC-EUR_1m_plain.csv.gz"
    plain.write_text("\n".join(body) + "\n")
    for bad in (cut, plain):
        caplog.clear()
        assert cli("--db", str(db), "import", str(bad)) == 65
        assert f"{bad}: cannot read" in caplog.text
    assert count(db, "BTC/EUR") == 0


def test_the_import_command_loads_neither_torch_nor_ccxt(tmp_path: Path) -> None:
    """Start-up is part of what a user waits for: import needs pandas and SQLAlchemy only."""
    import os
    import subprocess
    import sys

    f = tmp_path / "bitstamp_BTC-USD_1m_x.csv"
    f.write_text(HEADER + "\n" + "\n".join(good(i) for i in range(3)) + "\n")
    code = ("import sys; from daemon.cli import main; "
            f"rc = main(['--db', {str(tmp_path / 't.db')!r}, 'import', {str(f)!r}]); "
            "print(rc, sorted(m for m in ('torch', 'ccxt') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env={k: v for k, v in os.environ.items()
                                         if not k.startswith("TICKCAST_")})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip().splitlines()[-1] == "0 []"
