"""The forecasters: a contract suite over every model, training guards, checkpoints, devices."""

from __future__ import annotations

import copy
import dataclasses
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from forecaster import checkpoint
from forecaster.base import History, NotEnoughData
from forecaster.baselines import Drift, Naive
from forecaster.seq2seq import Seq2SeqForecaster
from tests.helpers.forecaster import STEP, SYMS, sine_pair, small_config

HORIZONS = [1, 3, 8]


@pytest.fixture(scope="module")
def trained() -> Seq2SeqForecaster:
    f = Seq2SeqForecaster(small_config())
    res = f.learn(sine_pair())
    assert res.accepted, res.reason
    return f


def forecasters(trained: Seq2SeqForecaster) -> list[Any]:
    return [trained, Naive(lookback=32), Drift(lookback=32)]


@pytest.mark.parametrize("which", ["seq2seq", "naive", "drift"])
def test_contract_every_horizon_finite_for_every_symbol(trained: Seq2SeqForecaster,
                                                        which: str) -> None:
    f = {x.name: x for x in forecasters(trained)}[which]
    h = sine_pair()
    out = f.forecast(h, HORIZONS)
    assert {(o.symbol, o.horizon) for o in out} == {(s, k) for s in SYMS for k in HORIZONS}
    for o in out:
        assert np.isfinite(o.yhat) and o.yhat > 0
        assert o.lower is not None and o.upper is not None
        assert 0 < o.lower <= o.yhat <= o.upper
    assert isinstance(f.version, str) and f.version


@pytest.mark.parametrize("which", ["seq2seq", "naive", "drift"])
def test_contract_learn_does_not_mutate_its_input(trained: Seq2SeqForecaster, which: str) -> None:
    f = {x.name: x for x in forecasters(trained)}[which]
    f = copy.deepcopy(f)
    h = sine_pair(noise=0.001)
    before = (h.ts.copy(), h.close.copy(), h.volume.copy())
    f.learn(h)
    assert np.array_equal(h.ts, before[0])
    assert np.array_equal(h.close, before[1]) and np.array_equal(h.volume, before[2])


def test_contract_checkpoint_round_trip_gives_identical_forecasts(
        trained: Seq2SeqForecaster, tmp_path: Path) -> None:
    path = tmp_path / checkpoint.file_name("seq2seq", trained.version)
    trained.save(path)
    other = Seq2SeqForecaster(small_config())
    other.load(path)
    assert other.version == trained.version
    h = sine_pair()
    assert other.forecast(h, HORIZONS) == trained.forecast(h, HORIZONS)


def test_contract_fresh_and_trained_differ(trained: Seq2SeqForecaster) -> None:
    fresh = Seq2SeqForecaster(small_config())
    assert not fresh.ready and fresh.version == "untrained"
    with pytest.raises(NotEnoughData):
        fresh.forecast(sine_pair(), HORIZONS)
    barely = Seq2SeqForecaster(small_config())
    assert barely.learn(sine_pair(), steps=1).accepted
    a = barely.forecast(sine_pair(), HORIZONS)
    b = trained.forecast(sine_pair(), HORIZONS)
    assert a != b and barely.version != trained.version


def test_baselines_are_what_they_say(trained: Seq2SeqForecaster) -> None:
    h = sine_pair()
    last = h.close[-1]
    for o in Naive(lookback=32).forecast(h, HORIZONS):
        assert o.yhat == pytest.approx(last[SYMS.index(o.symbol)])
    up = History(h.ts, np.exp(np.linspace(0, 1, len(h)))[:, None] * np.ones((1, 2)), h.volume,
                 SYMS, STEP)
    d = {(o.symbol, o.horizon): o.yhat for o in Drift(lookback=32).forecast(up, HORIZONS)}
    step = 1 / (len(h) - 1)
    assert d[("BTC/USD", 8)] == pytest.approx(up.close[-1, 0] * np.exp(8 * step))


def test_noiseless_sine_pair_is_forecast_within_a_small_error(trained: Seq2SeqForecaster) -> None:
    h = sine_pair(2000)
    errs = []
    for end in range(1600, 1990, 7):
        w = h.upto(int(h.ts[end]))
        for o in trained.forecast(w, HORIZONS):
            actual = h.close[end + o.horizon, SYMS.index(o.symbol)]
            errs.append(abs(np.log(o.yhat / actual)))
    naive = [abs(np.log(h.close[e + k, s] / h.close[e, s])) for e in range(1600, 1990, 7)
             for s in range(2) for k in HORIZONS]
    assert np.mean(errs) < 0.003  # mean absolute log error under 0.3 %
    assert np.mean(errs) < 0.3 * np.mean(naive)


def test_same_data_and_seed_give_the_same_forecasts_on_cpu() -> None:
    h = sine_pair(900, noise=0.002)
    a, b = Seq2SeqForecaster(small_config()), Seq2SeqForecaster(small_config())
    assert a.learn(h).accepted and b.learn(h).accepted
    assert a.version == b.version
    assert a.forecast(h, HORIZONS) == b.forecast(h, HORIZONS)
    c = Seq2SeqForecaster(small_config(seed=1))
    c.learn(h)
    assert c.version != a.version


