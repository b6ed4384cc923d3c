"""The SFCN refuses inputs its last block cannot normalise, naming the input and the fix."""

from __future__ import annotations

import pytest
import torch

from neurofed.models.sfcn import SFCN, SFCNConfig


def _net(**config: object) -> SFCN:
    return SFCN(SFCNConfig(width=0.0625, dropout=0.0, **config), 1, 1)  # type: ignore[arg-type]


def test_a_group_norm_of_one_channel_per_group_refuses_a_one_voxel_last_block() -> None:
    net = _net(norm="group").eval()  # 4 channels in the last block: 4 groups of one
    with pytest.raises(ValueError, match=r"32×32×32 voxels.*group norm.*at least 64 voxels"):
        net(torch.zeros(2, 1, 32, 32, 32))
    with pytest.raises(ValueError, match="one value at a time"):
        net.train()(torch.zeros(2, 1, 32, 32, 32))  # training too: it would learn nothing
    assert net.eval()(torch.zeros(1, 1, 64, 32, 32)).shape == (1, 1)  # two voxels: usable


def test_a_wide_group_norm_and_a_batch_norm_in_evaluation_take_a_one_voxel_last_block() -> None:
    wide = SFCN(SFCNConfig(width=1.0, norm="group"), 1, 1).eval()  # 64 channels: groups of 2
    assert wide(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 1)
    assert _net().eval()(torch.zeros(1, 1, 32, 32, 32)).shape == (1, 1)


def test_a_batch_norm_in_training_needs_two_values() -> None:
    net = _net().train()
    with pytest.raises(ValueError, match=r"batch norm.*batch_size of at least 2"):
        net(torch.zeros(1, 1, 32, 32, 32))
    assert net(torch.zeros(2, 1, 32, 32, 32)).shape == (2, 1)
    assert net(torch.zeros(1, 1, 64, 32, 32)).shape == (1, 1)


def test_an_input_smaller_than_the_pooling_refuses_with_the_size() -> None:
    with pytest.raises(ValueError, match=r"16×32×32 voxels is too small.*at least 32 voxels"):
        _net().eval()(torch.zeros(1, 1, 16, 32, 32))
