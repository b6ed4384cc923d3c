"""nnU-Net-style plans and the DynUNet built from them."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets.dynunet import DynUNet

from neurofed.models import DynUNetConfig, NetworkPlan, build_model, default_plan


def test_isotropic_axes_pool_while_at_least_eight_voxels() -> None:
    plan = default_plan((64, 64, 16), (1.0, 1.0, 1.0), base_filters=8, max_filters=32)
    # z: 16 → 8 → 4 (stops), x/y: 64 → 32 → 16 → 8 → 4.
    assert plan.strides == ((1, 1, 1), (2, 2, 2), (2, 2, 2), (2, 2, 1), (2, 2, 1))
    # Once z stops, x/y spacing (16 mm) exceeds 2 × z spacing (4 mm): kernel 1 along x/y.
    assert plan.kernel_sizes == ((3, 3, 3),) * 4 + ((1, 1, 3),)
    assert plan.filters == (8, 16, 32, 32, 32)
    assert plan.spatial_divisor() == (16, 16, 4)


def test_thick_axis_waits_until_spacing_is_comparable() -> None:
    plan = default_plan((128, 128, 32), (1.0, 1.0, 3.5), max_depth=3)
    # z (3.5 mm) is > 2 × 1 mm: neither pooled nor convolved until x/y reach 2 mm.
    assert plan.strides[1] == (2, 2, 1)
    assert plan.kernel_sizes[0] == (3, 3, 1)
    assert plan.kernel_sizes[1] == (3, 3, 3)  # spacing now (2, 2, 3.5)
    assert plan.strides[2] == (2, 2, 2)
    assert plan.depth == 3


def test_patch_size_is_rounded_up_to_the_divisor() -> None:
    plan = default_plan((30, 30, 30), (1.0, 1.0, 1.0), base_filters=4, max_filters=8)
    assert plan.spatial_divisor() == (8, 8, 8)
    assert plan.patch_size == (32, 32, 32)


def test_too_small_a_shape_says_what_to_do() -> None:
    with pytest.raises(ValueError, match="allows only 1 down-sampling"):
        default_plan((8, 8, 8), (1.0, 1.0, 1.0))


def test_plan_rejects_patch_not_divisible_by_strides() -> None:
    with pytest.raises(ValueError, match=r"NetworkPlan.patch_size = \(30, 32, 32\) is invalid"):
        NetworkPlan(
            patch_size=(30, 32, 32),
            kernel_sizes=((3, 3, 3),) * 3,
            strides=((1, 1, 1), (2, 2, 2), (2, 2, 2)),
            filters=(4, 8, 16),
        )


def test_dynunet_follows_the_plan_and_names_each_tensor_once() -> None:
    # Prepare
    plan = default_plan((16, 16, 16), (1.0, 1.0, 1.0), base_filters=4, max_filters=16)
    torch.manual_seed(0)
    ours = build_model("dynunet", DynUNetConfig(plan=plan), in_channels=2, out_channels=2).eval()
    monai = DynUNet(
        3, 2, 2, plan.kernel_sizes, plan.strides, plan.strides[1:], filters=plan.filters
    ).eval()
    x = torch.randn(1, 2, 16, 16, 8)
    # Execute: MONAI's own net (with aliased keys) loaded with our weights.
    missing, unexpected = monai.load_state_dict(ours.state_dict(), strict=False)
    # Assert: only MONAI's aliases are "missing", and both nets compute the same thing.
    assert not unexpected and missing and all(k.startswith("skip_layers.") for k in missing)
    assert not any(k.startswith("skip_layers.") for k in ours.state_dict())
    assert [tuple(m.conv1.conv.stride) for m in ours.downsamples] == [(2, 2, 2)]
    torch.testing.assert_close(ours(x), monai(x), rtol=0, atol=0)


def test_dynunet_trains_through_the_skip_path() -> None:
    plan = default_plan((16, 16, 16), (1.0, 1.0, 1.0), base_filters=4, max_filters=16)
    net = build_model("dynunet", DynUNetConfig(plan=plan), in_channels=1, out_channels=1)
    net(torch.randn(2, 1, 16, 16, 16)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
