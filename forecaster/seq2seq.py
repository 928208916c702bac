"""The seq2seq forecaster: volatility-normalised paths, warm-start retraining behind a
validation guard.

`learn` fits the normaliser (the volatility prior and volume scale) on the training part
of the history, trains a copy of the current network (or a new one, whose untrained band
is the prior's) for a bounded number of steps, and lets a time-ordered validation slice
decide: the copy is offered only if every loss was finite and validation is not worse
than the model in use on the same slice (a first model: not clearly worse than the
prior's band). On the offered model two things are fitted on that slice: how far the
median may move away from the last close per horizon (it stays put unless validation
shows skill beyond noise) and a conformal widening of the band so it covers about 80 %.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import torch

from . import calibration, checkpoint, windows
from .base import (
    Accepted,
    Forecast,
    History,
    LearnOutcome,
    NotEnoughData,
    RejectCode,
    Rejected,
    Stopped,
    TrainStats,
    UnusableOutput,
)
from .device import describe, resolve
from .model import Seq2Seq, pinball
from .optim import Adam
from .scaling import CLIP, Normaliser, Scales

WARMUP_ROWS = 100  # rows before the volatility EWMAs are trusted enough to end a window


@dataclass(frozen=True)
class Seq2SeqConfig:
    symbols: tuple[str, ...]
    step_ms: int
    lookback: int = 240
    horizon: int = 60  # steps decoded; forecasts can be asked for any 1..horizon
    rnn: str = "gru"
    hidden: int = 32
    layers: int = 2
    dropout: float = 0.1
    patch: int = 4
    learning_rate: float = 1e-3
    batch_size: int = 64
    initial_steps: int = 100
    retrain_steps: int = 10
    max_val_windows: int = 512
    val_fraction: float = 0.2
    min_windows: int = 64
    grad_clip: float = 1.0
    context: int = 2000  # candles of history a forecast reads (volatility levels)
    # A forecast of more than e^3 (20x) up or down within the horizon is a broken model,
    # not a view on a price; toy signals dressed as log prices may need more room.
    max_log_move: float = 3.0
    seed: int = 0
    device: str = "auto"

    # Fields that define the network's shape: a checkpoint must agree on all of them.
    SHAPE = ("symbols", "step_ms", "lookback", "horizon", "rnn", "hidden", "layers", "patch")

    @property
    def n_features(self) -> int:
        return 3 * len(self.symbols) + windows.TIME_FEATURES

    @property
    def n_future(self) -> int:
        return windows.TIME_FEATURES + 1 + 2 * len(self.symbols)


@dataclass(frozen=True)
class Fitted:
    """Everything a forecast needs, swapped in as one object (atomic for readers)."""

    net: Seq2Seq
    norm: Normaliser
    alpha: np.ndarray  # (H, S) shrink of the median
    gamma: np.ndarray  # (H,) weight of the network's band against the prior's
    widen: np.ndarray  # (H,) conformal adjustment of the band, in band widths
    version: str
    data_start_ts: int
    data_end_ts: int
    val_loss: float
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_network(self) -> bool:
        """Whether any forecast depends on the network (a median move or a band weight)."""
        return bool(np.any(self.alpha != 0) or np.any(self.gamma != 0))


@dataclass
class _Windows:
    """Training or validation windows of one history, normalised, on the device."""

    rows: torch.Tensor  # (n, F) raw row features
    ends: torch.Tensor  # (m,) row index of each window's last input row
    sigma1: torch.Tensor  # (m, S)
    fut: torch.Tensor  # (m, H, n_future)
    y: torch.Tensor  # (m, H, S) standardised targets
    scales: Scales
    moves: np.ndarray  # (m, H, S) raw cumulative log returns


class Seq2SeqForecaster:
    name = "seq2seq"
    joint = True

    def __init__(self, config: Seq2SeqConfig) -> None:
        self.config = config
        self.device = resolve(config.device)
        self.context = max(config.context, config.lookback + 1)
        self._fitted: Fitted | None = None

    # -- protocol ------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self._fitted is not None

    @property
    def version(self) -> str:
        return self._fitted.version if self._fitted else "untrained"

    @property
    def fitted(self) -> Fitted | None:
        return self._fitted

    def learn(self, history: History, *, should_stop: Callable[[], bool] | None = None,
              steps: int | None = None) -> LearnOutcome:
        """Train on `history` (warm start when a model exists); see the module doc."""
        cfg = self.config
        self._check_history(history)
        current = self._fitted
        n_steps = steps if steps is not None else (cfg.retrain_steps if current
                                                   else cfg.initial_steps)
        dev = describe(self.device)
        ends = windows.valid_ends(history, cfg.lookback, cfg.horizon)
        ends = ends[ends >= min(WARMUP_ROWS, len(history) // 4)]
        stats = TrainStats(n_windows=len(ends), device=dev)
        if len(ends) < cfg.min_windows:
            return Rejected(RejectCode.NOT_ENOUGH_DATA, f"not enough data: {len(ends)} "
                            f"complete windows, need {cfg.min_windows}", stats)
        # The newest windows validate; capped so a retrain stays cheap on a long window.
        n_val = min(cfg.max_val_windows, max(8, int(len(ends) * cfg.val_fraction)))
        # Embargo: no training target may reach into the validation targets.
        first_val_end = int(ends[len(ends) - n_val])
        train_ends = ends[ends <= first_val_end - cfg.horizon]
        val_ends = ends[len(ends) - n_val:]
        if len(train_ends) < cfg.min_windows // 2:
            return Rejected(RejectCode.NOT_ENOUGH_DATA, f"not enough data: {len(train_ends)} "
                            "training windows after the split", stats)
        seed = _seed(cfg.seed, int(history.ts[-1]))
        # The normaliser (the volatility prior and its band) is a handful of numbers fitted
        # on every window whose outcome is known; the network is what validation judges.
        norm = Normaliser.fit(history, ends, cfg.horizon)
        rows = windows.row_features(history)
        train = self._windows(history, rows, train_ends, norm)
        val = self._windows(history, rows, val_ends, norm)

        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed)
            start = copy.deepcopy(current.net) if current is not None else self._new_net()
            start.to(self.device)
            net = copy.deepcopy(start)
            rng = np.random.default_rng(seed)
            outcome = self._train(net, train, norm, n_steps, rng, should_stop)
        stats = TrainStats(len(ends), outcome["steps"], outcome["loss"], device=dev)
        if outcome["stopped"]:
            return Stopped("stopped: shutting down", stats)
        if outcome["error"]:
            return Rejected(RejectCode.NON_FINITE, outcome["error"], stats)
        # Two candidates under the refreshed normaliser: the trained network, and the
        # network it started from (untrained: the prior's own band). Validation picks.
        pred = self._predict(net, val, norm)  # (v, H, S, 3) standardised
        val_loss = float(pinball(pred, val.y))
        kept_pred = self._predict(start, val, norm)
        kept_loss = float(pinball(kept_pred, val.y))
        if not math.isfinite(val_loss) and not math.isfinite(kept_loss):
            return Rejected(RejectCode.NON_FINITE, "validation loss is not finite",
                            TrainStats(len(ends), outcome["steps"], outcome["loss"], device=dev))
        note = "trained network"
        if not math.isfinite(val_loss) or kept_loss < val_loss:
            net, pred, val_loss = start, kept_pred, kept_loss
            note = ("the prior's band (training did not beat it)" if current is None
                    else "network unchanged, prior refreshed (training did not help)")
        prev_loss: float | None = None
        if current is not None:
            prev = self._predict_raw(current, history, rows, val_ends)
            prev_loss = float(pinball(torch.as_tensor(prev / val.scales.path_sd[..., None],
                                                      dtype=torch.float32, device=self.device),
                                      val.y))
        stats = TrainStats(len(ends), outcome["steps"], outcome["loss"], val_loss, prev_loss,
                           dev)
        if current is not None and prev_loss is not None and (
                math.isfinite(prev_loss) and val_loss > prev_loss):
            return Rejected(RejectCode.WORSE_THAN_CURRENT,
                            f"validation {val_loss:.5f} worse than current {prev_loss:.5f}; "
                            f"keeping {current.version}", stats)
        raw = norm.unscale(pred.double().cpu().numpy(), val.scales)  # (v, H, S, 3) log returns
        alpha = calibration.shrink(raw[..., 1], val.moves)
        prior = _prior_band(norm, val.scales)
        gamma = calibration.band_weight(prior, (raw[..., 0], raw[..., 2]), val.moves)
        lo, _, hi = _blend(raw, prior, alpha, gamma)
        # The prior's band is calibrated already; only a band the network moved is widened.
        widen = calibration.widen(lo, hi, val.moves) * (gamma > 0)
        net.eval()
        version = _version(net, norm, np.concatenate([alpha.ravel(), gamma]), widen,
                           int(history.ts[-1]))
        fitted = Fitted(net=net, norm=norm, alpha=alpha, gamma=gamma, widen=widen,
                        version=version,
                        data_start_ts=int(history.ts[0]), data_end_ts=int(history.ts[-1]),
                        val_loss=val_loss)
        why = (f"validation {val_loss:.5f} <= current {prev_loss:.5f}; {note}" if current
               else f"first model, validation {val_loss:.5f}; {note}")
        return Accepted(fitted, fitted.version, why, stats)

    def adopt(self, candidate: Any) -> None:
        if not isinstance(candidate, Fitted):
            raise TypeError("not a seq2seq candidate")
        self._fitted = candidate

    def forecast(self, history: History, horizons: list[int]) -> list[Forecast]:
        fitted = self._fitted
        if fitted is None:
            raise NotEnoughData("seq2seq has no trained model yet")
        cfg = self.config
        if max(horizons) > cfg.horizon:
            raise ValueError(f"horizon {max(horizons)} beyond the model's {cfg.horizon}")
        self._check_history(history)
        if not windows.window_ok(history, cfg.lookback):
            raise NotEnoughData(f"window ending {history.ts[-1] if len(history) else '-'} is "
                                f"shorter than {cfg.lookback + 1} candles or has a hole")
        h = history.tail(self.context)
        sc = fitted.norm.scales_last(h, cfg.horizon)
        if not np.all(np.isfinite(sc.path_sd)) or np.any(sc.path_sd <= 0):
            raise NotEnoughData("no volatility estimate yet")
        if fitted.uses_network:
            rows = windows.row_features(h.tail(cfg.lookback + 1))[1:]
            x = fitted.norm.inputs(rows[None], sc.sigma1)
            fut = _future(h.ts[-1:], sc, cfg)
            with torch.inference_mode():
                q = fitted.net(torch.as_tensor(x, dtype=torch.float32, device=self.device),
                               torch.as_tensor(fut, dtype=torch.float32, device=self.device),
                               torch.as_tensor(fitted.norm.base, dtype=torch.float32,
                                               device=self.device))
            r = fitted.norm.unscale(q.double().cpu().numpy(), sc)  # (1, H, S, 3) log returns
        else:
            # Validation gave the network no weight anywhere: the forecast is the prior's
            # band around the last close, exactly, without running the network.
            r = np.zeros((1, cfg.horizon, len(cfg.symbols), 3))
        lo, med, hi = (a[0] for a in _apply(r, _prior_band(fitted.norm, sc), fitted))
        k = np.asarray(horizons) - 1
        used = np.stack([lo[k], med[k], hi[k]])
        if not np.all(np.isfinite(used)) or np.max(np.abs(used)) > cfg.max_log_move:
            raise UnusableOutput(f"model {fitted.version} produced non-finite or implausible "
                                 "returns; not forecasting with it")
        last = h.close[-1]
        return [Forecast(sym, hz, float(last[s]) * math.exp(med[hz - 1, s]),
                         float(last[s]) * math.exp(lo[hz - 1, s]),
                         float(last[s]) * math.exp(hi[hz - 1, s]))
                for s, sym in enumerate(cfg.symbols) for hz in horizons]

    # -- checkpoints -------------------------------------------------------------
    def dumps(self, candidate: Any | None = None) -> bytes:
        f = candidate if candidate is not None else self._fitted
        if not isinstance(f, Fitted):
            raise ValueError("nothing to save: no trained model")
        cfg = asdict(self.config)
        cfg.pop("device")
        meta = {
            "model": self.name, "version": f.version, "config": cfg,
            "normaliser": f.norm.to_json(), "alpha": f.alpha.tolist(),
            "gamma": f.gamma.tolist(), "widen": f.widen.tolist(), "data_start_ts": f.data_start_ts,
            "data_end_ts": f.data_end_ts, "val_loss": f.val_loss,
        }
        return checkpoint.dumps(f.net.state_dict(), meta)

    def loads(self, data: bytes, origin: str = "checkpoint") -> None:
        state, meta = checkpoint.loads(data, origin)
        if meta.get("model") != self.name:
            raise checkpoint.CheckpointError(f"{origin}: a {meta.get('model')!r} checkpoint")
        if meta.get("format") != checkpoint.FORMAT:
            raise checkpoint.CheckpointError(
                f"{origin}: checkpoint format {meta.get('format')} was made by an older "
                "seq2seq; a new model is trained instead")
        theirs = meta.get("config", {})
        mine = asdict(self.config)
        diffs = [f"{k} {theirs.get(k)!r} != {_norm(mine[k])!r}" for k in Seq2SeqConfig.SHAPE
                 if _norm(theirs.get(k)) != _norm(mine[k])]
        if diffs:
            raise checkpoint.CheckpointError(
                f"{origin}: made for another configuration ({'; '.join(diffs)})")
        net = self._new_net()
        try:
            net.load_state_dict(state, strict=True)
            norm = Normaliser.from_json(meta["normaliser"])
            alpha = np.asarray(meta["alpha"], float)
            gamma = np.asarray(meta["gamma"], float)
            widen = np.asarray(meta["widen"], float)
            version = str(meta["version"])
            span = int(meta["data_start_ts"]), int(meta["data_end_ts"])
            val_loss = float(meta["val_loss"])
        except (RuntimeError, KeyError, TypeError, ValueError) as e:
            raise checkpoint.CheckpointError(f"{origin}: weights do not fit: {str(e)[:200]}") \
                from e
        if alpha.shape != (self.config.horizon, len(self.config.symbols)) or \
                widen.shape != (self.config.horizon,) or gamma.shape != widen.shape:
            raise checkpoint.CheckpointError(f"{origin}: calibration has the wrong shape")
        for t in [*state.values(), torch.as_tensor(alpha), torch.as_tensor(gamma),
                  torch.as_tensor(widen)]:
            if not torch.isfinite(t).all():
                raise checkpoint.CheckpointError(f"{origin}: contains non-finite numbers")
        net.to(self.device).eval()
        self._fitted = Fitted(net, norm, alpha, gamma, widen, version, span[0], span[1],
                              val_loss, meta)

    # -- internals -----------------------------------------------------------------
    def _check_history(self, h: History) -> None:
        if tuple(h.symbols) != tuple(self.config.symbols) or h.step_ms != self.config.step_ms:
            raise ValueError(f"history of {h.symbols} at {h.step_ms} ms does not match the "
                             f"model's {self.config.symbols} at {self.config.step_ms} ms")

    def _new_net(self) -> Seq2Seq:
        c = self.config
        return Seq2Seq(c.n_features, len(c.symbols), c.horizon, hidden=c.hidden,
                       layers=c.layers, dropout=c.dropout, rnn=c.rnn, patch=c.patch,
                       n_future=c.n_future)

    def _windows(self, h: History, rows: np.ndarray, ends: np.ndarray,
                 norm: Normaliser) -> _Windows:
        cfg = self.config
        sc = norm.scales(h, ends, cfg.horizon)
        moves = windows.targets(h.close, ends, cfg.horizon)
        dev = self.device
        s = len(cfg.symbols)
        rows = rows.copy()
        rows[:, 2 * s:3 * s] = (rows[:, 2 * s:3 * s] - norm.vol_mean) / norm.vol_std
        return _Windows(
            rows=torch.as_tensor(rows, dtype=torch.float32, device=dev),
            ends=torch.as_tensor(ends, dtype=torch.long, device=dev),
            sigma1=torch.as_tensor(sc.sigma1, dtype=torch.float32, device=dev),
            fut=torch.as_tensor(_future(h.ts[ends], sc, cfg), dtype=torch.float32, device=dev),
            y=torch.as_tensor(norm.targets(moves, sc), dtype=torch.float32, device=dev),
            scales=sc, moves=moves,
        )

    def _train(self, net: Seq2Seq, w: _Windows, norm: Normaliser, n_steps: int,
               rng: np.random.Generator,
               should_stop: Callable[[], bool] | None) -> dict[str, Any]:
        cfg = self.config
        # Adam: robust to the very different gradient scales of the encoder and the head;
        # a constant rate because warm starts are short and many.
        opt = Adam(net.parameters(), lr=cfg.learning_rate)
        net.train()
        losses: list[float] = []
        m = len(w.ends)
        base = torch.as_tensor(norm.base, dtype=torch.float32, device=w.rows.device)
        for step in range(n_steps):
            if should_stop is not None and should_stop():
                return {"steps": step, "loss": _mean(losses), "error": None, "stopped": True}
            pos = torch.as_tensor(rng.choice(m, size=min(cfg.batch_size, m), replace=False),
                                  dtype=torch.long, device=w.rows.device)
            loss = pinball(net(self._x(w, pos), w.fut[pos], base), w.y[pos])
            if not torch.isfinite(loss):
                return {"steps": step, "loss": _mean(losses), "stopped": False,
                        "error": f"non-finite training loss at step {step}"}
            opt.zero_grad()
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
            if not torch.isfinite(norm):
                return {"steps": step, "loss": _mean(losses), "stopped": False,
                        "error": f"non-finite gradient at step {step}"}
            opt.step()
            losses.append(float(loss.detach()))
        net.eval()
        return {"steps": n_steps, "loss": _mean(losses[-max(1, n_steps // 4):]), "error": None,
                "stopped": False}

    def _x(self, w: _Windows, pos: torch.Tensor) -> torch.Tensor:
        s = len(self.config.symbols)
        offs = torch.arange(-self.config.lookback + 1, 1, device=w.rows.device)
        x = w.rows[w.ends[pos][:, None] + offs[None, :]].clone()  # (B, L, F)
        sig = w.sigma1[pos][:, None, :]
        x[..., :s] = x[..., :s] / sig
        x[..., s:2 * s] = x[..., s:2 * s] / sig
        # Exactly what Normaliser.inputs does for a forecast.
        return torch.nan_to_num(x.clamp(-CLIP, CLIP), nan=0.0)

    def _predict(self, net: Seq2Seq, w: _Windows, norm: Normaliser) -> torch.Tensor:
        net.eval()
        outs = []
        base = torch.as_tensor(norm.base, dtype=torch.float32, device=w.rows.device)
        with torch.inference_mode():
            for k in range(0, len(w.ends), 512):
                pos = torch.arange(k, min(k + 512, len(w.ends)), device=w.rows.device)
                outs.append(net(self._x(w, pos), w.fut[pos], base))
        return torch.cat(outs)

    def _predict_raw(self, f: Fitted, h: History, rows: np.ndarray,
                     ends: np.ndarray) -> np.ndarray:
        """A fitted model's quantiles (m, H, S, 3) of the raw log return, as it forecasts."""
        w = self._windows(h, rows, ends, f.norm)
        q = self._predict(f.net, w, f.norm).double().cpu().numpy()
        return f.norm.unscale(q, w.scales)


