"""Shamir secret sharing of short secrets (32-byte keys and seeds) over GF(2^521 - 1).

A secret is split into ``count`` shares, any ``threshold`` of which give it back by Lagrange
interpolation at 0; fewer say nothing about it (every value of the secret is equally likely).
Share ``x`` is the polynomial's value at ``x = 1 … count``. The field is the Mersenne prime
``2^521 - 1`` so that any 32-byte secret is a field element; a share's value travels as
:data:`SHARE_BYTES` big-endian bytes.

Hand-written: the pinned libraries offer no threshold sharing of 32-byte secrets
(``cryptography`` has none; PyCryptodome's ``Shamir`` shares 16-byte secrets only).

Examples
--------
>>> shares = split(b"k" * 32, count=5, threshold=3)
>>> combine(shares[1:4], threshold=3) == b"k" * 32
True
>>> combine(shares[:2], threshold=3)
Traceback (most recent call last):
...
neurofed.federated.secagg.shamir.ShareError: 2 share(s) of a secret; at least 3 are needed
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

__all__ = ["PRIME", "SHARE_BYTES", "Share", "ShareError", "combine", "split"]

#: The field's modulus, a Mersenne prime larger than any 32-byte secret.
PRIME = 2**521 - 1
#: Bytes of a share's value.
SHARE_BYTES = 66

#: One share: its x (1-based) and its value as :data:`SHARE_BYTES` bytes.
Share = tuple[int, bytes]


class ShareError(ValueError):
    """Too few, repeated or malformed shares."""


def split(secret: bytes, count: int, threshold: int) -> list[Share]:
    """``count`` shares of ``secret``, any ``threshold`` of which recover it.

    The polynomial's other coefficients come from the operating system's randomness.
    """
    if not 1 <= threshold <= count:
        raise ShareError(f"threshold {threshold} must lie in [1, {count}] (the share count)")
    if len(secret) > 64:
        raise ShareError(f"a secret of {len(secret)} bytes is too long; at most 64")
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares = []
    for x in range(1, count + 1):
        y = 0
        for coefficient in reversed(coefficients):  # Horner
            y = (y * x + coefficient) % PRIME
        shares.append((x, y.to_bytes(SHARE_BYTES, "big")))
    return shares


def combine(shares: Sequence[Share], threshold: int, size: int = 32) -> bytes:
    """The ``size``-byte secret behind ``shares`` (the first ``threshold`` distinct ones).

    Raises
    ------
    ShareError
        Fewer than ``threshold`` distinct shares, or a share that is not one.
    """
    points: dict[int, int] = {}
    for x, value in shares:
        if not isinstance(x, int) or x < 1 or len(value) != SHARE_BYTES:
            raise ShareError(f"share {x!r} is malformed: x >= 1 and {SHARE_BYTES} bytes needed")
        y = int.from_bytes(value, "big")
        if y >= PRIME or points.get(x, y) != y:
            raise ShareError(f"share {x} is not a share of one secret")
        points[x] = y
    if len(points) < threshold:
        raise ShareError(f"{len(points)} share(s) of a secret; at least {threshold} are needed")
    chosen = sorted(points.items())[:threshold]
    secret = 0
    for i, (xi, yi) in enumerate(chosen):
        numerator, denominator = 1, 1
        for j, (xj, _) in enumerate(chosen):
            if i != j:
                numerator = numerator * xj % PRIME
                denominator = denominator * (xj - xi) % PRIME
        secret = (secret + yi * numerator * pow(denominator, -1, PRIME)) % PRIME
    if secret >= 256**size:
        raise ShareError(f"the shares do not give a {size}-byte secret")
    return secret.to_bytes(size, "big")
