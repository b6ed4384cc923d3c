"""A site's own state of a study on disk: what it keeps between rounds and never sends.

Some strategies leave weights at the sites: FedBN's normalisation layers
(``local_parameters``) and Ditto's personalised model. A site process that restarts mid-run
reads them back from its study's state folder
(:meth:`~neurofed.federated.site.config.SiteConfig.study_state_dir`), so it computes
exactly the update an uninterrupted site would::

    <state>/round-<k>/local.safetensors         the local parameters after round k
    <state>/round-<k>/personalised.safetensors  Ditto's personalised model (every entry)
    <state>/round-<k>/state.json                study hash, site, round, SHA-256 of each file
    <state>/personalised-model/                 the final personalised model (a model folder)
    <state>/site-model/                         a study with local parameters (FedBN): the
                                                final global model with this site's own
                                                local layers, as the site validated it
    <state>/plan.json                           a planned study: the plan its tasks carry
                                                (``neurofed site preprocess --study --plan``)
    <state>/audit-heads.jsonl                   the audit log's head after each task (seq,
                                                SHA-256): a copy of the log's tail kept apart
    <state>/case-order.key                      a secret the site draws once per study: the
                                                order its per-case values are sent in (where
                                                its custodian allows them), the same in every
                                                round, so models pair case by case, and known
                                                to no one else, so no order ties a value to a
                                                subject

A round folder is written under a temporary name and renamed, and only the newest
:data:`KEEP_ROUNDS` are kept (a site that crashed after writing round ``k`` but before the
server got its answer is asked for round ``k`` again and needs round ``k - 1``). Weights are
safetensors only. A folder that does not match its record, another study or another site is
refused with :class:`SiteStateError`, naming the file and why.

Examples
--------
>>> import tempfile
>>> import numpy as np
>>> folder = Path(tempfile.mkdtemp())
>>> state = SiteState(1, {StatePart.LOCAL: {"norm.weight": np.ones(2, np.float32)}})
>>> _ = save_site_state(folder, state, study_hash="ab" * 32, site_id="site-1")
>>> latest_state_round(folder, at_most=3)
1
>>> load_site_state(folder, 1, study_hash="ab" * 32, site_id="site-1").parts["local"]
{'norm.weight': array([1., 1.], dtype=float32)}
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from neurofed.artifacts import (
    atomic_folder,
    sha256_file,
    write_bytes_atomically,
    write_json_atomically,
)
from neurofed.federated.site.audit import AuditHead
from neurofed.federated.site.config import STATE_FOLDER, STUDY_FOLDER_DIGITS
from neurofed.federated.study import Study
from neurofed.federated.update import Parameters
from neurofed.keys import SiteFile
from neurofed.preprocess.plan import Plan
from neurofed.training import TrainedModel, save_model

__all__ = [
    "AUDIT_HEADS",
    "KEEP_ROUNDS",
    "PERSONALISED_MODEL",
    "SITE_MODEL",
    "STATE_JSON",
    "SiteState",
    "SiteStateError",
    "StatePart",
    "keep_audit_head",
    "kept_audit_heads",
    "kept_layers_caveat",
    "latest_state_round",
    "load_site_state",
    "save_site_model",
    "save_site_state",
    "state_rounds",
]

logger = logging.getLogger(__name__)

#: Newest round folders kept on disk.
KEEP_ROUNDS = 2
#: The record of a round folder.
STATE_JSON = "state.json"
#: The audit log's head after each task of the study, one JSON line each.
AUDIT_HEADS = "audit-heads.jsonl"
#: The final personalised model (a model folder ``neurofed evaluate --model`` reads).
PERSONALISED_MODEL = "personalised-model"
#: A study with local parameters (FedBN): the final global model with the site's own local
#: layers (a model folder ``neurofed predict`` and ``evaluate --model`` read).
SITE_MODEL = "site-model"
_FORMAT = 1
_ROUND_DIR = re.compile(r"^round-(\d+)$")


class StatePart(StrEnum):
    """What a round folder holds (each part is one safetensors file named after it)."""

    LOCAL = "local"  # the entries matching local_parameters (FedBN)
    PERSONALISED = "personalised"  # Ditto's personalised model, every state-dict entry


class SiteStateError(ValueError):
    """A state folder cannot be used; the message names the file and why."""


@dataclass(frozen=True)
class SiteState:
    """The site's own weights after ``round``: :class:`StatePart` value → named arrays."""

    round: int
    parts: dict[str, Parameters] = field(default_factory=dict)


