"""Strategy state checkpoints as safetensors, and a resumed server continues identically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load, save

from neurofed.federated import StrategyState, get_strategy

from .tiny import params, update


def _round(k: int) -> list:
    return [update("a", params(10 + k), 3), update("b", params(20 + k), 5)]


def test_state_round_trips_through_safetensors() -> None:
    # Prepare
    state = StrategyState(
        arrays={"m/w": np.arange(6.0).reshape(2, 3), "v/w": np.full(3, 0.5, np.float32)},
        scalars={"step": 7, "scale": 0.25},
    )
    # Execute
    restored = StrategyState.from_arrays(load(save(state.to_arrays())))
    # Assert: same names, values, dtypes, and scalar types
    assert restored == state
    assert isinstance(restored.scalars["step"], int)
    assert isinstance(restored.scalars["scale"], float)
    assert restored.arrays["v/w"].dtype == np.float32


def test_state_file_round_trip(tmp_path: Path) -> None:
    state = StrategyState(arrays={"m/w": np.ones(2)}, scalars={"step": 1})
    assert StrategyState.load(state.save(tmp_path / "state.safetensors")) == state
    assert StrategyState.load(StrategyState.empty().save(tmp_path / "e.safetensors")).is_empty


@pytest.mark.parametrize("name", ["fedadam", "fedyogi"])
def test_resumed_server_continues_identically(name: str, tmp_path: Path) -> None:
    # Prepare
    strategy = get_strategy(name, {"eta": 0.05})
    start = params(0)
    # Execute: two rounds in one go …
    g1, s1 = strategy.aggregate(start, _round(1))
    g2, s2 = strategy.aggregate(g1, _round(2), s1)
    # … and one round, a checkpoint (weights and state), a fresh strategy, one more round
    saved = tmp_path / "state.safetensors"
    s1.save(saved)
    weights = load(save(g1))
    resumed = get_strategy(name, {"eta": 0.05})
    r2, rs2 = resumed.aggregate(weights, _round(2), StrategyState.load(saved))
    # Assert: bit for bit
    for key in g2:
        np.testing.assert_array_equal(r2[key], g2[key], err_msg=key)
        assert r2[key].dtype == g2[key].dtype
    assert rs2 == s2
    assert rs2.scalars["step"] == 2


def test_from_arrays_refuses_foreign_names() -> None:
    with pytest.raises(ValueError, match="starts with neither 'array/' nor 'scalar/'"):
        StrategyState.from_arrays({"m/w": np.zeros(1)})
    with pytest.raises(ValueError, match="must be a 0-d number"):
        StrategyState.from_arrays({"scalar/step": np.zeros(2)})


def test_state_is_read_only() -> None:
    state = StrategyState(arrays={"w": np.zeros(2)})
    with pytest.raises(ValueError, match="read-only"):
        state.arrays["w"][0] = 1.0
    with pytest.raises(TypeError):
        StrategyState(scalars={"flag": True})


def test_zero_dimensional_arrays_stay_zero_dimensional() -> None:
    state = StrategyState(arrays={"step_size": np.array(0.5)})
    assert state.arrays["step_size"].shape == ()
    assert StrategyState.from_arrays(state.to_arrays()).arrays["step_size"].shape == ()
