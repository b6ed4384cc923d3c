"""``multitask-unet``: segmentation plus marker and grade heads (after Ren et al.).

Encoder: four levels of :class:`monai.networks.blocks.UnetBasicBlock` (two conv-norm-LeakyReLU)
with ``base_filters · 2**i`` channels (16, 32, 64, 128 by default), separated by ``num_pools``
max-pooling stages of size ``pool_size`` — ``(1, 2, 2)`` keeps the first spatial axis at full
resolution. Decoder: :class:`monai.networks.blocks.UnetUpBlock` (transposed convolution of the
pooling size, concatenation with the encoder skip, basic block), then a 1×1×1 segmentation
head. From the global-average-pooled bottleneck features (dropout, then one linear layer each)
come the heads IDH, 1p/19q and MGMT (one logit each) and grade (``num_grades`` logits: II/III/IV).

Inputs must be multiples of ``pool_size[i] ** num_pools`` along axis ``i``
(:meth:`MultitaskUNetConfig.spatial_divisor`): ``(1, 8, 8)`` by default, with more than one
voxel at the bottleneck (instance norm needs it), e.g. ``(2, 16, 16)`` or ``(8, 16, 16)``.

The forward pass returns a dict keyed by :class:`OutputKey` (never positional tuples).

Examples
--------
>>> import torch
>>> net = MultitaskUNet(MultitaskUNetConfig(base_filters=4), in_channels=4, out_channels=1)
>>> out = net(torch.zeros(2, 4, 3, 8, 8))
>>> {str(k): tuple(v.shape) for k, v in out.items()}  # doctest: +NORMALIZE_WHITESPACE
{'segmentation': (2, 1, 3, 8, 8), 'idh': (2,), 'codel_1p19q': (2,), 'mgmt': (2,),
 'grade': (2, 3)}
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetOutBlock, UnetUpBlock
from torch import nn

from neurofed.config import ConfigBase, is_positive_int, require
from neurofed.keys import OutputKey
from neurofed.models.norm import U_NET_NORMS, Norm, coerce_norm

__all__ = ["MultitaskUNet", "MultitaskUNetConfig", "build_multitask_unet"]


#: Heads predicting one binary marker each.
BINARY_HEADS = (OutputKey.IDH, OutputKey.CODEL_1P19Q, OutputKey.MGMT)


@dataclass(frozen=True)
class MultitaskUNetConfig(ConfigBase):
    """Configuration of ``multitask-unet``.

    Parameters
    ----------
    base_filters
        Channels at the first level, doubled per level (Ren et al.: 16).
    num_pools
        Down-sampling stages (levels = ``num_pools + 1``).
    pool_size
        Max-pooling (and up-sampling) size per axis.
    num_grades
        Logits of the grade head (II, III, IV).
    dropout
        Dropout before the classification heads.
    norm
        Feature normalisation.
    """

    base_filters: int = 16
    num_pools: int = 3
    pool_size: tuple[int, int, int] = (1, 2, 2)
    num_grades: int = 3
    dropout: float = 0.0
    norm: Norm = Norm.INSTANCE

    def __post_init__(self) -> None:
        require(is_positive_int(self.base_filters), self, "base_filters", "use an integer >= 1")
        require(is_positive_int(self.num_pools), self, "num_pools", "use an integer >= 1")
        require(
            isinstance(self.pool_size, tuple)
            and len(self.pool_size) == 3
            and all(is_positive_int(p) for p in self.pool_size),
            self,
            "pool_size",
            "give three positive integers, e.g. (1, 2, 2)",
        )
        require(
            is_positive_int(self.num_grades) and self.num_grades >= 2,
            self,
            "num_grades",
            "use an integer >= 2 (WHO grades II/III/IV: 3)",
        )
        require(
            isinstance(self.dropout, int | float) and 0.0 <= self.dropout < 1.0,
            self,
            "dropout",
            "use a number in [0, 1)",
        )
        object.__setattr__(self, "dropout", float(self.dropout))
        coerce_norm(self, U_NET_NORMS)

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels per level, encoder top to bottleneck."""
        return tuple(self.base_filters * 2**i for i in range(self.num_pools + 1))

    def spatial_divisor(self) -> tuple[int, int, int]:
        """Input axis ``i`` must be a multiple of ``pool_size[i] ** num_pools``."""
        x, y, z = (p**self.num_pools for p in self.pool_size)
        return (x, y, z)


