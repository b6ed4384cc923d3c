"""Contract over every registered strategy: identical site updates give that update back."""

from __future__ import annotations

import numpy as np
import pytest

from neurofed.config import is_local
from neurofed.federated import (
    FedOpt,
    Strategy,
    StrategyName,
    StrategyState,
    get_strategy,
    get_strategy_type,
    strategy_names,
)

from .tiny import LOCAL_NAME, params, update

ALL = [str(n) for n in strategy_names()]


def _is_server_optimiser(strategy: Strategy) -> bool:
    return isinstance(strategy, FedOpt)


def test_every_strategy_name_is_registered() -> None:
    assert set(ALL) == {n.value for n in StrategyName}


@pytest.mark.parametrize("name", ALL)
def test_identical_updates_give_that_update(name: str) -> None:
    # Prepare: a global model and three sites that all return the same, different model.
    strategy = get_strategy(name)
    global_params, trained = params(0), params(1)
    updates = [update(s, trained, num_examples=n) for s, n in (("a", 3), ("b", 10), ("c", 1))]
    local = strategy.client_settings().local_parameters
    # Execute
    new, state = strategy.aggregate(global_params, updates, StrategyState.empty())
    # Assert: same names, shapes and dtypes; shared entries equal the update, local ones the
    # global model (a server optimiser moves towards the update instead).
    assert list(new) == list(global_params)
    for key, value in new.items():
        assert isinstance(value, np.ndarray), key  # 0-d entries too, never numpy scalars
        assert value.dtype == global_params[key].dtype, key
        assert value.shape == global_params[key].shape, key
        if is_local(key, local):
            np.testing.assert_array_equal(value, global_params[key])
        elif _is_server_optimiser(strategy) and value.dtype.kind == "f":
            step = value.astype(np.float64) - global_params[key]
            target = trained[key].astype(np.float64) - global_params[key]
            assert np.all(np.sign(step) == np.sign(target)), key
        else:
            np.testing.assert_array_equal(value, trained[key], err_msg=key)
    assert is_local(LOCAL_NAME, local) == (name == StrategyName.FEDBN)
    assert state.is_empty != _is_server_optimiser(strategy)


@pytest.mark.parametrize("name", ALL)
def test_combine_of_identical_rows_is_that_row(name: str) -> None:
    # Prepare
    row = np.array([[0.1, -3.0], [7.25, 1e-8]])
    stack = np.stack([row, row, row, row])
    # Execute
    combined = get_strategy(name).combine(stack, np.array([1.0, 5.0, 2.0, 3.0]))
    # Assert: exactly, not approximately
    np.testing.assert_array_equal(combined, row)


@pytest.mark.parametrize("name", ALL)
def test_sites_returning_the_global_model_change_nothing(name: str) -> None:
    # Prepare
    strategy = get_strategy(name)
    global_params = params(2)
    updates = [update(s, global_params) for s in "ab"]
    # Execute: twice, so that a server optimiser's moments are used too
    once, state = strategy.aggregate(global_params, updates)
    twice, _ = strategy.aggregate(once, updates, state)
    # Assert
    for key in global_params:
        np.testing.assert_array_equal(twice[key], global_params[key], err_msg=key)


@pytest.mark.parametrize("name", ALL)
def test_aggregate_needs_an_update(name: str) -> None:
    with pytest.raises(ValueError, match="no site update"):
        get_strategy(name).aggregate(params(0), [])


@pytest.mark.parametrize("name", ALL)
def test_aggregate_does_not_modify_its_inputs(name: str) -> None:
    # Prepare
    global_params = params(0)
    sent = [params(1), params(3)]
    updates = [update("a", sent[0]), update("b", sent[1])]
    # Execute
    get_strategy(name).aggregate(global_params, updates)
    # Assert
    for key, value in params(0).items():
        np.testing.assert_array_equal(global_params[key], value)
        for u, original in zip(updates, sent, strict=True):
            np.testing.assert_array_equal(u.params[key], original[key])


