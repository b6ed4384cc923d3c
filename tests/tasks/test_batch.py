"""Batch and clinical-target validation."""

from __future__ import annotations

import pytest
import torch

from neurofed.keys import ClinicalField
from neurofed.tasks import Batch, ClinicalTarget


def test_has_label_defaults_follow_the_label() -> None:
    with_label = Batch(torch.zeros(2, 1, 4, 4, 4), label=torch.zeros(2, 4, 4, 4, dtype=torch.long))
    without = Batch(torch.zeros(2, 1, 4, 4, 4))
    assert with_label.labelled.tolist() == [True, True]
    assert without.labelled.tolist() == [False, False]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image": torch.zeros(2, 1, 4, 4)}, r"expected a floating \(B, C, X, Y, Z\) tensor"),
        (
            {"image": torch.zeros(2, 1, 4, 4, 4), "label": torch.zeros(2, 1, 4, 4, 4).long()},
            r"Batch.label has shape \(2, 1, 4, 4, 4\); expected \(2, 4, 4, 4\)",
        ),
        (
            {"image": torch.zeros(2, 1, 4, 4, 4), "label": torch.zeros(2, 4, 4, 4)},
            r"convert with label.long\(\)",
        ),
        (
            {"image": torch.zeros(2, 1, 4, 4, 4), "has_label": torch.tensor([True, False])},
            "Batch.label is None",
        ),
        (
            {
                "image": torch.zeros(2, 1, 4, 4, 4),
                "clinical": {ClinicalField.AGE: ClinicalTarget.from_values([1.0])},
            },
            r"Batch.clinical\['age'\] must be a ClinicalTarget of 2 cases",
        ),
    ],
)
def test_malformed_batches_say_what_is_wrong(kwargs, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Batch(**kwargs)


def test_unknown_is_not_false() -> None:
    target = ClinicalTarget.from_values([True, None, False])
    assert target.known.tolist() == [True, False, True]
    assert target.values[0] == 1.0 and target.values[2] == 0.0
    assert torch.isnan(target.values[1])


def test_string_keys_become_clinical_fields() -> None:
    batch = Batch(torch.zeros(1, 1, 2, 2, 2), clinical={"age": ClinicalTarget.from_values([3.0])})
    assert list(batch.clinical) == [ClinicalField.AGE]
    assert batch.to("cpu").clinical[ClinicalField.AGE].values.tolist() == [3.0]