class MultitaskUNet(nn.Module):
    """3D U-Net with a segmentation head and marker / grade heads on the bottleneck.

    Parameters
    ----------
    config
        The architecture.
    in_channels
        Input modalities.
    out_channels
        Segmentation channels (1 for the T2-hyperintense region).
    """

    def __init__(self, config: MultitaskUNetConfig, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.config = config
        norm = config.norm.value
        ch = config.channels
        pool = config.pool_size
        self.encoder = nn.ModuleList(
            UnetBasicBlock(3, c_in, c_out, kernel_size=3, stride=1, norm_name=norm)
            for c_in, c_out in zip((in_channels, *ch[:-1]), ch, strict=True)
        )
        self.pool = nn.MaxPool3d(kernel_size=pool, stride=pool)
        self.decoder = nn.ModuleList(
            UnetUpBlock(
                3,
                ch[i + 1],
                ch[i],
                kernel_size=3,
                stride=1,
                upsample_kernel_size=pool,
                norm_name=norm,
            )
            for i in reversed(range(config.num_pools))
        )
        self.segmentation_head = UnetOutBlock(3, ch[0], out_channels)
        self.dropout = nn.Dropout(config.dropout)
        self.heads = nn.ModuleDict(
            {
                **{str(key): nn.Linear(ch[-1], 1) for key in BINARY_HEADS},
                str(OutputKey.GRADE): nn.Linear(ch[-1], config.num_grades),
            }
        )

    def _encode(self, image: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips: list[torch.Tensor] = []
        x = image  # (B, C, X, Y, Z)
        for level, block in enumerate(self.encoder):
            if level > 0:
                skips.append(x)
                x = self.pool(x)  # (B, c, X/p0, Y/p1, Z/p2)
            x = block(x)
        return x, skips  # bottleneck (B, 8·base, X/p0³, Y/p1³, Z/p2³), skips top first

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, 8·base)``: the bottleneck averaged over space, what every marker head reads."""
        bottleneck, _ = self._encode(image)
        return bottleneck.mean(dim=(2, 3, 4))

    def classify(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        """The marker and grade logits of :meth:`features` (dropout applies in training)."""
        features = self.dropout(features)
        out: dict[str, torch.Tensor] = {}
        for key in BINARY_HEADS:
            logit: torch.Tensor = self.heads[str(key)](features)  # (B, 1)
            out[str(key)] = logit.squeeze(1)  # (B,)
        grade: torch.Tensor = self.heads[str(OutputKey.GRADE)](features)  # (B, num_grades)
        out[str(OutputKey.GRADE)] = grade
        return out

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map ``(B, C, X, Y, Z)`` to the dict of logits described by :class:`OutputKey`."""
        x, skips = self._encode(image)
        bottleneck = x
        for block, skip in zip(self.decoder, reversed(skips), strict=True):
            x = block(x, skip)  # (B, c, …) one level up
        segmentation: torch.Tensor = self.segmentation_head(x)  # (B, out, X, Y, Z)
        out = {str(OutputKey.SEGMENTATION): segmentation}
        return out | self.classify(bottleneck.mean(dim=(2, 3, 4)))


def build_multitask_unet(
    config: MultitaskUNetConfig, in_channels: int, out_channels: int
) -> nn.Module:
    """Build :class:`MultitaskUNet` (registry builder)."""
    return MultitaskUNet(config, in_channels, out_channels)