@pytest.mark.parametrize("current", ["better", "worse"])
def test_warm_start_retrain_is_guarded_by_validation(
        trained: Seq2SeqForecaster, monkeypatch: pytest.MonkeyPatch, current: str) -> None:
    """The guard compares the new weights with the current model on the same validation
    slice. The current model's predictions are made perfect ("better": the retrain must be
    rejected and the model kept) or far off ("worse": it must be accepted), so each case
    can only pass through its own branch of the guard."""
    seen: dict[str, Any] = {}
    real_predict = Seq2SeqForecaster._predict

    def predict(self: Seq2SeqForecaster, net: Any, data: Any, pos: Any) -> torch.Tensor:
        out = real_predict(self, net, data, pos)  # the new weights on the validation slice
        seen["y"], seen["new"] = data.y[pos], out
        return out

    def current_predictions(self: Seq2SeqForecaster, *_: Any) -> torch.Tensor:
        if current == "better":  # every quantile on the target: loss 0, unbeatable
            return seen["y"].unsqueeze(-1).expand_as(seen["new"]).clone()
        return seen["new"] + 10.0  # far off: any finite new loss beats it

    monkeypatch.setattr(Seq2SeqForecaster, "_predict", predict)
    monkeypatch.setattr(Seq2SeqForecaster, "_predict_with", current_predictions)
    f = copy.deepcopy(trained)
    before = _weights(f)
    res = f.learn(sine_pair(1600, noise=0.0005, seed=3))
    assert res.prev_val_loss is not None and res.val_loss is not None
    if current == "better":
        assert res.prev_val_loss == 0.0 < res.val_loss
        assert not res.accepted and "worse than current" in res.reason
        assert f.version == trained.version
        assert all(torch.equal(before[k], v) for k, v in _weights(f).items())
    else:
        assert res.accepted, res.reason
        assert res.val_loss <= res.prev_val_loss
        assert f.version != trained.version


def _weights(f: Seq2SeqForecaster) -> dict[str, torch.Tensor]:
    assert f.fitted is not None
    return {k: v.clone() for k, v in f.fitted.net.state_dict().items()}


def test_nan_in_a_training_batch_leaves_the_accepted_weights_unchanged(
        trained: Seq2SeqForecaster, monkeypatch: pytest.MonkeyPatch) -> None:
    f = copy.deepcopy(trained)
    before, version = _weights(f), f.version
    real_batch = Seq2SeqForecaster._batch
    calls = {"n": 0}

    def poisoned(self: Seq2SeqForecaster, data: Any, pos: np.ndarray) -> Any:
        x, fut = real_batch(self, data, pos)
        calls["n"] += 1
        if calls["n"] == 5:
            x = x.clone()
            x[0, 0, 0] = float("nan")
        return x, fut

    monkeypatch.setattr(Seq2SeqForecaster, "_batch", poisoned)
    res = f.learn(sine_pair(1500, noise=0.001, seed=5))
    assert not res.accepted and "non-finite" in res.reason
    assert f.version == version
    after = _weights(f)
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_an_absurd_learning_rate_is_rejected(trained: Seq2SeqForecaster) -> None:
    f = copy.deepcopy(trained)
    f.config = dataclasses.replace(f.config, learning_rate=1e4)
    before, version = _weights(f), f.version
    res = f.learn(sine_pair(1500, noise=0.001, seed=6))
    assert not res.accepted, res.reason
    assert f.version == version
    assert all(torch.equal(before[k], v) for k, v in _weights(f).items())


def test_too_little_data_is_refused_with_a_reason() -> None:
    f = Seq2SeqForecaster(small_config())
    res = f.learn(sine_pair(60))
    assert not res.accepted and "not enough data" in res.reason and not f.ready


def test_a_window_with_a_hole_is_not_forecast_from(trained: Seq2SeqForecaster) -> None:
    h = sine_pair()
    close = h.close.copy()
    close[-5, 1] = np.nan
    holed = History(h.ts, close, h.volume, SYMS, STEP)
    with pytest.raises(NotEnoughData, match="hole"):
        trained.forecast(holed, HORIZONS)


def test_stop_request_ends_training_without_accepting(trained: Seq2SeqForecaster) -> None:
    f = copy.deepcopy(trained)
    res = f.learn(sine_pair(noise=0.001), should_stop=lambda: True)
    assert not res.accepted and "stopped" in res.reason and f.version == trained.version


# -- checkpoints ---------------------------------------------------------------

