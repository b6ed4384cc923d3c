"""ms-lesion: DiceCE loss on labelled cases, voxel metrics vs MONAI, lesion-wise F1 by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric

from neurofed.tasks import Batch, MSLesionTask, merge_states
from neurofed.tasks.segmentation_metrics import lesion_counts


def _logits_for(mask: torch.Tensor) -> torch.Tensor:
    """Two-channel logits whose arg-max is ``mask`` ``(B, X, Y, Z)``."""
    lesion = torch.where(mask.bool(), 5.0, -5.0)
    return torch.stack([torch.zeros_like(lesion), lesion], dim=1)


def test_loss_is_monai_dice_ce_on_the_labelled_cases_only() -> None:
    # Prepare
    g = torch.Generator().manual_seed(0)
    label = (torch.rand(3, 8, 8, 8, generator=g) < 0.2).long()
    logits = torch.randn(3, 2, 8, 8, 8, generator=g)
    has_label = torch.tensor([True, False, True])
    batch = Batch(torch.zeros(3, 2, 8, 8, 8), label=label, has_label=has_label)
    reference = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True, batch=True)
    # Execute
    loss = MSLesionTask().loss(logits, batch)
    # Assert
    expected = reference(logits[has_label], label[has_label][:, None])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    changed = logits.clone()
    changed[1] = 100.0
    assert MSLesionTask().loss(changed, batch).item() == pytest.approx(loss.item(), rel=1e-7)


def test_lesion_f1_by_hand() -> None:
    # Reference: lesion A (3 voxels in a row), lesion B (diagonal pair: one lesion with
    # 26-connectivity, two with 6), lesion C (isolated). Prediction: two separate blobs both on A,
    # one blob on B's second voxel, one false-positive blob.
    target = torch.zeros(1, 10, 10, 10, dtype=torch.long)
    target[0, 1, 1, 1:4] = 1  # A
    target[0, 5, 5, 5] = target[0, 6, 6, 6] = 1  # B
    target[0, 8, 1, 8] = 1  # C
    pred = torch.zeros_like(target)
    pred[0, 1, 1, 1] = pred[0, 1, 1, 3] = 1  # two components touching A
    pred[0, 6, 6, 6] = 1  # touches B
    pred[0, 3, 8, 3] = 1  # false positive
    batch = Batch(torch.zeros(1, 2, 10, 10, 10), label=target)
    # Execute
    metrics = MSLesionTask().finalize(MSLesionTask().metric_state(_logits_for(pred), batch))
    six = MSLesionTask({"connectivity": 1})
    metrics_6 = six.finalize(six.metric_state(_logits_for(pred), batch))
    # Assert: 26-conn: detected A, B (TP 2), missed C (FN 1), one blob touching nothing (FP 1).
    assert metrics["lesion_f1"] == pytest.approx(4 / (4 + 1 + 1))
    # 6-conn: B splits in two and one half is missed → TP 2, FN 2, FP 1.
    assert metrics_6["lesion_f1"] == pytest.approx(4 / (4 + 2 + 1))


def test_one_blob_over_every_lesion_detects_nothing_and_is_a_false_positive() -> None:
    # Prepare: three one-voxel lesions, and a prediction of the whole volume (an untrained model)
    target = torch.zeros(1, 10, 10, 10, dtype=torch.long)
    target[0, 1, 1, 1] = target[0, 5, 5, 5] = target[0, 8, 2, 7] = 1
    blob = torch.ones_like(target)
    batch = Batch(torch.zeros(1, 2, 10, 10, 10), label=target)
    # Execute
    counts = lesion_counts(blob.bool().numpy(), target.bool().numpy())
    metrics = MSLesionTask().finalize(MSLesionTask().metric_state(_logits_for(blob), batch))
    # Assert: 997 of the blob's 1000 voxels lie outside the lesions (> 65 %) → every lesion is
    # missed; the lesions cover 0.3 % of the blob (< 10 %) → the blob is a false positive.
    assert counts.tolist() == [[0, 3, 1]]
    assert metrics["lesion_f1"] == 0.0


def test_lesion_matching_thresholds_by_hand() -> None:
    # Prepare: lesion A, 20 voxels (2 × 10); lesion B, 4 voxels (2 × 2).
    target = np.zeros((4, 12, 12, 12), dtype=bool)
    target[:, 1:3, 1, 1:11] = True  # A
    target[:, 6:8, 6:8, 6] = True  # B
    pred = np.zeros_like(target)
    # case 0: 1 voxel of A (5 % < 10 %): A missed; A lies 95 % outside it (> 65 %): an FP
    pred[0, 1, 1, 1] = True
    # case 1: 14 voxels of A (70 %), none outside: A detected; A lies 30 % outside: not an FP
    pred[1, 1:3, 1, 1:8] = True
    # case 2: 3 × 3 over B: 5 / 9 = 56 % outside (≤ 65 %): B detected, a TP component;
    # 5 voxels, 2 on A (10 % of A), 3 / 5 = 60 % outside: A detected, but A lies 90 % outside
    # that component: an FP
    pred[2, 5:8, 6:9, 6] = True
    pred[2, 1:6, 1, 1] = True
    # case 3: 3 × 4 over B: 8 / 12 = 67 % outside (> 65 %): B missed; B lies wholly inside it
    # and covers 33 % (≥ 10 %) of it: a TP component
    pred[3, 5:8, 5:9, 6] = True
    # Execute
    counts = lesion_counts(pred, target, connectivity=1)
    # Assert: [detected, missed, false positive]
    assert counts.tolist() == [[0, 2, 1], [1, 1, 0], [2, 0, 1], [0, 2, 0]]


def test_lesion_counts_with_nothing_to_find_are_perfect() -> None:
    empty = np.zeros((1, 4, 4, 4), dtype=bool)
    assert lesion_counts(empty, empty).tolist() == [[0, 0, 0]]
    task = MSLesionTask()
    batch = Batch(torch.zeros(1, 2, 4, 4, 4), label=torch.zeros(1, 4, 4, 4, dtype=torch.long))
    metrics = task.finalize(task.metric_state(_logits_for(torch.zeros(1, 4, 4, 4)), batch))
    assert metrics["lesion_f1"] == 1.0 and metrics["dice"] == 1.0


def test_voxel_metrics_match_monai_and_merge_exactly() -> None:
    # Prepare
    g = torch.Generator().manual_seed(1)
    label = (torch.rand(4, 8, 8, 8, generator=g) < 0.3).long()
    pred = label ^ (torch.rand(4, 8, 8, 8, generator=g) < 0.1).long()
    batch = Batch(torch.zeros(4, 2, 8, 8, 8), label=label)
    task = MSLesionTask()
    logits = _logits_for(pred)
    # Execute
    state = task.metric_state(logits, batch)
    metrics = task.finalize(state)
    halves = [
        task.metric_state(logits[s], Batch(batch.image[s], label=label[s]))
        for s in (slice(0, 1), slice(1, 4))
    ]
    # Assert
    expected = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(
        pred[:, None].float(), label[:, None].float()
    )
    np.testing.assert_allclose(state.cases["dice"], expected[:, 0].double().numpy(), rtol=1e-6)
    tp = int((pred & label).sum())
    assert metrics["sensitivity"] == pytest.approx(tp / int(label.sum()))
    assert metrics["precision"] == pytest.approx(tp / int(pred.sum()))
    assert task.finalize(merge_states(halves)) == metrics
    assert task.finalize(merge_states(halves[::-1])) == metrics


def test_postprocess_is_the_argmax_lesion_mask() -> None:
    logits = torch.tensor([[1.0, 2.0], [3.0, -1.0]]).reshape(2, 2, 1, 1, 1)
    assert MSLesionTask().postprocess(logits).flatten().tolist() == [1, 0]


def test_bad_connectivity_is_named() -> None:
    with pytest.raises(ValueError, match=r"MSLesionConfig\.connectivity = 4 is invalid"):
        MSLesionTask({"connectivity": 4})
