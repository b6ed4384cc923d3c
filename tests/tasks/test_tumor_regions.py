"""tumor-regions: mirrored Dice loss by hand; Dice / HD95 / counts against MONAI and sklearn."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, compute_hausdorff_distance
from sklearn.metrics import precision_score, recall_score

from neurofed.tasks import Batch, TumorRegionsTask, labels_to_regions, merge_states

SHAPE = (12, 12, 12)


def _random_case_batch(seed: int, n: int = 4) -> tuple[Batch, torch.Tensor]:
    """Random label maps and random (imperfect) region logits; case 0 has no ET anywhere."""
    g = torch.Generator().manual_seed(seed)
    label = torch.zeros(n, *SHAPE, dtype=torch.long)
    logits = torch.full((n, 3, *SHAPE), -10.0)
    for b in range(n):
        for value in (2, 1, 3):
            lo = torch.randint(0, 6, (3,), generator=g).tolist()
            label[b, lo[0] : lo[0] + 5, lo[1] : lo[1] + 5, lo[2] : lo[2] + 5] = value
        noise = torch.rand(3, *SHAPE, generator=g) < 0.1
        logits[b] = torch.where(labels_to_regions(label[b : b + 1])[0].bool() ^ noise, 10.0, -10.0)
    label[0][label[0] == 3] = 1
    logits[0, 0] = -10.0  # no ET predicted either: both empty
    return Batch(torch.zeros(n, 4, *SHAPE), label=label), logits


def test_loss_by_hand_and_unlabelled_cases_contribute_nothing() -> None:
    # Prepare: case 0 labelled (ET, ED, BG, BG along z), case 1 unlabelled garbage.
    task = TumorRegionsTask()
    label = torch.zeros(2, 1, 1, 4, dtype=torch.long)
    label[0, 0, 0, :2] = torch.tensor([3, 2])
    label[1] = 2
    batch = Batch(torch.zeros(2, 4, 1, 1, 4), label=label, has_label=torch.tensor([True, False]))
    logits = torch.zeros(2, 3, 1, 1, 4)
    other = logits.clone()
    other[1] = torch.randn(3, 1, 1, 4) * 5
    # Execute
    loss = task.loss(logits, batch)
    # Assert: ET and TC mirrored Dice (1/3 + 3/5)/2 = 7/15, WT (1/2 + 1/2)/2 → 1 - 43/90.
    assert loss.item() == pytest.approx(47 / 90, abs=1e-6)
    assert task.loss(other, batch).item() == pytest.approx(loss.item(), abs=1e-7)


def test_no_labelled_case_gives_a_zero_loss_that_backpropagates() -> None:
    task = TumorRegionsTask()
    batch = Batch(
        torch.zeros(1, 4, 2, 2, 2),
        label=torch.zeros(1, 2, 2, 2, dtype=torch.long),
        has_label=torch.tensor([False]),
    )
    logits = torch.randn(1, 3, 2, 2, 2, requires_grad=True)
    loss = task.loss(logits, batch)
    loss.backward()
    assert loss.item() == 0.0 and logits.grad is not None


def test_dice_matches_monai_per_case_and_pooled_counts_match_sklearn() -> None:
    # Prepare
    task = TumorRegionsTask()
    batch, logits = _random_case_batch(seed=1)
    pred = (logits > 0).float()
    target = labels_to_regions(batch.label)
    # Execute
    state = task.metric_state(logits, batch)
    metrics = task.finalize(state)
    # Assert
    monai_dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(
        pred, target
    ).double()  # (N, 3)
    assert monai_dice[0, 0] == 1.0  # both empty
    for r, region in enumerate(("ET", "TC", "WT")):
        np.testing.assert_allclose(state.cases[f"{region}/dice"], monai_dice[:, r], rtol=1e-6)
        assert metrics[f"{region}/dice"] == pytest.approx(float(monai_dice[:, r].mean()), rel=1e-6)
        y_true = target[:, r].flatten().numpy().astype(int)
        y_pred = pred[:, r].flatten().numpy().astype(int)
        tp = int((y_true & y_pred).sum())
        assert metrics[f"{region}/dice_pooled"] == pytest.approx(
            2 * tp / (y_true.sum() + y_pred.sum())
        )
        assert metrics[f"{region}/sensitivity"] == pytest.approx(recall_score(y_true, y_pred))
        assert metrics[f"{region}/precision"] == pytest.approx(precision_score(y_true, y_pred))
    assert metrics["num_examples"] == 4.0


def test_hd95_matches_monai_and_documents_empty_cases() -> None:
    # Prepare
    task = TumorRegionsTask({"hd95_empty": 99.0, "spacing": [1.0, 1.0, 2.0]})
    batch, logits = _random_case_batch(seed=2)
    logits[1, 0] = -10.0  # case 1: ET in the reference, none predicted
    pred = (logits > 0).float()
    target = labels_to_regions(batch.label)
    # Execute
    state = task.metric_state(logits, batch)
    # Assert
    with warnings.catch_warnings():  # MONAI warns about the empty sides
        warnings.simplefilter("ignore")
        expected = compute_hausdorff_distance(
            pred, target, include_background=True, percentile=95, spacing=[1.0, 1.0, 2.0]
        ).double()  # (N, 3); NaN / inf where a side is empty
    for r, region in enumerate(("ET", "TC", "WT")):
        ours = state.cases[f"{region}/hd95"]
        both = [b for b in range(4) if pred[b, r].any() and target[b, r].any()]
        np.testing.assert_allclose(ours[both], expected[both, r].numpy(), rtol=1e-6)
    assert state.cases["ET/hd95"][0] == 0.0  # both empty
    assert state.cases["ET/hd95"][1] == 99.0  # only the reference has ET
    assert task.finalize(state)["ET/hd95"] == pytest.approx(float(np.mean(state.cases["ET/hd95"])))


def test_merged_states_give_the_metrics_of_all_cases_at_once() -> None:
    # Prepare
    task = TumorRegionsTask()
    batch, logits = _random_case_batch(seed=3, n=5)
    parts = [slice(0, 2), slice(2, 5)]
    states = [
        task.metric_state(logits[s], Batch(batch.image[s], label=batch.label[s])) for s in parts
    ]
    # Execute
    whole = task.finalize(task.metric_state(logits, batch))
    merged = task.finalize(merge_states(states))
    reversed_merge = task.finalize(merge_states(states[::-1]))
    # Assert: exactly equal, not approximately.
    assert merged == whole
    assert reversed_merge == whole
    assert not any(math.isnan(v) for v in whole.values())


def test_postprocess_thresholds_probabilities() -> None:
    task = TumorRegionsTask({"threshold": 0.7})
    logits = torch.logit(torch.tensor([0.5, 0.69, 0.71])).reshape(1, 3, 1, 1, 1)
    assert task.postprocess(logits).flatten().tolist() == [0, 0, 1]
    assert task.postprocess(logits).dtype == torch.uint8


def test_labels_outside_the_convention_are_rejected() -> None:
    label = torch.full((1, 2, 2, 2), 4, dtype=torch.long)  # BraTS 2021 ET not converted
    with pytest.raises(ValueError, match=r"expects internal labels 0..3.*to_internal"):
        TumorRegionsTask().loss(
            torch.zeros(1, 3, 2, 2, 2), Batch(torch.zeros(1, 4, 2, 2, 2), label)
        )


def test_wrong_output_shape_is_explained() -> None:
    batch = Batch(torch.zeros(1, 4, 4, 4, 4), label=torch.zeros(1, 4, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"segmentation output has shape \(1, 2, 4, 4, 4\)"):
        TumorRegionsTask().loss(torch.zeros(1, 2, 4, 4, 4), batch)