def test_checkpoint_of_another_configuration_is_refused_and_the_model_kept(
        trained: Seq2SeqForecaster, tmp_path: Path) -> None:
    p = tmp_path / "a.ckpt"
    trained.save(p)
    other = Seq2SeqForecaster(small_config(hidden=24))
    with pytest.raises(checkpoint.CheckpointError, match="another configuration.*hidden"):
        other.load(p)
    assert not other.ready
    keep = copy.deepcopy(trained)
    wrong = Seq2SeqForecaster(small_config(lookback=40))
    wrong.learn(sine_pair(), steps=2)
    q = tmp_path / "b.ckpt"
    wrong.save(q)
    with pytest.raises(checkpoint.CheckpointError, match="lookback"):
        keep.load(q)
    assert keep.version == trained.version


def test_newer_checkpoint_format_is_refused(trained: Seq2SeqForecaster, tmp_path: Path) -> None:
    p = tmp_path / "new.ckpt"
    torch.save({"format": checkpoint.FORMAT + 1, "meta": "{}", "state": {}}, p)
    with pytest.raises(checkpoint.CheckpointError, match="newer"):
        Seq2SeqForecaster(small_config()).load(p)


class _Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch /tmp/tickcast-pwned",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path) -> None:
    marker = Path("/tmp/tickcast-pwned")
    marker.unlink(missing_ok=True)
    p = tmp_path / "evil.ckpt"
    torch.save({"format": 1, "meta": "{}", "state": {"w": torch.zeros(1)}, "x": _Exploit()}, p)
    with open(p, "rb") as f:  # the file really is a code-running pickle (zip with data.pkl)
        assert b"system" in f.read()
    with pytest.raises(checkpoint.CheckpointError, match="refused"):
        checkpoint.read(p)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_damaged_checkpoints_are_refused(trained: Seq2SeqForecaster, tmp_path: Path,
                                         damage: str) -> None:
    p = tmp_path / "d.ckpt"
    trained.save(p)
    data = p.read_bytes()
    p.write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(2000),
                   "empty": b""}[damage])
    with pytest.raises(checkpoint.CheckpointError):
        Seq2SeqForecaster(small_config()).load(p)


def test_random_bytes_are_always_refused_as_a_checkpoint(tmp_path: Path) -> None:
    """Damaged files fail inside torch's unpickler in many ways (IndexError, KeyError, a
    warning about an odd pickle protocol...); every one must become CheckpointError, or a
    corrupted file would crash the daemon's start-up instead of falling back."""
    rng = random.Random(7)
    p = tmp_path / "seq2seq-x.ckpt"
    for _ in range(400):  # about 1 in 15 escaped before the boundary caught everything
        p.write_bytes(rng.randbytes(rng.choice([50, 300, 5000])))
        with pytest.raises(checkpoint.CheckpointError):
            checkpoint.read(p)


def test_writes_are_atomic_owner_only_and_temp_files_never_loaded(
        trained: Seq2SeqForecaster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "ck" / "m.ckpt"
    trained.save(p)
    assert p.stat().st_mode & 0o777 == 0o600
    good = p.read_bytes()

    def boom(*a: Any, **k: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        trained.save(p)
    monkeypatch.undo()
    assert p.read_bytes() == good  # the previous checkpoint is intact
    assert [x.name for x in p.parent.iterdir()] == ["m.ckpt"]  # no temp debris
    tmp = p.parent / ".tmp-1-m.ckpt"
    tmp.write_bytes(good)
    with pytest.raises(checkpoint.CheckpointError, match="temporary"):
        checkpoint.read(tmp)


def test_only_the_last_k_checkpoints_are_kept(trained: Seq2SeqForecaster, tmp_path: Path) -> None:
    paths = []
    for i in range(6):
        p = tmp_path / f"seq2seq-v{i}.ckpt"
        trained.save(p)
        os.utime(p, ns=(i * 10**9, i * 10**9))
        paths.append(p)
    removed = checkpoint.prune(tmp_path, "seq2seq", keep=3, protect={paths[0]})
    assert {p.name for p in removed} == {"seq2seq-v1.ckpt", "seq2seq-v2.ckpt"}
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "seq2seq-v0.ckpt", "seq2seq-v3.ckpt", "seq2seq-v4.ckpt", "seq2seq-v5.ckpt"]


def _devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", _devices())
def test_the_same_checkpoint_loads_on_every_available_device(
        trained: Seq2SeqForecaster, tmp_path: Path, device: str) -> None:
    p = tmp_path / "dev.ckpt"
    trained.save(p)
    f = Seq2SeqForecaster(small_config(device=device))
    f.load(p)
    assert f.fitted is not None
    assert next(f.fitted.net.parameters()).device.type == device
    a = f.forecast(sine_pair(), HORIZONS)
    b = trained.forecast(sine_pair(), HORIZONS)
    for x, y in zip(a, b, strict=True):
        assert x.yhat == pytest.approx(y.yhat, rel=1e-5)


def test_cuda_asked_for_without_a_gpu_is_a_clear_error() -> None:
    from forecaster.device import DeviceError, resolve

    if torch.cuda.is_available():
        assert resolve("cuda").type == "cuda"
    else:
        with pytest.raises(DeviceError, match="no CUDA"):
            resolve("cuda")
    assert resolve("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
