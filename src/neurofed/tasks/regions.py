"""Nested glioma regions ET / TC / WT from internal label maps, and back.

With the internal :class:`~neurofed.keys.TumorLabel` numbering: ET = {ET}, TC = ET ∪ NCR and
WT = TC ∪ ED. Channel order everywhere is :data:`REGION_ORDER` (ET, TC, WT).

Examples
--------
>>> import torch
>>> label = torch.tensor([[0, 1, 2, 3]]).reshape(1, 4, 1, 1)  # BG, NCR, ED, ET
>>> labels_to_regions(label)[0, :, :, 0, 0].int().tolist()  # rows ET, TC, WT
[[0, 0, 0, 1], [0, 1, 0, 1], [0, 1, 1, 1]]
>>> regions_to_labels(labels_to_regions(label).bool()).flatten().tolist()
[0, 1, 2, 3]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import torch

from neurofed.keys import TumorLabel, TumorRegion

__all__ = ["REGION_LABELS", "REGION_ORDER", "labels_to_regions", "regions_to_labels"]

#: Channel order of region outputs and targets.
REGION_ORDER: tuple[TumorRegion, ...] = (TumorRegion.ET, TumorRegion.TC, TumorRegion.WT)

#: Internal labels making up each region.
REGION_LABELS: Mapping[TumorRegion, tuple[TumorLabel, ...]] = MappingProxyType(
    {
        TumorRegion.ET: (TumorLabel.ET,),
        TumorRegion.TC: (TumorLabel.NCR, TumorLabel.ET),
        TumorRegion.WT: (TumorLabel.NCR, TumorLabel.ED, TumorLabel.ET),
    }
)


def labels_to_regions(
    label: torch.Tensor, regions: Sequence[TumorRegion] = REGION_ORDER
) -> torch.Tensor:
    """One float 0/1 channel per region.

    Parameters
    ----------
    label
        ``(B, X, Y, Z)`` internal tumour labels.
    regions
        Which regions, in which order.

    Returns
    -------
    torch.Tensor
        ``(B, len(regions), X, Y, Z)`` float32.
    """
    channels = []
    for region in regions:
        members = torch.tensor([int(v) for v in REGION_LABELS[TumorRegion(region)]])
        channels.append(torch.isin(label, members.to(label.device)))  # (B, X, Y, Z)
    return torch.stack(channels, dim=1).to(torch.float32)  # (B, R, X, Y, Z)


def regions_to_labels(regions: torch.Tensor) -> torch.Tensor:
    """Turn ``(B, 3, X, Y, Z)`` ET / TC / WT masks into a ``(B, X, Y, Z)`` uint8 label map.

    WT voxels become ED, TC voxels NCR and ET voxels ET (inner regions win), so predictions that
    are not perfectly nested still give one label per voxel.
    """
    if regions.dim() != 5 or regions.shape[1] != len(REGION_ORDER):
        raise ValueError(
            f"regions has shape {tuple(regions.shape)}; "
            "expected (B, 3, X, Y, Z) in ET, TC, WT order"
        )
    masks = regions.bool()
    out = torch.zeros(masks[:, 0].shape, dtype=torch.uint8, device=regions.device)  # (B, X, Y, Z)
    out[masks[:, 2]] = int(TumorLabel.ED)
    out[masks[:, 1]] = int(TumorLabel.NCR)
    out[masks[:, 0]] = int(TumorLabel.ET)
    return out
