"""Every command checks its arguments and inputs before it creates or changes anything.

Each case runs a command the way a new user would, in an empty folder with the default
store (`tickcast.db` in the working directory): it must exit with the right code, name the
real problem, and leave the folder exactly as it was (no store, no lock file, no
checkpoints, no replay output).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.emulator import ExchangeEmulator
from tests.helpers import HOURLY, emulator_config

HEADER = "ts_ms,open,high,low,close,volume"
GOOD_ROW = "1700000040000,100,102,99,101,1.5"


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    """Input files, in a folder of their own."""
    d = tmp_path / "inputs"
    d.mkdir()
    (d / "prices.csv").write_text(f"{HEADER}\n{GOOD_ROW}\n")
    (d / "bitstamp_BTC-USD_1m_bad.csv").write_text("time,o,h,l,c,v\n1,2,3,4,5,6\n")
    return d


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working directory; `run` may install a SIGTERM handler: put it back."""
    d = tmp_path / "work"
    d.mkdir()
    monkeypatch.chdir(d)
    previous = signal.getsignal(signal.SIGTERM)
    yield d
    signal.signal(signal.SIGTERM, previous)


CASES: list[tuple[str, list[str], dict[str, str], int, str]] = [
    # name, arguments ({inputs} is the inputs folder), environment, exit code, message
    ("import a file that does not exist", ["import", "/no/such/file.csv"], {}, 65,
     "/no/such/file.csv: no such file"),
    ("import a file whose name says nothing", ["import", "{inputs}/prices.csv"], {}, 2,
     "does not say the symbol"),
    ("import with a bad timeframe", ["import", "{inputs}/prices.csv", "--symbol", "BTC/USD",
                                     "--timeframe", "1minute"], {}, 2, "--timeframe"),
    ("import with a bad symbol", ["import", "{inputs}/prices.csv", "--symbol", "btc-usd"], {},
     2, "not a unified symbol"),
    ("import one good and one missing file", ["import", "{inputs}/prices.csv", "/no/such.csv",
                                              "--symbol", "BTC/USD"], {}, 65,
     "/no/such.csv: no such file"),
    ("import only a file with a wrong header", ["import", "{inputs}/bitstamp_BTC-USD_1m_bad.csv"],
     {}, 65, "header is 'time,o,h,l,c,v'"),
    ("backfill until before since", ["backfill", "--since", "2024-02-01", "--until",
                                     "2024-01-01"], {}, 2, "--until must be after --since"),
    ("backfill with a date that is none", ["backfill", "--since", "yesterday-ish"], {}, 2,
     "not a date"),
    ("backfill from an unknown exchange", ["backfill"], {"TICKCAST_EXCHANGE__ID": "nope"}, 78,
     "exchange.id"),
    ("replay data that does not exist", ["replay", "--data", "/no/such_BTC.csv"], {}, 65,
     "no such file"),
    ("replay data and the store at once", ["replay", "--from-db", "--data",
                                           "{inputs}/prices.csv"], {}, 2, "not both"),
    ("replay an end before the start", ["replay", "--start", "2020-02-01", "--end",
                                        "2020-01-01"], {}, 2, "--end must be after --start"),
    ("replay a store that does not exist", ["replay", "--from-db"], {}, 74, "does not exist"),
    ("replay after the end of the data", ["replay", "--data", str(HOURLY["BTC/USD"]),
                                          "--start", "2030-01-01", "--out", "bt.db"], {}, 2,
     "nothing to replay"),
    ("replay into the live store", ["replay", "--data", str(HOURLY["BTC/USD"]), "--out",
                                    "tickcast.db"], {}, 2, "--out is the live store"),
    ("replay on a device that is not there", ["replay", "--out", "bt.db"],
     {"TICKCAST_MODEL__DEVICE": "cuda"}, 78, "model.device"),
    ("report on a store that does not exist", ["report"], {}, 74, "does not exist"),
    ("report since a time that is none", ["report", "--since", "soon"], {}, 2, "not a date"),
    ("status of a store that does not exist", ["status"], {}, 74, "does not exist"),
    ("status with an invalid configuration", ["status"], {"TICKCAST_MODEL__LOOKBACK": "-1"},
     78, "model.lookback"),
    ("run on an unknown exchange", ["run"], {"TICKCAST_EXCHANGE__ID": "nope"}, 78,
     "exchange.id"),
    ("run on a device that is not there", ["run"], {"TICKCAST_MODEL__DEVICE": "cuda"}, 78,
     "model.device"),
    ("copy-store without --to", ["copy-store"], {}, 2, "--to"),
    ("copy-store to no store URL", ["copy-store", "--to", "mysql://db/x"], {}, 2,
     "--to: back-end 'mysql' is not supported"),
    ("copy-store into the store itself", ["copy-store", "--to", "tickcast.db"], {}, 2,
     "--to is the configured store itself"),
    ("copy-store from a store that does not exist", ["copy-store", "--to", "copy.db"], {}, 74,
     "does not exist"),
]


@pytest.mark.parametrize("name,args,env,code,message", CASES, ids=[c[0] for c in CASES])
def test_a_refused_command_leaves_the_folder_untouched(
        name: str, args: list[str], env: dict[str, str], code: int, message: str, cli: Any,
        work: Path, inputs: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    if "device" in name and torch.cuda.is_available():
        pytest.skip("a GPU is present: cuda is a valid device here")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    before = sorted(p.name for p in inputs.iterdir())
    assert cli(*(a.replace("{inputs}", str(inputs)) for a in args)) == code
    said = caplog.text + capsys.readouterr().err
    assert message in said, said[-2000:]
    assert list(work.iterdir()) == [], "the refused command created files"
    assert sorted(p.name for p in inputs.iterdir()) == before


def test_backfill_of_symbols_the_exchange_does_not_list_creates_no_store(
        tmp_path: Path, work: Path, emulator: ExchangeEmulator, cli: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    cfg = emulator_config(tmp_path, emulator, "kraken",
                          exchange={"symbols": ["BTC/USD", "DOGE/USD"]})
    assert cli("--config", str(cfg), "backfill") == 78
    assert "exchange.symbols: DOGE/USD not traded" in caplog.text
    assert list(work.iterdir()) == []


def test_backfill_while_the_exchange_is_down_creates_no_store(
        tmp_path: Path, work: Path, emulator: ExchangeEmulator, cli: Any,
        caplog: pytest.LogCaptureFixture) -> None:
    emulator.add_fault("http503")
    cfg = emulator_config(tmp_path, emulator, exchange={"max_retries": 1})
    assert cli("--config", str(cfg), "backfill") == 75
    assert "run again to resume" in caplog.text
    assert list(work.iterdir()) == []
