"""Inference on full volumes, and evaluation of a model on a dataset as a mergeable metric state.

Segmentation outputs are computed with MONAI's ``sliding_window_inference`` using the training
patch as the window (Gaussian blending, ``overlap`` between windows); a volume smaller than the
window is padded and cropped back by MONAI. Without a patch shape (whole-volume tasks), the
volume is zero-padded at its end to a multiple of the model's spatial divisor, passed once, and
spatial outputs are cropped back. For models with named outputs (``multitask-unet``), the
spatial entries come from the sliding window and the others (marker logits) from one
whole-volume pass.

Examples
--------
>>> import torch
>>> from torch import nn
>>> net = nn.Conv3d(2, 3, kernel_size=1)
>>> predict(net, torch.zeros(1, 2, 20, 9, 12), patch_shape=(8, 8, 8), divisor=(8, 8, 8)).shape
torch.Size([1, 3, 20, 9, 12])
>>> predict(net, torch.zeros(1, 2, 20, 9, 12), patch_shape=None, divisor=(8, 8, 8)).shape
torch.Size([1, 3, 20, 9, 12])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from monai.inferers.utils import sliding_window_inference
from torch import nn
from torch.nn import functional as nnf

from neurofed.tasks import MetricState, ModelOutput, Task, merge_states
from neurofed.training.dataset import CaseDataset, collate
from neurofed.types import ProgressCallback

__all__ = ["evaluate_dataset", "predict"]

Shape3 = tuple[int, int, int]


def _crop(output: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    if output.dim() != 5:
        return output
    x, y, z = shape
    return output[..., :x, :y, :z]


def _whole_volume(model: nn.Module, image: torch.Tensor, divisor: Sequence[int]) -> ModelOutput:
    shape = image.shape[2:]
    pad: list[int] = []
    for size, d in zip(reversed(shape), reversed(list(divisor)), strict=True):
        pad.extend((0, -(-int(size) // int(d)) * int(d) - int(size)))
    padded = nnf.pad(image, pad) if any(pad) else image  # (B, C, X', Y', Z')
    out = model(padded)
    if isinstance(out, Mapping):
        return {k: _crop(v, shape) for k, v in out.items()}
    return _crop(out, shape)


def predict(
    model: nn.Module,
    image: torch.Tensor,
    *,
    patch_shape: Shape3 | None,
    divisor: Sequence[int],
    overlap: float = 0.25,
    sw_batch_size: int = 2,
) -> ModelOutput:
    """Raw model outputs for ``image`` ``(B, C, X, Y, Z)`` on its full grid.

    Call under ``torch.no_grad()`` with the model in evaluation mode.
    """
    if patch_shape is None:
        return _whole_volume(model, image, divisor)
    named = False

    def spatial(window: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        nonlocal named
        out = model(window)
        if isinstance(out, Mapping):
            named = True
            return {k: v for k, v in out.items() if v.dim() == 5}
        return out  # type: ignore[no-any-return]

    windows = sliding_window_inference(
        image,
        roi_size=list(patch_shape),
        sw_batch_size=sw_batch_size,
        predictor=spatial,
        overlap=overlap,
        mode="gaussian",
    )
    if not named:
        assert isinstance(windows, torch.Tensor)
        return torch.as_tensor(windows)
    assert isinstance(windows, Mapping)
    whole = _whole_volume(model, image, divisor)
    assert isinstance(whole, Mapping)
    return {k: torch.as_tensor(windows[k]) if k in windows else v for k, v in whole.items()}


def evaluate_dataset(
    model: nn.Module,
    task: Task,
    dataset: CaseDataset,
    *,
    patch_shape: Shape3 | None,
    divisor: Sequence[int],
    overlap: float = 0.25,
    sw_batch_size: int = 2,
    device: torch.device | str = "cpu",
    progress: ProgressCallback | None = None,
) -> MetricState:
    """Score ``model`` on every case of ``dataset``, one full volume at a time.

    Returns the merged :class:`~neurofed.tasks.MetricState` (sums, counts and per-case values;
    the empty state for an empty dataset). The model is left in evaluation mode.
    """
    model.eval()
    states = []
    with torch.no_grad():
        for done, case in enumerate(dataset, start=1):
            batch = collate([(case.image, case.label, case.clinical)], task, (1, 1, 1))
            batch = batch.to(device)
            outputs = predict(
                model,
                batch.image,
                patch_shape=patch_shape,
                divisor=divisor,
                overlap=overlap,
                sw_batch_size=sw_batch_size,
            )
            states.append(task.metric_state(outputs, batch))
            if progress is not None:
                progress(done, len(dataset), case.subject_id)
    return merge_states(states)
