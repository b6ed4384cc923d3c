"""What a site sends under the ``distill`` strategy besides its weights, and its checks (numpy).

A site's *condensed payload* (``FLModel.meta["condensed"]``) is a table of arrays:

``volumes``            ``(N, C, X, Y, Z)`` float16: synthetic volumes condensed from noise, ``ipc``
                       per class of the anchor head that has at least ``n_min`` cases
``volume_class``       ``(N,)`` int64: each volume's class of the anchor head
``soft/<head>``        ``(N, K)`` float32: per volume, the site's mean probabilities of ``<head>``
                       (temperature ``T``) over its real cases of that anchor class
``class_logits/<head>`` ``(K, L)`` float32: mean logits of the global model per class of
                       ``<head>`` over the site's real cases (rows of suppressed classes are 0)
``class_counts/<head>`` ``(K,)`` int64: cases behind each row, 0 where fewer than ``n_min``
``withheld``           ``(1,)`` int64: volumes the similarity gate kept at the site

Only class-level aggregates of at least ``n_min`` cases and synthetic volumes leave; the server
validates every field (:func:`check_payload`) and drops a malformed payload, not the round.

In **proxy mode** (``proxy = "<dataset>"``: a public set every party holds) the payload holds
nothing derived from the site's images, only its model's outputs on the public cases:

``proxy_logits/<head>`` ``(P, L)`` float32: the site's locally trained model's logits on each of
                       the ``P`` proxy cases (in the order of their case ids)
``proxy_fingerprint``  ``(32,)`` uint8: SHA-256 of the proxy set's image files as this site holds
                       them (every site must hold the same set, or the logits do not line up)

Examples
--------
>>> import numpy as np
>>> payload = {"class_logits/idh": np.array([[-1.0], [2.0]], np.float32),
...            "class_counts/idh": np.array([10, 30])}
>>> merged = merge_class_logits([payload, payload])
>>> merged["idh"][0].tolist(), merged["idh"][1].tolist()
([[-1.0], [2.0]], [20, 60])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from neurofed.keys import OutputKey

__all__ = [
    "HEAD_CLASSES",
    "HEAD_LOGITS",
    "MAX_PROXY_CASES",
    "PROXY_FINGERPRINT",
    "PayloadError",
    "PayloadSpec",
    "check_payload",
    "class_arrays",
    "merge_class_logits",
    "merge_proxy_logits",
    "proxy_cases",
    "temperature_probabilities",
]

#: Classes of each classification head (binary markers: negative / positive; grade: WHO 2-4).
HEAD_CLASSES: Mapping[str, int] = {
    OutputKey.IDH.value: 2,
    OutputKey.CODEL_1P19Q.value: 2,
    OutputKey.MGMT.value: 2,
    OutputKey.GRADE.value: 3,
}
#: Logits per head (a binary marker has one).
HEAD_LOGITS: Mapping[str, int] = {k: (1 if n == 2 else n) for k, n in HEAD_CLASSES.items()}
#: The payload entry holding the proxy set's fingerprint (proxy mode).
PROXY_FINGERPRINT = "proxy_fingerprint"
#: Proxy cases a payload may hold logits for at most.
MAX_PROXY_CASES = 10_000

Array = npt.NDArray[Any]


class PayloadError(ValueError):
    """A condensed payload does not follow :func:`check_payload`'s rules; names the field."""


@dataclass(frozen=True)
class PayloadSpec:
    """What a study allows a payload to hold."""

    channels: int
    shape: tuple[int, int, int]
    anchor: str
    images_per_class: int
    n_min: int
    proxy: bool = False


def proxy_cases(arrays: Mapping[str, Array]) -> int:
    """The number of proxy cases a (checked) proxy-mode payload holds logits for.

    Examples
    --------
    >>> proxy_cases({"proxy_logits/idh": np.zeros((7, 1))})
    7
    """
    return int(np.asarray(arrays[f"proxy_logits/{next(iter(HEAD_CLASSES))}"]).shape[0])


