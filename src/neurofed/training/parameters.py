"""Model parameters as named numpy arrays: read them, check incoming ones, load them, FedProx.

This is the whole interface between a site's model and a federation: :func:`model_arrays` gives
``dict[str, np.ndarray]`` copies of the state dict (without the names that stay local), and
:func:`check_arrays` validates an incoming dict against the model — unknown or missing names,
wrong shapes or dtypes, NaN or Inf are errors that name the parameter — before
:func:`load_arrays` writes anything, so a bad update never leaves a half-loaded model.
:func:`proximal_term` is FedProx's ``mu/2·||w - w_global||²``.

Examples
--------
>>> import numpy as np
>>> from torch import nn
>>> net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
>>> arrays = model_arrays(net, local_parameters=("1.*",))
>>> sorted(arrays)
['0.bias', '0.weight']
>>> arrays["0.weight"][:] = np.nan
>>> check_arrays(net, arrays, local_parameters=("1.*",))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
neurofed.training.parameters.ParameterError: parameter '0.weight' holds 4 NaN/Inf values; ...
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from neurofed.config import is_local

__all__ = [
    "ParameterError",
    "check_arrays",
    "load_arrays",
    "model_arrays",
    "proximal_term",
]


class ParameterError(ValueError):
    """Incoming parameters do not fit the model; the message names the parameter and the fix."""


def _numpy_dtype(dtype: torch.dtype) -> np.dtype[np.generic]:
    return torch.empty(0, dtype=dtype).numpy().dtype


def model_arrays(
    model: nn.Module, *, local_parameters: Sequence[str] = (), include_local: bool = False
) -> dict[str, npt.NDArray[np.generic]]:
    """Copies of the model's state-dict entries (weights and buffers) as numpy arrays.

    Entries matching ``local_parameters`` are left out unless ``include_local``.
    """
    return {
        name: tensor.detach().cpu().numpy().copy()
        for name, tensor in model.state_dict().items()
        if include_local or not is_local(name, local_parameters)
    }


def _names(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_arrays(
    model: nn.Module,
    arrays: Mapping[str, npt.ArrayLike],
    *,
    local_parameters: Sequence[str] = (),
) -> dict[str, torch.Tensor]:
    """Validate ``arrays`` against ``model`` and return the tensors to load.

    Every non-local state-dict entry of the model must be present with its exact shape and
    dtype and (for floating types) finite values. Entries matching ``local_parameters`` are
    ignored when present.

    Raises
    ------
    ParameterError
        Naming the first offending parameter, what was expected and the fix.
    """
    state = model.state_dict()
    unknown = [name for name in arrays if name not in state]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(state), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ParameterError(
            f"unexpected parameter name(s) {_names(unknown)}{hint}: the model has no such entry; "
            "send parameters of the same model (task, model name and config)"
        )
    missing = [n for n in state if not is_local(n, local_parameters) and n not in arrays]
    if missing:
        raise ParameterError(
            f"missing parameter(s) {_names(missing)}: every non-local entry of the model must be "
            "sent (or listed in local_parameters)"
        )
    tensors: dict[str, torch.Tensor] = {}
    for name, value in arrays.items():
        if is_local(name, local_parameters):
            continue
        target = state[name]
        array = np.asarray(value)
        expected = _numpy_dtype(target.dtype)
        if tuple(array.shape) != tuple(target.shape):
            raise ParameterError(
                f"parameter {name!r} has shape {tuple(array.shape)}; the model expects "
                f"{tuple(target.shape)} — the sender's model config differs"
            )
        if array.dtype != expected:
            raise ParameterError(
                f"parameter {name!r} has dtype {array.dtype}; the model expects {expected} — "
                "convert it before sending (aggregation must keep each entry's dtype)"
            )
        if array.dtype.kind in "fc":
            bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
            if bad:
                raise ParameterError(
                    f"parameter {name!r} holds {bad} NaN/Inf values; refuse this update "
                    "(a diverged site or a corrupted payload)"
                )
        tensors[name] = torch.from_numpy(np.array(array, copy=True))
    return tensors


def load_arrays(model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Copy checked tensors (from :func:`check_arrays`) into the model, in place."""
    state = model.state_dict()
    with torch.no_grad():
        for name, tensor in tensors.items():
            state[name].copy_(tensor)


def proximal_term(
    parameters: Sequence[tuple[torch.Tensor, torch.Tensor]], mu: float
) -> torch.Tensor | None:
    """FedProx's ``mu/2 · Σ ||w - w_global||²`` over ``(w, w_global)`` pairs (None if no pair).

    >>> w = torch.tensor([1.0, 2.0], requires_grad=True)
    >>> float(proximal_term([(w, torch.tensor([1.0, 0.0]))], mu=0.5).detach())
    1.0
    """
    if not parameters:
        return None
    squares = torch.stack([(w - reference).pow(2).sum() for w, reference in parameters])
    return 0.5 * mu * squares.sum()
