"""The house rules of ARCHITECTURE.md, checked. Who may import whom (the layers of the
packages and of daemon/'s rooms, no import circle anywhere, which modules alone import ccxt,
APScheduler, prometheus_client, matplotlib, SQLAlchemy, psycopg, pandas) is declared as
import-linter contracts in pyproject.toml and run here; the rest are small walks: one reader
of the wall clock, one mapping from errors to exit codes, small modules, one logger scheme,
a light CLI, and a timeframe parser that agrees with ccxt's."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from daemon.core import errors, timeframes
from tests.helpers import ROOT

PACKAGES = ("daemon", "storage", "forecaster")


def _files(package: str) -> list[Path]:
    """Every module of a package, its subpackages (daemon/live/, storage/dialect/) included."""
    return sorted((ROOT / package).rglob("*.py"))


def test_the_import_contracts_hold() -> None:
    """`lint-imports` with pyproject.toml's contracts: layers, protected third-party
    imports, no import circle (imports inside functions included)."""
    p = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
         "sys.exit(lint_imports_command())", "--no-cache", "--no-logo"],
        capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-2000:]
    assert "0 broken" in p.stdout, p.stdout


def test_only_daemon_clock_reads_the_clock() -> None:
    readers = ("time.time", "time.monotonic", "time.time_ns", "datetime.now", "datetime.utcnow",
               "time.perf_counter", "date.today")
    offenders = []
    for package in ("daemon", "storage"):
        for path in _files(package):
            if path.name == "clock.py" and package == "daemon":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                    if f"{node.value.id}.{node.attr}" in readers:
                        offenders.append(f"{package}/{path.name}:{node.lineno}")
    assert offenders == []


def test_modules_stay_small() -> None:
    big = {str(p.relative_to(ROOT)): n for package in PACKAGES for p in _files(package)
           if (n := len(p.read_text().splitlines())) > 350}
    assert big == {}, "split these by concept (ARCHITECTURE.md)"


def test_the_cli_starts_without_torch_ccxt_or_sqlalchemy() -> None:
    code = ("import sys, daemon.cli; "
            "print(sorted(m for m in ('torch', 'ccxt', 'sqlalchemy', 'numpy', 'pandas') "
            "if m in sys.modules))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


@pytest.mark.parametrize("tf", ["1m", "3m", "5m", "15m", "30m", "45m", "1h", "2h", "4h", "12h",
                                "1d", "3d", "1w", "2w"])
def test_timeframes_agree_with_ccxt(tf: str) -> None:
    import ccxt

    assert timeframes.to_ms(tf) == ccxt.Exchange.parse_timeframe(tf) * 1000
    assert timeframes.from_ms(timeframes.to_ms(tf)) in {tf, timeframes.from_ms(
        ccxt.Exchange.parse_timeframe(tf) * 1000)}


@pytest.mark.parametrize("tf", ["0m", "-1m", "1minute", "m", "1s", "1M", "", "01m"])
def test_timeframes_refuse_what_is_not_a_candle_length(tf: str) -> None:
    with pytest.raises(ValueError, match="not a timeframe"):
        timeframes.to_ms(tf)


def test_every_error_maps_to_its_exit_code_in_one_place() -> None:
    from daemon.pipeline.source import RetryLater
    from storage import (
        SchemaTooNew,
        StorageError,
        StoreBusy,
        StoreConfigError,
        StoreCorrupt,
        StoreUnavailable,
    )

    cases = {errors.UsageError("x"): 2, errors.DataError("x"): 65, errors.ConfigError("x"): 78,
             RetryLater("x"): 75, StoreBusy("x"): 75, StorageError("x"): 74,
             StoreConfigError("x"): 78, StoreUnavailable("x"): 75,
             StoreCorrupt("x"): 74, SchemaTooNew("x"): 74, KeyboardInterrupt(): 130}
    for exc, code in cases.items():
        assert errors.exit_code_for(exc) == code, exc
    assert errors.exit_code_for(RuntimeError("a bug")) is None
    assert errors.exit_code_for(SystemExit(0)) is None
    # Nothing else picks a failure code: code returns EXIT_OK or asks exit_code_for.
    sources = "".join(p.read_text() for p in (ROOT / "daemon").rglob("*.py")
                      if p.name != "errors.py")
    assert re.findall(r"EXIT_(?:USAGE|DATAERR|IOERR|TEMPFAIL|CONFIG|INTERRUPTED)", sources) == []


def test_every_module_has_its_place_in_the_architecture_and_every_named_file_exists() -> None:
    text = (ROOT / "ARCHITECTURE.md").read_text()
    for package in PACKAGES:
        for p in _files(package):
            if p.name == "__init__.py":
                continue
            rel, inner = p.relative_to(ROOT).as_posix(), p.relative_to(ROOT / package).as_posix()
            assert f"`{rel}`" in text or f"`{inner}`" in text, f"{rel} is not in ARCHITECTURE.md"
    for name in set(re.findall(r"`([\w/]+\.py)`", text)):
        assert any((base / name).is_file() for base in (ROOT, *(ROOT / p for p in PACKAGES))), \
            f"ARCHITECTURE.md names {name}, which does not exist"


def test_the_rooms_of_the_architecture_are_the_contracts_layers() -> None:
    """ARCHITECTURE.md's table of daemon/'s rooms lists the `rooms` contract's layers, in
    its order, so what the page says each room may import is what lint-imports checks."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (rooms,) = [c for c in contracts["contracts"] if c["id"] == "rooms"]
    layers = [r.strip() for layer in rooms["layers"] for r in re.split(r"[|:]", layer)]
    text = (ROOT / "ARCHITECTURE.md").read_text()
    table = text.split("## The rooms of `daemon/`")[1].split("\n## ")[0]
    listed = re.findall(r"^\| `(\w+)` \|", table, flags=re.M)
    assert listed == layers



