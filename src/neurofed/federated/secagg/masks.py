"""Who masks with whom, and how: the shared rules of the sites and the server.

- A site's x coordinate in the round's Shamir sharing is its 1-based position among the sites
  that sent keys, sorted by name (:func:`positions`).
- Between sites ``a`` and ``b`` the pairwise mask is the key stream of their agreed mask key;
  the site whose name sorts first adds it, the other subtracts it (:func:`pair_mask`), so the
  pair's masks cancel in the sum.
- Each site also adds a self mask, the key stream of its own seed (:func:`self_mask`), so that its
  input stays hidden even when the server learns its pairwise masks (a site that seemed to drop
  out after masking).
- A share travels as its x (2 bytes) and its value (:func:`pack_share`); a site seals the
  shares of its seed and of its mask key for each recipient together (:func:`seal_shares`).

Examples
--------
>>> positions(["site-b", "site-a", "site-c"])
{'site-a': 1, 'site-b': 2, 'site-c': 3}
>>> default_threshold(3), default_threshold(10), default_threshold(2)
(2, 6, 2)
>>> unpack_share(pack_share((7, bytes(66))))[0]
7
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from neurofed.federated.secagg.crypto import (
    agree,
    context,
    expand,
    mask_stream,
    open_sealed,
    seal,
)
from neurofed.federated.secagg.shamir import SHARE_BYTES, Share

__all__ = [
    "SecAggError",
    "default_threshold",
    "open_shares",
    "pack_share",
    "pair_mask",
    "positions",
    "seal_shares",
    "self_mask",
    "unpack_share",
]

_PACKED = 2 + SHARE_BYTES


class SecAggError(RuntimeError):
    """A step of secure aggregation cannot go on (too few sites, a message that does not fit
    the round); the message says which and why."""


def positions(sites: Sequence[str]) -> dict[str, int]:
    """Each site's x coordinate: its 1-based position by name."""
    return {site: x for x, site in enumerate(sorted(sites), start=1)}


def default_threshold(sites: int) -> int:
    """A majority of ``sites``, at least 2."""
    return max(2, sites // 2 + 1)


def pack_share(share: Share) -> bytes:
    """``x`` (2 bytes) and the value of a share."""
    x, value = share
    return int(x).to_bytes(2, "big") + value


def unpack_share(data: bytes) -> Share:
    """The share :func:`pack_share` packed.

    Raises
    ------
    SecAggError
        The bytes are not one share.
    """
    if len(data) != _PACKED:
        raise SecAggError(f"a share has {_PACKED} bytes, not {len(data)}")
    return int.from_bytes(data[:2], "big"), data[2:]


def _seal_key(
    own: X25519PrivateKey,
    peer_public: bytes,
    study_hash: str,
    round_number: int,
    pair: tuple[str, str],
) -> bytes:
    return agree(own, peer_public, context("seal", study_hash, round_number, *pair))


def _associated(study_hash: str, round_number: int, sender: str, recipient: str) -> bytes:
    return f"neurofed-secagg|share|{study_hash}|{round_number}|{sender}>{recipient}".encode()


def seal_shares(
    own: X25519PrivateKey,
    recipient_public: bytes,
    study_hash: str,
    round_number: int,
    sender: str,
    recipient: str,
    shares: tuple[Share, Share],
) -> bytes:
    """The sender's shares of its seed and its mask key, sealed for ``recipient``."""
    key = _seal_key(own, recipient_public, study_hash, round_number, (sender, recipient))
    plaintext = pack_share(shares[0]) + pack_share(shares[1])
    return seal(key, plaintext, _associated(study_hash, round_number, sender, recipient))


def open_shares(
    own: X25519PrivateKey,
    sender_public: bytes,
    study_hash: str,
    round_number: int,
    sender: str,
    recipient: str,
    sealed: bytes,
) -> tuple[Share, Share]:
    """The shares ``sender`` sealed for ``recipient`` (seed share, mask-key share).

    Raises
    ------
    SealError
        They were sealed for another pair, study or round, or altered.
    SecAggError
        What opens is not two shares.
    """
    key = _seal_key(own, sender_public, study_hash, round_number, (sender, recipient))
    plaintext = open_sealed(key, sealed, _associated(study_hash, round_number, sender, recipient))
    if len(plaintext) != 2 * _PACKED:
        raise SecAggError(f"sealed shares of {len(plaintext)} bytes; expected {2 * _PACKED}")
    return unpack_share(plaintext[:_PACKED]), unpack_share(plaintext[_PACKED:])


def self_mask(
    seed: bytes, study_hash: str, round_number: int, site: str, size: int
) -> npt.NDArray[np.uint32]:
    """The self mask of ``site`` from its seed."""
    return mask_stream(expand(seed, context("self", study_hash, round_number, site)), size)


def pair_mask(
    own: X25519PrivateKey,
    peer_public: bytes,
    study_hash: str,
    round_number: int,
    site: str,
    peer: str,
    size: int,
) -> npt.NDArray[np.uint32]:
    """What ``site`` adds for the pair (``site``, ``peer``): the pair's key stream, negated
    (mod 2^32) when ``site`` sorts after ``peer``."""
    key = agree(own, peer_public, context("mask", study_hash, round_number, site, peer))
    stream = mask_stream(key, size)
    return stream if site < peer else np.negative(stream)