def _check_proxy_payload(arrays: Mapping[str, Array]) -> None:
    """Proxy mode: the logits on the proxy cases and the fingerprint, nothing else."""
    wanted = {PROXY_FINGERPRINT, *(f"proxy_logits/{h}" for h in HEAD_CLASSES)}
    extra = sorted(set(arrays) - wanted)
    if extra:
        raise PayloadError(
            f"proxy-mode payload holds {[e[:40] for e in extra[:3]]}; it may hold only the "
            "logits on the proxy cases and the proxy set's fingerprint"
        )
    missing = sorted(wanted - set(arrays))
    if missing:
        raise PayloadError(f"proxy-mode payload lacks {missing[:3]}")
    _shape(PROXY_FINGERPRINT, arrays[PROXY_FINGERPRINT], (32,), "u")
    n = np.asarray(arrays[f"proxy_logits/{next(iter(HEAD_CLASSES))}"]).shape[:1]
    count = int(n[0]) if n else -1
    if not 0 < count <= MAX_PROXY_CASES:
        raise PayloadError(f"proxy_logits: {count} proxy cases; 1 to {MAX_PROXY_CASES} expected")
    for head in HEAD_CLASSES:
        _shape(
            f"proxy_logits/{head}", arrays[f"proxy_logits/{head}"], (count, HEAD_LOGITS[head]), "f"
        )


def check_payload(arrays: Mapping[str, Array], spec: PayloadSpec) -> None:
    """Raise :class:`PayloadError` unless ``arrays`` is a payload the study allows.

    Examples
    --------
    >>> spec = PayloadSpec(4, (8, 8, 8), "idh", 1, 10)
    >>> check_payload({"volumes": np.zeros((1, 4, 8, 8, 8), np.float16)}, spec)
    Traceback (most recent call last):
    ...
    neurofed.federated.condensed.PayloadError: condensed payload lacks 'volume_class'
    """
    if spec.proxy:
        _check_proxy_payload(arrays)
        return
    volumes = arrays.get("volumes")
    if volumes is not None:
        for name in ("volume_class", *(f"soft/{h}" for h in HEAD_CLASSES)):
            if name not in arrays:
                raise PayloadError(f"condensed payload lacks {name!r}")
    known = {"volumes", "volume_class", "withheld"}
    for head in HEAD_CLASSES:
        known |= {f"soft/{head}", f"class_logits/{head}", f"class_counts/{head}"}
    extra = sorted(set(arrays) - known)
    if extra:
        raise PayloadError(f"condensed payload holds unknown entries {[e[:40] for e in extra[:3]]}")
    for head, classes in HEAD_CLASSES.items():
        logits, counts = arrays.get(f"class_logits/{head}"), arrays.get(f"class_counts/{head}")
        if (logits is None) != (counts is None):
            raise PayloadError(f"class_logits/{head} and class_counts/{head} come together")
        if logits is None or counts is None:
            continue
        _shape(f"class_logits/{head}", logits, (classes, HEAD_LOGITS[head]), "f")
        _shape(f"class_counts/{head}", counts, (classes,), "iu")
        if np.any((counts != 0) & (counts < spec.n_min)) or np.any(counts < 0):
            raise PayloadError(
                f"class_counts/{head} = {counts.tolist()}: a class of fewer than n_min = "
                f"{spec.n_min} cases must be suppressed (0)"
            )
        if np.any(logits[counts == 0] != 0):
            raise PayloadError(f"class_logits/{head}: a suppressed class carries logits")
    if volumes is None:
        return
    anchor_classes = HEAD_CLASSES[spec.anchor]
    n = int(np.asarray(volumes).shape[0]) if np.asarray(volumes).ndim else -1
    if not 0 < n <= spec.images_per_class * anchor_classes:
        raise PayloadError(
            f"volumes: {n} volumes; at most images_per_class x classes = "
            f"{spec.images_per_class * anchor_classes}"
        )
    _shape("volumes", volumes, (n, spec.channels, *spec.shape), "f")
    labels = _shape("volume_class", arrays["volume_class"], (n,), "iu")
    if np.any(labels < 0) or np.any(labels >= anchor_classes):
        raise PayloadError(
            f"volume_class holds {labels.tolist()}; classes are 0..{anchor_classes - 1}"
        )
    for head, classes in HEAD_CLASSES.items():
        soft = _shape(f"soft/{head}", arrays[f"soft/{head}"], (n, classes), "f")
        if np.any(soft < 0) or not np.allclose(soft.sum(axis=1), 1.0, atol=1e-3):
            raise PayloadError(f"soft/{head}: rows must be probabilities (>= 0, summing to 1)")


