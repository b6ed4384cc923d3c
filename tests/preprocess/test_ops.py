"""Preprocessing ops keep every voxel's world position and do what their names say."""

import numpy as np
import numpy.typing as npt
import pytest
from nibabel.orientations import aff2axcodes

from neurofed.preprocess import (
    BrainMaskMethod,
    PreprocessError,
    PreprocessParams,
    brain_mask,
    crop_or_pad,
    crop_to_mask,
    preprocess_case,
    reorient_to_ras,
    resample_to_spacing,
    zscore_in_mask,
)


def world(affine: npt.NDArray[np.float64], voxel: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """World (mm) position of a voxel index, or of a fractional one such as a centroid."""
    return (affine @ np.r_[np.asarray(voxel, dtype=np.float64), 1.0])[:3]


def centroid(mask: npt.NDArray[np.generic]) -> npt.NDArray[np.float64]:
    return np.argwhere(mask).mean(axis=0)


def affine_from(matrix: npt.ArrayLike, origin: tuple[float, float, float]) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = matrix
    affine[:3, 3] = origin
    return affine


def rotation_z(degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])


LPS = affine_from([[-1, 0, 0], [0, -1, 0], [0, 0, 1]], (90.0, 126.0, -72.0))
LAS = affine_from([[-1.5, 0, 0], [0, 1, 0], [0, 0, 2]], (60.0, -30.0, 5.0))
PERMUTED = affine_from([[0, 0, -3], [2, 0, 0], [0, -1, 0]], (10.0, -40.0, 25.0))  # axes z,x,y
OBLIQUE = affine_from(rotation_z(20) @ np.diag([1.0, 1.0, 3.0]), (-12.0, 4.0, 30.0))


@pytest.mark.parametrize("affine", [LPS, LAS, PERMUTED], ids=["LPS", "LAS", "permuted"])
def test_reorient_to_ras_keeps_a_marked_voxel_in_place(affine: np.ndarray) -> None:
    # Prepare: one marked voxel in image and label
    image = np.zeros((2, 5, 6, 7), np.float32)
    image[:, 1, 4, 2] = (5.0, 9.0)
    label = np.zeros((5, 6, 7), np.uint8)
    label[1, 4, 2] = 3
    # Execute
    ras = reorient_to_ras(image, label, affine)
    # Assert
    assert aff2axcodes(ras.affine) == ("R", "A", "S")
    assert ras.label is not None
    marked = np.argwhere(ras.image[0] == 5.0)[0]
    np.testing.assert_allclose(world(ras.affine, marked), world(affine, (1, 4, 2)))
    np.testing.assert_array_equal(np.argwhere(ras.label == 3)[0], marked)
    assert ras.image[1][tuple(marked)] == 9.0
    assert sorted(ras.image.shape[1:]) == [5, 6, 7]


def test_reorient_keeps_an_oblique_scan_oblique_and_in_place() -> None:
    affine = affine_from(rotation_z(200) @ np.diag([1.0, 1.0, 3.0]), (-12.0, 4.0, 30.0))
    image = np.zeros((1, 4, 5, 6), np.float32)
    image[0, 3, 1, 4] = 1.0
    ras = reorient_to_ras(image, None, affine)
    marked = np.argwhere(ras.image[0] == 1.0)[0]
    np.testing.assert_allclose(world(ras.affine, marked), world(affine, (3, 1, 4)))
    assert aff2axcodes(ras.affine) == ("R", "A", "S")


def test_reorient_of_ras_input_is_a_no_op() -> None:
    image = np.ones((1, 2, 3, 4), np.float32)
    ras = reorient_to_ras(image, None, np.diag([2.0, 2.0, 2.0, 1.0]))
    assert ras.image is image
    np.testing.assert_array_equal(ras.affine, np.diag([2.0, 2.0, 2.0, 1.0]))


def test_resample_1x1x3_to_2mm_keeps_landmark_centre_and_labels() -> None:
    # Prepare: 1 x 1 x 3 mm voxels, a landmark blob and a label with four values
    affine = affine_from(np.diag([1.0, 1.0, 3.0]).tolist(), (-20.0, 15.0, -9.0))
    image = np.zeros((1, 24, 20, 8), np.float32)
    image[0, 8:12, 6:10, 3:5] = 100.0
    label = np.zeros((24, 20, 8), np.uint8)
    label[2:8, 2:8, 1:4], label[12:20, 10:18, 4:7], label[0:6, 12:20, 5:8] = 1, 2, 4
    # Execute
    out = resample_to_spacing(image, label, affine, (2.0, 2.0, 2.0))
    # Assert: spacing, landmark within half an output voxel, label set, centre of volume
    assert out.label is not None
    assert out.image.shape == (1, 12, 10, 12)  # z: 8 x 3 mm -> centres 0..22 mm
    assert out.label.shape == (12, 10, 12)
    np.testing.assert_allclose(np.linalg.norm(out.affine[:3, :3], axis=0), [2.0, 2.0, 2.0])
    before = world(affine, centroid(image[0] > 50))
    after = world(out.affine, centroid(out.image[0] > 50))
    assert np.abs(after - before).max() <= 1.0
    assert set(np.unique(out.label)) == {0, 1, 2, 4}
    centre_in = world(affine, (np.array(image.shape[1:]) - 1) / 2)
    centre_out = world(out.affine, (np.array(out.image.shape[1:]) - 1) / 2)
    assert np.abs(centre_out - centre_in).max() <= 1.0


