"""Loss functions shared by the tasks, including masked terms for partly-known labels.

Masked terms average over the cases whose label is known; with no known case they return an exact
0 that stays connected to the graph (never NaN), so a batch without, say, MGMT labels simply
contributes nothing to the MGMT term.

Examples
--------
>>> import torch
>>> logits = torch.tensor([0.0, 2.0, -1.0])
>>> target = torch.tensor([1.0, float("nan"), 0.0])  # unknown value is ignored
>>> known = torch.tensor([True, False, True])
>>> round(float(masked_bce_with_logits(logits, target, known)), 4)
0.5032
>>> float(masked_bce_with_logits(logits, target, torch.zeros(3, dtype=torch.bool)))
0.0
"""

from __future__ import annotations

import torch
from torch.nn import functional as nnf

__all__ = [
    "masked_bce_with_logits",
    "masked_cross_entropy",
    "masked_l1",
    "mirrored_dice_loss",
    "soft_dice",
    "zero_loss",
]


def zero_loss(like: torch.Tensor) -> torch.Tensor:
    """An exact 0 that stays connected to the graph of ``like`` (so ``backward()`` works)."""
    return like.sum() * 0.0


def soft_dice(
    probabilities: torch.Tensor, target: torch.Tensor, dims: tuple[int, ...], smooth: float
) -> torch.Tensor:
    """``(2·Σ p·t + smooth) / (Σ p + Σ t + smooth)`` summed over ``dims``."""
    intersection = (probabilities * target).sum(dim=dims)
    return (2.0 * intersection + smooth) / (
        probabilities.sum(dim=dims) + target.sum(dim=dims) + smooth
    )


def mirrored_dice_loss(
    probabilities: torch.Tensor, target: torch.Tensor, smooth: float = 1e-7
) -> torch.Tensor:
    """FeTS's mirrored Dice loss over region channels.

    For each region channel, the soft Dice of the channel and the soft Dice of its complement
    (``1 - p`` against ``1 - t``) are averaged, each computed over all cases and voxels of the
    batch together (as FeTS); the loss is 1 minus the mean over regions.

    Parameters
    ----------
    probabilities, target
        ``(N, R, X, Y, Z)`` probabilities and 0/1 targets.
    smooth
        Added to numerator and denominator.
    """
    if probabilities.shape != target.shape or probabilities.dim() != 5:
        raise ValueError(
            f"expected matching (N, R, X, Y, Z) tensors; got {tuple(probabilities.shape)} and "
            f"{tuple(target.shape)}"
        )
    dims = (0, 2, 3, 4)
    foreground = soft_dice(probabilities, target, dims, smooth)  # (R,)
    background = soft_dice(1.0 - probabilities, 1.0 - target, dims, smooth)  # (R,)
    return 1.0 - ((foreground + background) / 2.0).mean()


def masked_bce_with_logits(
    logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor
) -> torch.Tensor:
    """Mean binary cross-entropy over the ``known`` cases of ``(B,)`` logits and 0/1 targets."""
    if not bool(known.any()):
        return zero_loss(logits)
    return nnf.binary_cross_entropy_with_logits(logits[known], target[known].to(logits.dtype))


def masked_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, known: torch.Tensor
) -> torch.Tensor:
    """Mean cross-entropy over the ``known`` cases of ``(B, K)`` logits and ``(B,)`` classes."""
    if not bool(known.any()):
        return zero_loss(logits)
    return nnf.cross_entropy(logits[known], target[known].long())


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the ``known`` cases of ``(B,)`` predictions and targets."""
    if not bool(known.any()):
        return zero_loss(prediction)
    return (prediction[known] - target[known].to(prediction.dtype)).abs().mean()
