"""Planted QC problems: validated, recorded in phantom.json, deterministic, and really there."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from neurofed.data.nifti import read_image
from neurofed.keys import Modality
from neurofed.phantom import PhantomConfig, QCProblem, generate_federation, sample_site
from neurofed.phantom.qc_problems import LOW_SNR_FRACTION, MISREGISTRATION, plant
from neurofed.phantom.site import qc_schedule, site_rng
from neurofed.phantom.writers import case_paths

from .conftest import SPACING


def test_config_keeps_problems_to_readable_cases() -> None:
    config = PhantomConfig(
        preset="ms", sites=2, cases=6, seed=0, spacing=SPACING, broken_per_site=2,
        qc_problems_per_site=4,
    )  # fmt: skip
    assert PhantomConfig.from_json(config.to_json()) == config
    with pytest.raises(
        ValueError, match=r"qc_problems_per_site = 5: must be a whole number in 0..4"
    ):
        PhantomConfig.from_json(config.to_json() | {"qc_problems_per_site": 5})


def test_problems_cycle_over_the_federation_and_avoid_broken_cases() -> None:
    config = PhantomConfig(
        preset="glioma", sites=3, cases=8, seed=1, spacing=SPACING, broken_per_site=3,
        qc_problems_per_site=2,
    )  # fmt: skip
    sites = [sample_site(config, k) for k in (1, 2, 3)]
    kinds = [kind for site in sites for kind in site.qc_problems.values()]
    assert sorted(kinds) == sorted([*QCProblem, QCProblem.LOW_SNR, QCProblem.MISREGISTERED])
    assert qc_schedule(config)[2] == [QCProblem.CROPPED_FOV, QCProblem.THICK_SLICES]
    assert all(not set(s.qc_problems) & set(s.broken) for s in sites)
    assert sample_site(config, 2) == sites[1]


def test_the_first_site_generators_are_those_of_earlier_versions() -> None:
    # A phantom without QC problems must keep its bytes: the added fourth generator may not
    # shift the first three.
    old = np.random.SeedSequence([7, 2]).spawn(3)
    for generator, child in zip(site_rng(7, 2)[:3], old, strict=True):
        expected = np.random.Generator(np.random.PCG64(child))
        assert generator.integers(2**62) == expected.integers(2**62)


def _ball(shape: tuple[int, int, int]) -> np.ndarray:
    grid = np.meshgrid(*[np.arange(n) - (n - 1) / 2 for n in shape], indexing="ij")
    return sum((g / (0.35 * n)) ** 2 for g, n in zip(grid, shape, strict=True)) <= 1.0


def test_misregistration_moves_the_last_modality_by_the_stated_rigid_motion() -> None:
    # Prepare: a bright off-centre marker in both modalities, 2 mm voxels stored LPS
    shape = (40, 40, 30)
    marker = np.zeros(shape, bool)
    marker[28:31, 10:13, 20:23] = True
    image = np.where(marker, 500.0, np.where(_ball(shape), 100.0, 0.0)).astype(np.float32)
    affine = np.diag([-2.0, -2.0, 2.0, 1.0])
    affine[:3, 3] = (40.0, 40.0, -30.0)
    images = {Modality.T1: image, Modality.FLAIR: image.copy()}
    # Execute
    label = marker.astype(np.uint8)
    out = plant(
        QCProblem.MISREGISTERED, images, label, affine, spacing=2.0, noise_seed=0,
        label_follows_last=True,
    )  # fmt: skip
    # Assert: T1 untouched; FLAIR's marker where R (x - c) + c + t puts it; the label followed
    np.testing.assert_array_equal(out.images[Modality.T1], image)

    def world(mask: np.ndarray) -> np.ndarray:
        return (affine @ np.r_[np.argwhere(mask).mean(axis=0), 1.0])[:3]

    degrees, shift = MISREGISTRATION
    angle = math.radians(degrees)
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    centre = (affine @ np.r_[(np.array(shape) - 1) / 2, 1.0])[:3]
    expected = rotation @ (world(marker) - centre) + centre + np.array(shift)
    assert np.linalg.norm(world(out.images[Modality.FLAIR] > 300) - expected) < 1.0
    assert np.abs(world(out.label > 0) - expected).max() <= 1.0 + 1e-6  # nearest: half a voxel


def test_thick_slices_cropped_fov_and_low_snr_change_what_they_say() -> None:
    shape = (20, 20, 24)
    brain = _ball(shape)
    image = np.where(brain, 100.0, 0.0).astype(np.float32)
    label = brain.astype(np.uint8)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    images = {Modality.T1: image}
    # Execute
    thick = plant(QCProblem.THICK_SLICES, images, label, affine, spacing=1.0, noise_seed=0)
    cut = plant(QCProblem.CROPPED_FOV, images, label, affine, spacing=1.0, noise_seed=0)
    noisy = plant(QCProblem.LOW_SNR, images, label, affine, spacing=1.0, noise_seed=0)
    # Assert
    assert thick.affine[2, 2] == 8.0 and thick.images[Modality.T1].shape[:2] == (20, 20)
    assert thick.label.shape == thick.images[Modality.T1].shape
    assert thick.images[Modality.T1][:, :, 0].max() == 0  # padded: the brain is not cut
    assert cut.images[Modality.T1].shape == (20, 20, 17) and cut.label.shape == (20, 20, 17)
    spread = float(np.std(noisy.images[Modality.T1][brain]))
    assert spread > 0.5 * LOW_SNR_FRACTION * 100.0
    assert np.all(noisy.images[Modality.T1][~brain] == 0)  # skull-stripped stays stripped


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_phantom_json_records_the_problems_and_the_bytes_repeat(tmp_path: Path) -> None:
    # Prepare
    config = PhantomConfig(
        preset="brain-age", sites=1, cases=4, seed=3, spacing=SPACING, qc_problems_per_site=4
    )
    # Execute
    generate_federation(config, tmp_path / "a")
    generate_federation(config, tmp_path / "b")
    # Assert
    manifest = json.loads((tmp_path / "a" / "phantom.json").read_text())
    assert sorted(manifest["qc_problems"].values()) == sorted(p.value for p in QCProblem)
    assert manifest["config"]["qc_problems_per_site"] == 4
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    thick = next(s for s, k in manifest["qc_problems"].items() if k == "thick-slices")
    t1 = read_image(tmp_path / "a" / "site-1" / case_paths(config.preset, thick)[Modality.T1])
    assert t1.spacing[2] >= 8 * SPACING
