"""N4 removes a known bias field; rigid registration recovers a known motion on phantom data;
the whole pipeline keeps every voxel's world position."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
import SimpleITK as sitk  # noqa: N813
from nibabel.orientations import aff2axcodes
from scipy import ndimage

from neurofed.keys import Modality
from neurofed.phantom import PhantomConfig, render_case, sample_case, sample_site
from neurofed.preprocess import (
    PreprocessError,
    PreprocessParams,
    finish_case,
    harmonise_case,
)
from neurofed.preprocess.harmonise import correct_bias, register_rigid

F32 = npt.NDArray[np.float32]


def _grid(n: int) -> tuple[npt.NDArray[np.float64], ...]:
    return tuple(np.meshgrid(*[np.arange(n, dtype=float) - (n - 1) / 2] * 3, indexing="ij"))


def _head(n: int = 40) -> tuple[F32, npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """An ellipsoidal brain: a white-matter core (100), grey rim (70), a dark ventricle."""
    x, y, z = _grid(n)
    radius = (x / (0.42 * n)) ** 2 + (y / (0.36 * n)) ** 2 + (z / (0.33 * n)) ** 2
    brain = radius <= 1.0
    white = radius <= 0.55
    image = np.where(brain, 70.0, 0.0)
    image[white] = 100.0
    image[(x / 4) ** 2 + ((y - 3) / 6) ** 2 + (z / 4) ** 2 <= 1.0] = 20.0
    return image.astype(np.float32), brain, white & ~(image == 20.0)


def test_n4_removes_a_known_multiplicative_bias() -> None:
    # Prepare: a smooth 40 % bias across the head, a little noise
    image, brain, white = _head()
    x, y, z = _grid(image.shape[0])
    bias = np.exp(0.35 * x / 20 - 0.2 * (y / 20) ** 2 + 0.15 * z / 20).astype(np.float32)
    noise = np.random.default_rng(0).normal(0, 1.0, image.shape).astype(np.float32)
    biased = np.where(brain, image * bias + noise, 0.0).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])

    def cv(values: F32) -> float:
        return float(values.std() / values.mean())

    # Execute
    corrected, record = correct_bias(biased, affine, brain)
    # Assert: white matter is homogeneous again; the zero background stays zero
    assert record.applied and record.field_ratio > 1.2
    assert cv(corrected[white]) < 0.35 * cv(biased[white])
    assert cv(corrected[white]) < 0.05
    assert np.all(corrected[~brain] == 0)
    assert corrected.shape == biased.shape and corrected.dtype == np.float32


def test_n4_skips_a_channel_without_enough_positive_voxels() -> None:
    channel = np.zeros((20, 20, 20), np.float32)
    channel[10, 10, 10:15] = 5.0
    out, record = correct_bias(channel, np.eye(4), channel > 0)
    assert not record.applied and "N4 needs at least 100" in record.reason
    assert out is channel


@pytest.fixture(scope="module")
def phantom_case() -> tuple[F32, F32, npt.NDArray[np.float64]]:
    """T1 and FLAIR of one rendered glioma phantom case at 3 mm (about 50 x 60 x 50)."""
    config = PhantomConfig(preset="glioma", sites=1, cases=1, seed=4, spacing=3.0)
    site = sample_site(config, 1)
    rendered = render_case(site, sample_case(config, site, 1), 3.0)
    t1, flair = rendered.images[Modality.T1], rendered.images[Modality.FLAIR]
    return t1, flair, rendered.affine


def _euler(degrees: tuple[float, float, float], shift: tuple[float, float, float], centre: object):  # type: ignore[no-untyped-def]
    transform = sitk.Euler3DTransform()
    transform.SetCenter(centre)
    transform.SetRotation(*(math.radians(d) for d in degrees))
    transform.SetTranslation(shift)
    return transform


def test_registration_recovers_a_known_rigid_motion(
    phantom_case: tuple[F32, F32, npt.NDArray[np.float64]],
) -> None:
    # Prepare: the FLAIR moved by a known rigid transform T0 (moving(x) = flair(T0 x))
    t1, flair, affine = phantom_case
    reference = sitk.GetImageFromArray(np.transpose(flair, (2, 1, 0)))
    reference.SetSpacing([float(v) for v in np.diag(affine)[:3]])
    reference.SetOrigin([float(v) for v in affine[:3, 3]])
    centre = reference.TransformContinuousIndexToPhysicalPoint(
        [float(v) for v in np.argwhere(t1 > 0).mean(axis=0)]
    )
    known = _euler((2.0, -3.0, 6.0), (5.0, -4.0, 3.0), centre)
    moved = sitk.Resample(reference, reference, known, sitk.sitkLinear, 0.0)
    moving = np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(moved), (2, 1, 0)))
    # Execute
    aligned, record = register_rigid(t1, moving.astype(np.float32), affine, t1 > 0)
    # Assert: the found map undoes T0 (T0 after found = identity) within a voxel and 2 degrees
    matrix = np.eye(4)
    matrix[:3, :3] = np.array(known.GetMatrix()).reshape(3, 3)
    matrix[:3, 3] = np.array(known.GetTranslation()) + centre - matrix[:3, :3] @ centre
    residual = matrix @ np.array(record.matrix)
    angle = math.degrees(math.acos(np.clip((np.trace(residual[:3, :3]) - 1) / 2, -1, 1)))
    offset = np.linalg.norm(residual[:3, :3] @ centre + residual[:3, 3] - centre)
    assert record.applied and record.metric_after < record.metric_before
    assert angle < 2.0
    assert offset < 3.0  # one voxel
    assert 6.0 < record.rotation_deg < 8.5 and 5.0 < record.shift_mm < 9.0
    brain = ndimage.binary_erosion(t1 > 0, iterations=2)
    assert (
        np.corrcoef(aligned[brain], flair[brain])[0, 1]
        > np.corrcoef(moving[brain], flair[brain])[0, 1]
    )
    assert np.all(aligned[t1 == 0][: 10**4] >= 0)


def test_registration_leaves_aligned_channels_untouched(
    phantom_case: tuple[F32, F32, npt.NDArray[np.float64]],
) -> None:
    t1, flair, affine = phantom_case
    out, record = register_rigid(t1, flair, affine)
    assert not record.applied
    assert record.max_displacement_mm < 1.0 and record.reason
    assert out is flair


def test_registration_names_a_grid_mismatch() -> None:
    with pytest.raises(PreprocessError, match=r"must lie on one grid"):
        register_rigid(np.ones((8, 8, 8), np.float32), np.ones((8, 8, 9), np.float32), np.eye(4))


LPS = np.array([[-2.0, 0, 0, 40.0], [0, -2.0, 0, 30.0], [0, 0, 2.0, -20.0], [0, 0, 0, 1]])
_T = math.radians(15)
OBLIQUE = np.array(
    [[2 * math.cos(_T), -2 * math.sin(_T), 0, -10.0], [2 * math.sin(_T), 2 * math.cos(_T), 0, 5.0],
     [0, 0, 2.0, -30.0], [0, 0, 0, 1]]
)  # fmt: skip


@pytest.mark.parametrize("affine", [LPS, OBLIQUE], ids=["LPS", "oblique"])
def test_full_pipeline_ends_in_ras_and_keeps_world_positions(affine: np.ndarray) -> None:
    # Prepare: two channels of a head with a bright marker blob (in both) and a label there
    image, brain, _ = _head(32)
    marker = np.zeros(image.shape, bool)
    marker[20:23, 11:14, 17:20] = True
    channel = np.where(marker, 400.0, image).astype(np.float32)
    stacked = np.stack([channel, 0.5 * channel + np.where(brain, 10.0, 0.0)]).astype(np.float32)
    label = marker.astype(np.uint8)
    params = PreprocessParams(spacing=(1.5, 1.5, 1.5), bias_correction=True, registration=True)
    before = (affine @ np.r_[np.argwhere(marker).mean(axis=0), 1.0])[:3]
    # Execute
    harmonised = harmonise_case(stacked, label, affine, params, subject_id="c1")
    case = finish_case(harmonised, params)
    # Assert: RAS axes, the marker's world centre kept within half a (new) voxel per axis
    assert aff2axcodes(case.affine) == ("R", "A", "S")
    assert np.allclose(np.linalg.norm(case.affine[:3, :3], axis=0), 1.5)
    assert case.label is not None
    to_voxels = np.linalg.inv(case.affine[:3, :3])
    after = (case.affine @ np.r_[np.argwhere(case.label == 1).mean(axis=0), 1.0])[:3]
    assert np.abs(to_voxels @ (after - before)).max() <= 0.5 + 1e-6
    bright = np.argwhere(case.image[0] > 0.5 * case.image[0].max()).mean(axis=0)
    bright_world = (case.affine @ np.r_[bright, 1.0])[:3]
    assert np.abs(to_voxels @ (bright_world - before)).max() <= 0.5 + 1e-6
    assert [b is not None and b.applied for b in harmonised.bias] == [True, True]
    assert harmonised.registration[0] is None and harmonised.registration[1] is not None
    assert set(harmonised.seconds) == {"reorient", "bias_correction", "registration"}