def test_resample_reproduces_a_linear_field_exactly_on_an_oblique_grid() -> None:
    # Prepare: intensity = a linear function of world position, which linear interpolation keeps
    shape = (10, 11, 7)
    coefficients = np.array([0.3, -0.2, 0.5])
    voxels = np.indices(shape).reshape(3, -1)
    field = coefficients @ (OBLIQUE[:3, :3] @ voxels + OBLIQUE[:3, 3:])
    image = field.reshape((1, *shape)).astype(np.float32)
    # Execute
    out = resample_to_spacing(image, None, OBLIQUE, (2.0, 1.5, 2.0))
    # Assert: each output voxel holds the field at the world position its affine gives
    inner = tuple(slice(0, n - 1) for n in out.image.shape[1:])  # last row is border padding
    grid = np.indices(out.image.shape[1:]).reshape(3, -1)
    expected = (coefficients @ (out.affine[:3, :3] @ grid + out.affine[:3, 3:])).reshape(
        out.image.shape[1:]
    )
    np.testing.assert_allclose(out.image[0][inner], expected[inner], atol=1e-3)
    np.testing.assert_allclose(out.affine[:3, :3] @ np.diag([0.5, 1 / 1.5, 0.5]), rotation_z(20))


def test_resample_skips_when_already_at_spacing() -> None:
    image = np.ones((1, 3, 3, 3), np.float32)
    out = resample_to_spacing(image, None, np.diag([1.0, 1.0, 1.0005, 1.0]), (1.0, 1.0, 1.0))
    assert out.image is image


def ellipsoid(
    shape: tuple[int, int, int], radii: tuple[float, float, float]
) -> npt.NDArray[np.bool_]:
    grid = np.indices(shape) - (np.array(shape) - 1)[:, None, None, None] / 2
    return np.asarray(((grid / np.array(radii)[:, None, None, None]) ** 2).sum(axis=0) <= 1)


def sphere(shape: tuple[int, int, int], radius: float) -> npt.NDArray[np.bool_]:
    return ellipsoid(shape, (radius, radius, radius))


def test_brain_mask_on_zero_background_is_the_nonzero_voxels() -> None:
    brain = sphere((16, 16, 16), 6)
    rng = np.random.default_rng(0)
    image = np.stack([brain * rng.uniform(0.1, 1, brain.shape) for _ in range(2)]).astype(
        np.float32
    )
    image[0, 8, 8, 8] = image[1, 8, 8, 8] = 0.0  # a zero voxel inside is filled
    mask, method = brain_mask(image)
    assert method is BrainMaskMethod.NONZERO
    np.testing.assert_array_equal(mask, brain)


def test_brain_mask_on_noisy_background_uses_otsu() -> None:
    # Prepare: bright brain with a dark hole, noisy background, one small bright speck outside
    rng = np.random.default_rng(1)
    brain = sphere((20, 20, 20), 7)
    hole = sphere((20, 20, 20), 2)
    image = np.abs(rng.normal(0, 10, (1, 20, 20, 20)))
    image[0][brain & ~hole] += 200.0
    image[0, 1:3, 1:3, 1:3] += 400.0
    # Execute
    mask, method = brain_mask(image.astype(np.float32))
    # Assert
    assert method is BrainMaskMethod.OTSU
    dice = 2 * (mask & brain).sum() / (mask.sum() + brain.sum())
    assert dice > 0.9
    assert mask[hole].all()  # holes filled
    assert not mask[1:3, 1:3, 1:3].any()  # only the largest component


def test_brain_mask_of_all_zero_image_is_an_error() -> None:
    with pytest.raises(PreprocessError, match="all zero"):
        brain_mask(np.zeros((1, 4, 4, 4), np.float32))


def test_zscore_inside_mask_and_zero_outside() -> None:
    rng = np.random.default_rng(2)
    image = np.stack([rng.normal(300, 40, (6, 6, 6)), rng.normal(-5, 0.1, (6, 6, 6))])
    mask = np.zeros((6, 6, 6), bool)
    mask[1:5, 1:5, 1:5] = True
    out = zscore_in_mask(image.astype(np.float32), mask)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out[:, mask].mean(axis=1), [0.0, 0.0], atol=1e-5)
    np.testing.assert_allclose(out[:, mask].std(axis=1), [1.0, 1.0], atol=1e-4)
    assert not out[:, ~mask].any()


