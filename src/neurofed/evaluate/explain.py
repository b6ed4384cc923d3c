"""Grad-CAM heat maps of a multi-task network's classification heads (MONAI ``GradCAM``).

What drove a marker call? For each head (IDH, 1p/19q, MGMT and the WHO grade) :func:`head_heatmaps`
weighs the activations of the network's deepest encoder block by the gradient of that head's
logit (the grade: of the predicted grade's logit), keeps the positive part and upsamples it to the
input (MONAI's ``GradCAM``, normalised to [0, 1] per map). :func:`top_share_inside` then says how
much of the hottest tenth of the brain lies inside a mask (the predicted tumour): a map whose heat
sits outside the tumour deserves a sceptical reader.

Examples
--------
>>> import numpy as np
>>> heat = np.zeros((10, 10, 10)); heat[2:4, 2:4, 2:4] = 1.0
>>> inside = np.zeros((10, 10, 10), bool); inside[:5, :5, :5] = True
>>> round(top_share_inside(heat, inside, np.ones((10, 10, 10), bool)), 2)
1.0
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional as nnf

__all__ = ["TOP_FRACTION", "head_heatmaps", "top_share_inside"]

#: The hottest share of the brain :func:`top_share_inside` looks at.
TOP_FRACTION = 0.10


class _Head(nn.Module):
    """One head of a network that returns a dict, as the ``(B, K)`` logits GradCAM expects."""

    def __init__(self, model: nn.Module, key: str) -> None:
        super().__init__()
        self.model, self.key = model, key

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(image)[self.key]
        return logits.unsqueeze(1) if logits.dim() == 1 else logits


def _last_encoder_block(model: nn.Module) -> str:
    encoder = getattr(model, "encoder", None)
    if not isinstance(encoder, nn.ModuleList) or not len(encoder):
        raise ValueError(
            f"{type(model).__name__} has no encoder blocks to explain; Grad-CAM needs the "
            "multi-task U-Net (glioma-multitask)"
        )
    return f"model.encoder.{len(encoder) - 1}"


def head_heatmaps(
    model: nn.Module,
    image: torch.Tensor,
    heads: Sequence[str],
    divisor: Sequence[int],
) -> dict[str, npt.NDArray[np.float32]]:
    """Grad-CAM of each head in ``heads`` for ``image`` ``(1, C, X, Y, Z)``: ``(X, Y, Z)`` maps
    in [0, 1] on the image's grid. The image is zero-padded to a multiple of ``divisor`` for the
    pass (as whole-volume inference does) and the maps cropped back."""
    from monai.visualize.class_activation_maps import GradCAM

    shape = tuple(int(n) for n in image.shape[2:])
    pad: list[int] = []
    for size, d in zip(reversed(shape), reversed(list(divisor)), strict=True):
        pad.extend((0, -(-size // int(d)) * int(d) - size))
    padded = nnf.pad(image, pad) if any(pad) else image
    was_training = model.training
    model.eval()
    maps: dict[str, npt.NDArray[np.float32]] = {}
    try:
        with torch.enable_grad():
            for key in heads:
                wrapped = _Head(model, key)
                cam = GradCAM(nn_module=wrapped, target_layers=_last_encoder_block(model))
                logits = wrapped(padded)
                index = int(logits.argmax(dim=1)[0]) if logits.shape[1] > 1 else 0
                heat = cam(padded, class_idx=index)  # (1, 1, X', Y', Z')
                x, y, z = shape
                maps[key] = heat[0, 0, :x, :y, :z].detach().cpu().numpy().astype(np.float32)
    finally:
        model.train(was_training)
    return maps


def top_share_inside(
    heat: npt.NDArray[np.floating],
    inside: npt.NDArray[np.bool_],
    brain: npt.NDArray[np.bool_] | None = None,
    fraction: float = TOP_FRACTION,
) -> float:
    """The share of the hottest ``fraction`` of ``brain`` (default: everywhere) that lies in
    ``inside``: the ``ceil(fraction * n)`` hottest voxels, only those with some heat (zero heat
    is no evidence); NaN when no voxel of the brain has any."""
    region = np.ones(heat.shape, bool) if brain is None else np.asarray(brain, bool)
    values = np.asarray(heat, np.float64)[region]
    within = np.asarray(inside, bool)[region]
    hot = values > 0
    if not hot.any():
        return float("nan")
    count = min(int(np.ceil(fraction * values.size)), int(hot.sum()))
    top = np.argsort(-values, kind="stable")[:count]
    return float(within[top].mean())
