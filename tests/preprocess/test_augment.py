"""Augmentation replays from its parameters, keeps labels intact, and samples patches fairly."""

import dataclasses

import numpy as np
import pytest
import torch

from neurofed.preprocess import (
    AugmentConfig,
    AugmentParams,
    PreprocessError,
    apply_augmentation,
    sample_augmentation,
    sample_patch,
)

SHAPE = (12, 14, 10)
ALWAYS = AugmentConfig(
    flip_probabilities=(0.5, 0.5, 0.5),
    rotation_probability=1.0,
    scale_probability=1.0,
    intensity_scale_probability=1.0,
    intensity_shift_probability=1.0,
    gamma_probability=1.0,
    noise_probability=1.0,
)


def case() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.standard_normal((2, *SHAPE)).astype(np.float32)
    label = np.zeros(SHAPE, np.uint8)
    label[3:8, 4:10, 2:7] = 4  # values with gaps, so interpolated labels would show
    label[5:7, 6:8, 3:5] = 9
    label[9:11, 2:4, 6:9] = 1
    return image, label


def test_same_params_give_identical_output() -> None:
    image, label = case()
    params = sample_augmentation(ALWAYS, np.random.default_rng(5), SHAPE)
    replayed = AugmentParams.from_json(params.to_json())
    first = apply_augmentation(image, label, params)
    second = apply_augmentation(image, label, replayed)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.allclose(first[0], image)


def test_same_seed_same_params_and_other_seeds_differ() -> None:
    a = sample_augmentation(ALWAYS, np.random.default_rng(11), SHAPE)
    b = sample_augmentation(ALWAYS, np.random.default_rng(11), SHAPE)
    others = [sample_augmentation(ALWAYS, np.random.default_rng(s), SHAPE) for s in range(10)]
    assert a == b
    assert len({json_key(p) for p in others}) == 10


def json_key(params: AugmentParams) -> str:
    return repr(sorted(params.to_json().items()))


def test_sampled_values_stay_in_the_configured_ranges() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = sample_augmentation(ALWAYS, rng, SHAPE)
        assert max(abs(r) for r in p.rotation) <= np.deg2rad(10) + 1e-12
        assert 0.9 <= p.scale[0] <= 1.1 and p.scale[0] == p.scale[1] == p.scale[2]
        assert 0.7 <= p.gamma <= 1.5
        assert 0.0 <= p.noise_std <= 0.1
        assert p.spatial_shape == SHAPE


def test_defaults_apply_each_augmentation_at_roughly_its_probability() -> None:
    rng = np.random.default_rng(4)
    draws = [sample_augmentation(AugmentConfig(), rng, SHAPE) for _ in range(1000)]
    assert not any(p.flip_axes for p in draws)  # flips are off by default
    assert 0.15 < np.mean([p.rotation != (0.0, 0.0, 0.0) for p in draws]) < 0.25
    assert 0.25 < np.mean([p.gamma != 1.0 for p in draws]) < 0.35


def test_labels_keep_their_values_and_follow_the_image() -> None:
    # Prepare: an image that is the label, so both must move together
    _, label = case()
    image = label[None].astype(np.float32)
    for seed in range(5):
        params = dataclasses.replace(
            sample_augmentation(ALWAYS, np.random.default_rng(seed), SHAPE),
            intensity_scale=1.0,
            intensity_shift=0.0,
            gamma=1.0,
            noise_std=0.0,
        )
        # Execute
        out, out_label = apply_augmentation(image, label, params)
        # Assert
        assert out_label is not None and out_label.dtype == np.uint8
        assert set(np.unique(out_label)) <= {0, 1, 4, 9}
        assert not np.array_equal(out_label, label)
        assert np.mean(np.rint(out[0]) == out_label) > 0.9


def test_flips_are_exact_and_intensity_never_touches_the_label() -> None:
    image, label = case()
    params = AugmentParams(SHAPE, flip_axes=(0, 2), gamma=1.3, intensity_shift=0.5, noise_std=0.2)
    out, out_label = apply_augmentation(image, label, params)
    np.testing.assert_array_equal(out_label, label[::-1, :, ::-1])
    flipped, _ = apply_augmentation(image, None, AugmentParams(SHAPE, flip_axes=(0, 2)))
    np.testing.assert_array_equal(flipped, image[:, ::-1, :, ::-1])
    assert out.dtype == np.float32 and out.shape == image.shape


def test_identity_params_change_nothing() -> None:
    image, label = case()
    out, out_label = apply_augmentation(image, label, AugmentParams(SHAPE))
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(out_label, label)
    assert out is not image


def test_global_random_state_is_untouched() -> None:
    image, label = case()
    numpy_state = np.random.get_state()[1].copy()  # type: ignore[index]
    torch_state = torch.random.get_rng_state().clone()
    for seed in range(3):
        params = sample_augmentation(ALWAYS, np.random.default_rng(seed), SHAPE)
        apply_augmentation(image, label, params)
    np.testing.assert_array_equal(np.random.get_state()[1], numpy_state)  # type: ignore[index]
    assert torch.equal(torch.random.get_rng_state(), torch_state)


def test_params_for_another_shape_are_refused() -> None:
    image, label = case()
    with pytest.raises(PreprocessError, match=r"sampled spatial_shape \(8, 8, 8\)"):
        apply_augmentation(image, label, AugmentParams((8, 8, 8)))


def test_config_validation_and_json_round_trip() -> None:
    assert AugmentConfig.from_json(ALWAYS.to_json()) == ALWAYS
    with pytest.raises(PreprocessError, match=r"rotation_probability: got 1.5"):
        AugmentConfig(rotation_probability=1.5)
    with pytest.raises(PreprocessError, match=r"unknown fields \['gama_range'\]"):
        AugmentConfig.from_json({"gama_range": [0.7, 1.5]})


def test_patches_hit_foreground_at_the_requested_rate_and_stay_inside() -> None:
    # Prepare: one foreground voxel near a corner that a uniform patch almost never contains
    shape = (40, 36, 30)
    patch = (8, 8, 6)
    label = np.zeros(shape, np.uint8)
    label[2, 33, 1] = 1
    rng = np.random.default_rng(6)
    # Execute
    slices = [sample_patch(rng, shape, patch, label, 0.33) for _ in range(600)]
    # Assert
    hits = [bool(label[s].any()) for s in slices]
    assert 0.27 < np.mean(hits) < 0.39
    for s in slices:
        assert all(sl.start >= 0 and sl.stop <= n for sl, n in zip(s, shape, strict=True))
        assert tuple(sl.stop - sl.start for sl in s) == patch


def test_patch_sampling_is_fixed_by_the_generator() -> None:
    _, label = case()
    first = [sample_patch(np.random.default_rng(9), SHAPE, (4, 4, 4), label) for _ in range(3)]
    rng = np.random.default_rng(9)
    again = sample_patch(rng, SHAPE, (4, 4, 4), label)
    assert first == [again] * 3
    others = {str(sample_patch(rng, SHAPE, (4, 4, 4), label)) for _ in range(20)}
    assert len(others) > 5


def test_patch_sampling_without_label_and_too_large_patch() -> None:
    rng = np.random.default_rng(1)
    starts = {sample_patch(rng, (6, 6, 6), (5, 6, 6))[0].start for _ in range(50)}
    assert starts == {0, 1}
    with pytest.raises(PreprocessError, match=r"patch_shape \(8, 6, 6\) does not fit.*pad"):
        sample_patch(rng, (6, 6, 6), (8, 6, 6))
