"""The server's side of secure aggregation (Bonawitz et al. 2017; Bell et al. 2020): it only
ever sees masked inputs and, after the unmasking step, their sum.

A round of a study with ``secagg = true`` has four steps instead of one ``train``:

1. ``secagg-keys`` → every target answers with two fresh public keys and its weights (``U1``);
2. ``secagg-shares`` → the public keys and the weight totals of ``U1`` go to ``U1``; each site
   answers with a share of its mask seed and of its mask key sealed for every site (``U2``);
3. ``train`` → the global model and the sealed shares go to ``U2``; each site trains and answers
   with its masked, weighted, clipped, quantised update (``U3``);
4. ``secagg-unmask`` → ``U3`` goes to ``U3``; each answers with its shares of the seeds of
   ``U3`` and of the mask keys of ``U2 \\ U3`` (``U4``).

With shares from at least ``t`` sites (the threshold) the server rebuilds each arrived site's
seed (checked against the SHA-256 the site sent) and each dropped site's mask key (checked
against its public key), removes the masks and decodes the sum: the weighted mean update of the
sites in ``U3`` (:mod:`neurofed.federated.secagg.vectors`). Any number of sites may drop at any
step as long as ``t`` remain; below ``t`` the round fails with :class:`SecAggError` and nothing
is unmasked. :class:`SecureRound` is pure (no engine): the controller carries its requests.

Examples
--------
>>> import numpy as np
>>> from neurofed.federated.secagg.vectors import Layout
>>> round_ = SecureRound("ab" * 32, 1, Layout.of({"w": np.zeros(2, np.float32)}), clip=1.0)
>>> round_.take_keys({})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
neurofed.federated.secagg.masks.SecAggError: secagg-keys: 0 site(s) answered; the round needs...
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from neurofed.federated.protocol import (
    Answer,
    KeysResult,
    RevealResult,
    SecAggRequest,
    SharesResult,
    SiteAnswer,
    TaskName,
    TrainResult,
)
from neurofed.federated.secagg.crypto import private_key, public_bytes
from neurofed.federated.secagg.masks import (
    SecAggError,
    default_threshold,
    pair_mask,
    positions,
    self_mask,
    unpack_share,
)
from neurofed.federated.secagg.shamir import Share, ShareError, combine
from neurofed.federated.secagg.vectors import EXAMPLES, Layout, decode
from neurofed.federated.update import Parameters

_R = TypeVar("_R")

__all__ = ["Collect", "SecAggError", "SecureRound", "SecureSum", "Send", "run_steps"]

#: Sends a task with its secure step to sites; returns the answers that came back in time.
Send = Callable[[TaskName, list[str], SecAggRequest | None], Sequence[SiteAnswer]]
#: Records a step's answers (refusals, failures, silent sites); returns the usable results.
Collect = Callable[[TaskName, Sequence[str], Sequence[SiteAnswer]], dict[str, Answer]]


@dataclass(frozen=True)
class SecureSum:
    """What the server learns from a secure round.

    Attributes
    ----------
    means
        The weighted mean update (``trained - global``) per aggregated entry; an entry whose
        weight group no arrived site had is absent.
    sites
        The sites whose inputs are in the sum (``U3``).
    dropped
        Sites that took part in a step and then did not answer, by the step they missed.
    """

    means: Parameters
    sites: tuple[str, ...]
    dropped: Mapping[str, str]


class SecureRound:
    """One round's secure aggregation on the server (see the module docstring).

    Parameters
    ----------
    study_hash, round_number
        The round (every key and share is bound to them).
    layout
        The aggregated entries (:meth:`Layout.of` of the global model and the strategy).
    clip
        The study's ``secagg_clip``.
    threshold
        The study's ``secagg_threshold`` (0: a majority of the sites that sent keys, at least 2).
    """

    def __init__(
        self, study_hash: str, round_number: int, layout: Layout, clip: float, threshold: int = 0
    ) -> None:
        self.study_hash = study_hash
        self.round = round_number
        self.layout = layout
        self.clip = clip
        self.option = threshold
        self.threshold = threshold or 2
        self.weights: dict[str, dict[str, int]] = {}  # U1: site → group → weight
        self.totals: dict[str, int] = {}
        self.mask_public: dict[str, bytes] = {}
        self.digests: dict[str, bytes] = {}
        self.shared: tuple[str, ...] = ()  # U2
        self.inputs: dict[str, npt.NDArray[np.uint32]] = {}  # U3
        self.dropped: dict[str, str] = {}

    def _enough(self, step: str, count: int) -> None:
        if count < self.threshold:
            raise SecAggError(
                f"{step}: {count} site(s) answered; the round needs at least {self.threshold} "
                "(its threshold); nothing was unmasked"
            )

    def _note_dropped(
        self, before: tuple[str, ...], after: Mapping[str, object], step: str
    ) -> None:
        for site in before:
            if site not in after:
                self.dropped.setdefault(site, step)

    # -- 1 → 2 ---------------------------------------------------------------------------------

    def take_keys(self, answers: Mapping[str, KeysResult]) -> SecAggRequest:
        """The ``secagg-shares`` request from the keys that arrived."""
        if not self.option:
            self.threshold = default_threshold(len(answers))
        self._enough("secagg-keys", len(answers))
        sites = tuple(sorted(answers))
        self.weights = {
            s: {EXAMPLES: a.num_examples} | dict(a.label_counts) for s, a in answers.items()
        }
        # every group a site weighs itself in (a site checks each total against its weight),
        # not only the groups the model has: a plain segmentation model has no head groups
        groups = set(self.layout.groups).union(*(w.keys() for w in self.weights.values()))
        self.totals = {g: sum(w.get(g, 0) for w in self.weights.values()) for g in sorted(groups)}
        self.mask_public = {s: answers[s].mask_public for s in sites}
        return SecAggRequest(
            sites=sites,
            threshold=self.threshold,
            cipher_public={s: answers[s].cipher_public for s in sites},
            mask_public=self.mask_public,
            totals=self.totals,
        )

    # -- 2 → 3 ---------------------------------------------------------------------------------

    def take_shares(self, answers: Mapping[str, SharesResult]) -> SecAggRequest:
        """The ``train`` request's secure part: the sealed shares of the sites that shared.

        A site whose shares do not cover every site that sent keys counts as dropped.
        """
        keyed = tuple(sorted(self.weights))
        complete = {
            s: a for s, a in answers.items() if s in self.weights and set(a.sealed) >= set(keyed)
        }
        self._note_dropped(keyed, complete, "secagg-shares")
        self._enough("secagg-shares", len(complete))
        self.shared = tuple(sorted(complete))
        self.digests = {s: a.seed_digest for s, a in complete.items()}
        sealed = {r: {s: complete[s].sealed[r] for s in self.shared} for r in self.shared}
        return SecAggRequest(sites=self.shared, threshold=self.threshold, sealed=sealed)

    # -- 3 → 4 ---------------------------------------------------------------------------------

    def take_inputs(self, answers: Mapping[str, npt.NDArray[np.uint32]]) -> SecAggRequest:
        """The ``secagg-unmask`` request from the masked inputs that arrived (one of another
        size counts as dropped)."""
        size = self.layout.size
        fitting = {
            s: np.asarray(v, dtype=np.uint32)
            for s, v in answers.items()
            if s in self.shared and np.shape(v) == (size,)
        }
        self._note_dropped(self.shared, fitting, "train")
        self._enough("train", len(fitting))
        self.inputs = fitting
        return SecAggRequest(sites=tuple(sorted(fitting)), threshold=self.threshold)

    # -- 4 → the sum ----------------------------------------------------------------------------

    def _recover(
        self, shares: list[Share], check: Callable[[bytes], bool], site: str, what: str
    ) -> bytes:
        """The secret behind ``shares`` that passes ``check``; tries each run of ``t`` shares
        (a wrong share from one site spoils only the runs that hold it)."""
        ordered = sorted(shares)
        t = self.threshold
        for start in range(max(1, len(ordered) - t + 1)):
            try:
                secret = combine(ordered[start : start + t], t)
            except ShareError:
                continue
            if check(secret):
                return secret
        raise SecAggError(
            f"secagg-unmask: the {what} of {site} cannot be rebuilt from {len(ordered)} share(s) "
            f"(threshold {t}); the round is not aggregated"
        )

    def take_reveals(self, answers: Mapping[str, RevealResult]) -> SecureSum:
        """Unmask the sum and decode the weighted mean update.

        Raises
        ------
        SecAggError
            Fewer than ``t`` sites revealed, or a secret cannot be rebuilt.
        """
        arrived = tuple(sorted(self.inputs))
        revealers = {s: a for s, a in answers.items() if s in self.inputs}
        self._enough("secagg-unmask", len(revealers))
        gone = [s for s in self.shared if s not in self.inputs]
        x = positions(tuple(sorted(self.weights)))
        seed_shares: dict[str, list[Share]] = {s: [] for s in arrived}
        key_shares: dict[str, list[Share]] = {s: [] for s in gone}
        for revealer, reveal in sorted(revealers.items()):
            for table, into in ((reveal.seeds, seed_shares), (reveal.keys, key_shares)):
                for owner, data in table.items():
                    if owner not in into:
                        continue
                    try:
                        share = unpack_share(data)
                    except SecAggError:
                        continue
                    if share[0] == x[revealer]:  # a share is only taken at its holder's x
                        into[owner].append(share)
        size = self.layout.size
        total = np.zeros(size, dtype=np.uint32)
        for site in arrived:
            total += self.inputs[site]
            seed = self._recover(
                seed_shares[site],
                functools.partial(_seed_matches, self.digests[site]),
                site,
                "seed",
            )
            total -= self_mask(seed, self.study_hash, self.round, site, size)
        for site in gone:
            public = self.mask_public[site]
            raw = self._recover(
                key_shares[site],
                functools.partial(_key_matches, public),
                site,
                "mask key",
            )
            key = private_key(raw)
            for survivor in arrived:
                # the survivor added the opposite of what the dropped site would have added
                total += pair_mask(
                    key,
                    self.mask_public[survivor],
                    self.study_hash,
                    self.round,
                    site,
                    survivor,
                    size,
                )
        shares = {}
        for group in self.layout.groups:
            weight = sum(self.weights[s].get(group, 0) for s in arrived)
            shares[group] = weight / self.totals[group] if self.totals.get(group) else 0.0
        means = decode(self.layout, total, shares, self.clip)
        return SecureSum(means=means, sites=arrived, dropped=dict(self.dropped))


def _seed_matches(digest: bytes, seed: bytes) -> bool:
    return hashlib.sha256(seed).digest() == digest


def _key_matches(public: bytes, key: bytes) -> bool:
    return public_bytes(private_key(key)) == public


def _of(results: Mapping[str, Answer], kind: type[_R]) -> dict[str, _R]:
    return {site: result for site, result in results.items() if isinstance(result, kind)}


def run_steps(
    secure: SecureRound, targets: Sequence[str], send: Send, collect: Collect
) -> tuple[SecureSum, dict[str, TrainResult]]:
    """The four steps of a secure round: the sum, and the training answers (weights and
    aggregate numbers; their parameters are empty).

    Raises
    ------
    SecAggError
        A step left fewer sites than the threshold, or a secret could not be rebuilt.
    """

    def step(
        task: TaskName, sites: Sequence[str], request: SecAggRequest | None
    ) -> Mapping[str, Answer]:
        return collect(task, sites, send(task, list(sites), request))

    keys = _of(step(TaskName.SECAGG_KEYS, targets, None), KeysResult)
    request = secure.take_keys(keys)
    shares = _of(step(TaskName.SECAGG_SHARES, request.sites, request), SharesResult)
    request = secure.take_shares(shares)
    trained = _of(step(TaskName.TRAIN, request.sites, request), TrainResult)
    request = secure.take_inputs({s: r.masked for s, r in trained.items() if r.masked is not None})
    reveals = _of(step(TaskName.SECAGG_UNMASK, request.sites, request), RevealResult)
    total = secure.take_reveals(reveals)
    return total, {s: r for s, r in trained.items() if s in total.sites}
