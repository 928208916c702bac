"""Configuration: file < env < flags, and every invalid value named with exit 78."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from daemon.config import settings
from daemon.config import values as settings_values
from daemon.core.errors import ConfigError
from daemon.core.series import Series
from tests.helpers import run_subprocess, write_config


def test_defaults_serve_a_first_run_without_any_file() -> None:
    s = settings.load(None, env={})
    assert s.exchange.id == "bitstamp"
    assert s.exchange.symbols == ("BTC/USD", "BTC/EUR")
    assert s.exchange.timeframe == "1m" and s.series.step_ms == 60_000
    assert s.series == Series("bitstamp", ("BTC/USD", "BTC/EUR"), "1m")
    assert s.storage.url == "sqlite:///tickcast.db"
    assert s.model.horizons == (1, 5, 15, 30, 60)
    assert (s.model.lookback, s.model.train_window, s.model.retrain_every) == (240, 20160, 60)
    assert s.model.device == "auto"


def test_every_key_is_a_typed_attribute_of_its_section() -> None:
    """KEYS and the section dataclasses agree: a key added to one and not the other fails
    here (adding a key is its Key(...) line plus one field)."""
    assert settings.declaration_problems() == []
    s = settings.load(None, env={})
    for key in settings.KEYS:
        value = getattr(getattr(s, key.section), key.name)
        want = tuple(key.default) if key.type is list else key.default
        assert value == want and type(value) is (tuple if key.type is list else key.type), key
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.model.lookback = 3  # type: ignore[misc]


def test_a_key_missing_from_its_dataclass_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    extra = settings_values.Key("model", "baseline_ewma_lambda", float, 0.94)
    monkeypatch.setattr(settings, "KEYS", [*settings.KEYS, extra])
    assert any("baseline_ewma_lambda" in p for p in settings.declaration_problems())


def test_precedence_file_then_env_then_flags(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", {"exchange": {"id": "kraken", "timeout_ms": 500},
                                            "model": {"lookback": 100}})
    env = {"TICKCAST_MODEL__LOOKBACK": "120", "TICKCAST_MODEL__HORIZONS": "1,2,3",
           "TICKCAST_EXCHANGE__SYMBOLS": "BTC/USD"}
    s = settings.load(cfg, env=env, overrides={"exchange.api_url": "http://127.0.0.1:9",
                                               "model.hidden": 12})
    assert s.exchange.id == "kraken" and s.exchange.timeout_ms == 500
    assert s.model.lookback == 120 and s.model.horizons == (1, 2, 3)
    assert s.exchange.symbols == ("BTC/USD",)
    assert s.exchange.api_url == "http://127.0.0.1:9" and s.model.hidden == 12
    assert s.sources["model.lookback"] == "env" and s.sources["model.hidden"] == "flag"


def test_state_directory_sets_the_store_unless_configured(tmp_path: Path) -> None:
    s = settings.load(None, env={"STATE_DIRECTORY": "/var/lib/tickcast"})
    assert s.storage.url == "sqlite:////var/lib/tickcast/tickcast.db"
    s = settings.load(None, env={"STATE_DIRECTORY": "/var/lib/tickcast",
                                 "TICKCAST_STORAGE__URL": "sqlite:////tmp/x.db"})
    assert s.storage.url == "sqlite:////tmp/x.db"


def test_configuration_directory_supplies_the_file_unless_one_is_given(tmp_path: Path) -> None:
    write_config(tmp_path / "config.toml", {"model": {"lookback": 99}})
    env = {"CONFIGURATION_DIRECTORY": str(tmp_path)}
    assert settings.load_for_command(None, None, None, env).model.lookback == 99
    other = write_config(tmp_path / "other.toml", {"model": {"lookback": 77}})
    assert settings.load_for_command(str(other), None, None, env).model.lookback == 77
    empty = tmp_path / "empty"
    empty.mkdir()  # the directory without a config.toml: the defaults serve
    assert settings.load_for_command(None, None, None, {"CONFIGURATION_DIRECTORY": str(empty)}
                                     ).model.lookback == 240


def test_overrides_and_benchmark_text_name_unknown_keys() -> None:
    assert settings.parse_override("model.horizons", "1,2") == [1, 2]
    with pytest.raises(ConfigError, match=r"model\.nope"):
        settings.load(None, env={}, overrides={"model.nope": 3})


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
        "deploy/config.example.toml is stale: regenerate it from daemon.config.settings.example_toml()")
    settings.load(example, env={})
