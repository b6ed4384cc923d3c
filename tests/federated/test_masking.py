"""Task-masked aggregation: a head is averaged only over sites that have its labels."""

from __future__ import annotations

import numpy as np
import pytest

from neurofed.federated import (
    MULTITASK_UNET_HEADS,
    SiteUpdate,
    get_strategy,
    head_kind,
    heads_for_model,
)
from neurofed.models import OutputKey, build_model

IDH = "heads.idh.weight"
MGMT = "heads.mgmt.bias"
DECODER = "decoder.0.transp_conv.conv.weight"
ENCODER = "encoder.0.conv1.conv.weight"


@pytest.fixture(scope="module")
def global_params() -> dict[str, np.ndarray]:
    model = build_model(
        "multitask-unet", {"base_filters": 2, "num_pools": 1}, in_channels=4, out_channels=1
    )
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def _site(site_id: str, base: dict[str, np.ndarray], value: float, n: int, **counts: int):
    params = {k: np.full_like(v, value) for k, v in base.items()}
    return SiteUpdate(site_id, params, num_examples=n, label_counts=counts)


def test_every_multitask_unet_parameter_is_encoder_or_a_known_head(
    global_params: dict[str, np.ndarray],
) -> None:
    # Assert: each head kind owns some names; the encoder is shared by everyone
    kinds = {head_kind(n, MULTITASK_UNET_HEADS) for n in global_params}
    assert kinds == {None, *(k.value for k in OutputKey)}
    shared = [n for n in global_params if head_kind(n, MULTITASK_UNET_HEADS) is None]
    assert shared and all(n.startswith("encoder.") for n in shared)
    assert heads_for_model("multitask-unet") == MULTITASK_UNET_HEADS


def test_heads_ignore_sites_without_labels_and_weight_by_label_counts(
    global_params: dict[str, np.ndarray],
) -> None:
    # Prepare: site a (10 cases) has IDH for 2 cases and masks for 10; site b (30 cases) has
    # IDH for 6 and no masks; nobody has MGMT.
    strategy = get_strategy("fedavg", {"mask_heads": True}, heads=MULTITASK_UNET_HEADS)
    updates = [
        _site("a", global_params, 1.0, 10, idh=2, segmentation=10, mgmt=0),
        _site("b", global_params, 5.0, 30, idh=6),
    ]
    # Execute
    new, _ = strategy.aggregate(global_params, updates)
    # Assert
    np.testing.assert_allclose(new[ENCODER], (10 * 1 + 30 * 5) / 40)  # all sites, by examples
    np.testing.assert_allclose(new[IDH], (2 * 1 + 6 * 5) / 8)  # by IDH label counts
    np.testing.assert_array_equal(new[DECODER], 1.0)  # only site a trained the decoder
    np.testing.assert_array_equal(new[MGMT], global_params[MGMT])  # nobody: unchanged


def test_without_mask_heads_every_site_counts_everywhere(
    global_params: dict[str, np.ndarray],
) -> None:
    updates = [
        _site("a", global_params, 1.0, 10, idh=2),
        _site("b", global_params, 5.0, 30, idh=0),
    ]
    new, _ = get_strategy("fedavg").aggregate(global_params, updates)
    np.testing.assert_allclose(new[IDH], 4.0)
    np.testing.assert_allclose(new[MGMT], 4.0)


def test_masking_with_a_robust_strategy_uses_only_labelled_sites(
    global_params: dict[str, np.ndarray],
) -> None:
    # Prepare: three sites; only a and c have grades
    strategy = get_strategy("median", {"mask_heads": True}, heads=MULTITASK_UNET_HEADS)
    updates = [
        _site("a", global_params, 1.0, 1, grade=3),
        _site("b", global_params, 2.0, 1),
        _site("c", global_params, 9.0, 1, grade=1),
    ]
    # Execute
    new, _ = strategy.aggregate(global_params, updates)
    # Assert: median of {1, 9} = 5 for the grade head; of {1, 2, 9} = 2 for the encoder
    np.testing.assert_array_equal(new["heads.grade.weight"], 5.0)
    np.testing.assert_array_equal(new[ENCODER], 2.0)


def test_fedadam_does_not_move_a_head_nobody_trained(global_params: dict[str, np.ndarray]) -> None:
    # Prepare: round 1 everyone has MGMT (the head moves, moments build up); round 2 nobody does
    strategy = get_strategy("fedadam", {"mask_heads": True}, heads=MULTITASK_UNET_HEADS)
    first, state = strategy.aggregate(global_params, [_site("a", global_params, 1.0, 4, mgmt=4)])
    assert not np.array_equal(first[MGMT], global_params[MGMT])
    moments = state.arrays[f"m/{MGMT}"].copy()
    # Execute
    second, state = strategy.aggregate(first, [_site("a", first, 2.0, 4)], state)
    # Assert: kept as it was, moments untouched; the encoder still moves
    np.testing.assert_array_equal(second[MGMT], first[MGMT])
    np.testing.assert_array_equal(state.arrays[f"m/{MGMT}"], moments)
    assert not np.array_equal(second[ENCODER], first[ENCODER])
