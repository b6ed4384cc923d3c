"""refresh_batch_norm: statistics at the current weights; frozen layers and empty input kept."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neurofed.models import FrozenBatchNorm
from neurofed.training.batch_norm import refresh_batch_norm


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv1d(1, 3, 1), nn.BatchNorm1d(3), nn.Conv1d(3, 3, 1), nn.BatchNorm1d(3)
    )
    net[1] = FrozenBatchNorm.from_batchnorm(net[1])
    with torch.no_grad():
        net[1].running_mean.fill_(0.5)
        net[3].running_mean.fill_(0.25)
    return net.eval()


def test_trainable_layers_get_the_average_of_the_batches_and_frozen_layers_keep_theirs() -> None:
    # Prepare
    net = _net()
    frozen = {k: v.clone() for k, v in net[1].state_dict().items()}
    batches = [torch.randn(4, 1, 5, generator=torch.Generator().manual_seed(k)) for k in range(3)]
    with torch.no_grad():
        means = torch.stack([net[2](net[1](net[0](b))).mean(dim=(0, 2)) for b in batches])
    # Execute
    refreshed = refresh_batch_norm(net, batches)
    # Assert
    assert refreshed and net.training is False
    assert all(torch.equal(net[1].state_dict()[k], v) for k, v in frozen.items())
    assert torch.allclose(net[3].running_mean, means.mean(dim=0), atol=1e-6)
    assert net[3].momentum == 0.1 and int(net[3].num_batches_tracked) == 3


def test_without_a_batch_the_statistics_stay_as_they_were() -> None:
    # Prepare
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    # Execute
    refresh_batch_norm(net, iter(()))
    # Assert
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    assert net[3].momentum == 0.1


def test_a_batch_that_fails_leaves_the_mode_and_momentum_as_they_were() -> None:
    # Prepare: the second batch has the wrong number of channels
    net = _net()
    batches = [torch.randn(2, 1, 5), torch.randn(2, 2, 5)]
    # Execute
    with pytest.raises(RuntimeError):
        refresh_batch_norm(net, batches)
    # Assert
    assert net.training is False and net[3].momentum == 0.1