def test_unknown_strategy_suggests_the_closest_name() -> None:
    with pytest.raises(
        ValueError, match=r"unknown strategy 'fedyogy' \(did you mean 'fedyogi'\?\)"
    ):
        get_strategy("fedyogy")


def test_unknown_strategy_parameter_suggests_the_closest_field() -> None:
    with pytest.raises(ValueError, match=r"unknown field 'trim_fractoin' \(did you mean"):
        get_strategy("trimmed-mean", {"trim_fractoin": 0.2})


@pytest.mark.parametrize(
    ("name", "params_", "field"),
    [
        ("fedprox", {"mu": -1.0}, "mu"),
        ("fedadam", {"beta1": 1.0}, "beta1"),
        ("fedyogi", {"tau": 0.0}, "tau"),
        ("fedadam", {"eta": float("nan")}, "eta"),
        ("trimmed-mean", {"trim_fraction": 0.5}, "trim_fraction"),
        ("ditto", {"ditto_lambda": -0.1}, "ditto_lambda"),
        ("fedavg", {"mask_heads": "yes"}, "mask_heads"),
        ("fedbn", {"local_parameters": []}, "local_parameters"),
    ],
)
def test_invalid_parameters_name_the_field(
    name: str, params_: dict[str, object], field: str
) -> None:
    with pytest.raises(ValueError, match=rf"\.{field} = .* is invalid"):
        get_strategy(name, params_)


def test_mask_heads_without_a_head_map_is_an_error() -> None:
    with pytest.raises(ValueError, match="mask_heads = true needs a model with labelled heads"):
        get_strategy("fedavg", {"mask_heads": True})


@pytest.mark.parametrize("name", ALL)
def test_secure_aggregation_gives_the_strategys_model_or_is_refused(name: str) -> None:
    """Every weighted-mean strategy gives, from the secure sum, what it gives from the
    updates themselves (server optimisers and local layers included); the others refuse
    ``secagg``."""
    from neurofed.federated.secagg.vectors import Layout
    from neurofed.federated.server.secagg import SecureRound
    from neurofed.federated.site.secagg import SecureSite
    from tests.federated.test_secagg import HASH, ROUND

    if not get_strategy_type(name).weighted_mean:
        with pytest.raises(ValueError, match="cannot run with secagg = true"):
            get_strategy(name, {"secagg": True})
        return
    # Prepare: three sites with different updates and weights
    strategy = get_strategy(name, {"secagg": True, "secagg_clip": 10.0})
    global_params = params(0)
    sites = {"a": (params(1), 3), "b": (params(2), 10), "c": (params(3), 1)}
    plain, plain_state = strategy.aggregate(
        global_params, [update(s, p, num_examples=n) for s, (p, n) in sites.items()]
    )
    local = strategy.client_settings().local_parameters
    layout = Layout.of(global_params, local, strategy.heads)
    server = SecureRound(HASH, ROUND, layout, clip=10.0)
    clients = {s: SecureSite(s) for s in sites}

    # Execute: the four steps, then the strategy's server step on the decoded mean
    request = server.take_keys(
        {s: c.keys(HASH, ROUND, sites[s][1], {}) for s, c in clients.items()}
    )
    request = server.take_shares({s: c.shares(HASH, ROUND, request) for s, c in clients.items()})
    for client in clients.values():
        client.receive(HASH, ROUND, request)
    request = server.take_inputs(
        {
            s: c.mask(HASH, ROUND, layout, sites[s][0], global_params, 10.0)[0]
            for s, c in clients.items()
        }
    )
    total = server.take_reveals({s: c.reveal(HASH, ROUND, request) for s, c in clients.items()})
    combined = {
        k: (v + total.means[k]).astype(v.dtype) if k in total.means else v.copy()
        for k, v in global_params.items()
    }
    secure, secure_state = strategy.server_update(
        global_params, combined, frozenset(total.means), StrategyState.empty()
    )

    # Assert: the same model, except integer buffers (kept at the global value)
    for key, value in plain.items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(secure[key], value, rtol=0, atol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(secure[key], global_params[key])
    assert sorted(secure_state.arrays) == sorted(plain_state.arrays)
