"""Label conventions map onto the internal numbering."""

import numpy as np
import pytest

from neurofed.data.labels import allowed_values, invalid_values, to_internal
from neurofed.keys import LabelConvention, TumorLabel


@pytest.mark.parametrize(
    ("convention", "raw", "internal"),
    [
        (
            LabelConvention.BRATS_2021,
            [0, 1, 2, 4],
            [0, TumorLabel.NCR, TumorLabel.ED, TumorLabel.ET],
        ),
        (
            LabelConvention.BRATS_2023,
            [0, 1, 2, 3],
            [0, TumorLabel.NCR, TumorLabel.ED, TumorLabel.ET],
        ),
        (
            LabelConvention.MSD_BRAIN_TUMOUR,
            [0, 1, 2, 3],
            [0, TumorLabel.ED, TumorLabel.NCR, TumorLabel.ET],
        ),
        (LabelConvention.BINARY_LESION, [0, 1], [0, 1]),
    ],
)
def test_conventions_map_to_internal(convention, raw, internal) -> None:
    out = to_internal(np.array(raw, dtype=np.uint8), convention)
    assert out.tolist() == [int(v) for v in internal]
    assert out.dtype == np.uint8


def test_brats2021_and_2023_agree_on_the_same_anatomy() -> None:
    anatomy_2021 = np.array([[0, 4], [1, 2]], dtype=np.uint8)
    anatomy_2023 = np.array([[0, 3], [1, 2]], dtype=np.uint8)
    np.testing.assert_array_equal(
        to_internal(anatomy_2021, LabelConvention.BRATS_2021),
        to_internal(anatomy_2023, LabelConvention.BRATS_2023),
    )


def test_value_outside_convention_is_named() -> None:
    labels = np.array([0, 1, 3], dtype=np.uint8)
    assert invalid_values(labels, LabelConvention.BRATS_2021) == (3,)
    with pytest.raises(ValueError, match=r"\[3\].*brats-2021.*\[0, 1, 2, 4\]"):
        to_internal(labels, LabelConvention.BRATS_2021)
    assert allowed_values(LabelConvention.BINARY_LESION) == (0, 1)
