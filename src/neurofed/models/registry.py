"""The model registry: a name → a config class and a builder.

Studies name a model and give its configuration as a mapping; :func:`build_model` parses it into
the model's frozen config class (unknown fields and names are errors with a "did you mean") and
builds the network. Every registered config has ``spatial_divisor()``: the per-axis multiple that
input sizes must have.

Examples
--------
>>> import torch
>>> net = build_model("residual-unet", {"base_filters": 4, "depth": 3}, in_channels=4,
...                   out_channels=3)
>>> net(torch.zeros(1, 4, 8, 8, 8)).shape
torch.Size([1, 3, 8, 8, 8])
>>> build_model("residual-unt", None, in_channels=4, out_channels=3)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: unknown model 'residual-unt' (did you mean 'residual-unet'?); available: ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

from torch import nn

from neurofed.config import ConfigBase, is_positive_int, look_up
from neurofed.keys import ModelName
from neurofed.models.dynunet import DynUNetConfig, build_dynunet
from neurofed.models.multitask_unet import MultitaskUNetConfig, build_multitask_unet
from neurofed.models.residual_unet import ResidualUNetConfig, build_residual_unet
from neurofed.models.sfcn import SFCNConfig, build_sfcn

__all__ = [
    "ModelConfig",
    "ModelSpec",
    "build_model",
    "get_model_spec",
    "model_names",
    "parse_model_config",
    "register_model",
]


class ModelConfig(Protocol):
    """What every registered model's config offers besides :class:`ConfigBase`."""

    def to_json(self) -> dict[str, Any]: ...

    def spatial_divisor(self) -> tuple[int, int, int]: ...


@dataclass(frozen=True)
class ModelSpec:
    """A registered model.

    Attributes
    ----------
    name
        Registry name.
    config_type
        Frozen config class (a :class:`ConfigBase` with ``spatial_divisor()``).
    builder
        ``builder(config, in_channels, out_channels) -> nn.Module``.
    description
        One line for listings.
    """

    name: str
    config_type: type[ConfigBase]
    builder: Callable[[Any, int, int], nn.Module]
    description: str

    def spatial_divisor(
        self, config: Mapping[str, Any] | ConfigBase | None = None
    ) -> tuple[int, int, int]:
        """Per-axis multiple that input sizes must have with ``config`` (defaults if ``None``)."""
        parsed = cast(ModelConfig, self.config_type.parse(config))
        return parsed.spatial_divisor()


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> None:
    """Add a model; its name must be new.

    Raises
    ------
    ValueError
        If ``spec.name`` is registered already, or its config class has no ``spatial_divisor``.
    """
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered already; choose another name")
    if not callable(getattr(spec.config_type, "spatial_divisor", None)):
        raise ValueError(f"{spec.config_type.__name__} must define spatial_divisor()")
    _REGISTRY[str(spec.name)] = spec


def model_names() -> tuple[str, ...]:
    """Registered model names, in registration order."""
    return tuple(_REGISTRY)


def get_model_spec(name: str) -> ModelSpec:
    """The spec registered as ``name`` (a "did you mean" ``ValueError`` otherwise)."""
    return _REGISTRY[look_up("model", name, tuple(_REGISTRY))]


def parse_model_config(name: str, config: Mapping[str, Any] | ConfigBase | None) -> ConfigBase:
    """Parse ``config`` (mapping, instance or ``None`` for defaults) for model ``name``."""
    return get_model_spec(name).config_type.parse(config)


def build_model(
    name: str,
    config: Mapping[str, Any] | ConfigBase | None = None,
    *,
    in_channels: int,
    out_channels: int,
) -> nn.Module:
    """Build registered model ``name`` from ``config``.

    Parameters
    ----------
    name
        A registered name (see :func:`model_names`).
    config
        The model's config, a mapping of its fields, or ``None`` for its defaults.
    in_channels, out_channels
        Input channels (modalities) and output channels.

    Raises
    ------
    ValueError
        Unknown name or config field, invalid value, non-positive channel counts.
    TypeError
        A config object of another model.
    """
    spec = get_model_spec(name)
    for arg, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not is_positive_int(value):
            raise ValueError(f"{arg} = {value!r} is invalid: use an integer >= 1")
    parsed = spec.config_type.parse(config)
    return spec.builder(parsed, in_channels, out_channels)


for _spec in (
    ModelSpec(
        ModelName.RESIDUAL_UNET,
        ResidualUNetConfig,
        build_residual_unet,
        "3D U-Net with residual units (FeTS tumour sub-regions)",
    ),
    ModelSpec(
        ModelName.MULTITASK_UNET,
        MultitaskUNetConfig,
        build_multitask_unet,
        "3D U-Net with segmentation, IDH, 1p/19q, MGMT and grade heads",
    ),
    ModelSpec(
        ModelName.DYNUNET,
        DynUNetConfig,
        build_dynunet,
        "MONAI DynUNet configured from an nnU-Net-style NetworkPlan",
    ),
    ModelSpec(ModelName.SFCN, SFCNConfig, build_sfcn, "compact 3D CNN for regression (SFCN)"),
):
    register_model(_spec)
del _spec
