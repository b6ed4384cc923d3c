"""Fingerprints: exact merging, stated error bounds, skipped cases, and nothing per case leaves."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from neurofed.data.splits import load_splits
from neurofed.keys import Modality, Split
from neurofed.preprocess.fingerprint import (
    CASE_WEIGHT,
    DEFAULT_SPEC,
    SUM_FRACTION_BITS,
    Fingerprint,
    FingerprintError,
    FingerprintSpec,
    Grid,
    case_fingerprint,
    compute_site_fingerprint,
    merge_fingerprints,
)
from tests.preprocess.fingerprint_sites import (
    THREE_SITES,
    CaseSpec,
    case_arrays,
    write_site,
    write_sites,
)

MODALITIES = (Modality.FLAIR, Modality.T1)

SITES = THREE_SITES


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_sites(tmp_path_factory.mktemp("fingerprint"))


def all_specs() -> list[CaseSpec]:
    return [spec for specs in SITES.values() for spec in specs]


def box_case(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    values: npt.NDArray[np.float32] | None = None,
    *,
    labelled: bool = True,
) -> Fingerprint:
    """One T1 case: a box "brain" of ``shape`` voxels (intensities ``values``) in a zero rim,
    the whole box labelled (or no label map)."""
    image = np.zeros((1, *(n + 2 for n in shape)), np.float32)
    image[0, 1:-1, 1:-1, 1:-1] = 1.0 if values is None else values
    label = (image[0] != 0).astype(np.uint8) if labelled else None
    return case_fingerprint(image, label, np.diag([*spacing, 1.0]), [Modality.T1])


def equal_weight_pool(values: list[npt.NDArray[np.float32]]) -> npt.NDArray[np.float64]:
    """Every case's values repeated to the same count (their sizes' least common multiple)."""
    common = int(np.lcm.reduce([v.size for v in values]))
    return np.concatenate([np.repeat(v.ravel(), common // v.size) for v in values]).astype(float)


def leaves(data: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (path, value) of a JSON tree."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield ((*path, key), key)
            yield from leaves(value, (*path, key))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from leaves(value, (*path, index))
    else:
        yield path, data


def skeleton(data: Any) -> Any:
    """The JSON tree's structure (keys and list lengths), not its numbers."""
    if isinstance(data, dict):
        return {key: skeleton(value) for key, value in data.items()}
    if isinstance(data, list):
        return [skeleton(value) for value in data]
    return type(data).__name__


# -- merging -----------------------------------------------------------------------------------


def test_merged_site_fingerprints_equal_the_pooled_fingerprint_byte_for_byte(
    sites: dict[str, Path],
) -> None:
    # Prepare
    per_site = [
        compute_site_fingerprint(sites[name], MODALITIES, split=None, min_cases=1) for name in SITES
    ]

    # Execute
    merged = merge_fingerprints(per_site)
    pooled = compute_site_fingerprint(sites["pooled"], MODALITIES, split=None, min_cases=1)

    # Assert
    assert [f.num_cases for f in per_site] == [3, 3, 3]
    assert merged.canonical_json() == pooled.canonical_json()
    assert merged.fingerprint_id == pooled.fingerprint_id
    assert merged.num_cases == 9 and merged.num_label_foreground == 9


def test_merging_is_order_and_grouping_independent() -> None:
    # Prepare
    parts = [box_case((10 + i, 12, 8 - i), (1.0, 1.0 + 0.25 * i, 3.0)) for i in range(4)]
    reference = merge_fingerprints(parts).canonical_json()

    # Execute
    orders = [merge_fingerprints(list(p)).canonical_json() for p in itertools.permutations(parts)]
    grouped = merge_fingerprints(
        [merge_fingerprints(parts[:1]), merge_fingerprints([parts[3], parts[1]]), parts[2]]
    )
    with_empty = merge_fingerprints([Fingerprint.empty([Modality.T1]), *parts])

    # Assert
    assert set(orders) == {reference}
    assert grouped.canonical_json() == reference
    assert with_empty.canonical_json() == reference
    assert Fingerprint.from_json(json.loads(reference)).canonical_json() == reference


