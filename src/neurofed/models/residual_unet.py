"""``residual-unet``: the FeTS 3D U-Net with residual units (MONAI ``UNet``).

The network has ``depth`` resolution levels with ``base_filters · 2**i`` channels at level ``i``
and stride-2 down-sampling between levels, each level made of ``num_res_units`` residual units.
Input sizes must be multiples of ``2 ** (depth - 1)`` on every axis
(:meth:`ResidualUNetConfig.spatial_divisor`; 16 for the default depth 5), and the bottleneck must
keep more than one voxel (instance norm needs it): e.g. twice the divisor along one axis.

``upsample`` chooses how the decoder doubles the resolution: ``"transposed"`` (MONAI's
transposed convolution, the default) or ``"trilinear"``: the same convolution at the coarse
level followed by trilinear interpolation, as FeTS's GaNDLF decoders interpolate. Both cost the
same multiply-adds; the second has no transposed convolution, which OpenVINO's CPU plugin runs
in FP32 even in an INT8 model (``docs/export.md``).

Examples
--------
>>> import torch
>>> config = ResidualUNetConfig(base_filters=4, depth=3)
>>> net = build_residual_unet(config, in_channels=4, out_channels=3)
>>> config.spatial_divisor()
(4, 4, 4)
>>> net(torch.zeros(1, 4, 8, 8, 12)).shape
torch.Size([1, 3, 8, 8, 12])
>>> resized = build_residual_unet(
...     ResidualUNetConfig(base_filters=4, depth=3, upsample="trilinear"), 4, 3
... )
>>> resized(torch.zeros(1, 4, 8, 8, 12)).shape
torch.Size([1, 3, 8, 8, 12])
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from monai.networks.blocks.convolutions import Convolution, ResidualUnit
from monai.networks.nets.unet import UNet
from torch import nn

from neurofed.config import ConfigBase, coerce_enum, is_positive_int, require
from neurofed.models.norm import U_NET_NORMS, Norm, coerce_norm

__all__ = ["ResidualUNetConfig", "Upsample", "build_residual_unet"]


class Upsample(StrEnum):
    """How the decoder doubles the resolution."""

    TRANSPOSED = "transposed"  # a stride-2 transposed convolution (MONAI's UNet)
    TRILINEAR = "trilinear"  # a convolution at the coarse level, then trilinear interpolation


@dataclass(frozen=True)
class ResidualUNetConfig(ConfigBase):
    """Configuration of ``residual-unet``.

    Parameters
    ----------
    base_filters
        Channels at the first level, doubled per level (FeTS used 30).
    depth
        Number of resolution levels (``depth - 1`` down-samplings).
    num_res_units
        Residual units per level.
    dropout
        Dropout probability inside the units.
    norm
        Feature normalisation.
    upsample
        ``"transposed"`` or ``"trilinear"`` (module docstring).
    """

    base_filters: int = 16
    depth: int = 5
    num_res_units: int = 2
    dropout: float = 0.0
    norm: Norm = Norm.INSTANCE
    upsample: Upsample = Upsample.TRANSPOSED

    def __post_init__(self) -> None:
        require(is_positive_int(self.base_filters), self, "base_filters", "use an integer >= 1")
        require(
            is_positive_int(self.depth) and self.depth >= 2,
            self,
            "depth",
            "use an integer >= 2 (levels; depth - 1 down-samplings)",
        )
        require(
            isinstance(self.num_res_units, int) and self.num_res_units >= 0,
            self,
            "num_res_units",
            "use an integer >= 0 (FeTS: 2)",
        )
        require(
            isinstance(self.dropout, int | float) and 0.0 <= self.dropout < 1.0,
            self,
            "dropout",
            "use a number in [0, 1)",
        )
        object.__setattr__(self, "dropout", float(self.dropout))
        coerce_norm(self, U_NET_NORMS)
        coerce_enum(self, "upsample", Upsample)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types; ``upsample`` only when it is not the default (so existing studies
        and model folders keep their hashes)."""
        out = super().to_json()
        if self.upsample is Upsample.TRANSPOSED:
            out.pop("upsample")
        return out

    @property
    def channels(self) -> tuple[int, ...]:
        """Channels per level: ``base_filters · 2**i``."""
        return tuple(self.base_filters * 2**i for i in range(self.depth))

    def spatial_divisor(self) -> tuple[int, int, int]:
        """Every input axis must be a multiple of ``2 ** (depth - 1)``."""
        d = 2 ** (self.depth - 1)
        return (d, d, d)


def build_residual_unet(
    config: ResidualUNetConfig, in_channels: int, out_channels: int
) -> nn.Module:
    """Build the MONAI residual ``UNet`` described by ``config``.

    Returns a module mapping ``(B, in_channels, X, Y, Z)`` to logits ``(B, out_channels, X, Y, Z)``.
    """
    network = TrilinearUNet if config.upsample is Upsample.TRILINEAR else UNet
    return network(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=config.channels,
        strides=(2,) * (config.depth - 1),
        num_res_units=config.num_res_units,
        norm=config.norm.value,
        dropout=config.dropout,
    )


class TrilinearUNet(UNet):
    """MONAI's residual ``UNet`` whose up layers convolve at the coarse level and then
    interpolate trilinearly (no transposed convolution)."""

    def _get_up_layer(
        self, in_channels: int, out_channels: int, strides: int, is_top: bool
    ) -> nn.Module:
        conv = Convolution(
            self.dimensions,
            in_channels,
            out_channels,
            strides=1,
            kernel_size=self.up_kernel_size,
            act=self.act,
            norm=self.norm,
            dropout=self.dropout,
            bias=self.bias,
            conv_only=is_top and self.num_res_units == 0,
            adn_ordering=self.adn_ordering,
        )
        up = nn.Upsample(scale_factor=strides, mode="trilinear", align_corners=False)
        layers: list[nn.Module] = [conv, up]  # (B, out, X, Y, Z) → (B, out, 2X, 2Y, 2Z)
        if self.num_res_units > 0:
            layers.append(
                ResidualUnit(
                    self.dimensions,
                    out_channels,
                    out_channels,
                    strides=1,
                    kernel_size=self.kernel_size,
                    subunits=1,
                    act=self.act,
                    norm=self.norm,
                    dropout=self.dropout,
                    bias=self.bias,
                    last_conv_only=is_top,
                    adn_ordering=self.adn_ordering,
                )
            )
        return nn.Sequential(*layers)
