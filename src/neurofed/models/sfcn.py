"""``sfcn``: a compact 3D CNN for brain-age regression, after SFCN (Peng et al. 2021).

Five blocks of conv 3×3×3 → batch norm → max-pool 2 → ReLU with 32, 64, 128, 256, 256 channels,
then conv 1×1×1 to 64 → batch norm → ReLU, global average pooling, dropout and a final linear
layer to ``out_channels`` values (1 for regression, unlike the original's 40 age bins). Channel
widths are ``max(1, round(c · width))``.

``norm = "group"`` replaces every batch norm by a group norm (:func:`~neurofed.models.norm.
group_count` groups), which normalises each case on its own: what DP-SGD needs (a batch norm
mixes the cases of a batch), as Opacus's ``ModuleValidator.fix`` would convert it. Instance norm
is not offered: the last block's maps are a single voxel at 32³ inputs, where it gives zeros.

Any input of at least 32 voxels per axis works; multiples of 32 avoid the floor of max-pooling
dropping edge voxels (:meth:`SFCNConfig.spatial_divisor`). Batch norm in training needs more than
one value per channel: use batches of at least two when the input is 32 voxels wide. A group
norm of one channel per group (every width whose last block has 32 channels or fewer) is an
instance norm, so it needs inputs of 64 voxels or more on some axis. An input that leaves the
last block's norm one value at a time is refused, naming the input and the fix, instead of
training a network whose features are all zero.

The last layer is ``SFCN.head`` (:attr:`SFCN.head_name`), the one trained when transferring to a
new target with :func:`~neurofed.models.transfer.prepare_transfer` in ``head`` mode.

Examples
--------
>>> import torch
>>> net = SFCN(SFCNConfig(width=0.125), in_channels=1, out_channels=1)
>>> net.head_name, net.config.scaled_channels
('head', (4, 8, 16, 32, 32, 8))
>>> net.eval()(torch.zeros(2, 1, 32, 32, 32)).shape
torch.Size([2, 1])
>>> grouped = SFCN(SFCNConfig(width=0.125, norm="group"), 1, 1)
>>> type(grouped.features[0][1]).__name__, grouped.features[0][1].num_groups
('GroupNorm', 4)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from torch.jit._trace import is_tracing

from neurofed.config import ConfigBase, is_positive_int, require
from neurofed.models.norm import Norm, coerce_norm, group_count

__all__ = ["SFCN", "SFCNConfig", "build_sfcn"]


@dataclass(frozen=True)
class SFCNConfig(ConfigBase):
    """Configuration of ``sfcn``.

    Parameters
    ----------
    channels
        Channels of the pooling blocks, then of the final 1×1×1 block (SFCN: 32-64-128-256-256, 64).
    width
        Factor applied to every channel count.
    dropout
        Dropout before the final linear layer (SFCN: 0.5).
    norm
        ``"batch"`` (SFCN) or ``"group"`` (per-case statistics, for ``[privacy]``).
    """

    #: The normalisation DP-SGD can train (named in the refusal of a private batch-norm study).
    private_norm: ClassVar[Norm] = Norm.GROUP

    channels: tuple[int, ...] = (32, 64, 128, 256, 256, 64)
    width: float = 1.0
    dropout: float = 0.5
    norm: Norm = Norm.BATCH

    def __post_init__(self) -> None:
        require(
            isinstance(self.channels, tuple)
            and len(self.channels) >= 2
            and all(is_positive_int(c) for c in self.channels),
            self,
            "channels",
            "give at least two positive channel counts (pooling blocks, then the 1×1×1 block)",
        )
        require(
            isinstance(self.width, int | float) and 0 < self.width <= 16,
            self,
            "width",
            "use a factor in (0, 16], e.g. 1.0 (tests use 0.0625)",
        )
        require(
            isinstance(self.dropout, int | float) and 0.0 <= self.dropout < 1.0,
            self,
            "dropout",
            "use a number in [0, 1)",
        )
        object.__setattr__(self, "width", float(self.width))
        object.__setattr__(self, "dropout", float(self.dropout))
        coerce_norm(self, (Norm.BATCH, Norm.GROUP))  # instance norm of 1-voxel maps gives 0

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types; ``norm`` only when it is not batch norm (so existing studies and
        model folders keep their hashes)."""
        out = super().to_json()
        if self.norm is Norm.BATCH:
            out.pop("norm")
        return out

    @property
    def scaled_channels(self) -> tuple[int, ...]:
        """``channels`` times ``width``, rounded, at least 1."""
        return tuple(max(1, round(c * self.width)) for c in self.channels)

    @property
    def num_pools(self) -> int:
        """Number of max-pooling blocks."""
        return len(self.channels) - 1

    def spatial_divisor(self) -> tuple[int, int, int]:
        """``2 ** num_pools`` per axis (any size at least that large also works)."""
        d = 2**self.num_pools
        return (d, d, d)


