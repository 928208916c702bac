"""The hand-written Adam (`forecaster/optim.py`, written out to spare torch.optim's start-up)
pinned to torch.optim.Adam, as `daemon/core/timeframes.py` is pinned to ccxt: the same
parameters after the same steps, within float tolerance."""

from __future__ import annotations

import pytest
import torch

from forecaster.optim import Adam


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    # A frozen parameter and one that gets no gradient: both must be left alone.
    net[0].bias.requires_grad_(False)
    net.register_parameter("unused", torch.nn.Parameter(torch.ones(3)))
    return net


def _train(net: torch.nn.Module, opt: Adam | torch.optim.Adam, steps: int) -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 6, generator=gen)
        y = torch.randn(16, 2, generator=gen)
        opt.zero_grad()
        loss = ((net(x) - y) ** 2).mean() * 1e3  # gradients far from 1: the scaling matters
        loss.backward()
        opt.step()


@pytest.mark.parametrize("kw", [{}, {"lr": 3e-2, "betas": (0.8, 0.99), "eps": 1e-6}])
def test_the_hand_written_adam_takes_torch_adams_steps(kw: dict[str, object]) -> None:
    ours, theirs = _net(), _net()
    before = {k: v.detach().clone() for k, v in ours.named_parameters()}
    _train(ours, Adam(ours.parameters(), **kw), steps=8)  # type: ignore[arg-type]
    _train(theirs, torch.optim.Adam(theirs.parameters(), **kw), steps=8)  # type: ignore[arg-type]
    mine, want = dict(ours.named_parameters()), dict(theirs.named_parameters())
    for name, p in want.items():
        torch.testing.assert_close(mine[name], p, rtol=1e-5, atol=1e-6, msg=name)
    assert not torch.equal(mine["2.weight"], before["2.weight"])  # the steps did move it
    assert torch.equal(mine["0.bias"], before["0.bias"])  # frozen
    assert torch.equal(mine["unused"], before["unused"])  # no gradient