def _round_dir(folder: Path, round_number: int) -> Path:
    return Path(folder) / f"round-{round_number}"


def state_rounds(folder: Path) -> list[int]:
    """Rounds with a complete folder (its ``state.json`` present), oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _ROUND_DIR.match(path.name)
        if match and (path / STATE_JSON).is_file():
            found.append(int(match.group(1)))
    return sorted(found)


def latest_state_round(folder: Path, *, at_most: int) -> int | None:
    """The newest round ``<= at_most`` with a complete folder, or ``None``."""
    rounds = [k for k in state_rounds(folder) if k <= at_most]
    return rounds[-1] if rounds else None


def save_site_state(
    folder: Path,
    state: SiteState,
    *,
    study_hash: str,
    site_id: str,
    keep: int = KEEP_ROUNDS,
) -> Path:
    """Write ``<folder>/round-<k>/`` (atomically) and drop all but the newest ``keep`` rounds.

    Returns the round folder.
    """
    from safetensors.numpy import save_file

    folder = Path(folder)
    final = _round_dir(folder, state.round)
    with atomic_folder(final) as tmp:
        files: dict[str, str] = {}
        for part, arrays in state.parts.items():
            path = tmp / f"{StatePart(part).value}.safetensors"
            # np.ascontiguousarray would turn 0-d buffers (num_batches_tracked) into shape (1,)
            save_file({k: np.array(v, order="C") for k, v in arrays.items()}, str(path))
            files[StatePart(part).value] = sha256_file(path)
        write_json_atomically(
            tmp / STATE_JSON,
            {
                "format": _FORMAT,
                "study_hash": study_hash,
                "site_id": site_id,
                "round": state.round,
                "sha256": files,
            },
        )
    for old in state_rounds(folder)[:-keep] if keep > 0 else []:
        shutil.rmtree(_round_dir(folder, old), ignore_errors=True)
    return final


def _record(path: Path) -> Mapping[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SiteStateError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(record, Mapping) or record.get("format") != _FORMAT:
        raise SiteStateError(f"{path}: not a site state record of format {_FORMAT}")
    return record


def load_site_state(folder: Path, round_number: int, *, study_hash: str, site_id: str) -> SiteState:
    """Read ``<folder>/round-<k>/`` after checking its record and every file's SHA-256.

    Raises
    ------
    SiteStateError
        A missing or damaged file, a SHA-256 that differs from the record, or a record of
        another study, site or round.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = _round_dir(folder, round_number)
    record = _record(path / STATE_JSON)
    expected = {"study_hash": study_hash, "site_id": site_id, "round": round_number}
    for key, value in expected.items():
        if record.get(key) != value:
            raise SiteStateError(
                f"{path / STATE_JSON}: {key} is {record.get(key)!r}, not {value!r}; it belongs "
                "to another run"
            )
    digests = record.get("sha256")
    if not isinstance(digests, Mapping):
        raise SiteStateError(f"{path / STATE_JSON}: no 'sha256' table of its files")
    parts: dict[str, Parameters] = {}
    for name, digest in digests.items():
        try:
            part = StatePart(name)
        except ValueError:
            raise SiteStateError(f"{path / STATE_JSON}: unknown part {name!r}") from None
        file = path / f"{part.value}.safetensors"
        try:
            if sha256_file(file) != digest:
                raise SiteStateError(f"{file}: its SHA-256 differs from the one in {STATE_JSON}")
            parts[part.value] = dict(load_file(str(file)))
        except (OSError, SafetensorError) as exc:
            raise SiteStateError(f"{file}: unreadable ({type(exc).__name__}: {exc})") from None
    return SiteState(round_number, parts)


