"""A study's ``[initial_model]`` table: federated training starts from given weights.

Without it, round 1 sends a network initialised from the study's seed. With it, round 1 sends
the weights of a model folder written by neurofed (``RUN/model``): FeTS's public initial model,
or a brain-age model moved to another target (e.g. SDMT) by a federation.

.. code-block:: toml

    [initial_model]
    path = "models/public-initial"    # a model folder; relative to the study file's folder
    sha256 = "9c1f…"                  # SHA-256 of its weights.safetensors (64 hex digits)

What ``sha256`` is a hash of
    The folder's weights file, ``weights.safetensors``, byte for byte (``sha256sum
    RUN/model/weights.safetensors``; ``model.json`` records the same value as
    ``weights.sha256``, and ``neurofed train transfer`` records it for its source model). Not
    the folder's seal: the seal also covers metrics, dates and versions in ``model.json``, so
    the same weights saved twice would differ. The network the weights must fit is the study's
    own ``[model]``, which the study's hash already covers; the server checks that they fit.

The path is not part of the study's hash
    :attr:`Study.content_hash <neurofed.federated.study.Study.content_hash>` covers ``sha256``
    (approving the study approves exactly these weights) but not ``path``: the same weights
    moved to another folder are the same study, so no custodian has to approve it again, and a
    run resumes with the new path.

Where a relative ``path`` points
    A study read from a file (:func:`~neurofed.federated.study.load_study`): the file's folder.
    A study built from text or a dict (``Study.from_toml`` / ``Study.from_dict``): the folder
    given as ``base_dir``, else the current working directory. The path is made absolute once,
    when the study is parsed, so the study's dict (what the job carries to the server, what the
    run folder's ``study.toml`` keeps) names the same folder wherever it is read. It is read by
    the server only — sites receive the weights in round 1 — so in a deployed federation the
    folder must exist at that path on the server's machine.

When it is checked
    Parsing checks the form only (a custodian can approve a study without the weights). At the
    start of a new run the server (:meth:`InitialModel.load`, :meth:`InitialModel.parameters`)
    checks the weights' SHA-256 against the study, the folder's seal, the task, and that the
    weights fit the study's network; a missing, changed or unfitting model stops the run before
    any site is asked. Where a planned study's plan decides the network (``ms-lesion`` with
    ``[plan]``), the network is checked once the fingerprint round made the plan: a plan whose
    network the weights do not fit is not kept and the run stops with the reason. Other
    settings may differ from the model's (a new ``target``; another spacing is logged). A
    resumed run continues from its checkpoints and does not read the initial model again.

Examples
--------
>>> initial = InitialModel(Path("/models/public"), "AB" * 32)
>>> initial.sha256[:4], initial.to_dict()["path"], initial.hashed() == {"sha256": "ab" * 32}
('abab', '/models/public', True)
>>> InitialModel(Path("/models/public"), "sha256:ab")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
neurofed.federated.study.initial_model.InitialModelError: sha256 = 'sha256:ab' is invalid: ...
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from neurofed.artifacts import sha256_file, shown
from neurofed.federated.update import Parameters
from neurofed.keys import TaskId
from neurofed.training.config import TrainConfig
from neurofed.training.model_folder import (
    MODEL_WEIGHTS,
    ModelFolderError,
    TrainedModel,
    load_model,
)
from neurofed.training.trainer import LocalTrainer

__all__ = ["INITIAL_MODEL_KEYS", "InitialModel", "InitialModelError", "resolve_path"]

#: Keys of the ``[initial_model]`` table (both required).
INITIAL_MODEL_KEYS: tuple[str, ...] = ("path", "sha256")

logger = logging.getLogger(__name__)

_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_NETWORK_FIX = (
    "make the study's [model] the initial model's (model.json's model_config), or give a model "
    "folder of the study's network"
)


class InitialModelError(ValueError):
    """The study's initial model is malformed, missing, changed or does not fit the study; the
    message names the folder, the hashes and the fix."""


def resolve_path(path: str | os.PathLike[str], base_dir: Path | None) -> Path:
    """``path`` as an absolute path, relative ones taken from ``base_dir`` (else the current
    directory); ``..`` is folded, links are not followed.

    >>> str(resolve_path("../models/m", Path("/studies/x")))
    '/studies/models/m'
    >>> str(resolve_path("/models/m", Path("/studies")))
    '/models/m'
    """
    base = Path.cwd() if base_dir is None else Path(base_dir)
    return Path(os.path.abspath(base / Path(path)))


@dataclass(frozen=True)
class InitialModel:
    """A study's ``[initial_model]``: the model folder round 1 starts from.

    Attributes
    ----------
    path
        The model folder (absolute; see :func:`resolve_path`).
    sha256
        SHA-256 of the folder's ``weights.safetensors`` (64 lower-case hex digits; upper-case
        is accepted and lowered).
    """

    path: Path
    sha256: str

    def __post_init__(self) -> None:
        if not isinstance(self.sha256, str) or not _HEX64.match(self.sha256):
            raise InitialModelError(
                f"sha256 = {shown(self.sha256)} is invalid: give the 64 hex digits of the "
                f"SHA-256 of the model folder's {MODEL_WEIGHTS} (without 'sha256:'), e.g. from "
                f"`sha256sum MODEL/{MODEL_WEIGHTS}` or model.json's weights.sha256"
            )
        object.__setattr__(self, "sha256", self.sha256.lower())
        if not isinstance(self.path, Path) or not self.path.is_absolute():
            raise InitialModelError(
                f"path = {shown(self.path)} is invalid: build it with resolve_path (absolute)"
            )

    @property
    def weights_file(self) -> Path:
        """The weights file whose SHA-256 the study names."""
        return self.path / MODEL_WEIGHTS

    def to_dict(self) -> dict[str, str]:
        """The ``[initial_model]`` table as the study's dict holds it."""
        return {"path": str(self.path), "sha256": self.sha256}

    def hashed(self) -> dict[str, str]:
        """What the study's content hash covers: the weights, not where they lie."""
        return {"sha256": self.sha256}

    def describe(self) -> str:
        """One line for a custodian deciding whether to approve the study."""
        return (
            f"starts from given weights ({MODEL_WEIGHTS} sha256:{self.sha256}, read by the "
            f"server from {self.path}); approving the study approves exactly these weights"
        )

    def load(self, task: TaskId) -> TrainedModel:
        """The model folder, checked: its weights are the study's (SHA-256), it is intact (its
        seal) and of ``task``.

        Raises
        ------
        InitialModelError
            The folder or its weights file is missing, the weights' SHA-256 is not the study's
            (the message names both), or the folder is damaged or of another task.
        """
        task_id = TaskId(task)
        where = f"[initial_model] path = {str(self.path)!r}"
        if not self.path.is_dir():
            raise InitialModelError(
                f"{where}: no such model folder; copy the model folder there (the one whose "
                f"{MODEL_WEIGHTS} has sha256 {self.sha256}), or fix path in the study"
            )
        if not self.weights_file.is_file():
            raise InitialModelError(
                f"{where}: the folder holds no {MODEL_WEIGHTS}; give a model folder written by "
                "training or a federated run (RUN/model)"
            )
        try:
            actual = sha256_file(self.weights_file)
        except OSError as exc:
            raise InitialModelError(f"{where}: cannot read {MODEL_WEIGHTS} ({exc})") from None
        if actual != self.sha256:
            raise InitialModelError(
                f"{where}: its {MODEL_WEIGHTS} has sha256 {actual}, but the study expects "
                f"{self.sha256}; give the folder of the approved weights, or — if these are "
                f'the weights you mean — set sha256 = "{actual}" (the study\'s hash changes, so '
                "the custodians approve it again)"
            )
        try:
            return load_model(self.path, task=task_id)
        except ModelFolderError as exc:
            raise InitialModelError(f"{where}: {exc}") from None

    def parameters(
        self, trained: TrainedModel, config: TrainConfig, *, fix: str = _NETWORK_FIX
    ) -> Parameters:
        """Every state-dict entry of ``trained`` (from :meth:`load`) for the network ``config``
        builds, local ones included: the initial global model. ``fix`` ends the error message.

        Raises
        ------
        InitialModelError
            ``trained`` is another network (model or model config) than ``config``'s, or its
            arrays do not fit it; the message names the differences.
        """
        trainer = LocalTrainer(config.with_changes(device="cpu"))
        try:
            trainer.load_initial_weights(trained)  # the same checks as a transfer's
        except ValueError as exc:
            raise InitialModelError(
                f"[initial_model] path = {str(self.path)!r}: {exc}; {fix}"
            ) from None
        theirs, ours = trained.config.preprocess.spacing, config.preprocess.spacing
        if theirs != ours:  # allowed (the weights fit), but worth a line in the server's log
            logger.warning(
                "the initial model %s was trained at spacing %s mm; this run trains at %s mm",
                self.path,
                theirs,
                ours,
            )
        return trainer.get_parameters(include_local=True)
