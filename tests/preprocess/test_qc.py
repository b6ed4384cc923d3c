"""Each QC check fails a deliberately bad case for the right reason and passes a good one."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import numpy as np
import numpy.typing as npt
import pytest

from neurofed.keys import Modality
from neurofed.preprocess import PreprocessParams, harmonise_case
from neurofed.preprocess.harmonise import Registration
from neurofed.preprocess.qc import (
    CaseMeasures,
    Face,
    ModalityMeasures,
    QCCheck,
    QCConfig,
    QCRow,
    QCStatus,
    dice,
    evaluate_qc,
    face_contact,
    foreground_mask,
    measure_case,
    snr,
)

F32 = npt.NDArray[np.float32]


def _brain(n: int = 40) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    x, y, z = np.meshgrid(*[np.arange(n, dtype=float) - (n - 1) / 2] * 3, indexing="ij")
    radius = (x / (0.42 * n)) ** 2 + (y / (0.38 * n)) ** 2 + (z / (0.36 * n)) ** 2
    ventricle = (x / 3) ** 2 + (y / 7) ** 2 + (z / 4) ** 2 <= 1.0
    return radius <= 1.0, ventricle


def _channel(
    noise: float, *, flair: bool = False, seed: int = 0
) -> tuple[F32, npt.NDArray[np.bool_]]:
    """Skull-stripped: white matter 100 (FLAIR: parenchyma 100, CSF 10), background exactly 0."""
    brain, ventricle = _brain()
    image = np.where(brain, 100.0, 0.0)
    image[ventricle] = 10.0 if flair else 30.0
    image += np.random.default_rng(seed).normal(0.0, noise, image.shape) * brain
    return np.abs(image).astype(np.float32), brain


def _measures(
    sid: str = "c1",
    *,
    voxel: tuple[float, float, float] = (1.0, 1.0, 1.0),
    contact: dict[Face, float] | None = None,
    snr_value: float = 30.0,
    dice: float = 0.99,
    registration: Registration | None = None,
    percentiles: tuple[float, float, float] = (60.0, 100.0, 140.0),
) -> CaseMeasures:
    faces = {face: 0.0 for face in Face} | (contact or {})
    return CaseMeasures(
        subject_id=sid,
        voxel_size_mm=voxel,
        face_contact=MappingProxyType(faces),
        modalities=(
            ModalityMeasures(Modality.T1, snr_value, "white matter", percentiles),
            ModalityMeasures(Modality.FLAIR, 20.0, "csf", percentiles, 0.99, dice, registration),
        ),
    )


def _row(rows: tuple[QCRow, ...], check: QCCheck, modality: Modality | None = None) -> QCRow:
    found = [r for r in rows if r.check is check and (modality is None or r.modality is modality)]
    assert len(found) == 1, rows
    return found[0]


def test_snr_separates_a_clean_from_a_noisy_scan_on_skull_stripped_data() -> None:
    # Prepare: noise σ 2 (SNR 50) and σ 30 (SNR about 3), background exactly zero
    clean, brain = _channel(2.0)
    noisy, _ = _channel(30.0)
    # Execute
    good, region = snr(clean, brain, (1.0, 1.0, 1.0), Modality.T1)
    bad, _ = snr(noisy, brain, (1.0, 1.0, 1.0), Modality.T1)
    # Assert: the estimate is near the truth, in white matter
    assert region == "white matter"
    assert good is not None and 40.0 < good < 60.0
    assert bad is not None and 2.0 < bad < 5.0


def test_flair_snr_takes_its_noise_in_csf() -> None:
    clean, brain = _channel(2.0, flair=True)
    noisy, _ = _channel(45.0, flair=True)  # truth 2.2; magnitude noise in dark CSF looks smaller
    value, region = snr(clean, brain, (1.0, 1.0, 1.0), Modality.FLAIR)
    bad, _ = snr(noisy, brain, (1.0, 1.0, 1.0), Modality.FLAIR)
    assert region == "csf"
    assert value is not None and 20.0 < value < 70.0  # truth 50; edges of the CSF add a little
    assert bad is not None and bad < QCConfig().flair_snr_fail


@pytest.mark.parametrize(
    ("snr_value", "modality_status"),
    [(30.0, QCStatus.PASS), (7.0, QCStatus.WARN), (3.0, QCStatus.FAIL)],
)
def test_snr_check_grades_against_its_thresholds(
    snr_value: float, modality_status: QCStatus
) -> None:
    table = evaluate_qc([_measures(snr_value=snr_value)])
    row = _row(table.rows, QCCheck.SNR, Modality.T1)
    assert row.status is modality_status
    assert f"SNR {snr_value:.1f}" in row.reason
    assert ("noisy scan" in row.reason) is (modality_status is not QCStatus.PASS)


def test_voxel_size_fails_thick_slices_and_scales_with_the_target_spacing() -> None:
    # Execute
    good = evaluate_qc([_measures(voxel=(1.0, 1.0, 1.2))])
    thick = evaluate_qc([_measures(voxel=(1.0, 1.0, 8.0))])
    coarse_study = evaluate_qc([_measures(voxel=(1.0, 1.0, 8.0))], QCConfig.for_spacing((4, 4, 4)))
    # Assert
    assert _row(good.rows, QCCheck.VOXEL_SIZE).status is QCStatus.PASS
    row = _row(thick.rows, QCCheck.VOXEL_SIZE)
    assert row.status is QCStatus.FAIL and "8.0 mm is coarser than expected" in row.reason
    assert row.threshold == "pass <= 3 mm, warn <= 6 mm"
    assert _row(coarse_study.rows, QCCheck.VOXEL_SIZE).status is QCStatus.PASS


def test_coverage_fails_a_brain_cut_at_the_top_and_only_warns_at_the_bottom() -> None:
    # Prepare: the measured contact of a mask that runs into the superior face
    mask = np.zeros((10, 10, 10), bool)
    mask[2:8, 2:8, 3:] = True
    contact = face_contact(mask)
    # Execute
    cut = evaluate_qc([_measures(contact=contact)])
    neck = evaluate_qc([_measures(contact={Face.INFERIOR: 0.6})])
    inside = evaluate_qc([_measures()])
    # Assert
    assert contact[Face.SUPERIOR] == 1.0 and contact[Face.LEFT] == 0.0
    row = _row(cut.rows, QCCheck.COVERAGE)
    assert row.status is QCStatus.FAIL and "the superior part is cut off" in row.reason
    assert _row(neck.rows, QCCheck.COVERAGE).status is QCStatus.WARN
    assert _row(inside.rows, QCCheck.COVERAGE).status is QCStatus.PASS


def test_mask_dice_fails_a_modality_that_does_not_overlay_the_reference() -> None:
    bad = evaluate_qc([_measures(dice=0.7)])
    row = _row(bad.rows, QCCheck.MASK_DICE, Modality.FLAIR)
    assert row.status is QCStatus.FAIL and "FLAIR does not overlay T1" in row.reason
    assert _row(evaluate_qc([_measures()]).rows, QCCheck.MASK_DICE).status is QCStatus.PASS


def _registration(shift: float, degrees: float, applied: bool = True) -> Registration:
    return Registration(
        matrix=tuple(tuple(float(v) for v in row) for row in np.eye(4)),
        rotation_deg=degrees,
        shift_mm=shift,
        max_displacement_mm=shift + degrees,
        metric_before=-0.4,
        metric_after=-0.8,
        iterations=20,
        stop="converged",
        applied=applied,
    )


def test_registration_check_warns_on_a_corrected_misalignment_and_fails_a_wild_one() -> None:
    small = evaluate_qc([_measures(registration=_registration(0.5, 0.2, applied=False))])
    moved = evaluate_qc([_measures(registration=_registration(9.0, 8.0))])
    wild = evaluate_qc([_measures(registration=_registration(45.0, 5.0))])
    worse = evaluate_qc([_measures(registration=_registration(1.0, 1.0), dice=0.9)])
    assert _row(small.rows, QCCheck.REGISTRATION).status is QCStatus.PASS
    row = _row(moved.rows, QCCheck.REGISTRATION)
    assert row.status is QCStatus.WARN and "FLAIR was 9.0 mm / 8.0° off T1; corrected" in row.reason
    assert "implausibly large" in _row(wild.rows, QCCheck.REGISTRATION).reason
    row = _row(worse.rows, QCCheck.REGISTRATION)
    assert row.status is QCStatus.FAIL and "lowered the mask Dice 0.990 -> 0.900" in row.reason


def test_intensity_outlier_is_judged_against_the_site() -> None:
    # Prepare: eight similar cases and one whose bright tail is far longer
    normal = [_measures(f"c{k}", percentiles=(60.0 + k, 100.0, 140.0 + k)) for k in range(8)]
    odd = _measures("odd", percentiles=(60.0, 100.0, 260.0))
    # Execute
    table = evaluate_qc([*normal, odd])
    few = evaluate_qc(normal[:3])
    # Assert
    rows = [r for r in table.rows if r.check is QCCheck.INTENSITY_OUTLIER]
    assert {r.subject_id for r in rows if r.status is QCStatus.FAIL} == {"odd"}
    assert all(r.status is QCStatus.PASS for r in rows if r.subject_id != "odd")
    odd_row = next(r for r in rows if r.subject_id == "odd" and r.modality is Modality.T1)
    assert "p95/p50 robust z +" in odd_row.reason
    assert all("not assessed" in r.reason for r in few.rows if r.check is QCCheck.INTENSITY_OUTLIER)


def test_a_case_that_could_not_be_preprocessed_fails_with_its_reason() -> None:
    table = evaluate_qc([_measures()], failed={"broken": "c2: FLAIR unreadable"})
    assert table.case_status() == {"broken": QCStatus.FAIL, "c1": QCStatus.PASS}
    assert table.failures()["broken"][0].reason == "c2: FLAIR unreadable"


def test_foreground_mask_ignores_contrast_on_unstripped_heads() -> None:
    # Prepare: the same head in two contrasts on a noisy (Rayleigh) background
    brain, ventricle = _brain(32)
    rng = np.random.default_rng(1)
    background = np.hypot(rng.normal(0, 3, brain.shape), rng.normal(0, 3, brain.shape))
    t1 = np.where(brain, np.where(ventricle, 30.0, 100.0), background).astype(np.float32)
    flair = np.where(brain, np.where(ventricle, 15.0, 60.0), background).astype(np.float32)
    # Execute
    a, b = foreground_mask(t1), foreground_mask(flair)
    shifted = foreground_mask(np.roll(flair, 3, axis=1))
    # Assert: the two contrasts agree; a 3-voxel shift shows
    assert dice(a, b) > 0.95
    assert dice(a, shifted) < 0.88
    assert a[brain].all() and a.sum() < 1.6 * brain.sum()  # the head, a voxel or so beyond


def test_measure_case_records_every_modality_and_the_registration() -> None:
    # Prepare: FLAIR shifted 3 voxels against T1, registration on
    t1, _ = _channel(2.0)
    flair, _ = _channel(2.0, flair=True, seed=1)
    flair = np.roll(flair, 3, axis=1)
    params = PreprocessParams(registration=True)
    harmonised = harmonise_case(np.stack([t1, flair]), None, np.eye(4), params)
    # Execute
    measures = measure_case("c1", harmonised, (Modality.T1, Modality.FLAIR))
    # Assert: Dice improved by registration, the record says how far it moved
    t1_m, flair_m = measures.modalities
    assert t1_m.dice_after is None and t1_m.registration is None
    assert flair_m.registration is not None and flair_m.registration.applied
    assert 2.0 < flair_m.registration.shift_mm < 4.0
    assert flair_m.dice_before is not None and flair_m.dice_after is not None
    assert flair_m.dice_before < 0.95 < flair_m.dice_after
    assert t1_m.snr is not None and t1_m.snr > 20
    again = CaseMeasures.from_json(measures.to_json())
    assert again.to_json() == measures.to_json()
    assert replace(again, subject_id="x").subject_id == "x"
