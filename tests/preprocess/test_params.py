"""PreprocessParams validate their fields, round-trip through JSON and have a stable id."""

import dataclasses

import numpy as np
import pytest

from neurofed.preprocess import BrainMaskMethod, PreprocessedCase, PreprocessError, PreprocessParams


def test_params_id_is_stable_across_processes_and_versions() -> None:
    # Prepare / Execute
    params = PreprocessParams(spacing=(1.0, 1.0, 1.0), spatial_shape=(128, 128, 128))
    # Assert: pinned, so that an accidental change of the canonical JSON is caught (it would
    # orphan every site's cache and change plan ids)
    assert PreprocessParams().params_id == "89144058be3a"
    assert params.params_id == "ef1e3cf5899c"
    assert PreprocessParams(spacing=[1, 1, 1], spatial_shape=[128, 128, 128]) == params


@pytest.mark.parametrize(
    "change",
    [
        {"spacing": (1.0, 1.0, 1.5)},
        {"spacing": None},
        {"spatial_shape": (128, 128, 96)},
        {"crop_to_brain": False},
        {"margin": 3},
        {"zscore": False},
    ],
)
def test_params_id_changes_with_every_field(change: dict[str, object]) -> None:
    base = PreprocessParams(spacing=(1.0, 1.0, 1.0), spatial_shape=(128, 128, 128))
    changed = dataclasses.replace(base, **change)  # type: ignore[arg-type]
    assert changed.params_id != base.params_id
    assert len(changed.params_id) == 12


def test_json_round_trip_uses_plain_types() -> None:
    params = PreprocessParams(spacing=(1.0, 1.0, 2.5), spatial_shape=(96, 96, 64), margin=2)
    data = params.to_json()
    assert data == {
        "spacing": [1.0, 1.0, 2.5],
        "spatial_shape": [96, 96, 64],
        "crop_to_brain": True,
        "margin": 2,
        "zscore": True,
    }
    again = PreprocessParams.from_json(data)
    assert again == params
    assert again.params_id == params.params_id


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"spacing": (1.0, -1.0, 1.0)}, r"spacing: got \(1.0, -1.0, 1.0\); give three positive"),
        ({"spacing": (1.0, 1.0)}, r"spacing: got \(1.0, 1.0\)"),
        ({"spacing": "1mm"}, r"spacing: got '1mm'"),
        ({"spacing": (1.0, float("nan"), 1.0)}, r"spacing: got"),
        ({"spatial_shape": (64, 64, 0)}, r"spatial_shape: got \(64, 64, 0\)"),
        ({"spatial_shape": (64, 64, 32.5)}, r"spatial_shape: .*whole voxels"),
        ({"margin": -1}, r"margin: got -1; give a whole number of voxels >= 0"),
        ({"margin": True}, r"margin: got True"),
        ({"zscore": "yes"}, r"zscore: got 'yes'; give true or false"),
    ],
)
def test_invalid_fields_are_rejected_with_the_field_and_value(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(PreprocessError, match=message):
        PreprocessParams(**kwargs)  # type: ignore[arg-type]


def test_unknown_json_field_suggests_the_close_one() -> None:
    with pytest.raises(PreprocessError, match=r"unknown field 'spatial_shap'.*'spatial_shape'"):
        PreprocessParams.from_json({"spatial_shap": [1, 2, 3]})


def test_preprocessed_case_rejects_mismatched_label() -> None:
    with pytest.raises(PreprocessError, match=r"PreprocessedCase.label.*\(2, 2, 2\)"):
        PreprocessedCase(
            image=np.zeros((1, 2, 2, 2), np.float32),
            label=np.zeros((2, 2, 3), np.uint8),
            affine=np.eye(4),
            brain_mask_method=BrainMaskMethod.NONZERO,
            original_spacing=(1.0, 1.0, 1.0),
            original_shape=(2, 2, 2),
            original_affine=np.eye(4),
        )


@pytest.mark.parametrize("flag", ["bias_correction", "registration"])
def test_harmonisation_flags_change_the_id_but_leave_old_ids_alone(flag: str) -> None:
    # Prepare
    base = PreprocessParams(spacing=(1.0, 1.0, 1.0), spatial_shape=(128, 128, 128))
    on = dataclasses.replace(base, **{flag: True})  # type: ignore[arg-type]
    # Assert: off (the default) is not written, so ids made before the flags existed stay valid
    assert flag not in base.to_json() and on.to_json()[flag] is True
    assert on.params_id != base.params_id
    assert PreprocessParams.from_json(base.to_json() | {flag: False}).params_id == "ef1e3cf5899c"
    assert PreprocessParams.from_json(on.to_json()) == on
    with pytest.raises(PreprocessError, match=rf"{flag}: got 'yes'; give true or false"):
        PreprocessParams(**{flag: "yes"})  # type: ignore[arg-type]
