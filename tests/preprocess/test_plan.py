"""Plans: nnU-Net v2's rules by hand, and federated planning equals pooled planning."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from neurofed.keys import Modality
from neurofed.preprocess.fingerprint import (
    Fingerprint,
    case_fingerprint,
    compute_site_fingerprint,
    merge_fingerprints,
)
from neurofed.preprocess.params import PreprocessParams
from neurofed.preprocess.plan import (
    Plan,
    PlanError,
    PlannerSettings,
    feature_map_elements,
    make_plan,
    pool_and_conv_props,
)
from neurofed.preprocess.plan_preprocessing import PlanPreprocessing, departures_from_nnunet
from tests.preprocess.fingerprint_sites import THREE_SITES, write_sites

MODALITIES = (Modality.FLAIR, Modality.T1)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_sites(tmp_path_factory.mktemp("plan"))


def box(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Fingerprint:
    """One T1 case whose brain is a box of ``shape`` voxels of ``spacing`` mm."""
    image = np.zeros((1, *(n + 2 for n in shape)), np.float32)
    image[0, 1:-1, 1:-1, 1:-1] = 1.0
    return case_fingerprint(image, None, np.diag([*spacing, 1.0]), [Modality.T1])


# -- federated == pooled ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "settings",
    [
        PlannerSettings(memory_budget_gb=8.0),
        PlannerSettings(memory_budget_gb=0.004, base_filters=8, max_filters=64),
    ],
    ids=["8GB", "tiny-budget"],
)
def test_the_federated_plan_equals_the_pooled_plan(
    sites: dict[str, Path], settings: PlannerSettings
) -> None:
    # Prepare: each site computes its fingerprint; the server sees only their JSON
    payloads = [
        compute_site_fingerprint(sites[name], MODALITIES, split=None, min_cases=1).to_json()
        for name in THREE_SITES
    ]
    pooled_fingerprint = compute_site_fingerprint(
        sites["pooled"], MODALITIES, split=None, min_cases=1
    )

    # Execute
    federated = make_plan(
        merge_fingerprints([Fingerprint.from_json(p) for p in payloads]), settings
    )
    pooled = make_plan(pooled_fingerprint, settings)

    # Assert: every field, and so the id
    for field in dataclasses.fields(Plan):
        assert getattr(federated, field.name) == getattr(pooled, field.name), field.name
    assert federated.plan_id == pooled.plan_id
    # the thick-slice rule applied: z is the 10th percentile of 1.5, 2, 4, 4, 5, 5, 5, 6, 6 mm
    assert federated.anisotropic_axis == 2
    assert federated.spacing == pytest.approx((1.0, 1.0, 1.9), abs=1e-12)
    assert federated.batch_size >= 2


def test_the_plan_follows_nnunet_on_the_cases_themselves(sites: dict[str, Path]) -> None:
    # Prepare: what nnU-Net v2 computes from the per-case lists it would have pooled
    specs = [spec for specs in THREE_SITES.values() for spec in specs]
    spacings = np.array([s.ras_spacing for s in specs])
    shapes = np.array([s.ras_brain_shape for s in specs], dtype=float)
    target = np.percentile(spacings, 50, axis=0)
    target[2] = np.percentile(spacings[:, 2], 10)  # anisotropic: 5 > 3 * 1 and 5 * 3 < 18
    median_shape = np.median(np.round(shapes * spacings / target), axis=0)
    fingerprint = compute_site_fingerprint(sites["pooled"], MODALITIES, split=None, min_cases=1)

    # Execute
    plan = make_plan(fingerprint)

    # Assert (spacings and extents lie on the fingerprint's grids: no rounding error)
    assert plan.spacing == pytest.approx(tuple(target), abs=1e-12)
    assert plan.median_shape == tuple(median_shape)


# -- nnU-Net's rules, by hand -------------------------------------------------------------------


def test_thick_slices_take_the_tenth_percentile_of_their_spacing() -> None:
    # Prepare: (0.5, 0.5, z) mm with z = 3, 5, 5, 5, 6; 40 x 40 x 8 voxels
    cases = [box((40, 40, 8), (0.5, 0.5, z)) for z in (3.0, 5.0, 5.0, 5.0, 6.0)]

    # Execute
    plan = make_plan(merge_fingerprints(cases))

    # Assert: median z 5 > 3 * 0.5 and 8 * 3 < 40, so z = 3 + 0.4 * (5 - 3) = 3.8
    assert plan.spacing == (0.5, 0.5, 3.8)
    assert plan.anisotropic_axis == 2
    # median of round(8 * z / 3.8) = round(6.3), round(10.5), ×3, round(12.6) = 11
    assert plan.median_shape == (40.0, 40.0, 11.0)


def test_the_thick_axis_never_gets_finer_than_the_others() -> None:
    # Prepare: two of ten cases are thin-sliced, so the 10th percentile (0.4) is below 0.5
    cases = [box((40, 40, 100), (0.5, 0.5, 0.4))] * 2
    cases += [box((40, 40, 8), (0.5, 0.5, 5.0))] * 8

    # Execute
    plan = make_plan(merge_fingerprints(cases))

    # Assert: nnU-Net then takes the largest other spacing + 1e-5
    assert plan.spacing == (0.5, 0.5, 0.5 + 1e-5)
    assert plan.anisotropic_axis == 2


@pytest.mark.parametrize(
    ("shape", "spacing"),
    [((40, 40, 40), (0.5, 0.5, 5.0)), ((40, 40, 8), (1.0, 1.0, 3.0))],
    ids=["many-slices", "ratio-exactly-3"],
)
def test_the_median_spacing_is_kept_unless_both_anisotropy_conditions_hold(
    shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> None:
    # Prepare: a thinner case to make the 10th percentile differ from the median
    thin = (spacing[0], spacing[1], spacing[2] / 2)
    cases = [box(shape, thin)] + [box(shape, spacing)] * 4

    # Execute
    plan = make_plan(merge_fingerprints(cases))

    # Assert
    assert plan.spacing == spacing
    assert plan.anisotropic_axis is None


def test_the_patch_shrinks_along_the_relatively_largest_axis_to_fit_the_budget() -> None:
    # Prepare: a 32³ brain of 1 mm; 4 … 16 filters; budget 0.01 GB = 700000 elements
    fingerprint = box((32, 32, 32), (1.0, 1.0, 1.0))
    settings = PlannerSettings(memory_budget_gb=0.01, base_filters=4, max_filters=16)
    full = ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 2))

    # Execute
    plan = make_plan(fingerprint, settings)

    # Assert, by hand: 32³ (4 levels) needs 960512 elements per sample; shrinking z, then y,
    # then x by one divisor step each (32 → 28: 28 has divisor 4, 24 would skip it) gives
    # 842240, 740096, then 625632 <= 700000 at 28³ with 3 levels
    assert feature_map_elements((32, 32, 32), full, (4, 8, 16, 16), 1, 2) == 960512
    assert feature_map_elements((32, 32, 28), (*full[:3], (2, 2, 1)), (4, 8, 16, 16), 1, 2) == (
        842240
    )
    assert plan.patch_size == (28, 28, 28)
    assert plan.strides == ((1, 1, 1), (2, 2, 2), (2, 2, 2))
    assert plan.filters == (4, 8, 16)
    assert plan.batch_size == 2  # round(700000 / 625632 * 2)
    assert plan.estimated_memory_gb == pytest.approx(625632 * 8 / 560e6)


def test_the_batch_grows_with_the_budget_but_covers_at_most_5_percent_of_the_data() -> None:
    # Prepare: 100 cases of 32³ voxels; a 32³ patch needs 960512 elements per sample
    fingerprint = merge_fingerprints([box((32, 32, 32), (1.0, 1.0, 1.0))] * 100)
    small = PlannerSettings(memory_budget_gb=0.02, base_filters=4, max_filters=16)
    large = PlannerSettings(memory_budget_gb=8.0, base_filters=4, max_filters=16)

    # Execute
    small_plan, large_plan = make_plan(fingerprint, small), make_plan(fingerprint, large)

    # Assert: round(1.4e6 / 960512 * 2) = 3; with 8 GB the 5 % cap wins: 100 * 0.05 = 5
    assert (small_plan.patch_size, small_plan.batch_size) == ((32, 32, 32), 3)
    assert (large_plan.patch_size, large_plan.batch_size) == ((32, 32, 32), 5)


def test_a_budget_too_small_for_two_downsamplings_is_refused() -> None:
    # Execute / Assert
    with pytest.raises(PlanError, match=r"memory_budget_gb = 0.001 is too small.*only 1 down"):
        make_plan(box((32, 32, 32), (1.0, 1.0, 1.0)), PlannerSettings(memory_budget_gb=0.001))
    with pytest.raises(PlanError, match=r"median shape .* allows only 1 down-sampling"):
        make_plan(box((12, 12, 12), (1.0, 1.0, 1.0)))
    with pytest.raises(PlanError, match="holds no case"):
        make_plan(Fingerprint.empty([Modality.T1]))


def test_pooling_follows_nnunet_v2() -> None:
    # Execute
    single = pool_and_conv_props((1.0, 1.0, 1.0), (40, 8, 8))
    thick = pool_and_conv_props((0.5, 0.5, 3.8), (40, 40, 11))

    # Assert: after one level only x is large enough; it is pooled alone while >= 12 voxels
    assert single.strides == ((1, 1, 1), (2, 2, 2), (2, 1, 1))
    assert single.kernel_sizes == ((3, 3, 3),) * 3
    assert (single.patch_size, single.divisor) == ((40, 8, 8), (4, 2, 2))
    # z (3.8 mm) waits until x and y reach 2 mm; its kernel is 1 until then
    assert thick.strides == ((1, 1, 1), (2, 2, 1), (2, 2, 1), (2, 2, 2))
    assert thick.kernel_sizes == ((3, 3, 1), (3, 3, 1), (3, 3, 3), (3, 3, 3))
    assert (thick.patch_size, thick.divisor) == ((40, 40, 12), (8, 8, 2))


# -- the plan as a record -----------------------------------------------------------------------


def test_a_plan_round_trips_and_its_id_follows_its_content() -> None:
    # Prepare
    fingerprint = box((30, 36, 30), (1.0, 1.0, 1.0))
    plan = make_plan(fingerprint, PlannerSettings(memory_budget_gb=0.1))

    # Execute
    again = Plan.from_json(plan.to_json())
    other = make_plan(fingerprint, PlannerSettings(memory_budget_gb=0.1, base_filters=16))

    # Assert
    assert again == plan and again.plan_id == plan.plan_id
    assert other.plan_id != plan.plan_id
    assert plan.fingerprint_id == fingerprint.fingerprint_id
    assert plan.preprocess_params().spacing == plan.spacing
    assert plan.preprocess_params((16, 16, 16)).spatial_shape == (32, 48, 32)
    with pytest.raises(PlanError, match="did you mean 'spacing'"):
        Plan.from_json({**plan.to_json(), "spacnig": [1, 1, 1]})
    with pytest.raises(PlanError, match="missing field"):
        Plan.from_json({k: v for k, v in plan.to_json().items() if k != "filters"})


# -- what the plan says about preprocessing -------------------------------------------------------


def test_plan_json_records_the_preprocessing_and_names_each_departure_from_nnunet() -> None:
    # Prepare
    fingerprint = box((30, 36, 30), (1.0, 1.0, 1.0))
    settings = PlannerSettings(memory_budget_gb=0.1)

    # Execute
    plain = make_plan(fingerprint, settings).to_json()
    harmonised = make_plan(
        fingerprint, settings, PreprocessParams(bias_correction=True, margin=2, zscore=False)
    ).to_json()

    # Assert: nnU-Net's names where they exist, neurofed's values
    assert plain["preprocessing"] == {
        "crop": "brain-mask-box",
        "crop_margin": 0,
        "brain_mask": "nonzero-else-otsu",
        "normalization": "zscore",
        "normalization_mask": "brain",
        "use_mask_for_norm": [True],
        "image_interpolation": "linear",
        "image_order": 1,
        "label_interpolation": "nearest",
        "label_order": 0,
        "separate_z": False,
        "bias_correction": False,
        "registration": False,
        "intensity_foreground": "label>0, each labelled case weighted equally",
    }
    topics = [d.split(":")[0] for d in plain["departures_from_nnunet"]]
    assert topics == ["crop", "normalisation", "resampling", "axes", "fingerprint"]
    crop = plain["departures_from_nnunet"][0]
    assert "nonzero box" in crop and "Otsu" in crop and "whole field of view" in crop
    assert "4 of the exact values" in plain["departures_from_nnunet"][4]  # half an intensity bin
    # a study's own preprocessing shows, and so does the departure it makes
    record = harmonised["preprocessing"]
    assert (record["crop_margin"], record["normalization"], record["use_mask_for_norm"]) == (
        2,
        "none",
        [False],
    )
    assert record["normalization_mask"] == "none" and record["bias_correction"] is True
    assert "2 voxel(s) of margin" in harmonised["departures_from_nnunet"][0]
    assert harmonised["departures_from_nnunet"][1].startswith("normalisation: none")
    assert harmonised["departures_from_nnunet"][-1].startswith("bias correction: N4")
    assert harmonised["preprocessing"] != plain["preprocessing"]


def test_a_plan_that_claims_other_preprocessing_or_lacks_the_record_is_refused() -> None:
    # Prepare
    data = make_plan(box((30, 36, 30), (1.0, 1.0, 1.0)), PlannerSettings(memory_budget_gb=0.1))
    sent = data.to_json()
    cubic = {**sent, "preprocessing": {**sent["preprocessing"], "image_order": 3}}
    unmasked = {**sent, "preprocessing": {**sent["preprocessing"], "use_mask_for_norm": [False]}}
    two_channels = {**sent, "preprocessing": {**sent["preprocessing"], "use_mask_for_norm": [True]}}
    two_channels["modalities"] = ["FLAIR", "T1"]
    old = {k: v for k, v in sent.items() if k not in ("preprocessing", "departures_from_nnunet")}

    # Execute / Assert
    with pytest.raises(PlanError, match=r"image_order = 3, but this neurofed's is 1"):
        Plan.from_json(cubic)
    with pytest.raises(PlanError, match="goes with normalization_mask 'brain'"):
        Plan.from_json(unmasked)
    with pytest.raises(PlanError, match="one use_mask_for_norm each"):
        Plan.from_json(two_channels)
    with pytest.raises(PlanError, match=r"no 'preprocessing' record.*plan again"):
        Plan.from_json(old)


def test_brain_extraction_is_recorded_named_as_a_departure_and_old_plans_read() -> None:
    record = PlanPreprocessing.of(PreprocessParams(brain_extraction=True), num_channels=1)
    data = record.to_json()

    assert data["brain_extraction"] is True
    assert PlanPreprocessing.from_json(data) == record
    assert departures_from_nnunet(record)[0].startswith("brain extraction: ")
    plain = PlanPreprocessing.of(PreprocessParams(), num_channels=1).to_json()
    assert "brain_extraction" not in plain  # plans written before it keep their JSON and hash
    assert PlanPreprocessing.from_json(plain).brain_extraction is False
    assert not any(
        d.startswith("brain extraction")
        for d in departures_from_nnunet(PlanPreprocessing.from_json(plain))
    )