def _norm(norm: Norm, channels: int) -> nn.Module:
    if norm is Norm.GROUP:
        return nn.GroupNorm(group_count(channels), channels)
    return nn.BatchNorm3d(channels)


class SFCN(nn.Module):
    """Simple fully convolutional network for regression from one 3D image.

    Parameters
    ----------
    config
        The architecture.
    in_channels
        Input modalities (1: T1).
    out_channels
        Regression outputs.
    """

    #: Name of the last layer (its parameters are ``head.weight`` and ``head.bias``).
    head_name: ClassVar[str] = "head"

    def __init__(self, config: SFCNConfig, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.config = config
        ch = config.scaled_channels
        blocks: list[nn.Module] = []
        for c_in, c_out in zip((in_channels, *ch[:-2]), ch[:-1], strict=True):
            blocks.append(
                nn.Sequential(
                    nn.Conv3d(c_in, c_out, kernel_size=3, padding=1),
                    _norm(config.norm, c_out),
                    nn.MaxPool3d(2),
                    nn.ReLU(),
                )
            )
        blocks.append(
            nn.Sequential(
                nn.Conv3d(ch[-2], ch[-1], kernel_size=1), _norm(config.norm, ch[-1]), nn.ReLU()
            )
        )
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(ch[-1], out_channels)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Map ``(B, C, X, Y, Z)`` to ``(B, out_channels)``.

        Raises
        ------
        ValueError
            An input too small for the network: a pooling block would get no voxel, or the
            last block's norm would normalise one value at a time (all zeros, or PyTorch's
            refusal of a batch norm in training).
        """
        if not is_tracing():  # exports trace the shapes the site already checked
            self._check_input(tuple(image.shape))
        x = self.features(image)  # (B, c, X/32, Y/32, Z/32)
        x = self.dropout(x.mean(dim=(2, 3, 4)))  # (B, c)
        out: torch.Tensor = self.head(x)  # (B, out_channels)
        return out

    def _check_input(self, shape: tuple[int, ...]) -> None:
        """Refuse an input whose last block's norm would see one value at a time."""
        batch, spatial = shape[0], shape[2:]
        divisor = 2**self.config.num_pools
        size = "×".join(map(str, spatial))
        final = math.prod(axis // divisor for axis in spatial)
        if final == 0:
            raise ValueError(
                f"SFCN: an input of {size} voxels is too small for {self.config.num_pools} "
                f"pooling blocks: give at least {divisor} voxels per axis (a larger "
                "preprocess.spatial_shape or a finer spacing)"
            )
        channels = self.config.scaled_channels[-1]
        if self.config.norm is Norm.GROUP:
            values = final * (channels // group_count(channels))
            fix = "or more than 32 channels in the last block (a larger width)"
        elif self.training:
            values = final * batch
            fix = "or a batch_size of at least 2"
        else:
            return
        if values < 2:
            raise ValueError(
                f"SFCN: the last block sees {final} voxel(s) of an input of {size} voxels, so "
                f"its {self.config.norm.value} norm normalises one value at a time (its "
                f"features would all be 0): give at least {2 * divisor} voxels on some axis "
                f"(a larger preprocess.spatial_shape or a finer spacing), {fix}"
            )


def build_sfcn(config: SFCNConfig, in_channels: int, out_channels: int) -> nn.Module:
    """Build :class:`SFCN` (registry builder)."""
    return SFCN(config, in_channels, out_channels)