def _shape(name: str, value: object, shape: tuple[int, ...], kinds: str) -> Array:
    array = np.asarray(value)
    if array.dtype.kind not in kinds or tuple(array.shape) != shape:
        raise PayloadError(
            f"{name}: {array.dtype} of shape {tuple(array.shape)}; expected shape {shape}"
        )
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise PayloadError(f"{name}: holds NaN or infinite values")
    return array


def merge_class_logits(
    payloads: Sequence[Mapping[str, Array]],
) -> dict[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]]:
    """Per head: the count-weighted mean of the sites' class logits, and the total counts
    (classes no site reported: zeros and 0)."""
    out = {}
    for head, classes in HEAD_CLASSES.items():
        total = np.zeros((classes, HEAD_LOGITS[head]), np.float64)
        counts = np.zeros(classes, np.int64)
        for payload in payloads:
            if f"class_counts/{head}" not in payload:
                continue
            n = np.asarray(payload[f"class_counts/{head}"], np.int64)
            total += np.asarray(payload[f"class_logits/{head}"], np.float64) * n[:, None]
            counts += n
        if counts.any():
            mean = np.divide(total, np.maximum(counts, 1)[:, None])
            out[head] = (mean.astype(np.float32), counts)
    return out


def merge_proxy_logits(
    payloads: Sequence[Mapping[str, Array]], weights: Sequence[float]
) -> dict[str, npt.NDArray[np.float32]]:
    """Per head, the ``weights``-weighted mean of the sites' logits on the proxy cases, as
    ``proxy_logits/<head>`` (the consensus sent back with the next round); empty without any.

    Examples
    --------
    >>> a = {"proxy_logits/idh": np.array([[0.0], [2.0]], np.float32)}
    >>> b = {"proxy_logits/idh": np.array([[3.0], [2.0]], np.float32)}
    >>> merge_proxy_logits([a, b], [2, 1])["proxy_logits/idh"].ravel().tolist()
    [1.0, 2.0]
    """
    out: dict[str, npt.NDArray[np.float32]] = {}
    total = float(sum(weights))
    for head in HEAD_CLASSES:
        name = f"proxy_logits/{head}"
        held = [(p, w) for p, w in zip(payloads, weights, strict=True) if name in p]
        if not held or total <= 0:
            continue
        weight = sum(w for _, w in held)
        mean = sum(np.asarray(p[name], np.float64) * (w / weight) for p, w in held)
        out[name] = np.asarray(mean, np.float32)
    return out


def class_arrays(
    merged: Mapping[str, tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]],
) -> dict[str, Array]:
    """``merged`` as the flat table the server sends back (``class_logits/<head>`` and
    ``class_counts/<head>``), and what the strategy state keeps."""
    out: dict[str, Array] = {}
    for head, (logits, counts) in merged.items():
        out[f"class_logits/{head}"] = logits
        out[f"class_counts/{head}"] = counts
    return out


def temperature_probabilities(logits: npt.ArrayLike, temperature: float) -> npt.NDArray[np.float64]:
    """``(K, L)`` class-mean logits as ``(K, classes)`` probabilities at ``temperature``.

    Examples
    --------
    >>> temperature_probabilities([[0.0]], 1.0).tolist()
    [[0.5, 0.5]]
    """
    z = np.asarray(logits, np.float64) / float(temperature)
    if z.shape[1] == 1:
        p = 1.0 / (1.0 + np.exp(-z[:, 0]))
        return np.stack([1.0 - p, p], axis=1)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return np.asarray(e / e.sum(axis=1, keepdims=True))