def test_fingerprints_of_other_modalities_or_bins_do_not_merge() -> None:
    # Prepare
    t1 = box_case((8, 8, 8), (1.0, 1.0, 1.0))
    wide = FingerprintSpec(spacing=Grid(0.0, 100.0, 2001))
    image = np.zeros((1, 10, 10, 10), np.float32)
    image[0, 1:-1, 1:-1, 1:-1] = 1.0
    other_bins = case_fingerprint(image, None, np.eye(4), [Modality.T1], wide)

    # Execute / Assert
    with pytest.raises(FingerprintError, match="T1 and FLAIR"):
        merge_fingerprints([t1, Fingerprint.empty([Modality.FLAIR])])
    with pytest.raises(FingerprintError, match="different bins"):
        merge_fingerprints([t1, other_bins])
    with pytest.raises(FingerprintError, match="format_version"):
        Fingerprint.from_json(t1.to_json() | {"format_version": 99})
    with pytest.raises(FingerprintError, match=r"is 1; this neurofed reads 2 \(its intensity"):
        Fingerprint.from_json(t1.to_json() | {"format_version": 1})
    with pytest.raises(FingerprintError, match="counts must add up"):
        Fingerprint.from_json(t1.to_json() | {"num_cases": 2})


# -- derived statistics and their bounds ----------------------------------------------------


def test_spacing_and_shape_percentiles_are_exact_on_the_grid(sites: dict[str, Path]) -> None:
    # Prepare
    specs = all_specs()
    spacings = np.array([s.ras_spacing for s in specs])
    shapes = np.array([s.ras_brain_shape for s in specs], dtype=float)

    # Execute
    fingerprint = compute_site_fingerprint(sites["pooled"], MODALITIES, split=None, min_cases=1)

    # Assert: spacings are multiples of 0.01 mm and shapes whole voxels: no rounding error
    for q in (0, 10, 50, 90, 100):
        assert fingerprint.spacing_percentile(q) == pytest.approx(
            tuple(np.percentile(spacings, q, axis=0)), abs=1e-12
        )
        assert fingerprint.shape_percentile(q) == pytest.approx(
            tuple(np.percentile(shapes, q, axis=0)), abs=1e-12
        )
        assert fingerprint.extent_percentile(q) == pytest.approx(
            tuple(np.percentile(shapes * spacings, q, axis=0)), abs=1e-12
        )


def test_off_grid_values_are_within_half_a_bin() -> None:
    # Prepare: spacings of 240 mm / 256 and 250 mm / 512, not multiples of 0.01 mm
    rng = np.random.default_rng(0)
    spacings = [(0.9375, 0.48828125, 1.0 + 0.0037 * i) for i in range(7)]
    shapes = [(int(rng.integers(8, 14)), int(rng.integers(8, 14)), 9) for _ in spacings]
    merged = merge_fingerprints([box_case(sh, sp) for sh, sp in zip(shapes, spacings, strict=True)])
    extents = np.array(shapes) * np.array(spacings)
    target = (0.9, 0.7, 1.2)

    # Execute / Assert
    for q in (0, 25, 50, 75, 100):
        true_spacing = np.percentile(spacings, q, axis=0)
        true_extent = np.percentile(extents, q, axis=0)
        got_spacing = np.array(merged.spacing_percentile(q))
        got_extent = np.array(merged.extent_percentile(q))
        assert np.all(np.abs(got_spacing - true_spacing) <= DEFAULT_SPEC.spacing.half_bin + 1e-12)
        assert np.all(np.abs(got_extent - true_extent) <= DEFAULT_SPEC.extent.half_bin + 1e-12)
        # nnU-Net's compute_new_shape: round(extent / target) per case, then the percentile
        nnunet = np.percentile(np.round(extents / np.array(target)), q, axis=0)
        got = np.array(merged.resampled_shape_percentile(target, q))
        assert np.all(np.abs(got - nnunet) <= 1.0)
    assert merged.spacing_percentile(50)[0] == 0.94  # 0.9375 rounded to the 0.01 mm grid


