"""Update validation: every site update is checked before any strategy sees it.

An update is **rejected** — logged with a named :class:`RejectReason` and returned as a
:class:`Rejection`, never averaged and never raised — when:

- its ``site_id`` was seen already this round (the second one is rejected);
- ``num_examples`` is not a whole number > 0, or a label count is not a whole number >= 0;
- it lacks a shared parameter of the global model, or holds a name the global model does not
  have (names matching ``local_parameters`` may be present or absent);
- a parameter's shape or dtype differs from the global model's;
- a float parameter holds NaN or Inf;
- the L2 norm of its change from the global model (:func:`update_norm`) exceeds
  ``max_update_norm``.

Examples
--------
>>> import numpy as np
>>> from neurofed.federated.update import SiteUpdate
>>> g = {"w": np.zeros(2, np.float32)}
>>> ok = SiteUpdate("a", {"w": np.ones(2, np.float32)}, 5)
>>> bad = SiteUpdate("b", {"w": np.array([np.nan, 0], np.float32)}, 5)
>>> accepted, rejected = validate_updates(g, [ok, bad])
>>> [u.site_id for u in accepted], [(r.site_id, r.reason.value) for r in rejected]
(['a'], [('b', 'non-finite')])
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from neurofed.config import is_local
from neurofed.federated.update import Array, SiteUpdate

__all__ = ["RejectReason", "Rejection", "check_update", "update_norm", "validate_updates"]

logger = logging.getLogger(__name__)


class RejectReason(StrEnum):
    """Why a site update was not used."""

    DUPLICATE_SITE = "duplicate-site"
    NUM_EXAMPLES = "num-examples"
    LABEL_COUNTS = "label-counts"
    MISSING_PARAMETER = "missing-parameter"
    UNEXPECTED_PARAMETER = "unexpected-parameter"
    SHAPE = "shape"
    DTYPE = "dtype"
    NON_FINITE = "non-finite"
    UPDATE_NORM = "update-norm"


@dataclass(frozen=True)
class Rejection:
    """A site update that was refused, with the reason and what exactly was wrong."""

    site_id: str
    reason: RejectReason
    detail: str

    def line(self) -> str:
        """One log line: ``site 'b' rejected (non-finite): …``."""
        return f"site {self.site_id!r} rejected ({self.reason.value}): {self.detail}"


def _names(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _is_whole(value: object, minimum: int) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        return False
    return bool(value >= minimum)


def update_norm(
    global_params: Mapping[str, Array],
    params: Mapping[str, Array],
    *,
    local_parameters: Sequence[str] = (),
) -> float:
    """L2 norm of ``params - global_params`` over the shared float entries (in ``float64``).

    Integer buffers (``num_batches_tracked``) and local entries are left out.

    >>> update_norm({"a": np.zeros(2), "n": np.array(0)}, {"a": np.array([3.0, 4.0]),
    ...                                                     "n": np.array(100)})
    5.0
    """
    total = 0.0
    for name, reference in global_params.items():
        reference = np.asarray(reference)
        if reference.dtype.kind not in "fc" or is_local(name, local_parameters):
            continue
        if name not in params:
            continue
        delta = np.asarray(params[name], dtype=np.float64) - reference.astype(np.float64)
        total += float(np.vdot(delta, delta).real)
    return math.sqrt(total)


def check_update(
    global_params: Mapping[str, Array],
    update: SiteUpdate,
    *,
    local_parameters: Sequence[str] = (),
    max_update_norm: float | None = None,
) -> Rejection | None:
    """The first reason to reject ``update`` (``None`` when it may be aggregated)."""

    def reject(reason: RejectReason, detail: str) -> Rejection:
        return Rejection(update.site_id, reason, detail)

    if not _is_whole(update.num_examples, 1):
        return reject(
            RejectReason.NUM_EXAMPLES,
            f"num_examples = {update.num_examples!r}; it must be a whole number > 0",
        )
    bad_counts = {k: v for k, v in update.label_counts.items() if not _is_whole(v, 0)}
    if bad_counts:
        return reject(
            RejectReason.LABEL_COUNTS,
            f"label_counts {bad_counts!r}; each count must be a whole number >= 0",
        )
    shared = [n for n in global_params if not is_local(n, local_parameters)]
    missing = [n for n in shared if n not in update.params]
    if missing:
        return reject(
            RejectReason.MISSING_PARAMETER,
            f"missing parameter(s) {_names(missing)} of the global model",
        )
    extra = [n for n in update.params if n not in global_params]
    if extra:
        return reject(
            RejectReason.UNEXPECTED_PARAMETER,
            f"parameter name(s) {_names(extra)} are not in the global model",
        )
    for name, value in update.params.items():
        array, reference = np.asarray(value), np.asarray(global_params[name])
        if array.shape != reference.shape:
            return reject(
                RejectReason.SHAPE,
                f"parameter {name!r} has shape {array.shape}; the global model has "
                f"{reference.shape}",
            )
        if array.dtype != reference.dtype:
            return reject(
                RejectReason.DTYPE,
                f"parameter {name!r} has dtype {array.dtype}; the global model has "
                f"{reference.dtype}",
            )
        if array.dtype.kind in "fc":
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            if bad:
                return reject(
                    RejectReason.NON_FINITE, f"parameter {name!r} holds {bad} NaN/Inf value(s)"
                )
    if max_update_norm is not None:
        norm = update_norm(global_params, update.params, local_parameters=local_parameters)
        if not norm <= max_update_norm:
            return reject(
                RejectReason.UPDATE_NORM,
                f"the update's L2 norm {norm:.6g} exceeds max_update_norm = {max_update_norm:g}",
            )
    return None


def validate_updates(
    global_params: Mapping[str, Array],
    updates: Sequence[SiteUpdate],
    *,
    local_parameters: Sequence[str] = (),
    max_update_norm: float | None = None,
) -> tuple[tuple[SiteUpdate, ...], tuple[Rejection, ...]]:
    """Split ``updates`` into the accepted ones and the rejections (each logged as a warning).

    Parameters
    ----------
    global_params
        The global model the sites started the round from.
    updates
        What the sites sent.
    local_parameters
        Glob patterns of names that stay at the sites (the strategy's client settings).
    max_update_norm
        Bound on :func:`update_norm`; ``None`` switches the check off.

    Returns
    -------
    accepted, rejections
        Accepted updates in their original order, and one :class:`Rejection` per other update.
    """
    if max_update_norm is not None and not (
        isinstance(max_update_norm, int | float) and max_update_norm > 0
    ):
        raise ValueError(f"max_update_norm = {max_update_norm!r}: use a number > 0, or None")
    accepted: list[SiteUpdate] = []
    rejections: list[Rejection] = []
    seen: set[str] = set()
    for update in updates:
        rejection: Rejection | None
        if update.site_id in seen:
            rejection = Rejection(
                update.site_id,
                RejectReason.DUPLICATE_SITE,
                "a second update from this site in the same round; only the first one counts",
            )
        else:
            rejection = check_update(
                global_params,
                update,
                local_parameters=local_parameters,
                max_update_norm=max_update_norm,
            )
        seen.add(update.site_id)
        if rejection is None:
            accepted.append(update)
        else:
            logger.warning(rejection.line())
            rejections.append(rejection)
    return tuple(accepted), tuple(rejections)
