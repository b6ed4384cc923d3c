"""Contract over every registered model: builds from defaults, right shapes, stable parameters."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from neurofed.models import OutputKey, build_model, get_model_spec, model_names

IN_CHANNELS, OUT_CHANNELS, BATCH = 2, 3, 1


def _expected_shapes(name: str, spatial: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
    """What each registered model returns for a (BATCH, IN_CHANNELS, *spatial) input."""
    segmentation = (BATCH, OUT_CHANNELS, *spatial)
    table = {
        "residual-unet": {"": segmentation},
        "dynunet": {"": segmentation},
        "sfcn": {"": (BATCH, OUT_CHANNELS)},
        "multitask-unet": {
            OutputKey.SEGMENTATION: segmentation,
            OutputKey.IDH: (BATCH,),
            OutputKey.CODEL_1P19Q: (BATCH,),
            OutputKey.MGMT: (BATCH,),
            OutputKey.GRADE: (BATCH, 3),
        },
    }
    return table[name]


# Hash of the default config's state-dict key list: a saved model must keep loading, so a
# change here (a renamed layer, a MONAI upgrade) has to be deliberate.
KEY_HASHES = {
    "residual-unet": "eec5161f9ed466a7",
    "multitask-unet": "11bd1880867d9c29",
    "dynunet": "ec0905576680da07",
    "sfcn": "95786eee32d7e127",
}


def _key_hash(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def test_every_registered_model_is_covered_here() -> None:
    assert set(model_names()) == set(KEY_HASHES)


@pytest.mark.parametrize("name", model_names())
def test_default_model_forward_shapes(name: str) -> None:
    # Prepare: the default config and the smallest input it documents (2× divisor per axis).
    config = get_model_spec(name).config_type()
    spatial = tuple(2 * d for d in get_model_spec(name).spatial_divisor(config))
    model = build_model(name, config, in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS).eval()
    # Execute
    with torch.no_grad():
        out = model(torch.randn(BATCH, IN_CHANNELS, *spatial))
    # Assert
    shapes = (
        {str(k): tuple(v.shape) for k, v in out.items()}
        if isinstance(out, dict)
        else {"": tuple(out.shape)}
    )
    assert shapes == {str(k): v for k, v in _expected_shapes(name, spatial).items()}


@pytest.mark.parametrize("name", model_names())
def test_state_dict_round_trips_through_safetensors_bit_exactly(name: str, tmp_path: Path) -> None:
    # Prepare
    model = build_model(name, in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS)
    state = model.state_dict()
    # Execute
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors")
    loaded = load_file(tmp_path / "model.safetensors")
    fresh = build_model(name, in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS)
    fresh.load_state_dict(loaded, strict=True)
    # Assert
    assert set(loaded) == set(state)
    for key, value in fresh.state_dict().items():
        assert value.dtype == state[key].dtype, key
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("name", model_names())
def test_parameter_names_are_stable(name: str) -> None:
    # Prepare / Execute: two independent builds of the default config.
    keys_a = list(
        build_model(name, in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS).state_dict()
    )
    keys_b = list(
        build_model(name, in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS).state_dict()
    )
    # Assert: same names, each tensor named once, and the recorded list unchanged.
    assert keys_a == keys_b
    assert len(set(keys_a)) == len(keys_a)
    assert _key_hash(keys_a) == KEY_HASHES[name], f"{name}: {_key_hash(keys_a)}"


@pytest.mark.parametrize("name", model_names())
def test_config_json_round_trip(name: str) -> None:
    config_type = get_model_spec(name).config_type
    config = config_type()
    assert config_type.from_json(config.to_json()) == config