def test_intensity_mean_and_std_are_exact_and_percentiles_within_half_a_bin() -> None:
    # Prepare: three labelled cases of different sizes, scales far apart
    rng = np.random.default_rng(1)
    shapes = [(9, 10, 11), (5, 6, 7), (12, 10, 8)]
    values = [
        rng.normal(mean, std, shape).astype(np.float32)
        for (mean, std), shape in zip(
            ((800.0, 60.0), (2500.0, 300.0), (150.5, 7.25)), shapes, strict=True
        )
    ]
    parts = [box_case(shape, (1.0, 1.0, 1.0), v) for shape, v in zip(shapes, values, strict=True)]
    pooled = equal_weight_pool(values)  # what nnU-Net's equal per-case sample tends to

    # Execute
    stats = merge_fingerprints(parts).intensity_stats(Modality.T1)

    # Assert
    assert (stats.num_cases, stats.num_voxels) == (3, sum(v.size for v in values))
    assert stats.histogram.total == 3 * CASE_WEIGHT
    assert stats.mean() == pytest.approx(float(pooled.mean()), rel=1e-13)
    assert stats.std() == pytest.approx(float(pooled.std()), rel=1e-12)
    half_bin = DEFAULT_SPEC.intensity.half_bin
    for q in (0.5, 5, 50, 95, 99.5):
        assert abs(stats.percentile(q) - float(np.percentile(pooled, q))) <= half_bin + 1e-9
    assert stats.sum_mean == sum(
        round(float(np.mean(v.astype(np.float64))) * 2.0**SUM_FRACTION_BITS) for v in values
    )


def test_a_case_without_labelled_voxels_adds_no_intensities() -> None:
    # Prepare: one labelled case, one without a label map, one with an empty label map
    rng = np.random.default_rng(4)
    values = rng.normal(700.0, 50.0, (6, 7, 8)).astype(np.float32)
    labelled = box_case((6, 7, 8), (1.0, 1.0, 1.0), values)
    image = np.zeros((1, 8, 9, 10), np.float32)
    image[0, 1:-1, 1:-1, 1:-1] = 3 * values  # a brighter brain that must not count
    unlabelled = case_fingerprint(image, None, np.eye(4), [Modality.T1])
    empty = case_fingerprint(image, np.zeros((8, 9, 10), np.uint8), np.eye(4), [Modality.T1])

    # Execute
    merged = merge_fingerprints([labelled, unlabelled, empty])

    # Assert: the intensities are the labelled case's alone; the others count as cases
    assert (merged.num_cases, merged.num_label_foreground) == (3, 1)
    assert merged.intensity == labelled.intensity
    assert unlabelled.intensity_stats(Modality.T1).num_cases == 0
    with pytest.raises(FingerprintError, match=r"labelled voxels \(label > 0\) only"):
        unlabelled.intensity_stats(Modality.T1).mean()
    with pytest.raises(FingerprintError, match="no case had any"):
        empty.intensity_stats(Modality.T1).percentile(50)


def test_each_labelled_case_weighs_the_same_however_large_its_foreground() -> None:
    # Prepare: 8 voxels of 1000 in one case, 80 voxels of 3000 in the other (10 times more)
    small = box_case((2, 2, 2), (1.0, 1.0, 1.0), np.full((2, 2, 2), 1000.0, np.float32))
    large = box_case((4, 4, 5), (1.0, 1.0, 1.0), np.full((4, 4, 5), 3000.0, np.float32))

    # Execute
    stats = merge_fingerprints([small, large]).intensity_stats(Modality.T1)

    # Assert: half the weight each (pooled voxels would give a mean of 2818 and a median of 3000)
    assert stats.num_voxels == 88
    assert (stats.mean(), stats.std()) == (2000.0, 1000.0)
    assert [stats.percentile(q) for q in (25, 50, 75)] == [1000.0, 2000.0, 3000.0]
    bins = DEFAULT_SPEC.intensity.indices(np.array([1000.0, 3000.0])).tolist()
    assert [stats.histogram.counts[b] for b in bins] == [CASE_WEIGHT, CASE_WEIGHT]


