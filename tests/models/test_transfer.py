"""Transfer modes: full fine-tuning vs last layer only."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neurofed.models import SFCN, FrozenBatchNorm, SFCNConfig, TransferMode, prepare_transfer


def _tiny_sfcn() -> SFCN:
    torch.manual_seed(0)
    return SFCN(SFCNConfig(width=0.0625), in_channels=1, out_channels=1)


def test_head_mode_freezes_everything_but_the_last_layer() -> None:
    # Prepare
    net = _tiny_sfcn()
    keys_before = list(net.state_dict())
    # Execute
    trainable = prepare_transfer(net, TransferMode.HEAD)
    # Assert
    assert trainable == ("head.weight", "head.bias")
    assert {n for n, p in net.named_parameters() if p.requires_grad} == set(trainable)
    assert list(net.state_dict()) == keys_before  # aggregation sees the same names


def test_head_mode_keeps_batch_norm_in_eval_even_after_train() -> None:
    # Prepare
    net = _tiny_sfcn()
    prepare_transfer(net, "head")
    stats_before = {k: v.clone() for k, v in net.state_dict().items() if "running" in k}
    # Execute: a training-mode forward pass and an optimiser step on the head.
    net.train()
    optimiser = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.1)
    net(torch.randn(2, 1, 32, 32, 32)).sum().backward()
    optimiser.step()
    # Assert: frozen BN did not update its statistics and stayed in eval mode.
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(isinstance(m, FrozenBatchNorm) and not m.training for m in norms)
    for key, value in stats_before.items():
        assert torch.equal(net.state_dict()[key], value), key
    assert net.training and net.head.training


def test_full_mode_freezes_nothing() -> None:
    net = _tiny_sfcn()
    for p in net.parameters():
        p.requires_grad_(False)
    trainable = prepare_transfer(net, TransferMode.FULL)
    assert all(p.requires_grad for p in net.parameters())
    assert trainable == tuple(n for n, _ in net.named_parameters())
    net.train()
    assert all(m.training for m in net.modules())


def test_head_mode_needs_a_named_last_layer() -> None:
    with pytest.raises(TypeError, match="no `head_name` attribute"):
        prepare_transfer(nn.Linear(2, 1), TransferMode.HEAD)


def test_unknown_mode_lists_the_modes() -> None:
    with pytest.raises(ValueError, match="use one of: full, head"):
        prepare_transfer(_tiny_sfcn(), "last-layer")
