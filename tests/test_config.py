"""Configuration: file < env < flags, and every invalid value named with exit 78."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from daemon import settings
from daemon.errors import ConfigError
from tests.conftest import run_subprocess, write_config


def test_defaults_serve_a_first_run_without_any_file() -> None:
    s = settings.load(None, env={})
    assert s.exchange == "bitstamp"
    assert s.symbols == ["BTC/USD", "BTC/EUR"]
    assert s.timeframe == "1m" and s.timeframe_ms == 60_000
    assert s.storage_url == "sqlite:///tickcast.db"
    assert s.horizons == [1, 5, 15, 30, 60]
    assert (s["model.lookback"], s["model.train_window"], s["model.retrain_every"]) == (240, 20160, 60)
    assert s["model.device"] == "auto"


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", {"exchange": {"id": "kraken", "timeout_ms": 500},
                                            "model": {"lookback": 100}})
    env = {"TICKCAST_MODEL__LOOKBACK": "120", "TICKCAST_MODEL__HORIZONS": "1,2,3",
           "TICKCAST_EXCHANGE__SYMBOLS": "BTC/USD"}
    s = settings.load(cfg, env=env, overrides={"exchange.api_url": "http://127.0.0.1:9"})
    assert s.exchange == "kraken" and s["exchange.timeout_ms"] == 500
    assert s["model.lookback"] == 120 and s.horizons == [1, 2, 3]
    assert s.symbols == ["BTC/USD"]
    assert s["exchange.api_url"] == "http://127.0.0.1:9"
    assert s.sources["model.lookback"] == "env"


def test_state_directory_sets_the_store_unless_configured(tmp_path: Path) -> None:
    s = settings.load(None, env={"STATE_DIRECTORY": "/var/lib/tickcast"})
    assert s.storage_url == "sqlite:////var/lib/tickcast/tickcast.db"
    s = settings.load(None, env={"STATE_DIRECTORY": "/var/lib/tickcast",
                                 "TICKCAST_STORAGE__URL": "sqlite:////tmp/x.db"})
    assert s.storage_url == "sqlite:////tmp/x.db"


@pytest.mark.parametrize("sections,key", [
    ({"model": {"lookback": -5}}, "model.lookback"),
    ({"model": {"lookback": "240"}}, "model.lookback"),
    ({"model": {"horizons": []}}, "model.horizons"),
    ({"model": {"horizons": [0, 5]}}, "model.horizons"),
    ({"model": {"device": "tpu"}}, "model.device"),
    ({"model": {"train_window": 100}}, "model.train_window"),
    ({"model": {"retrain_every": 0}}, "model.retrain_every"),
    ({"exchange": {"symbols": ["BTCUSD"]}}, "exchange.symbols"),
    ({"exchange": {"timeframe": "1minute"}}, "exchange.timeframe"),
    ({"exchange": {"api_url": "localhost:8080"}}, "exchange.api_url"),
    ({"exchange": {"timeout_ms": True}}, "exchange.timeout_ms"),
    ({"exchange": {"colour": "red"}}, "exchange.colour"),
    ({"modle": {"lookback": 10}}, "modle"),
])
def test_invalid_config_names_the_key(tmp_path: Path, sections: dict[str, Any], key: str) -> None:
    cfg = write_config(tmp_path / "c.toml", sections)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        settings.load(cfg, env={})


@pytest.mark.parametrize("env,key", [
    ({"TICKCAST_MODEL__LOOKBACK": "many"}, "model.lookback"),
    ({"TICKCAST_MODEL__NOPE": "1"}, "model.nope"),
    ({"TICKCAST_EXCHANGE__RATE_LIMIT": "maybe"}, "exchange.rate_limit"),
])
def test_invalid_env_override_names_the_key(env: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        settings.load(None, env=env)


def test_invalid_config_exits_78_from_the_real_cli(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", {"model": {"lookback": -1}})
    p = run_subprocess("--config", str(cfg), "status", "--db", str(tmp_path / "x.db"))
    assert p.returncode == 78
    assert "model.lookback" in p.stderr
    p = run_subprocess("status", env={"TICKCAST_MODEL__DEVICE": "tpu"})
    assert p.returncode == 78 and "model.device" in p.stderr
    p = run_subprocess("status", env={"TICKCAST_CONFIG": str(tmp_path / "missing.toml")})
    assert p.returncode == 78 and "missing.toml" in p.stderr


def test_broken_toml_is_a_config_error(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[model\nlookback = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        settings.load(f, env={})


def test_example_config_in_deploy_is_the_generated_one_and_loads() -> None:
    root = Path(__file__).resolve().parents[1]
    example = root / "deploy" / "config.example.toml"
    assert example.read_text() == settings.example_toml(), (
        "deploy/config.example.toml is stale: regenerate it from daemon.settings.example_toml()")
    settings.load(example, env={})