def test_uneven_weights_round_to_exactly_one_case_each() -> None:
    # Prepare: 3 voxels in 3 bins: 2**32 / 3 is not whole
    values = np.array([8.0, 16.0, 24.0], np.float32).reshape(3, 1, 1)

    # Execute
    stats = box_case((3, 1, 1), (1.0, 1.0, 1.0), values).intensity_stats(Modality.T1)

    # Assert: the largest remainders go to the lowest bins; nothing lands in an empty bin
    third = CASE_WEIGHT // 3
    assert stats.histogram.counts[1:4] == (third + 1, third, third)
    assert stats.histogram.total == sum(stats.histogram.counts[1:4]) == CASE_WEIGHT


def test_label_foreground_is_used_when_the_case_has_one() -> None:
    # Prepare
    spec = CaseSpec("sub-x", (16, 16, 16), (1.0, 1.0, 1.0), seed=3)
    arrays = case_arrays(spec)
    image = np.stack([arrays.flair, arrays.t1])

    # Execute
    labelled = case_fingerprint(image, arrays.label, arrays.affine, MODALITIES)
    unlabelled = case_fingerprint(image, None, arrays.affine, MODALITIES)

    # Assert: the 2x2x2 lesion is FLAIR 1500; without a label, no intensity counts
    flair = labelled.intensity_stats(Modality.FLAIR)
    assert (flair.num_voxels, flair.mean(), labelled.num_label_foreground) == (8, 1500.0, 1)
    assert unlabelled.intensity_stats(Modality.T1).num_voxels == 0
    assert unlabelled.num_label_foreground == 0


def test_percentiles_outside_the_grid_are_refused() -> None:
    # Prepare: intensities above the default 32768 ceiling
    bright = box_case((6, 6, 6), (1.0, 1.0, 1.0), np.full((6, 6, 6), 50_000.0, np.float32))

    # Execute / Assert
    stats = bright.intensity_stats(Modality.T1)
    assert stats.histogram.overflow == CASE_WEIGHT and stats.mean() == 50_000.0
    with pytest.raises(FingerprintError, match="above the histogram's range"):
        stats.percentile(50)


# -- the site side ------------------------------------------------------------------------------


def test_a_broken_case_is_skipped_and_counted(tmp_path: Path) -> None:
    # Prepare
    specs = [CaseSpec(f"sub-k{i}", (14, 16, 12), (1.0, 1.0, 2.0), seed=i) for i in range(4)]
    root = write_site(tmp_path / "site", specs)
    broken = root / "sub-k2" / "anat" / "sub-k2_FLAIR.nii.gz"
    broken.write_bytes(b"this is not a NIfTI file")  # corrupted after `site check`
    seen: list[tuple[int, int]] = []

    # Execute
    fingerprint = compute_site_fingerprint(
        root, MODALITIES, split=None, progress=lambda done, total, _: seen.append((done, total))
    )

    # Assert
    assert (fingerprint.num_cases, fingerprint.num_failed) == (3, 1)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_a_site_with_too_few_cases_refuses(tmp_path: Path) -> None:
    # Prepare
    specs = [CaseSpec(f"sub-f{i}", (14, 16, 12), (1.0, 1.0, 2.0), seed=i) for i in range(2)]
    root = write_site(tmp_path / "small", specs)

    # Execute / Assert
    with pytest.raises(FingerprintError, match=r"only 2 case.*at least 3.*single patient"):
        compute_site_fingerprint(root, MODALITIES, split=None)
    assert compute_site_fingerprint(root, MODALITIES, split=None, min_cases=2).num_cases == 2


def test_only_the_requested_split_is_fingerprinted(sites: dict[str, Path]) -> None:
    # Execute
    train = compute_site_fingerprint(sites["pooled"], MODALITIES, min_cases=1)

    # Assert: splits.json was made (defaults, as training makes it) and respected
    expected = load_splits(sites["pooled"]).subject_ids(Split.TRAIN)
    assert 0 < len(expected) < 9
    assert train.num_cases == len(expected)
    with pytest.raises(FingerprintError, match="manifest"):
        compute_site_fingerprint(sites["pooled"] / "no-such-site", MODALITIES)


