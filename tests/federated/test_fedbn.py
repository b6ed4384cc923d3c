"""FedBN: normalisation layers of our real models stay at each site."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from neurofed.config import is_local
from neurofed.federated import NORM_PATTERNS, FedBN, SiteUpdate, validate_updates
from neurofed.models import build_model, model_names

# Tiny configs of every registered model, with batch norm where the model lets us choose.
TINY: dict[str, tuple[dict[str, Any], int]] = {
    "residual-unet": ({"base_filters": 2, "depth": 2, "norm": "batch"}, 2),
    "multitask-unet": ({"base_filters": 2, "num_pools": 1, "norm": "batch"}, 2),
    "dynunet": (
        {
            "plan": {
                "patch_size": [8, 8, 8],
                "spacing": [1.0, 1.0, 1.0],
                "kernel_sizes": [[3, 3, 3], [3, 3, 3], [3, 3, 3]],
                "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                "filters": [2, 4, 4],
            },
            "norm": "batch",
        },
        2,
    ),
    "sfcn": ({"width": 0.0625}, 1),
}
INSTANCE = {
    "residual-unet": {"base_filters": 2, "depth": 2, "norm": "instance"},
    "dynunet": {**TINY["dynunet"][0], "norm": "instance"},
}


def _model(name: str, config: dict[str, Any]) -> nn.Module:
    in_channels = TINY[name][1]
    return build_model(name, config, in_channels=in_channels, out_channels=1)


def _norm_names(model: nn.Module) -> set[str]:
    """State-dict names owned by normalisation modules (found by type, not by name)."""
    norm_types = (_NormBase, nn.GroupNorm, nn.LayerNorm)
    out = set()
    for module_name, module in model.named_modules():
        if isinstance(module, norm_types):
            prefix = f"{module_name}." if module_name else ""
            out |= {prefix + k for k in module.state_dict()}
    return out


def _arrays(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def test_every_registered_model_has_a_tiny_config() -> None:
    assert set(TINY) == set(model_names())


@pytest.mark.parametrize(
    ("name", "config"),
    [(n, c) for n, (c, _) in TINY.items()] + list(INSTANCE.items()),
    ids=[f"{n}-batch" for n in TINY] + [f"{n}-instance" for n in INSTANCE],
)
def test_norm_patterns_match_exactly_the_normalisation_layers(
    name: str, config: dict[str, Any]
) -> None:
    # Prepare
    model = _model(name, config)
    expected = _norm_names(model)
    # Execute
    matched = {n for n in model.state_dict() if is_local(n, NORM_PATTERNS)}
    # Assert: every norm weight, bias, running stat and counter — and nothing else
    assert matched == expected
    if config.get("norm") == "batch" or name == "sfcn":
        assert any(n.endswith("running_mean") for n in matched)
        assert any(n.endswith("num_batches_tracked") for n in matched)


@pytest.mark.parametrize("name", sorted(TINY))
def test_fedbn_keeps_norm_layers_local_and_averages_the_rest(name: str) -> None:
    # Prepare: a global model and two sites with different weights and statistics; sites send
    # everything except their local entries, as site training does.
    config = TINY[name][0]
    global_params = _arrays(_model(name, config))
    local = FedBN().client_settings().local_parameters
    rng = np.random.default_rng(0)
    site_params = []
    for _ in range(2):
        site = {}
        for key, value in global_params.items():
            if value.dtype.kind == "f":
                site[key] = (value + rng.normal(size=value.shape)).astype(value.dtype)
            else:
                site[key] = value + 5
        site_params.append(site)
    updates = [
        SiteUpdate(s, {k: v for k, v in p.items() if not is_local(k, local)}, n)
        for s, p, n in zip("ab", site_params, (1, 3), strict=True)
    ]
    accepted, rejected = validate_updates(global_params, updates, local_parameters=local)
    # Execute
    new, _ = FedBN().aggregate(global_params, accepted)
    # Assert: local entries exactly the global ones (never averaged); the rest FedAvg
    assert not rejected
    norm_names = _norm_names(_model(name, config))
    assert norm_names and set(norm_names) <= set(new)
    for key, value in new.items():
        assert value.dtype == global_params[key].dtype
        if key in norm_names:
            np.testing.assert_array_equal(value, global_params[key])
        elif value.dtype.kind == "f":
            expected = (1 * site_params[0][key].astype(np.float64) + 3 * site_params[1][key]) / 4
            np.testing.assert_allclose(value, expected.astype(value.dtype), rtol=1e-5, atol=1e-6)


def test_fedbn_lists_the_norm_patterns_in_client_settings() -> None:
    settings = FedBN().client_settings()
    assert settings.local_parameters == NORM_PATTERNS
    assert settings.fedprox_mu == 0.0 and settings.ditto_lambda is None


def test_fedbn_patterns_can_be_chosen() -> None:
    settings = FedBN({"local_parameters": ["*.bn.*"]}).client_settings()
    assert settings.local_parameters == ("*.bn.*",)
