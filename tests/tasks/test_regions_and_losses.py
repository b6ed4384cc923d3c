"""Region construction and the shared losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from neurofed.keys import TumorLabel
from neurofed.tasks.losses import (
    masked_bce_with_logits,
    masked_cross_entropy,
    masked_l1,
    mirrored_dice_loss,
)
from neurofed.tasks.regions import labels_to_regions, regions_to_labels


def test_regions_follow_the_nesting_of_internal_labels() -> None:
    label = torch.tensor([0, TumorLabel.NCR, TumorLabel.ED, TumorLabel.ET]).reshape(1, 1, 1, 4)
    regions = labels_to_regions(label)[0, :, 0, 0]  # (3, 4): ET, TC, WT
    assert regions.tolist() == [[0, 0, 0, 1], [0, 1, 0, 1], [0, 1, 1, 1]]
    assert regions_to_labels(labels_to_regions(label)).tolist() == label.tolist()


def test_mirrored_dice_loss_by_hand() -> None:
    # Four voxels. ET perfect: Dice 1, mirror 1.
    # TC p=[1,0,0,0] vs t=[1,1,0,0]: Dice 2/3, mirror 2·2/(3+2) = 4/5 → 11/15.
    # WT p=0 vs t=1: Dice 0, mirror 0. Mean over regions 26/45 → loss 19/45.
    p = torch.tensor([[1.0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]).reshape(1, 3, 1, 1, 4)
    t = torch.tensor([[1.0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]).reshape(1, 3, 1, 1, 4)
    assert mirrored_dice_loss(p, t, smooth=0.0).item() == pytest.approx(19 / 45, abs=1e-7)


def test_mirrored_dice_pools_cases_of_the_batch() -> None:
    # Case 1 has the foreground, case 2 none: pooled Dice of p=t is 1 for both sides.
    t = torch.zeros(2, 1, 1, 1, 2)
    t[0, 0, 0, 0, 0] = 1.0
    assert float(mirrored_dice_loss(t.clone(), t, smooth=0.0)) == pytest.approx(0.0, abs=1e-7)


def test_masked_terms_by_hand_and_zero_without_known_cases() -> None:
    logits = torch.tensor([0.0, 2.0, 5.0], requires_grad=True)
    target = torch.tensor([1.0, 1.0, float("nan")])
    known = torch.tensor([True, True, False])
    bce = masked_bce_with_logits(logits, target, known)
    assert bce.item() == pytest.approx((math.log(2) + math.log1p(math.exp(-2))) / 2, rel=1e-6)
    bce.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert float(logits.grad[2]) == 0.0  # the unknown case gets no gradient
    none = torch.zeros(3, dtype=torch.bool)
    assert masked_bce_with_logits(logits, target, none).item() == 0.0
    assert float(masked_cross_entropy(torch.zeros(3, 3), torch.zeros(3), none)) == 0.0
    assert float(masked_l1(torch.zeros(3), torch.full((3,), float("nan")), none)) == 0.0


def test_masked_cross_entropy_and_l1_by_hand() -> None:
    known = torch.tensor([True, False, True])
    ce = masked_cross_entropy(torch.zeros(3, 3), torch.tensor([0, 9, 2]), known)
    assert float(ce) == pytest.approx(math.log(3), rel=1e-6)
    l1 = masked_l1(torch.tensor([1.0, 0.0, -1.0]), torch.tensor([0.5, float("nan"), 1.0]), known)
    assert float(l1) == pytest.approx((0.5 + 2.0) / 2)
