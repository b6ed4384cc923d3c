"""Secure aggregation without the engine: sites (``SecureSite``) and the server
(``SecureRound``) exchange the four steps directly, with sites dropping out at each step."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import numpy as np
import pytest
from scipy import stats

from neurofed.federated.protocol import (
    KeysResult,
    ProtocolError,
    RevealResult,
    SecAggRequest,
    SiteAnswer,
    TaskName,
    TrainResult,
)
from neurofed.federated.secagg.crypto import SealError
from neurofed.federated.secagg.masks import SecAggError, pack_share, unpack_share
from neurofed.federated.secagg.shamir import ShareError, combine, split
from neurofed.federated.secagg.vectors import EXAMPLES, SCALE_BITS, Layout, encode
from neurofed.federated.server.secagg import SecureRound, SecureSum
from neurofed.federated.site.secagg import SecureSite

HASH = "ab" * 32
ROUND = 3
CLIP = 4.0


def _model(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "conv.weight": rng.normal(size=(4, 3, 3)).astype(np.float32),
        "conv.bias": rng.normal(size=4).astype(np.float32),
        "norm.num_batches_tracked": np.array(7, dtype=np.int64),
    }


def _updates(
    sites: list[str], seed: int = 0
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    global_params = _model(rng)
    trained = {
        s: {
            k: (v + rng.normal(scale=0.5, size=v.shape)).astype(v.dtype)
            for k, v in global_params.items()
        }
        for s in sites
    }
    return global_params, trained


def _plain_mean(
    global_params: Mapping[str, np.ndarray],
    trained: Mapping[str, Mapping[str, np.ndarray]],
    weights: Mapping[str, int],
    sites: Collection[str],
) -> dict[str, np.ndarray]:
    total = sum(weights[s] for s in sites)
    return {
        name: sum(
            weights[s]
            * np.clip(trained[s][name].astype(np.float64) - global_params[name], -CLIP, CLIP)
            for s in sites
        )
        / total
        for name in ("conv.weight", "conv.bias")
    }


def _mask(
    site: SecureSite,
    request: SecAggRequest,
    layout: Layout,
    trained: Mapping[str, np.ndarray],
    global_params: Mapping[str, np.ndarray],
) -> np.ndarray:
    """The train step at a site: open the shares, then mask the update."""
    site.receive(HASH, ROUND, request)
    return site.mask(HASH, ROUND, layout, trained, global_params, CLIP)[0]


def secure_round(
    sites: list[str],
    global_params: Mapping[str, np.ndarray],
    trained: Mapping[str, Mapping[str, np.ndarray]],
    weights: Mapping[str, int],
    *,
    silent_at: Mapping[str, str] | None = None,
    threshold: int = 0,
) -> tuple[SecureSum, dict[str, SecureSite]]:
    """One round; ``silent_at`` names the step each dropping site does not answer."""
    silent = dict(silent_at or {})
    layout = Layout.of(global_params)
    server = SecureRound(HASH, ROUND, layout, clip=CLIP, threshold=threshold)
    clients = {s: SecureSite(s) for s in sites}

    def answering(step: str, asked: Collection[str]) -> list[str]:
        return [s for s in asked if silent.get(s) != step and s not in gone]

    gone: set[str] = set()
    keys = {s: clients[s].keys(HASH, ROUND, weights[s], {}) for s in answering("keys", sites)}
    gone |= {s for s, step in silent.items() if step == "keys"}
    request = server.take_keys(keys)
    shares = {
        s: clients[s].shares(HASH, ROUND, request) for s in answering("shares", request.sites)
    }
    gone |= {s for s, step in silent.items() if step == "shares"}
    request = server.take_shares(shares)
    inputs = {
        s: _mask(clients[s], request, layout, trained[s], global_params)
        for s in answering("train", request.sites)
    }
    gone |= {s for s, step in silent.items() if step == "train"}
    request = server.take_inputs(inputs)
    reveals = {
        s: clients[s].reveal(HASH, ROUND, request) for s in answering("unmask", request.sites)
    }
    return server.take_reveals(reveals), clients


SITES = [f"site-{i}" for i in range(1, 6)]
WEIGHTS = {"site-1": 10, "site-2": 40, "site-3": 7, "site-4": 25, "site-5": 18}


def test_the_unmasked_sum_is_the_weighted_mean_within_the_quantisation_error() -> None:
    # Prepare
    global_params, trained = _updates(SITES)

    # Execute
    total, _ = secure_round(SITES, global_params, trained, WEIGHTS)

    # Assert: FedAvg's weighted mean of the clipped updates, to n·clip/2^31
    expected = _plain_mean(global_params, trained, WEIGHTS, SITES)
    assert total.sites == tuple(SITES) and not total.dropped
    assert set(total.means) == {"conv.weight", "conv.bias"}  # integer buffers are not summed
    bound = len(SITES) * CLIP / 2**SCALE_BITS
    for name, mean in expected.items():
        np.testing.assert_allclose(total.means[name], mean, rtol=0, atol=bound)
        assert not np.allclose(mean, 0.0)


@pytest.mark.parametrize(
    "silent_at",
    [
        {"site-2": "keys"},
        {"site-2": "shares"},
        {"site-2": "train", "site-4": "train"},  # after sharing: their mask keys are rebuilt
        {"site-3": "unmask"},
        {"site-1": "shares", "site-5": "train"},
    ],
    ids=["at-keys", "after-keys", "after-sharing", "at-unmask", "two-steps"],
)
def test_sites_that_drop_out_leave_the_sum_of_the_others(silent_at: dict[str, str]) -> None:
    # Prepare
    global_params, trained = _updates(SITES, seed=1)

    # Execute
    total, _ = secure_round(SITES, global_params, trained, WEIGHTS, silent_at=silent_at)

    # Assert: the weighted mean over the sites whose inputs arrived, reweighted among them
    summed = [s for s in SITES if silent_at.get(s) not in ("keys", "shares", "train")]
    assert list(total.sites) == summed
    expected = _plain_mean(global_params, trained, WEIGHTS, summed)
    for name, mean in expected.items():
        np.testing.assert_allclose(total.means[name], mean, rtol=0, atol=1e-7)
    # (a site silent at the keys step never joined the round: the run records it)
    assert {s for s, step in silent_at.items() if step in ("shares", "train")} == set(total.dropped)


@pytest.mark.parametrize("step", ["keys", "shares", "train", "unmask"])
def test_below_the_threshold_the_round_fails_at_that_step_without_unmasking(step: str) -> None:
    # Prepare: 5 sites, threshold 4, two fall silent at the step
    global_params, trained = _updates(SITES, seed=2)
    silent = {"site-1": step, "site-2": step}

    # Execute / Assert
    named = {"keys": "secagg-keys", "shares": "secagg-shares", "train": "train"}.get(step)
    expected = rf"^{named or 'secagg-unmask'}: 3 site\(s\) answered; the round needs at least 4"
    with pytest.raises(SecAggError, match=expected):
        secure_round(SITES, global_params, trained, WEIGHTS, silent_at=silent, threshold=4)


def test_a_site_reveals_nothing_to_a_server_asking_below_the_threshold_or_twice() -> None:
    # Prepare: a round up to the masked inputs
    global_params, trained = _updates(SITES[:3], seed=3)
    layout = Layout.of(global_params)
    clients = {s: SecureSite(s) for s in SITES[:3]}
    server = SecureRound(HASH, ROUND, layout, clip=CLIP, threshold=3)
    request = server.take_keys({s: c.keys(HASH, ROUND, 5, {}) for s, c in clients.items()})
    request = server.take_shares({s: c.shares(HASH, ROUND, request) for s, c in clients.items()})
    for s, c in clients.items():
        _mask(c, request, layout, trained[s], global_params)

    # Execute / Assert: asked with 2 arrived sites (threshold 3), a site reveals nothing
    with pytest.raises(SecAggError, match="fewer than the threshold 3; this site reveals nothing"):
        clients["site-1"].reveal(
            HASH, ROUND, SecAggRequest(sites=("site-1", "site-2"), threshold=3)
        )
    # asked properly, it reveals seeds only (no site dropped): never a mask key of an arrived site
    everyone = SecAggRequest(sites=tuple(SITES[:3]), threshold=3)
    reveal = clients["site-1"].reveal(HASH, ROUND, everyone)
    assert set(reveal.seeds) == set(SITES[:3]) and not reveal.keys
    # a second request in the same round (say, claiming site-2 dropped) is refused
    with pytest.raises(SecAggError, match="already revealed"):
        clients["site-1"].reveal(
            HASH, ROUND, SecAggRequest(sites=("site-1", "site-3"), threshold=2)
        )


def test_a_masked_input_is_indistinguishable_from_uniform_and_its_encoding_is_not() -> None:
    # Prepare: 3 sites whose updates are all zero (the most structured input there is)
    rng = np.random.default_rng(4)
    global_params = {"w": rng.normal(size=60_000).astype(np.float32)}
    trained = {s: dict(global_params) for s in SITES[:3]}
    layout = Layout.of(global_params)
    clients = {s: SecureSite(s) for s in SITES[:3]}
    server = SecureRound(HASH, ROUND, layout, clip=CLIP)
    request = server.take_keys({s: c.keys(HASH, ROUND, 5, {}) for s, c in clients.items()})
    request = server.take_shares({s: c.shares(HASH, ROUND, request) for s, c in clients.items()})

    # Execute: what the server receives from site-1, and site-1's input unmasked
    masked = _mask(clients["site-1"], request, layout, trained["site-1"], global_params)
    plain = encode(layout, trained["site-1"], global_params, {EXAMPLES: 1 / 3}, CLIP).vector

    # Assert: uniform over 2^32 (chi-square on 256 bins of the top byte, KS on the values)
    counts = np.bincount((masked >> 24).astype(np.int64), minlength=256)
    assert stats.chisquare(counts).pvalue > 1e-3
    assert stats.kstest(masked / 2**32, "uniform").pvalue > 1e-3
    # the same tests reject the unmasked input (so they can fail)
    plain_counts = np.bincount((plain >> 24).astype(np.int64), minlength=256)
    assert stats.chisquare(plain_counts).pvalue < 1e-12


def test_fewer_shares_than_the_threshold_say_nothing_of_the_secret() -> None:
    # Prepare: two secrets, 2 of their 5 shares each (threshold 3)
    first, second = b"\x00" * 32, b"\xff" * 32
    draws = 400

    # Execute: the first share's value for each secret, many times
    values_first = [int.from_bytes(split(first, 5, 3)[0][1][:8], "big") for _ in range(draws)]
    values_second = [int.from_bytes(split(second, 5, 3)[0][1][:8], "big") for _ in range(draws)]

    # Assert: the same distribution whatever the secret; and 2 shares do not combine
    assert stats.ks_2samp(values_first, values_second).pvalue > 1e-3
    with pytest.raises(ShareError, match="at least 3"):
        combine(split(first, 5, 3)[:2], 3)
    assert combine(split(second, 5, 3)[2:], 3) == second


def test_a_share_sealed_for_one_site_does_not_open_for_another_or_when_altered() -> None:
    # Prepare: three sites up to their sealed shares
    global_params, _ = _updates(SITES[:3], seed=5)
    layout = Layout.of(global_params)
    clients = {s: SecureSite(s) for s in SITES[:3]}
    server = SecureRound(HASH, ROUND, layout, clip=CLIP, threshold=2)
    request = server.take_keys({s: c.keys(HASH, ROUND, 5, {}) for s, c in clients.items()})
    request = server.take_shares({s: c.shares(HASH, ROUND, request) for s, c in clients.items()})
    sealed = {r: dict(t) for r, t in request.sealed.items()}

    # Execute: the server relays site-2's shares for site-3 to site-1, and alters another
    swapped = {**sealed, "site-1": {**sealed["site-1"], "site-2": sealed["site-3"]["site-2"]}}
    flipped = bytearray(sealed["site-1"]["site-3"])
    flipped[-1] ^= 1
    altered = {**sealed, "site-1": {**sealed["site-1"], "site-3": bytes(flipped)}}

    # Assert: site-1 refuses both (and would drop out of the round)
    for relayed, sender in ((swapped, "site-2"), (altered, "site-3")):
        step = SecAggRequest(sites=request.sites, threshold=2, sealed=relayed)
        with pytest.raises(
            SecAggError, match=f"the shares from {sender}: a sealed share does not open"
        ):
            clients["site-1"].receive(HASH, ROUND, step)
    assert issubclass(SealError, ValueError)


def test_a_site_refuses_public_keys_the_server_substituted_for_its_own() -> None:
    # Prepare
    clients = {s: SecureSite(s) for s in SITES[:3]}
    keys = {s: c.keys(HASH, ROUND, 5, {}) for s, c in clients.items()}
    server = SecureRound(HASH, ROUND, Layout.of({"w": np.zeros(2, np.float32)}), clip=CLIP)
    request = server.take_keys(keys)

    # Execute: the server swaps site-1's mask key for site-2's
    forged = SecAggRequest(
        sites=request.sites,
        threshold=request.threshold,
        cipher_public=request.cipher_public,
        mask_public={**request.mask_public, "site-1": keys["site-2"].mask_public},
        totals=request.totals,
    )

    # Assert
    with pytest.raises(SecAggError, match="relays other public keys for this site"):
        clients["site-1"].shares(HASH, ROUND, forged)
    with pytest.raises(SecAggError, match="holds no keys of round 4"):
        clients["site-1"].shares(HASH, ROUND + 1, request)


def test_one_wrong_revealed_share_is_outvoted_by_the_others() -> None:
    # Prepare: 5 sites, threshold 3; all inputs arrive
    global_params, trained = _updates(SITES, seed=6)
    layout = Layout.of(global_params)
    clients = {s: SecureSite(s) for s in SITES}
    server = SecureRound(HASH, ROUND, layout, clip=CLIP, threshold=3)
    request = server.take_keys({s: c.keys(HASH, ROUND, WEIGHTS[s], {}) for s, c in clients.items()})
    request = server.take_shares({s: c.shares(HASH, ROUND, request) for s, c in clients.items()})
    request = server.take_inputs(
        {s: _mask(c, request, layout, trained[s], global_params) for s, c in clients.items()}
    )
    reveals = {s: c.reveal(HASH, ROUND, request) for s, c in clients.items()}

    # Execute: site-1 reveals garbage for site-4's seed
    x, _ = unpack_share(reveals["site-1"].seeds["site-4"])
    bad = dict(reveals["site-1"].seeds) | {"site-4": pack_share((x, b"\x01" * 66))}
    reveals["site-1"] = RevealResult(seeds=bad, keys=reveals["site-1"].keys)
    total = server.take_reveals(reveals)

    # Assert: the seed is rebuilt from other shares (checked against its SHA-256)
    expected = _plain_mean(global_params, trained, WEIGHTS, SITES)
    np.testing.assert_allclose(total.means["conv.bias"], expected["conv.bias"], atol=1e-7)


def test_malformed_secure_messages_are_refused_naming_the_field() -> None:
    # Prepare
    keys = KeysResult(b"c" * 32, b"m" * 32, 12, {"idh": 3})
    reveal = RevealResult(seeds={"site-1": b"x" * 68}, keys={"site-2": b"y" * 68})
    masked = TrainResult(params={}, num_examples=3, masked=np.arange(4, dtype=np.uint32))

    # Execute / Assert: a masked training answer travels; broken ones are refused
    back = SiteAnswer.decode(TaskName.TRAIN, "site-1", *SiteAnswer(result=masked).encode())
    assert isinstance(back.result, TrainResult) and back.result.masked is not None
    assert back.result.masked.tolist() == [0, 1, 2, 3]
    _, meta = SiteAnswer(result=keys).encode()
    meta["secagg_public"]["mask"] = np.zeros(31, np.uint8)
    with pytest.raises(ProtocolError, match=r"secagg_public\['mask'\].*expected 32 bytes"):
        SiteAnswer.decode(TaskName.SECAGG_KEYS, "site-1", {}, meta)
    _, meta = SiteAnswer(result=reveal).encode()
    meta["secagg_reveal"]["keys"]["site-1"] = meta["secagg_reveal"]["seeds"]["site-1"]
    with pytest.raises(ProtocolError, match="reveals both secrets of \\['site-1'\\]"):
        SiteAnswer.decode(TaskName.SECAGG_UNMASK, "site-1", {}, meta)
    train_meta = {"num_examples": 3, "secagg_masked": np.zeros(4, np.float32)}
    with pytest.raises(ProtocolError, match=r"secagg_masked .*uint32"):
        SiteAnswer.decode(TaskName.TRAIN, "site-1", {}, train_meta)
    request = SecAggRequest(sites=("a", "b"), threshold=2, sealed={"a": {"b": b"z" * 40}})
    assert SecAggRequest.decode(request.encode()) == request
    with pytest.raises(ProtocolError, match="distinct site names"):
        SecAggRequest.decode({**request.encode(), "sites": ["a", "a"]})
