"""Networks (MONAI / PyTorch) and their registry.

Build a registered network by name from a frozen config (or a mapping of its fields)::

    >>> import torch
    >>> from neurofed.models import build_model, model_names
    >>> model_names()
    ('residual-unet', 'multitask-unet', 'dynunet', 'sfcn')
    >>> net = build_model("sfcn", {"width": 0.0625}, in_channels=1, out_channels=1)
    >>> net.eval()(torch.zeros(1, 1, 32, 32, 32)).shape
    torch.Size([1, 1])
"""

from neurofed.keys import ModelName, OutputKey
from neurofed.models.dynunet import DynUNetConfig, PlannedDynUNet, build_dynunet
from neurofed.models.multitask_unet import (
    MultitaskUNet,
    MultitaskUNetConfig,
    build_multitask_unet,
)
from neurofed.models.norm import Norm
from neurofed.models.plan import NetworkPlan, default_plan
from neurofed.models.registry import (
    ModelConfig,
    ModelSpec,
    build_model,
    get_model_spec,
    model_names,
    parse_model_config,
    register_model,
)
from neurofed.models.residual_unet import ResidualUNetConfig, build_residual_unet
from neurofed.models.sfcn import SFCN, SFCNConfig, build_sfcn
from neurofed.models.transfer import FrozenBatchNorm, TransferMode, prepare_transfer

__all__ = [
    "SFCN",
    "DynUNetConfig",
    "FrozenBatchNorm",
    "ModelConfig",
    "ModelName",
    "ModelSpec",
    "MultitaskUNet",
    "MultitaskUNetConfig",
    "NetworkPlan",
    "Norm",
    "OutputKey",
    "PlannedDynUNet",
    "ResidualUNetConfig",
    "SFCNConfig",
    "TransferMode",
    "build_dynunet",
    "build_model",
    "build_multitask_unet",
    "build_residual_unet",
    "build_sfcn",
    "default_plan",
    "get_model_spec",
    "model_names",
    "parse_model_config",
    "prepare_transfer",
    "register_model",
]