def keep_audit_head(folder: Path, round_number: int | None, task: str, head: AuditHead) -> None:
    """Append the audit log's head after a task to the study's state folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    line = {"round": round_number, "task": task} | head.to_json()
    with open(folder / AUDIT_HEADS, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(line, sort_keys=True) + "\n")


def kept_audit_heads(state_root: Path) -> list[AuditHead]:
    """Every head kept in the study folders under ``state_root`` (unreadable lines skipped)."""
    heads = []
    for path in sorted(Path(state_root).glob(f"*/{AUDIT_HEADS}")):
        for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                line = json.loads(text)
                heads.append(AuditHead(int(line["seq"]), str(line["sha256"])))
            except (ValueError, KeyError, TypeError):
                continue
    return heads


#: The file of a study's secret case order (see the module docstring).
CASE_ORDER_KEY = "case-order.key"


def case_order_seed(folder: Path) -> int:
    """The seed of this site's case order for the study whose state folder is ``folder``:
    drawn from the operating system once, then read back (a damaged key is drawn again)."""
    import secrets

    path = Path(folder) / CASE_ORDER_KEY
    try:
        key = path.read_bytes()
    except OSError:
        key = b""
    if len(key) != 32:
        key = secrets.token_bytes(32)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(path, key)
    return int.from_bytes(key, "big")


def save_site_model(
    folder: Path,
    model: nn.Module,
    study: Study,
    plan: Plan | None,
    round_number: int,
    site_id: str,
    **provenance: Any,
) -> Path | None:
    """Save a model only this site has (Ditto's personalised model, the global model with its
    FedBN layers) as a model folder; its path goes to the site's log only. A failure is logged
    and gives ``None``: the study itself went well."""
    try:
        saved = save_model(
            folder,
            model,
            study.train_config(plan=plan),
            epoch=round_number,
            provenance={
                "study": study.name,
                "study_hash": study.content_hash,
                "strategy": study.strategy.value,
                "round": round_number,
                "site": site_id,
            }
            | provenance,
        )
    except OSError:
        logger.exception("site %s: could not save its model to %s", site_id, folder)
        return None
    logger.info(
        "site %s: its model of study %s (round %d) saved to %s",
        site_id,
        study.name,
        round_number,
        folder,
    )
    return saved


def kept_layers_caveat(trained: TrainedModel) -> str | None:
    """What to know before using ``trained``: ``None`` for most models.

    The global model of a study whose sites kept layers of their own (FedBN's normalisation
    layers, ``local_parameters``) holds those layers at their initial values, since no site
    sent them, and the metrics it records are the sites' with their own layers. Each site has
    the model it validated as a model folder (:data:`SITE_MODEL` in its study state folder).

    >>> from types import SimpleNamespace
    >>> trained = SimpleNamespace(
    ...     provenance={"run": "federated", "study": "age", "study_hash": "ab" * 32},
    ...     config=SimpleNamespace(local_parameters=("*norm*",)),
    ... )
    >>> print(kept_layers_caveat(trained))  # doctest: +ELLIPSIS
    this is the global model of study 'age', whose sites kept ... .../abababababababab/site-model/
    >>> trained.config.local_parameters = ()
    >>> kept_layers_caveat(trained) is None
    True
    """
    provenance, patterns = trained.provenance, list(trained.config.local_parameters)
    if provenance.get("run") != "federated" or not patterns:
        return None
    state = str(provenance.get("study_hash", ""))[:STUDY_FOLDER_DIGITS] or "<study hash>"
    return (
        f"this is the global model of study {provenance.get('study')!r}, whose sites kept their "
        f"own layers matching {patterns}: here those layers hold their initial values, and its "
        "recorded metrics are the sites' with their own layers, not this folder's. At a site, "
        "use the model it validated: "
        f"<site data>/{SiteFile.FOLDER.value}/{STATE_FOLDER}/{state}/{SITE_MODEL}/"
    )