def test_zscore_of_a_constant_channel_names_the_channel() -> None:
    image = np.ones((3, 4, 4, 4), np.float32)
    image[0] = np.arange(64).reshape(4, 4, 4)
    image[2] = image[0]
    with pytest.raises(PreprocessError, match=r"channel 1 is constant \(1\)"):
        zscore_in_mask(image, np.ones((4, 4, 4), bool))


def test_crop_to_mask_with_margin_clipped_at_the_edge() -> None:
    affine = affine_from(np.diag([2.0, 1.0, 3.0]).tolist(), (5.0, 6.0, 7.0))
    image = np.arange(2 * 8 * 9 * 10, dtype=np.float32).reshape(2, 8, 9, 10)
    label = (np.arange(8 * 9 * 10) % 3).astype(np.uint8).reshape(8, 9, 10)
    mask = np.zeros((8, 9, 10), bool)
    mask[0:3, 4:6, 6:9] = True
    out = crop_to_mask(image, label, affine, mask, margin=2)
    assert out.label is not None
    assert out.image.shape == (2, 5, 6, 6)  # x 0..4, y 2..7, z 4..9 (clipped)
    np.testing.assert_allclose(out.affine[:3, 3], world(affine, (0, 2, 4)))
    np.testing.assert_array_equal(out.image, image[:, 0:5, 2:8, 4:10])
    np.testing.assert_array_equal(out.label, label[0:5, 2:8, 4:10])


def test_crop_or_pad_centres_and_pads_with_zero() -> None:
    # Prepare: axis 0 padded 4 -> 7, axis 1 cropped 9 -> 4, axis 2 unchanged
    image = np.ones((1, 4, 9, 5), np.float32)
    label = np.full((4, 9, 5), 2, np.uint8)
    # Execute
    out = crop_or_pad(image, label, LPS, (7, 4, 5))
    # Assert
    assert out.label is not None
    assert out.image.shape == (1, 7, 4, 5)
    assert out.label.shape == (7, 4, 5)
    np.testing.assert_allclose(out.affine[:3, 3], world(LPS, (-1, 2, 0)))
    np.testing.assert_array_equal(out.image[0, :, 0, 0], [0, 1, 1, 1, 1, 0, 0])
    np.testing.assert_array_equal(out.label[:, 0, 0], [0, 2, 2, 2, 2, 0, 0])
    np.testing.assert_allclose(world(out.affine, (1, 0, 0)), world(LPS, (0, 2, 0)))


def test_preprocess_case_runs_the_whole_chain() -> None:
    # Prepare: LPS, 1 x 1 x 3 mm, zero background, a label blob
    affine = LPS @ np.diag([1.0, 1.0, 3.0, 1.0])
    brain = ellipsoid((24, 24, 10), (9, 8, 3.5))
    rng = np.random.default_rng(3)
    image = np.stack([brain * rng.uniform(50, 150, brain.shape) for _ in range(2)])
    label = np.zeros(brain.shape, np.uint8)
    label[8:12, 10:14, 4:6] = 2
    params = PreprocessParams(spacing=(2.0, 2.0, 2.0), spatial_shape=(12, 12, 12), margin=1)
    # Execute
    case = preprocess_case(image.astype(np.float32), label, affine, params, subject_id="s-1")
    # Assert
    assert case.label is not None
    assert case.image.shape == (2, 12, 12, 12)
    assert case.brain_mask_method is BrainMaskMethod.NONZERO
    assert aff2axcodes(case.affine) == ("R", "A", "S")
    assert case.original_spacing == (1.0, 1.0, 3.0)
    assert case.original_shape == (24, 24, 10)
    np.testing.assert_array_equal(case.original_affine, affine)
    assert set(np.unique(case.label)) == {0, 2}
    before = world(affine, centroid(label == 2))
    after = world(case.affine, centroid(case.label == 2))
    assert np.abs(after - before).max() <= 1.0
    inside = case.image[0][case.image[0] != 0]
    assert abs(inside.mean()) < 0.2
    assert 0.8 < inside.std() < 1.2


def test_preprocess_case_errors_name_the_subject_and_copy_the_input() -> None:
    image = np.ones((1, 4, 4, 4), np.float32)
    image[0, 0, 0, 0] = np.nan
    with pytest.raises(PreprocessError, match=r"^s-7: image has NaN"):
        preprocess_case(image, None, np.eye(4), PreprocessParams(), subject_id="s-7")
    image[0, 0, 0, 0] = 0.0
    params = PreprocessParams(crop_to_brain=False, zscore=False)
    case = preprocess_case(image, None, np.eye(4), params)
    assert not np.shares_memory(case.image, image)
    assert case.brain_mask_method is BrainMaskMethod.OTSU


def test_label_on_another_grid_is_rejected() -> None:
    with pytest.raises(PreprocessError, match=r"label: shape \(3, 3, 3\) differs"):
        reorient_to_ras(np.ones((1, 4, 4, 4), np.float32), np.zeros((3, 3, 3), np.uint8), LPS)
