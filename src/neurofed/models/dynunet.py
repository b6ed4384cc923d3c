"""``dynunet``: MONAI ``DynUNet`` configured from a :class:`~neurofed.models.plan.NetworkPlan`.

Kernel sizes, strides, filters and depth all come from the plan (nnU-Net style); the up-sampling
kernels equal the strides they undo. Deep supervision is not used: the network returns one logit
map ``(B, out_channels, X, Y, Z)`` in training and in evaluation alike. Inputs must be multiples
of :meth:`NetworkPlan.spatial_divisor <neurofed.models.plan.NetworkPlan.spatial_divisor>`, with
more than one voxel at the bottleneck (instance norm needs it): e.g. twice the divisor on an axis.

MONAI's ``DynUNet`` registers its blocks twice (once directly, once inside the recursive
``skip_layers`` used by ``forward``), so its state dict names every tensor twice — which
safetensors refuses and which would double every federated payload. :class:`PlannedDynUNet`
keeps ``skip_layers`` as a plain attribute: each tensor appears once, under ``input_block``,
``downsamples``, ``bottleneck``, ``upsamples`` and ``output_block``.

Examples
--------
>>> import torch
>>> from neurofed.models.plan import default_plan
>>> plan = default_plan((16, 16, 16), (1.0, 1.0, 1.0), base_filters=4, max_filters=16)
>>> net = build_dynunet(DynUNetConfig(plan=plan), in_channels=2, out_channels=2)
>>> net(torch.zeros(1, 2, 16, 16, 8)).shape
torch.Size([1, 2, 16, 16, 8])
"""

from __future__ import annotations

from dataclasses import dataclass, field

from monai.networks.nets.dynunet import DynUNet
from torch import nn

from neurofed.config import ConfigBase, require
from neurofed.models.norm import U_NET_NORMS, Norm, coerce_norm
from neurofed.models.plan import NetworkPlan

__all__ = ["DynUNetConfig", "PlannedDynUNet", "build_dynunet"]


@dataclass(frozen=True)
class DynUNetConfig(ConfigBase):
    """Configuration of ``dynunet``.

    Parameters
    ----------
    plan
        The per-level architecture (default: ``default_plan((128,) * 3, (1.0,) * 3)``).
    norm
        Feature normalisation.
    res_block
        Residual blocks instead of plain conv blocks.
    """

    plan: NetworkPlan = field(default_factory=NetworkPlan)
    norm: Norm = Norm.INSTANCE
    res_block: bool = False

    def __post_init__(self) -> None:
        require(
            isinstance(self.plan, NetworkPlan),
            self,
            "plan",
            "give a NetworkPlan (or its JSON mapping), e.g. from default_plan()",
        )
        require(isinstance(self.res_block, bool), self, "res_block", "use true or false")
        coerce_norm(self, U_NET_NORMS)

    def spatial_divisor(self) -> tuple[int, int, int]:
        """Inputs must be multiples of the plan's per-axis stride product."""
        return self.plan.spatial_divisor()


class PlannedDynUNet(DynUNet):
    """MONAI ``DynUNet`` whose state dict names each tensor once (see the module docstring)."""

    def __init__(self, config: DynUNetConfig, in_channels: int, out_channels: int) -> None:
        plan = config.plan
        super().__init__(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=out_channels,
            kernel_size=plan.kernel_sizes,
            strides=plan.strides,
            upsample_kernel_size=plan.strides[1:],
            filters=plan.filters,
            norm_name=(config.norm.value, {"affine": True}),
            res_block=config.res_block,
            deep_supervision=False,
        )
        # Same modules, reachable for forward() but no longer a registered child.
        self.__dict__["skip_layers"] = self._modules.pop("skip_layers")


def build_dynunet(config: DynUNetConfig, in_channels: int, out_channels: int) -> nn.Module:
    """Build the MONAI ``DynUNet`` described by ``config.plan``.

    Returns a module mapping ``(B, in_channels, X, Y, Z)`` to logits ``(B, out_channels, X, Y, Z)``.
    """
    return PlannedDynUNet(config, in_channels, out_channels)
