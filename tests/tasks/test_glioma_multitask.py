"""glioma-multitask: masked loss by hand; marker / grade metrics against scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric
from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score

from neurofed.keys import ClinicalField, Marker
from neurofed.models import OutputKey
from neurofed.tasks import (
    Batch,
    ClinicalTarget,
    GliomaMultitaskTask,
    labels_to_regions,
    merge_states,
)

NAN = float("nan")


def _outputs(b: int, spatial: tuple[int, int, int], fill: float = 0.0) -> dict[str, torch.Tensor]:
    return {
        OutputKey.SEGMENTATION: torch.full((b, 1, *spatial), fill),
        OutputKey.IDH: torch.full((b,), fill),
        OutputKey.CODEL_1P19Q: torch.full((b,), fill),
        OutputKey.MGMT: torch.full((b,), fill),
        OutputKey.GRADE: torch.full((b, 3), fill),
    }


def _hand_batch() -> Batch:
    label = torch.zeros(3, 1, 1, 2, dtype=torch.long)
    label[0, 0, 0, 0] = 3  # case 0: WT = [1, 0]; case 2: WT empty
    label[1] = 2  # case 1 has no mask: whatever is here must not count
    return Batch(
        torch.zeros(3, 4, 1, 1, 2),
        label=label,
        has_label=torch.tensor([True, False, True]),
        clinical={
            ClinicalField.IDH: ClinicalTarget.from_values([True, False, None]),
            ClinicalField.CODEL_1P19Q: ClinicalTarget.from_values([None, None, None]),
            ClinicalField.MGMT: ClinicalTarget.from_values([None, True, None]),
            ClinicalField.GRADE: ClinicalTarget.from_values([2, None, 4]),
        },
    )


def test_masked_loss_by_hand() -> None:
    # Prepare: all logits 0 except MGMT (2) and the unlabelled case's segmentation (garbage).
    task = GliomaMultitaskTask({"idh_weight": 2.0})
    outputs = _outputs(3, (1, 1, 2))
    outputs[OutputKey.MGMT] = torch.tensor([-7.0, 2.0, 9.0])
    outputs[OutputKey.SEGMENTATION][1] = 50.0
    s = task.config.smooth
    # Execute
    loss = task.loss(outputs, _hand_batch())
    # Assert
    ln2 = math.log(2.0)
    seg = ((1 - (1 + s) / (2 + s) + ln2) + (1 - s / (1 + s) + ln2)) / 2  # cases 0 and 2
    idh = ln2  # mean over the 2 known cases, weight 2
    codel = 0.0  # no known case
    mgmt = math.log1p(math.exp(-2.0))  # only case 1 known
    grade = math.log(3.0)  # cases 0 and 2
    assert loss.item() == pytest.approx(seg + 2 * idh + codel + mgmt + grade, rel=1e-6)


def test_unknown_labels_and_missing_masks_change_nothing_and_give_finite_gradients() -> None:
    task = GliomaMultitaskTask()
    batch = _hand_batch()
    base = _outputs(3, (1, 1, 2))
    changed = {k: v.clone() for k, v in base.items()}
    changed[OutputKey.SEGMENTATION][1] = -30.0  # the unlabelled case
    changed[OutputKey.IDH][2] = 4.0  # IDH unknown for case 2
    changed[OutputKey.CODEL_1P19Q][:] = 8.0  # 1p/19q unknown everywhere
    changed[OutputKey.GRADE][1] = torch.tensor([5.0, -5.0, 0.0])  # grade unknown for case 1
    for v in changed.values():
        v.requires_grad_(True)
    loss = task.loss(changed, batch)
    loss.backward()
    assert loss.item() == pytest.approx(task.loss(base, batch).item(), rel=1e-7)
    assert all(torch.isfinite(v.grad).all() for v in changed.values())
    assert float(changed[OutputKey.CODEL_1P19Q].grad.abs().sum()) == 0.0
    assert float(changed[OutputKey.SEGMENTATION].grad[1].abs().sum()) == 0.0


def test_all_unknown_batch_has_zero_loss_not_nan() -> None:
    task = GliomaMultitaskTask()
    batch = Batch(
        torch.zeros(2, 4, 1, 2, 2),
        label=torch.zeros(2, 1, 2, 2, dtype=torch.long),
        has_label=torch.tensor([False, False]),
        clinical={f: ClinicalTarget.unknown(2) for f in task.clinical_fields},
    )
    outputs = {k: v.requires_grad_(True) for k, v in _outputs(2, (1, 2, 2), 3.0).items()}
    loss = task.loss(outputs, batch)
    loss.backward()
    assert loss.item() == 0.0


def test_grade_outside_two_to_four_is_an_error() -> None:
    task = GliomaMultitaskTask()
    batch = _hand_batch()
    clinical = dict(batch.clinical)
    clinical[ClinicalField.GRADE] = ClinicalTarget.from_values([1, None, 4])
    with pytest.raises(ValueError, match=r"known grades \[1.0\] are out of range"):
        task.loss(
            _outputs(3, (1, 1, 2)), Batch(batch.image, batch.label, batch.has_label, clinical)
        )


def _random_batch(seed: int, n: int = 12) -> tuple[Batch, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    spatial = (2, 8, 8)
    label = torch.randint(0, 4, (n, *spatial), generator=g) * (
        torch.rand(n, *spatial, generator=g) < 0.5
    )
    clinical = {}
    for i, field in enumerate((ClinicalField.IDH, ClinicalField.CODEL_1P19Q, ClinicalField.MGMT)):
        values: list[float | None] = [float(v) for v in torch.randint(0, 2, (n,), generator=g)]
        values[i] = None
        clinical[field] = ClinicalTarget.from_values(values)
    grades: list[float | None] = [float(2 + (b % 3)) for b in range(n)]
    grades[-1] = None
    clinical[ClinicalField.GRADE] = ClinicalTarget.from_values(grades)
    outputs = {
        OutputKey.SEGMENTATION: torch.randn(n, 1, *spatial, generator=g) * 3,
        OutputKey.IDH: torch.randn(n, generator=g),
        OutputKey.CODEL_1P19Q: torch.randn(n, generator=g),
        OutputKey.MGMT: torch.randn(n, generator=g),
        OutputKey.GRADE: torch.randn(n, 3, generator=g),
    }
    has_label = torch.ones(n, dtype=torch.bool)
    has_label[1] = False
    batch = Batch(torch.zeros(n, 4, *spatial), label=label, has_label=has_label, clinical=clinical)
    return batch, outputs


def test_marker_metrics_match_sklearn() -> None:
    # Prepare
    task = GliomaMultitaskTask()
    batch, outputs = _random_batch(seed=0)
    # Execute
    metrics = task.finalize(task.metric_state(outputs, batch))
    # Assert
    for marker in (Marker.IDH, Marker.CODEL_1P19Q, Marker.MGMT):
        target = batch.clinical[ClinicalField(marker.value)]
        y = target.values[target.known].numpy().astype(int)
        score = torch.sigmoid(outputs[marker][target.known]).double().numpy()
        y_pred = (score >= 0.5).astype(int)
        assert metrics[f"{marker}/auc"] == pytest.approx(roc_auc_score(y, score))
        assert metrics[f"{marker}/accuracy"] == pytest.approx(accuracy_score(y, y_pred))
        assert metrics[f"{marker}/recall"] == pytest.approx(recall_score(y, y_pred))
        assert metrics[f"{marker}/f1"] == pytest.approx(f1_score(y, y_pred))
        assert metrics[f"{marker}/specificity"] == pytest.approx(
            recall_score(y, y_pred, pos_label=0)
        )
        assert metrics[f"{marker}/num_examples"] == len(y) == 11


def test_grade_metrics_match_sklearn_one_vs_rest_and_macro() -> None:
    task = GliomaMultitaskTask()
    batch, outputs = _random_batch(seed=1)
    metrics = task.finalize(task.metric_state(outputs, batch))
    known = batch.clinical[ClinicalField.GRADE].known
    y = batch.clinical[ClinicalField.GRADE].values[known].numpy().astype(int) - 2
    p = torch.softmax(outputs[OutputKey.GRADE][known], dim=1).double().numpy()
    y_pred = p.argmax(axis=1)
    assert metrics["grade/auc"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr"))
    for k, name in enumerate(("II", "III", "IV")):
        assert metrics[f"grade/{name}/auc"] == pytest.approx(roc_auc_score(y == k, p[:, k]))
    assert metrics["grade/accuracy"] == pytest.approx(accuracy_score(y, y_pred))
    assert metrics["grade/recall"] == pytest.approx(recall_score(y, y_pred, average="macro"))
    assert metrics["grade/f1"] == pytest.approx(f1_score(y, y_pred, average="macro"))


def test_segmentation_dice_matches_monai_on_labelled_cases() -> None:
    task = GliomaMultitaskTask()
    batch, outputs = _random_batch(seed=2)
    state = task.metric_state(outputs, batch)
    labelled = batch.labelled
    pred = (torch.sigmoid(outputs[OutputKey.SEGMENTATION][labelled]) > 0.5).float()
    target = labels_to_regions(batch.label[labelled])[:, 2:3]
    expected = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(
        pred, target
    )
    np.testing.assert_allclose(state.cases["WT/dice"], expected[:, 0].double().numpy(), rtol=1e-6)
    assert task.finalize(state)["WT/num_examples"] == 11


def test_auc_is_nan_when_known_cases_hold_one_class() -> None:
    task = GliomaMultitaskTask()
    batch, outputs = _random_batch(seed=3)
    clinical = dict(batch.clinical)
    clinical[ClinicalField.MGMT] = ClinicalTarget.from_values([True] * 12)
    batch = Batch(batch.image, batch.label, batch.has_label, clinical)
    metrics = task.finalize(task.metric_state(outputs, batch))
    assert math.isnan(metrics["mgmt/auc"]) and math.isnan(metrics["mgmt/specificity"])
    assert metrics["mgmt/num_positive"] == metrics["mgmt/num_examples"] == 12
    assert not math.isnan(metrics["idh/auc"])


def test_merged_states_give_the_metrics_of_all_cases_at_once() -> None:
    task = GliomaMultitaskTask()
    batch, outputs = _random_batch(seed=4)
    parts = [slice(0, 5), slice(5, 12)]

    def part(s: slice) -> Batch:
        return Batch(
            batch.image[s],
            batch.label[s],
            batch.has_label[s],
            {k: ClinicalTarget(v.values[s], v.known[s]) for k, v in batch.clinical.items()},
        )

    states = [task.metric_state({k: v[s] for k, v in outputs.items()}, part(s)) for s in parts]
    whole = task.finalize(task.metric_state(outputs, batch))
    for order in (states, states[::-1]):
        merged = task.finalize(merge_states(order))
        assert merged.keys() == whole.keys()
        for key, value in whole.items():
            assert merged[key] == value or (math.isnan(merged[key]) and math.isnan(value)), key


def test_postprocess_gives_probabilities_and_masks() -> None:
    out = GliomaMultitaskTask().postprocess(_outputs(2, (1, 2, 2)))
    assert out[OutputKey.SEGMENTATION].dtype == torch.uint8
    assert out[OutputKey.IDH].tolist() == [0.5, 0.5]
    torch.testing.assert_close(out[OutputKey.GRADE].sum(dim=1), torch.ones(2))
