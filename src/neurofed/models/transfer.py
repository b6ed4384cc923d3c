"""Transfer a trained network to a new target: fine-tune everything, or only its last layer.

``full`` makes every parameter trainable. ``head`` makes only the parameters of the model's last
layer (named by its ``head_name`` attribute, e.g. :attr:`SFCN.head_name
<neurofed.models.sfcn.SFCN.head_name>`) trainable, sets ``requires_grad=False`` everywhere else,
and replaces every batch-norm layer outside the head by a :class:`FrozenBatchNorm` that always
normalises with its stored running statistics — so the frozen backbone stays in evaluation
behaviour even when a training loop calls ``model.train()``. State-dict keys are unchanged, so
frozen and unfrozen models aggregate alike.

Apply it once, to a freshly built or freshly loaded model.

Examples
--------
>>> from neurofed.models.sfcn import SFCN, SFCNConfig
>>> net = SFCN(SFCNConfig(width=0.125), in_channels=1, out_channels=1)
>>> prepare_transfer(net, TransferMode.HEAD)
('head.weight', 'head.bias')
>>> _ = net.train()
>>> net.features[0][1].training  # batch norm of the frozen backbone
False
"""

from __future__ import annotations

from typing import Self

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from neurofed.keys import TransferMode

__all__ = ["FrozenBatchNorm", "TransferMode", "prepare_transfer"]


class FrozenBatchNorm(_BatchNorm):
    """Batch norm that always uses its running statistics and never updates them.

    Its parameters do not require gradients and ``train()`` leaves it in evaluation mode. Its
    state-dict keys are those of the layer it replaces.

    Examples
    --------
    >>> bn = FrozenBatchNorm.from_batchnorm(nn.BatchNorm3d(2))
    >>> bn.train().training, bn.weight.requires_grad
    (False, False)
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected an input of at least 2 dimensions, got {input.dim()}")

    def train(self, mode: bool = True) -> Self:
        """Stay in evaluation mode whatever ``mode`` says."""
        return super().train(False)

    @classmethod
    def from_batchnorm(cls, bn: _BatchNorm) -> FrozenBatchNorm:
        """A frozen copy of ``bn`` (same statistics, affine parameters, device and dtype)."""
        reference = next(iter(bn.state_dict().values()), None)
        frozen = cls(
            bn.num_features,
            eps=bn.eps,
            momentum=bn.momentum,
            affine=bn.affine,
            track_running_stats=bn.track_running_stats,
            device=None if reference is None else reference.device,
        )
        frozen.load_state_dict(bn.state_dict())
        for parameter in frozen.parameters():
            parameter.requires_grad_(False)
        return frozen.eval()


def _head_name(model: nn.Module) -> str:
    head = getattr(model, "head_name", None)
    if not isinstance(head, str):
        raise TypeError(
            f"{type(model).__name__} has no `head_name` attribute naming its last layer; "
            "head transfer needs one (e.g. SFCN.head_name = 'head')"
        )
    try:
        model.get_submodule(head)
    except AttributeError as error:
        raise ValueError(
            f"{type(model).__name__}.head_name = {head!r} names no submodule of the model"
        ) from error
    return head


def prepare_transfer(model: nn.Module, mode: TransferMode | str) -> tuple[str, ...]:
    """Set which parameters of ``model`` train for a transfer; returns their names.

    Parameters
    ----------
    model
        A network; ``head`` mode needs a ``head_name`` attribute naming its last layer.
    mode
        :class:`TransferMode` or its value.

    Returns
    -------
    tuple of str
        Names (as in ``named_parameters``) of the trainable parameters.

    Raises
    ------
    ValueError
        If ``mode`` is not a :class:`TransferMode`.
    TypeError
        If ``head`` mode is asked of a model without ``head_name``.
    """
    try:
        mode = TransferMode(mode)
    except ValueError as error:
        allowed = ", ".join(m.value for m in TransferMode)
        raise ValueError(f"transfer mode {mode!r} is unknown; use one of: {allowed}") from error
    if mode is TransferMode.FULL:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return tuple(name for name, _ in model.named_parameters())
    head = _head_name(model)
    prefix = f"{head}."
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name.startswith(prefix))
    targets = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, _BatchNorm)
        and not isinstance(module, FrozenBatchNorm)
        and not (name == head or name.startswith(prefix))
    ]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, FrozenBatchNorm.from_batchnorm(module))
    return tuple(name for name, p in model.named_parameters() if p.requires_grad)