def _future(ts_end: np.ndarray, sc: Scales, cfg: Seq2SeqConfig) -> np.ndarray:
    """Decoder inputs (m, H, 5 + 2S): calendar, step, the prior's path shape, the regime."""
    m, horizon = len(ts_end), cfg.horizon
    cal = windows.future_time(ts_end, cfg.step_ms, horizon)
    step = np.broadcast_to(np.linspace(0.0, 1.0, horizon)[None, :, None], (m, horizon, 1))
    k = np.arange(1, horizon + 1, dtype=np.float64)[None, :, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        shape = np.log(sc.path_sd ** 2 / (k * sc.sigma1[:, None, :] ** 2))
    shape = np.clip(np.nan_to_num(shape), -3.0, 3.0)
    regime = np.broadcast_to(sc.regime[:, None, :], (m, horizon, sc.regime.shape[1]))
    return np.concatenate([cal, step, shape, regime], axis=2)


def _prior_band(norm: Normaliser, sc: Scales) -> tuple[np.ndarray, np.ndarray]:
    """The prior's own band (lower, upper), each (m, H, S) log returns around no change."""
    half = norm.base[None] * sc.path_sd
    return -half, half


def _blend(r: np.ndarray, prior: tuple[np.ndarray, np.ndarray], alpha: np.ndarray,
           gamma: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower, median, upper) (m, H, S): the shrunk median, the band gamma of the way from
    the prior's to the network's."""
    g = gamma[None, :, None]
    med = r[..., 1] * alpha[None]
    lo = (1 - g) * prior[0] + g * r[..., 0]
    hi = (1 - g) * prior[1] + g * r[..., 2]
    return lo, med, hi


def _apply(r: np.ndarray, prior: tuple[np.ndarray, np.ndarray],
           f: Fitted) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Calibrated (lower, median, upper) log returns (m, H, S) from raw quantiles."""
    lo, med, hi = _blend(r, prior, f.alpha, f.gamma)
    width = hi - lo
    w = f.widen[None, :, None]
    return np.minimum(lo - w * width, med), med, np.maximum(hi + w * width, med)


def _seed(base: int, end_ts: int) -> int:
    """A seed that depends only on the config seed and the data's end: runs are
    reproducible, and replay equals live for the same data."""
    h = hashlib.sha256(f"{base}:{end_ts}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def _version(net: Seq2Seq, norm: Normaliser, alpha: np.ndarray, widen: np.ndarray,
             end_ts: int) -> str:
    """Data end time plus a hash of everything that shapes a forecast."""
    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps(norm.to_json(), sort_keys=True).encode())
    h.update(np.ascontiguousarray(alpha).tobytes() + np.ascontiguousarray(widen).tobytes())
    when = datetime.fromtimestamp(end_ts / 1000, tz=UTC).strftime("%Y%m%dT%H%MZ")
    return f"{when}-{h.hexdigest()[:8]}"


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v
