"""A site's side of secure aggregation: fresh keys, sealed shares, a masked input, reveals.

:class:`SecureSite` keeps the secrets of the round in progress in memory only (a site that
restarts has lost them and drops out of that round; the next round starts afresh). Its four
steps answer the server's (:mod:`neurofed.federated.server.secagg`):

1. ``secagg-keys``: two fresh X25519 key pairs (one seals shares, one agrees masks) and a fresh
   32-byte seed; the public keys and the site's weights go to the server;
2. ``secagg-shares``: given every site's public keys, the site splits its seed and its mask
   private key into Shamir shares (threshold ``t``) and seals one of each for every site;
3. ``train``: it opens the shares the others sealed for it (before training), trains, and sends
   its update encoded as integers (:mod:`neurofed.federated.secagg.vectors`) plus a pairwise
   mask for every other site that shared and its self mask — never its parameters;
4. ``secagg-unmask``: given the sites whose masked inputs arrived, it reveals its shares of
   *their seeds* and of *the mask keys of the others* (those that dropped out after sharing),
   once per round — never both secrets of one site, so no input is ever unmasked alone.

Every request is checked against the round: its own public keys must be the ones the server
relays, the sites of a step must be among those of the step before, and a step must keep at
least ``t`` sites; otherwise the site answers with the reason and reveals nothing.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from neurofed.federated.protocol import KeysResult, RevealResult, SecAggRequest, SharesResult
from neurofed.federated.secagg.crypto import (
    KEY_BYTES,
    SealError,
    new_private_key,
    private_bytes,
    public_bytes,
)
from neurofed.federated.secagg.masks import (
    SecAggError,
    open_shares,
    pack_share,
    pair_mask,
    positions,
    seal_shares,
    self_mask,
)
from neurofed.federated.secagg.shamir import Share, split
from neurofed.federated.secagg.vectors import EXAMPLES, Layout, encode
from neurofed.federated.update import Array

__all__ = ["SecureSite"]


@dataclass
class _Round:
    """The secrets and the view of one round (memory only)."""

    study_hash: str
    round: int
    weights: dict[str, int]
    cipher: X25519PrivateKey = field(default_factory=new_private_key)
    mask: X25519PrivateKey = field(default_factory=new_private_key)
    seed: bytes = field(default_factory=lambda: os.urandom(KEY_BYTES))
    sites: tuple[str, ...] = ()  # those that sent keys
    threshold: int = 0
    cipher_public: dict[str, bytes] = field(default_factory=dict)
    mask_public: dict[str, bytes] = field(default_factory=dict)
    shares: dict[str, float] = field(default_factory=dict)  # this site's share of each group
    held: dict[str, tuple[Share, Share]] = field(default_factory=dict)  # sender → its shares
    masked_with: tuple[str, ...] = ()  # those that shared (this site's masks cover them)
    revealed: bool = False


class SecureSite:
    """One site's secure aggregation state (see the module docstring).

    Parameters
    ----------
    site_id
        The site's name in the federation.
    """

    def __init__(self, site_id: str) -> None:
        self.site_id = str(site_id)
        self._round: _Round | None = None

    def _current(self, study_hash: str, round_number: int, step: str) -> _Round:
        state = self._round
        if state is None or (state.study_hash, state.round) != (study_hash, round_number):
            raise SecAggError(
                f"{step}: this site holds no keys of round {round_number} (it restarted, or "
                "skipped the keys step); it drops out of this round"
            )
        return state

    def _check_sites(
        self, state: _Round, sites: tuple[str, ...], before: tuple[str, ...], step: str
    ) -> None:
        strangers = sorted(set(sites) - set(before))
        if strangers:
            raise SecAggError(f"{step}: sites {strangers[:3]} did not take part in the step before")
        if len(sites) < state.threshold:
            raise SecAggError(
                f"{step}: {len(sites)} site(s) left, fewer than the threshold {state.threshold}; "
                "this site reveals nothing"
            )

    # -- 1. keys -------------------------------------------------------------------------------

    def keys(
        self, study_hash: str, round_number: int, num_examples: int, label_counts: Mapping[str, int]
    ) -> KeysResult:
        """Fresh keys and seed for the round (any earlier round's secrets are dropped)."""
        weights = {EXAMPLES: int(num_examples)} | {str(k): int(v) for k, v in label_counts.items()}
        state = _Round(study_hash, round_number, weights)
        self._round = state
        return KeysResult(
            cipher_public=public_bytes(state.cipher),
            mask_public=public_bytes(state.mask),
            num_examples=int(num_examples),
            label_counts=dict(label_counts),
        )

    # -- 2. shares -----------------------------------------------------------------------------

    def shares(self, study_hash: str, round_number: int, request: SecAggRequest) -> SharesResult:
        """A share of the seed and of the mask key, sealed for every site that sent keys.

        Raises
        ------
        SecAggError
            The server relays other public keys for this site, two sites share a key, the
            threshold does not fit the sites, or a weight total is below this site's weight.
        """
        state = self._current(study_hash, round_number, "secagg-shares")
        sites = tuple(sorted(request.sites))
        t = request.threshold
        if self.site_id not in sites:
            raise SecAggError("secagg-shares: this site is not among the round's sites")
        if not 2 <= t <= len(sites):
            raise SecAggError(f"secagg-shares: threshold {t} does not fit {len(sites)} sites")
        missing = [
            s for s in sites if s not in request.cipher_public or s not in request.mask_public
        ]
        if missing:
            raise SecAggError(f"secagg-shares: no public keys for {missing[:3]}")
        own = (public_bytes(state.cipher), public_bytes(state.mask))
        if (request.cipher_public[self.site_id], request.mask_public[self.site_id]) != own:
            raise SecAggError("secagg-shares: the server relays other public keys for this site")
        relayed = [request.cipher_public[s] for s in sites] + [
            request.mask_public[s] for s in sites
        ]
        if len(set(relayed)) != len(relayed):
            raise SecAggError("secagg-shares: two sites have the same public key")
        shares = {}
        for group, weight in state.weights.items():
            total = int(request.totals.get(group, 0))
            if weight > total:
                raise SecAggError(
                    f"secagg-shares: the total {total} of {group!r} is below this site's {weight}"
                )
            shares[group] = weight / total if total else 0.0
        state.sites, state.threshold, state.shares = sites, t, shares
        state.cipher_public = {s: request.cipher_public[s] for s in sites}
        state.mask_public = {s: request.mask_public[s] for s in sites}
        x = positions(sites)
        seed_shares = split(state.seed, len(sites), t)
        key_shares = split(private_bytes(state.mask), len(sites), t)
        sealed = {
            peer: seal_shares(
                state.cipher,
                state.cipher_public[peer],
                study_hash,
                round_number,
                self.site_id,
                peer,
                (seed_shares[x[peer] - 1], key_shares[x[peer] - 1]),
            )
            for peer in sites
        }
        return SharesResult(sealed=sealed, seed_digest=hashlib.sha256(state.seed).digest())

    # -- 3. masked input ----------------------------------------------------------------------

    def receive(self, study_hash: str, round_number: int, request: SecAggRequest) -> None:
        """Open the shares the sites that shared sealed for this site (before it trains).

        Raises
        ------
        SecAggError
            The sites are not among those that sent keys or are below the threshold, or the
            shares sealed for this site are missing or do not open.
        """
        state = self._current(study_hash, round_number, "train")
        sites = tuple(sorted(request.sites))
        self._check_sites(state, sites, state.sites, "train")
        if self.site_id not in sites:
            raise SecAggError("train: this site is not among the sites that shared")
        sealed = request.sealed.get(self.site_id, {})
        held = {}
        for sender in sites:
            if sender not in sealed:
                raise SecAggError(f"train: no shares from {sender} were relayed to this site")
            try:
                held[sender] = open_shares(
                    state.cipher,
                    state.cipher_public[sender],
                    study_hash,
                    round_number,
                    sender,
                    self.site_id,
                    sealed[sender],
                )
            except SealError as error:
                raise SecAggError(f"train: the shares from {sender}: {error}") from None
        state.held, state.masked_with = held, sites

    def mask(
        self,
        study_hash: str,
        round_number: int,
        layout: Layout,
        trained: Mapping[str, Array],
        global_params: Mapping[str, Array],
        clip: float,
    ) -> tuple[npt.NDArray[np.uint32], int]:
        """The masked input (after :meth:`receive`) and how many elements were clipped.

        Raises
        ------
        SecAggError
            No shares were received this round.
        """
        state = self._current(study_hash, round_number, "train")
        if not state.masked_with:
            raise SecAggError("train: this site received no shares this round")
        encoded = encode(layout, trained, global_params, state.shares, clip)
        size = layout.size
        vector = encoded.vector + self_mask(
            state.seed, study_hash, round_number, self.site_id, size
        )
        for peer in state.masked_with:
            if peer != self.site_id:
                vector += pair_mask(
                    state.mask,
                    state.mask_public[peer],
                    study_hash,
                    round_number,
                    self.site_id,
                    peer,
                    size,
                )
        return vector, encoded.clipped

    # -- 4. reveal ------------------------------------------------------------------------------

    def reveal(self, study_hash: str, round_number: int, request: SecAggRequest) -> RevealResult:
        """This site's shares of the arrived sites' seeds and the dropped sites' mask keys.

        Raises
        ------
        SecAggError
            A second reveal in the round, sites not among those that shared, or fewer than the
            threshold.
        """
        state = self._current(study_hash, round_number, "secagg-unmask")
        if state.revealed:
            raise SecAggError("secagg-unmask: this site already revealed its shares this round")
        arrived = tuple(sorted(request.sites))
        self._check_sites(state, arrived, state.masked_with, "secagg-unmask")
        state.revealed = True
        seeds = {s: pack_share(state.held[s][0]) for s in arrived}
        keys = {s: pack_share(state.held[s][1]) for s in state.masked_with if s not in arrived}
        return RevealResult(seeds=seeds, keys=keys)
