"""The command line as a public contract: names, help, global options, documentation."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import daemon
from daemon.cli import COMMANDS, build_parser
from tests.helpers import HOURLY, ROOT, run_subprocess

# The commands users run (README: Commands); a new one is added here and there.
DOCUMENTED_COMMANDS = {"run", "backfill", "import", "replay", "report", "status", "copy-store"}


def test_daemon_package_is_this_repository_not_python_daemon() -> None:
    assert Path(daemon.__file__).resolve().is_relative_to(ROOT)


def test_the_documented_commands_exist() -> None:
    assert set(COMMANDS) == DOCUMENTED_COMMANDS


@pytest.mark.parametrize("command", sorted(DOCUMENTED_COMMANDS))
def test_every_command_has_help_with_an_example(command: str, cli: Any,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(command, "--help") == 0
    out = capsys.readouterr().out
    assert "example" in out and f"tickcast {command}" in out
    for flag in ("--config", "--db", "--exchange-url"):
        assert flag in out


@pytest.mark.parametrize("command", sorted(DOCUMENTED_COMMANDS))
def test_every_command_is_documented_in_the_readme(command: str) -> None:
    readme = (ROOT / "README.md").read_text()
    assert f"tickcast {command}" in readme, f"`tickcast {command}` is not in README.md"


def test_spec_flags_exist() -> None:
    parser = build_parser()
    text = parser.format_help()
    sub = {name: p.format_help() for name, p in
           parser._subparsers._group_actions[0].choices.items()}  # type: ignore[union-attr]
    assert "--config" in text and "--db" in text and "--exchange-url" in text and "-v" in text
    for name, flags in {
        "backfill": ["--since", "--until"],
        "import": ["--symbol", "--exchange", "--timeframe"],
        "replay": ["--data", "--from-db", "--start", "--end", "--out"],
        "report": ["--since", "--plot", "--json"],
        "status": ["--json"],
        "copy-store": ["--to"],
    }.items():
        for f in flags:
            assert re.search(rf"{re.escape(f)}\b", sub[name]), (name, f)


def test_global_options_before_or_after_the_subcommand(tmp_path: Path, cli: Any,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    assert cli("--db", str(a), "import", str(HOURLY["BTC/EUR"])) == 0
    assert cli("import", str(HOURLY["BTC/USD"]), "--db", str(b)) == 0
    capsys.readouterr()
    assert cli("--db", str(a), "status", "--json") == 0
    sa = json.loads(capsys.readouterr().out)
    assert cli("status", "--json", "--db", str(b)) == 0
    sb = json.loads(capsys.readouterr().out)
    assert [s["symbol"] for s in sa["series"]] == ["BTC/EUR"]
    assert [s["symbol"] for s in sb["series"]] == ["BTC/USD"]


def test_usage_errors_exit_2(cli: Any) -> None:
    assert cli("backfill", "--since", "yesterday-ish") == 2
    assert cli("nonsense") == 2
    assert cli() == 2


def test_status_reports_newest_candle_lag_and_count(tmp_path: Path, cli: Any,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "s.db"
    assert cli("--db", str(db), "import", str(HOURLY["BTC/USD"])) == 0
    capsys.readouterr()
    assert cli("--db", str(db), "status") == 0
    out = capsys.readouterr().out
    assert "BTC/USD" in out and "27,499 candles" in out and "2020-12-31T23:00:00Z" in out
    assert "lag" in out


def test_status_of_a_missing_store_is_a_storage_error(tmp_path: Path, cli: Any) -> None:
    assert cli("--db", str(tmp_path / "none.db"), "status") == 74
    assert not (tmp_path / "none.db").exists()


def test_python_m_daemon_is_the_console_script() -> None:
    p = run_subprocess("--help")
    assert p.returncode == 0 and "tickcast" in p.stdout and "exit codes" in p.stdout