# -- privacy ------------------------------------------------------------------------------------


def test_the_payload_has_no_identifier_path_or_per_case_list(
    sites: dict[str, Path], tmp_path: Path
) -> None:
    # Prepare: two sites with 3 and 7 cases (neither count is a bin count, an axis count or a
    # modality count)
    seven = [CaseSpec(f"sub-p{i}", (14 + i, 16, 12), (1.0, 1.0, 1.0 + i), seed=i) for i in range(7)]
    root = write_site(tmp_path / "site-seven", seven)

    # Execute
    small = compute_site_fingerprint(sites["site-a"], MODALITIES, split=None, min_cases=1)
    large = compute_site_fingerprint(root, MODALITIES, split=None)
    payloads = [small.to_json(), large.to_json()]

    # Assert: the structure (keys, list lengths) does not depend on the data
    assert skeleton(payloads[0]) == skeleton(payloads[1])
    grid_sizes = {g.size for g in (DEFAULT_SPEC.spacing, DEFAULT_SPEC.shape, DEFAULT_SPEC.extent)}
    allowed_lengths = {3, len(MODALITIES), DEFAULT_SPEC.intensity.size} | grid_sizes
    ids = [s.subject_id for s in (*SITES["site-a"], *seven)]
    for payload, site in zip(payloads, (sites["site-a"], root), strict=True):
        text = json.dumps(payload)
        for forbidden in [*ids, site.name, str(site), "nii", "/", "\\"]:
            assert forbidden not in text
        for path, value in leaves(payload):
            if isinstance(value, list):
                assert len(value) in allowed_lengths, path
            if isinstance(value, str):  # a key, or a modality's name: nothing else
                assert value in {m.value for m in MODALITIES} or path[-1] == value, path
        assert not any("min" in str(p[-1]) or "max" in str(p[-1]) for p, _ in leaves(payload))
    assert payloads[1]["num_cases"] == 7


def test_one_changed_voxel_moves_one_voxel_weight_and_shows_no_value() -> None:
    # Prepare: three labelled cases of 512 voxels; in the second, one voxel becomes 12345.678
    rng = np.random.default_rng(2)
    values = [rng.normal(700.0, 50.0, (8, 8, 8)).astype(np.float32) for _ in range(3)]
    changed = [v.copy() for v in values]
    changed[1][4, 4, 4] = np.float32(12345.678)

    # Execute
    before = merge_fingerprints([box_case((8, 8, 8), (1.0, 1.0, 1.0), v) for v in values])
    after = merge_fingerprints([box_case((8, 8, 8), (1.0, 1.0, 1.0), v) for v in changed])

    # Assert: one voxel's weight (a 512th of a case) moved between two bins, and the exact
    # sums changed; nothing else
    old, new = dict(leaves(before.to_json())), dict(leaves(after.to_json()))
    differing = sorted(str(p) for p in old if old[p] != new[p])
    counts = [p for p in old if old[p] != new[p] and "counts" in p]
    assert sorted(new[p] - old[p] for p in counts) == [-CASE_WEIGHT // 512, CASE_WEIGHT // 512]
    sums = [str(("intensity", 0, name)) for name in ("sum_mean", "sum_mean_square")]
    assert differing == sorted([str(p) for p in counts] + sums)
    # no value of a voxel appears: the only floats are the grids' own parameters
    grids = {DEFAULT_SPEC.spacing, DEFAULT_SPEC.shape, DEFAULT_SPEC.extent, DEFAULT_SPEC.intensity}
    grid_floats = {x for g in grids for x in (g.origin, g.per_unit)}
    floats = {v for _, v in leaves(after.to_json()) if isinstance(v, float)}
    assert floats <= grid_floats
    voxel = float(np.float32(12345.678))
    assert all(v != voxel for _, v in leaves(after.to_json()))
    assert "12345.6" not in json.dumps(after.to_json())
