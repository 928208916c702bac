"""`tickcast status` for people and machines, and commands that only read never write:
no migration, no file created, no byte of the store changed, nothing heavy imported."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from daemon import wiring
from daemon.commands.status import duration
from storage import SCHEMA_VERSION, SchemaTooOld, StorageError, Store, migrations
from tests.helpers import HOURLY, ROOT


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def small_store(tmp_path: Path, cli: Any) -> Path:
    db = tmp_path / "s.db"
    assert cli("--db", str(db), "import", str(HOURLY["BTC/USD"])) == 0
    Store(str(db)).checkpoint_wal()  # fold the WAL in: the file alone is the store
    return db


def test_durations_for_people() -> None:
    assert [duration(s) for s in (59, 60, 3599, 3600, 86399, 86400 + 3600 * 4)] == \
        ["59 s", "1 min", "59 min 59 s", "1 h", "23 h 59 min", "1 d 4 h"]


def test_status_speaks_durations_and_json_keeps_numbers(small_store: Path, cli: Any,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    capsys.readouterr()
    assert cli("--db", str(small_store), "status") == 0
    out = capsys.readouterr().out
    assert "bitstamp 1h: daemon not running" in out
    assert "27,499 candles, newest 2020-12-31T23:00:00Z, lag " in out
    lag_text = out.split("lag ")[1].split("\n")[0]
    assert lag_text.endswith(" d") or " y " in lag_text or " d " in lag_text, lag_text
    assert "model: none yet (baselines only)" in out and "MASE: no scored forecasts yet" in out
    assert cli("--db", str(small_store), "status", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    (s,) = data["series"]
    assert s["newest_ts"] == 1609455600000 and s["candles"] == 27499
    assert s["lag_ms"] == data["now_ms"] - (s["newest_ts"] + 3_600_000)
    assert s["lag_s"] == s["lag_ms"] // 1000
    assert data["groups"][0]["daemon"] == {"running": False, "holder": None}
    assert data["daemon_running"] is False and data["model"] is None


def test_read_only_commands_write_nothing(small_store: Path, cli: Any, tmp_path: Path) -> None:
    before = _digest(small_store)
    for args in (["status"], ["status", "--json"], ["report"], ["report", "--json"]):
        assert cli("--db", str(small_store), *args) == 0, args
    assert _digest(small_store) == before
    # A store whose file a command only reads is never created.
    assert cli("--db", str(tmp_path / "none.db"), "report") == 74
    assert not (tmp_path / "none.db").exists()


def test_a_read_only_store_refuses_writes(small_store: Path) -> None:
    store = wiring.open_store(str(small_store), 0, read_only=True)
    try:
        with pytest.raises(StorageError):
            with store.write() as conn:
                conn.execute(text("DELETE FROM candles"))
        with store.read() as conn:
            assert conn.execute(text("SELECT COUNT(*) FROM candles")).scalar() == 27499
    finally:
        store.close()


def test_an_older_store_is_refused_by_read_only_commands_and_left_as_it_was(
        store_url: str, capsys: pytest.CaptureFixture[str], cli: Any) -> None:
    """Safest: a read-only command never migrates (an older daemon may still run on the
    store); the message says what will. A writing command migrates it as before."""
    old = Store(store_url)
    migrations.migrate(old.engine, now_ms=0, target=SCHEMA_VERSION - 1)
    old.close()
    for args in (["status"], ["report"], ["replay", "--from-db", "--out", "x.db"]):
        assert cli("--db", store_url, *args) == 74, args
        err = capsys.readouterr().err
        assert f"schema version {SCHEMA_VERSION - 1}" in err and "never migrates" in err, err
    with pytest.raises(SchemaTooOld):
        wiring.open_store(store_url, 0, read_only=True)
    s = Store(store_url)
    with s.read() as conn:
        assert migrations.current_version(conn) == SCHEMA_VERSION - 1
    s.close()
    wiring.open_store(store_url, 0).close()  # a writing open migrates
    wiring.open_store(store_url, 0, read_only=True).close()


def test_status_imports_no_torch_ccxt_numpy_or_pandas(small_store: Path) -> None:
    code = ("import sys, io, contextlib\nfrom daemon.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    rc = main(['--db', {str(small_store)!r}, 'status', '--json'])\n"
            "print(rc, sorted(m for m in ('torch', 'ccxt', 'numpy', 'pandas', 'apscheduler',"
            " 'prometheus_client') if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "0 []"


def test_no_command_runs_the_integrity_check_unless_asked(
        small_store: Path, cli: Any, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """Opening a store reads nothing proportional to it (PRAGMA quick_check took 11.7 s on
    a year of minutes at every start and import): `status --check` is the explicit check,
    and a failed one exits 74 naming it."""
    from storage import dialect

    calls: list[int] = []
    monkeypatch.setattr(dialect, "quick_check", lambda conn: calls.append(1) or [])
    assert cli("--db", str(small_store), "import", str(HOURLY["BTC/EUR"])) == 0
    assert cli("--db", str(small_store), "status") == 0
    assert calls == []
    capsys.readouterr()
    assert cli("--db", str(small_store), "status", "--check") == 0
    assert calls == [1] and "integrity check: ok" in capsys.readouterr().out
    assert cli("--db", str(small_store), "status", "--check", "--json") == 0
    assert json.loads(capsys.readouterr().out)["integrity"] == {"ok": True, "problems": []}
    monkeypatch.setattr(dialect, "quick_check", lambda conn: ["Page 7: btreeInitPage() error 11"])
    assert cli("--db", str(small_store), "status", "--check") == 74
    assert "failed its integrity check: Page 7" in caplog.text
