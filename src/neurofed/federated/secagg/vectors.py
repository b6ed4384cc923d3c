"""What a site's masked input is: its weighted, clipped, quantised update as one ``uint32`` vector.

Secure aggregation sums integers modulo :data:`MODULUS` (2^32), so a site's update becomes one:

1. the :class:`Layout` lists the entries that are aggregated, in name order: the model's float
   entries that are neither local (FedBN, Ditto's ``local_parameters``) nor integer buffers;
   each belongs to a *weight group* — :data:`EXAMPLES` (weighted by training cases, as FedAvg),
   or, with task-masked heads, the label kind that trains it (weighted by its label count);
2. :func:`encode` takes the update ``trained - global``, clips every element to ``[-clip, clip]``
   and multiplies it by the site's share of its group's weight (``w_site / W``, with ``W`` the
   total over the sites that sent keys), then rounds ``x · 2^30 / clip`` to an integer modulo
   2^32. The shares of every group sum to at most 1, so the sum of all sites' values lies in
   ``[-2^30 - n, 2^30 + n]`` and never wraps;
3. :func:`decode` turns the unmasked sum back into each group's weighted mean update, dividing by
   the share of the weight that actually arrived (sites that dropped out after masking are not in
   the sum). The rounding error of the mean is at most ``n · clip / 2^31`` per element.

Examples
--------
>>> import numpy as np
>>> g = {"w": np.zeros(3, np.float32), "n": np.zeros((), np.int64)}
>>> layout = Layout.of(g)
>>> layout.names, layout.size
(('w',), 3)
>>> a = encode(layout, {"w": np.array([1.0, -2.0, 30.0])}, g, {"num_examples": 0.25}, clip=4.0)
>>> b = encode(layout, {"w": np.array([3.0, 2.0, 0.0])}, g, {"num_examples": 0.75}, clip=4.0)
>>> mean = decode(layout, a.vector + b.vector, {"num_examples": 1.0}, clip=4.0)
>>> np.round(mean["w"], 6).tolist(), a.clipped
([2.5, 1.0, 1.0], 1)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from neurofed.config import is_local
from neurofed.federated.heads import HeadMap, head_kind
from neurofed.federated.update import Array, Parameters

__all__ = ["EXAMPLES", "MODULUS", "SCALE_BITS", "Encoded", "Layout", "decode", "encode"]

#: Integers are summed modulo 2^32.
MODULUS = 2**32
#: ``clip`` maps to ``2^SCALE_BITS``: the sum of shares ≤ 1 keeps the total below 2^31.
SCALE_BITS = 30
#: The weight group of parameters every site trains (weighted by training cases).
EXAMPLES = "num_examples"


@dataclass(frozen=True)
class Layout:
    """The aggregated entries, in order: ``(name, shape, weight group)`` each."""

    entries: tuple[tuple[str, tuple[int, ...], str], ...]

    @classmethod
    def of(
        cls, global_params: Mapping[str, Array], local: Sequence[str] = (), heads: HeadMap = ()
    ) -> Layout:
        """The layout of a model: its float entries that are not ``local``, by name."""
        entries = []
        for name in sorted(global_params):
            array = np.asarray(global_params[name])
            if array.dtype.kind != "f" or is_local(name, local):
                continue
            group = (head_kind(name, heads) if heads else None) or EXAMPLES
            entries.append((name, tuple(array.shape), group))
        return cls(tuple(entries))

    @property
    def names(self) -> tuple[str, ...]:
        """The aggregated entries' names."""
        return tuple(name for name, _, _ in self.entries)

    @property
    def groups(self) -> tuple[str, ...]:
        """The weight groups that occur, sorted."""
        return tuple(sorted({group for _, _, group in self.entries}))

    @property
    def size(self) -> int:
        """Elements of the vector."""
        return sum(int(np.prod(shape, dtype=np.int64)) for _, shape, _ in self.entries)


@dataclass(frozen=True)
class Encoded:
    """A site's quantised input (before masking) and how many elements were clipped."""

    vector: npt.NDArray[np.uint32]
    clipped: int


def encode(
    layout: Layout,
    trained: Mapping[str, Array],
    global_params: Mapping[str, Array],
    shares: Mapping[str, float],
    clip: float,
) -> Encoded:
    """The site's update as integers modulo 2^32 (see the module docstring).

    ``shares`` gives the site's share ``w / W`` of each weight group (a group it has no weight
    in is 0 and contributes nothing).

    Raises
    ------
    ValueError
        A layout entry is missing from ``trained`` or has another shape, or a share lies outside
        ``[0, 1]``.
    """
    parts = []
    clipped = 0
    scale = 2.0**SCALE_BITS / clip
    for name, shape, group in layout.entries:
        share = float(shares.get(group, 0.0))
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"weight share {share!r} of group {group!r} lies outside [0, 1]")
        value = np.asarray(trained.get(name), dtype=np.float64)
        if name not in trained or value.shape != shape:
            raise ValueError(
                f"parameter {name!r} is missing or has shape {value.shape}, not {shape}"
            )
        delta = value - np.asarray(global_params[name], dtype=np.float64)
        delta = np.nan_to_num(delta, nan=0.0, posinf=clip, neginf=-clip)
        clipped += int(np.count_nonzero(np.abs(delta) > clip))
        parts.append(np.rint(np.clip(delta, -clip, clip).ravel() * (share * scale)))
    whole = np.concatenate(parts) if parts else np.zeros(0)
    return Encoded(whole.astype(np.int64).astype(np.uint32), clipped)  # two's complement mod 2^32


def decode(
    layout: Layout,
    total: npt.NDArray[np.uint32],
    arrived: Mapping[str, float],
    clip: float,
) -> Parameters:
    """The weighted mean update per entry from the unmasked sum ``total``.

    ``arrived`` is the sum of the shares of the sites whose inputs are in ``total``, per group;
    entries of a group with nothing arrived are left out (they keep the global value).

    Raises
    ------
    ValueError
        ``total`` does not have the layout's size.
    """
    if total.shape != (layout.size,):
        raise ValueError(f"the sum has shape {total.shape}; the layout needs ({layout.size},)")
    signed = total.astype(np.uint32).view(np.int32).astype(np.float64) * (clip / 2.0**SCALE_BITS)
    means: Parameters = {}
    offset = 0
    for name, shape, group in layout.entries:
        count = int(np.prod(shape, dtype=np.int64))
        weight = float(arrived.get(group, 0.0))
        if weight > 0.0:
            means[name] = (signed[offset : offset + count] / weight).reshape(shape)
        offset += count
    return means
