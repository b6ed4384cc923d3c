"""Secure aggregation's shared rules, pure (numpy and ``cryptography``; no torch, no engine).

- :mod:`~neurofed.federated.secagg.crypto`: X25519 key agreement with HKDF, AES-GCM sealing,
  ChaCha20 mask streams;
- :mod:`~neurofed.federated.secagg.shamir`: threshold sharing of 32-byte secrets;
- :mod:`~neurofed.federated.secagg.masks`: who masks with whom, and how shares travel;
- :mod:`~neurofed.federated.secagg.vectors`: a site's update as integers modulo 2^32 and back.

The site's steps are :mod:`neurofed.federated.site.secagg`, the server's
:mod:`neurofed.federated.server.secagg`; the guarantee and its limits are in ``docs/privacy.md``.
"""

from neurofed.federated.secagg.masks import SecAggError, default_threshold
from neurofed.federated.secagg.vectors import EXAMPLES, Layout, decode, encode

__all__ = ["EXAMPLES", "Layout", "SecAggError", "decode", "default_threshold", "encode"]
