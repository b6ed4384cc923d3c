"""The cryptographic primitives of secure aggregation, all from ``cryptography``.

- **Key agreement**: X25519 key pairs, fresh for every round; a shared key between two sites is
  HKDF-SHA256 of their X25519 secret with an ``info`` that names the purpose, the study, the
  round and the (sorted) pair, so no key is ever used for two things.
- **Sealed shares**: a share travelling from one site to another through the server is sealed
  with AES-256-GCM under their agreed key; the associated data binds it to the sender, the
  recipient, the study and the round, so the server cannot move it elsewhere.
- **Masks**: a pseudo-random vector of ``uint32`` is the ChaCha20 key stream of a 32-byte key
  (the pair's agreed key, or a site's own seed run through HKDF).

Examples
--------
>>> a, b = new_private_key(), new_private_key()
>>> info = context("mask", "ab" * 32, 3, "site-1", "site-2")
>>> agree(a, public_bytes(b), info) == agree(b, public_bytes(a), info)
True
>>> key = agree(a, public_bytes(b), info)
>>> open_sealed(key, seal(key, b"share", b"ad"), b"ad")
b'share'
>>> mask_stream(key, 4).dtype, len(mask_stream(key, 4))
(dtype('uint32'), 4)
>>> bool((mask_stream(key, 4) == mask_stream(key, 6)[:4]).all())
True
"""

from __future__ import annotations

import os

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "KEY_BYTES",
    "SealError",
    "agree",
    "context",
    "expand",
    "mask_stream",
    "new_private_key",
    "open_sealed",
    "private_bytes",
    "private_key",
    "public_bytes",
    "seal",
]

#: Bytes of a public key, a private key, an agreed key and a seed.
KEY_BYTES = 32
_NONCE = 12


class SealError(ValueError):
    """A sealed share could not be opened: wrong key, wrong context, or altered."""


def new_private_key() -> X25519PrivateKey:
    """A fresh X25519 private key (the operating system's randomness)."""
    return X25519PrivateKey.generate()


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The 32 raw bytes of ``key``'s public key."""
    return key.public_key().public_bytes_raw()


def private_bytes(key: X25519PrivateKey) -> bytes:
    """The 32 raw bytes of ``key`` (what a site secret-shares)."""
    return key.private_bytes_raw()


def private_key(raw: bytes) -> X25519PrivateKey:
    """The private key of 32 raw bytes (a reconstructed secret)."""
    return X25519PrivateKey.from_private_bytes(raw)


def context(purpose: str, study_hash: str, round_number: int, *names: str) -> bytes:
    """The HKDF ``info`` of a key: purpose, study, round and the sorted site names."""
    return "|".join(
        ["neurofed-secagg", purpose, study_hash, str(round_number), *sorted(names)]
    ).encode()


def expand(seed: bytes, info: bytes) -> bytes:
    """A 32-byte key derived from ``seed`` for ``info`` (HKDF-SHA256)."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(seed)


def agree(own: X25519PrivateKey, peer_public: bytes, info: bytes) -> bytes:
    """The key two sites share: HKDF of their X25519 secret (same on both sides).

    Raises
    ------
    ValueError
        ``peer_public`` is not a public key.
    """
    if len(peer_public) != KEY_BYTES:
        raise ValueError(f"a public key has {KEY_BYTES} bytes, not {len(peer_public)}")
    secret = own.exchange(X25519PublicKey.from_public_bytes(peer_public))
    return expand(secret, info)


def seal(key: bytes, plaintext: bytes, associated: bytes) -> bytes:
    """``plaintext`` encrypted and authenticated (AES-256-GCM; a random nonce in front)."""
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes, sealed: bytes, associated: bytes) -> bytes:
    """What :func:`seal` sealed.

    Raises
    ------
    SealError
        The key or the associated data differ, or the bytes were altered.
    """
    if len(sealed) <= _NONCE:
        raise SealError(f"a sealed share of {len(sealed)} bytes is too short")
    try:
        return AESGCM(key).decrypt(sealed[:_NONCE], sealed[_NONCE:], associated)
    except InvalidTag:
        raise SealError("a sealed share does not open with this pair's key") from None


def mask_stream(key: bytes, size: int) -> npt.NDArray[np.uint32]:
    """``size`` pseudo-random ``uint32`` values: the ChaCha20 key stream of ``key``."""
    encryptor = Cipher(algorithms.ChaCha20(key, b"\0" * 16), mode=None).encryptor()
    stream = encryptor.update(bytes(4 * size))
    return np.frombuffer(stream, dtype="<u4").astype(np.uint32, copy=False)