def _room(path: Path) -> str:
    """The room a module logs for: daemon/<room>/x.py, daemon/<room>.py, or the package."""
    parts = path.relative_to(ROOT).parts
    if parts[0] != "daemon":
        return parts[0]
    return parts[1] if len(parts) > 2 else Path(parts[1]).stem


def test_every_logger_is_named_tickcast_and_its_room() -> None:
    """One scheme (`tickcast.<room>`, ARCHITECTURE.md) so a journal filter can name a room."""
    wrong = []
    for package in PACKAGES:
        for path in _files(package):
            for node in ast.walk(ast.parse(path.read_text())):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "getLogger" and node.args):
                    arg = node.args[0]
                    name = arg.value if isinstance(arg, ast.Constant) else ast.unparse(arg)
                    if path.name == "logs.py" and not isinstance(arg, ast.Constant):
                        continue  # logs.setup quietens third-party loggers by name
                    if name != f"tickcast.{_room(path)}":
                        wrong.append(f"{path.relative_to(ROOT)}:{node.lineno}: {name}")
    assert wrong == []


def test_every_project_name_a_benchmark_imports_exists() -> None:
    """The benchmarks are not run by the suite, and most import the project inside their
    functions: after a move, a stale `from daemon.x import Y` would only fail when someone
    next runs that benchmark. Every such import, wherever it stands, must resolve now."""
    import importlib

    missing = []
    for path in sorted((ROOT / "tests" / "bench").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                    and node.module.split(".")[0] in ("daemon", "forecaster", "storage",
                                                      "tests")):
                continue
            try:
                mod = importlib.import_module(node.module)
            except ImportError as e:
                missing.append(f"{path.name}:{node.lineno} {node.module}: {e}")
                continue
            for alias in node.names:
                if not hasattr(mod, alias.name):
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                    except ImportError:
                        missing.append(f"{path.name}:{node.lineno} {node.module}.{alias.name}")
    assert not missing, missing
