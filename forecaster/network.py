"""The seq2seq network: RNN encoder, RNN decoder, quantile head, and a linear highway.

The encoder reads the lookback window of all symbols jointly (returns and candle ranges in
units of the issue-time volatility, volume, calendar). The decoder is started from the
encoder's final state and is fed only what is known about the future (the calendar of
each future candle, the step number, and the shape of the volatility path the prior
expects), so it runs without teacher forcing and training equals inference. For each
step and symbol it emits three quantiles (10/50/90 %) of the standardised cumulative
return, kept ordered by construction: the median plus and minus positive spreads.

The highway adds to the median a linear map of the last `lags` standardised returns of
every symbol (LSTNet's autoregressive component): what is learnable in minute prices is a
lead of one market over the other by a minute or two, and a recurrent encoder has to carry
that through sixty recurrent steps, while the highway sees it directly. It is trained
with the rest of the network, by the same loss.

Untrained (the head and the highway start at zero), it answers "median 0, the prior's
band": the last close and the prior's own calibrated band. Training can only move it from
there, and validation decides whether what it learned is used.
"""

from __future__ import annotations

import torch
from torch import nn

QUANTILES = (0.1, 0.5, 0.9)


class Seq2Seq(nn.Module):
    def __init__(self, n_features: int, n_symbols: int, horizon: int, *, hidden: int = 32,
                 layers: int = 2, dropout: float = 0.1, rnn: str = "gru", patch: int = 1,
                 n_future: int = 5, lags: int = 2) -> None:
        super().__init__()
        cell = {"gru": nn.GRU, "lstm": nn.LSTM}[rnn]
        drop = dropout if layers > 1 else 0.0
        self.n_symbols = n_symbols
        self.patch = patch
        self.lags = lags
        # The encoder reads the window in patches of `patch` consecutive candles (their
        # features side by side): the whole window is still seen, in a fraction of the
        # sequential RNN steps, which is what a CPU pays for.
        self.encoder = cell(n_features * patch, hidden, layers, batch_first=True, dropout=drop)
        self.decoder = cell(n_future, hidden, layers, batch_first=True, dropout=drop)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, n_symbols * 3)
        nn.init.zeros_(self.head.bias)
        with torch.no_grad():
            self.head.weight.mul_(0.01)
        self.highway = nn.Linear(lags * n_symbols, horizon * n_symbols, bias=False)
        nn.init.zeros_(self.highway.weight)

    def forward(self, x: torch.Tensor, future: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """x (B, L, F) whose first S features are the standardised returns, future
        (B, H, n_future), base (H, S) the prior's band half-width -> (B, H, S, 3): lower,
        median, upper, in standardised units.

        The head's three outputs are the median and the log factors on the lower and upper
        half-widths of the prior's band: all zero, the band is exactly the prior's."""
        b, n, f = x.shape
        s = self.n_symbols
        recent = x[:, n - self.lags:, :s].reshape(b, self.lags * s)
        if self.patch > 1:
            pad = (-n) % self.patch
            if pad:  # the oldest patch is padded with zeros (the normalised mean)
                x = torch.cat([x.new_zeros(b, pad, f), x], dim=1)
            x = x.reshape(b, (n + pad) // self.patch, self.patch * f)
        _, state = self.encoder(x)
        out, _ = self.decoder(future, state)
        h = future.shape[1]
        q = self.head(self.drop(out)).view(b, h, s, 3)
        b_ = base[:h][None]
        median = q[..., 0] + self.highway(recent).view(b, -1, s)[:, :h]
        lower = median - b_ * torch.exp(q[..., 1].clamp(-3.0, 3.0))
        upper = median + b_ * torch.exp(q[..., 2].clamp(-3.0, 3.0))
        return torch.stack([lower, median, upper], dim=-1)


def pinball(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean pinball (quantile) loss of (..., 3) predictions against (...) targets."""
    qs = torch.tensor(QUANTILES, device=pred.device, dtype=pred.dtype)
    diff = y.unsqueeze(-1) - pred
    return torch.maximum(qs * diff, (qs - 1) * diff).mean()
