"""The multi-task U-Net: (1, 2, 2) pooling, heads on the pooled bottleneck."""

from __future__ import annotations

import torch

from neurofed.models import MultitaskUNet, MultitaskUNetConfig, OutputKey


def test_first_axis_is_never_pooled_and_heads_read_the_bottleneck() -> None:
    # Prepare
    net = MultitaskUNet(MultitaskUNetConfig(base_filters=4), in_channels=4, out_channels=1).eval()
    seen: list[tuple[int, ...]] = []
    net.encoder[-1].register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)))
    # Execute
    with torch.no_grad():
        out = net(torch.randn(2, 4, 5, 16, 24))
    # Assert: bottleneck has 8 × base channels, X untouched, Y/Z divided by 2³.
    assert seen == [(2, 32, 5, 2, 3)]
    assert net.heads[OutputKey.GRADE].in_features == 32
    assert out[OutputKey.SEGMENTATION].shape == (2, 1, 5, 16, 24)
    assert out[OutputKey.GRADE].shape == (2, 3)


def test_marker_heads_depend_on_global_average_pooled_features_only() -> None:
    # Two inputs whose bottlenecks have equal means but different layouts give equal markers.
    net = MultitaskUNet(MultitaskUNetConfig(base_filters=4), in_channels=1, out_channels=1).eval()
    features = torch.randn(1, 32, 2, 2, 2)
    rolled = torch.roll(features, shifts=1, dims=2)
    net.encoder[-1].register_forward_hook(lambda _m, _i, _o: hook_value.pop(0))
    hook_value = [features, rolled]
    with torch.no_grad():
        a = net(torch.randn(1, 1, 2, 16, 16))
        b = net(torch.randn(1, 1, 2, 16, 16))
    for key in (OutputKey.IDH, OutputKey.CODEL_1P19Q, OutputKey.MGMT, OutputKey.GRADE):
        torch.testing.assert_close(a[key], b[key])
    assert not torch.equal(a[OutputKey.SEGMENTATION], b[OutputKey.SEGMENTATION])


def test_custom_pool_size_changes_the_divisor() -> None:
    config = MultitaskUNetConfig(base_filters=2, num_pools=2, pool_size=(2, 2, 2))
    assert config.spatial_divisor() == (4, 4, 4)
    net = MultitaskUNet(config, in_channels=1, out_channels=2).eval()
    assert net(torch.zeros(1, 1, 8, 8, 8))[OutputKey.SEGMENTATION].shape == (1, 2, 8, 8, 8)
