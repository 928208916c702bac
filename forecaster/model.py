"""The seq2seq network: RNN encoder, RNN decoder, quantile head.

The encoder reads the lookback window of all symbols jointly. The decoder is
started from the encoder's final state and is fed only what is known about the
future (the calendar features of each future candle and the step number), so
it runs without teacher forcing and training equals inference. For each step
and symbol it emits three quantiles (10/50/90 %), kept ordered by construction:
the median plus and minus positive spreads.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

QUANTILES = (0.1, 0.5, 0.9)


class Seq2Seq(nn.Module):
    def __init__(self, n_features: int, n_symbols: int, horizon: int, *, hidden: int = 64,
                 layers: int = 2, dropout: float = 0.1, rnn: str = "gru", patch: int = 1,
                 n_future: int = 4) -> None:
        super().__init__()
        cell = {"gru": nn.GRU, "lstm": nn.LSTM}[rnn]
        drop = dropout if layers > 1 else 0.0
        self.n_symbols = n_symbols
        self.horizon = horizon
        self.patch = patch
        # The encoder reads the window in patches of `patch` consecutive candles
        # (their features side by side): the whole window is still seen, in a
        # quarter of the sequential RNN steps, which is what a CPU pays for.
        self.encoder = cell(n_features * patch, hidden, layers, batch_first=True, dropout=drop)
        self.decoder = cell(n_future + 1, hidden, layers, batch_first=True, dropout=drop)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_symbols * 3)
        # Start near "no change" with modest spreads: the naive forecast is the
        # right prior for prices, and warm starts begin from something sane.
        nn.init.zeros_(self.head.bias)
        with torch.no_grad():
            self.head.weight.mul_(0.1)
            self.head.bias.view(n_symbols, 3)[:, 1:] = 0.5

    def forward(self, x: torch.Tensor, future: torch.Tensor) -> torch.Tensor:
        """x (B, L, F), future (B, H, n_future) -> (B, H, S, 3): lower, median, upper."""
        b, n, f = x.shape
        if self.patch > 1:
            pad = (-n) % self.patch
            if pad:  # the oldest patch is padded with zeros (the scaled mean)
                x = torch.cat([x.new_zeros(b, pad, f), x], dim=1)
            x = x.reshape(b, (n + pad) // self.patch, self.patch * f)
        _, state = self.encoder(x)
        b, h, _ = future.shape
        step = torch.linspace(0.0, 1.0, h, device=future.device, dtype=future.dtype)
        dec_in = torch.cat([future, step.view(1, h, 1).expand(b, h, 1)], dim=2)
        out, _ = self.decoder(dec_in, state)
        q = self.head(self.drop(out)).view(b, h, self.n_symbols, 3)
        median = q[..., 0]
        lower = median - F.softplus(q[..., 1])
        upper = median + F.softplus(q[..., 2])
        return torch.stack([lower, median, upper], dim=-1)


def pinball(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean pinball (quantile) loss of (..., 3) predictions against (...) targets."""
    qs = torch.tensor(QUANTILES, device=pred.device, dtype=pred.dtype)
    diff = y.unsqueeze(-1) - pred
    return torch.maximum(qs * diff, (qs - 1) * diff).mean()
