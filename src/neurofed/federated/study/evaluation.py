"""The ``[evaluate]`` table of an evaluation-only study: which models it scores, on which cases.

A study of ``kind = "evaluate"`` trains nothing: each round sends one given model to every site,
which scores it and answers with aggregate metrics. The single-model form gives the model as
``[initial_model]`` (one round). The ``[evaluate]`` table scores several models, one per round,
in one job that custodians approve once — the cross-site matrix of a study (every local model,
the federated and the pooled one, on every site):

.. code-block:: toml

    kind = "evaluate"
    rounds = 3                        # one round per model, in the order given
    [evaluate]
    split = "validation"              # which cases each site scores: "all" (the default),
                                      # "train", "validation" or "test" (the site's fixed splits)
    [evaluate.site_splits]            # optional: a split for a named site instead
    site-4 = "all"                    # e.g. a site that trained nothing scores every case
    [[evaluate.models]]
    name = "federated"                # how the results name it (letters, digits, . _ - space)
    path = "runs/fed/last_model"      # a model folder; relative to the study file's folder
    sha256 = "9c1f…"                  # SHA-256 of its weights.safetensors
    [[evaluate.models]]
    name = "local site-1"
    path = "local/site-1/model"
    sha256 = "…"

As with ``[initial_model]`` the study's hash covers each model's name and ``sha256`` but not its
``path``, and the server reads the folders (sites receive the weights). ``split = "all"`` suits a
site that trained nothing (a new hospital); sites that trained score held-back cases. With
``site_splits`` one study scores both: the training sites their held-back cases, a new site every
case. The round then also merges the sites by the split they scored (``validation_per_split``),
since a merge across splits mixes held-back cases with a new site's.

Examples
--------
>>> table = {"split": "test", "models": [{"name": "a", "path": "/m/a", "sha256": "ab" * 32}]}
>>> evaluation = parse_evaluation("study.toml", table, None)
>>> evaluation.split.value, [m.name for m in evaluation.models]
('test', ['a'])
>>> evaluation.hashed()["models"] == [{"name": "a", "sha256": "ab" * 32}]  # no path
True
>>> table |= {"site_splits": {"site-4": "all"}}
>>> evaluation = parse_evaluation("study.toml", table, None)
>>> evaluation.split_for("site-4"), evaluation.split_for("site-1").value
(None, 'test')
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurofed.artifacts import shown
from neurofed.federated.study.initial_model import (
    INITIAL_MODEL_KEYS,
    InitialModel,
    InitialModelError,
    resolve_path,
)
from neurofed.keys import Split

__all__ = [
    "ALL_CASES",
    "EVALUATE_KEYS",
    "EvaluatedModel",
    "Evaluation",
    "parse_evaluation",
    "split_label",
]

#: Keys of the ``[evaluate]`` table.
EVALUATE_KEYS: tuple[str, ...] = ("split", "site_splits", "models")
#: ``split`` value for every case of a site (the default).
ALL_CASES = "all"
_MODEL_KEYS = ("name", *INITIAL_MODEL_KEYS)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,63}$")
_SITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class EvaluationError(ValueError):
    """The ``[evaluate]`` table is malformed; the message names the key and the fix."""


@dataclass(frozen=True)
class EvaluatedModel:
    """One model an evaluation scores: its name in the results, its folder and weights' hash."""

    name: str
    model: InitialModel

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name} | self.model.to_dict()

    def hashed(self) -> dict[str, str]:
        return {"name": self.name} | self.model.hashed()


@dataclass(frozen=True)
class Evaluation:
    """The ``[evaluate]`` table: ``split`` (``None``: every case), the sites that score another
    split (``site_splits``, site name → split, sorted by name) and the models, one per round
    (empty: the study's ``[initial_model]`` is the one model)."""

    split: Split | None = None
    models: tuple[EvaluatedModel, ...] = ()
    site_splits: tuple[tuple[str, Split | None], ...] = ()

    def split_for(self, site: str) -> Split | None:
        """The split ``site`` scores (``None``: every case)."""
        return dict(self.site_splits).get(site, self.split)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"split": split_label(self.split)}
        if self.site_splits:  # left out when empty: the hash of a study without them is kept
            out["site_splits"] = {site: split_label(split) for site, split in self.site_splits}
        if self.models:
            out["models"] = [m.to_dict() for m in self.models]
        return out

    def hashed(self) -> dict[str, Any]:
        """What the study's hash covers: the split, names and weights, not where they lie."""
        return self.to_dict() | (
            {"models": [m.hashed() for m in self.models]} if self.models else {}
        )


def split_label(split: Split | None) -> str:
    """A split as the table writes it (``None``: ``"all"``)."""
    return ALL_CASES if split is None else split.value


def _split(where: str, value: Any, key: str = "split") -> Split | None:
    if value == ALL_CASES:
        return None
    try:
        return Split(value)
    except ValueError:
        choices = ", ".join(f'"{s}"' for s in (ALL_CASES, *(s.value for s in Split)))
        raise EvaluationError(f"{where} {key} = {shown(value)} is invalid: use {choices}") from None


def _model(where: str, entry: Any, base_dir: Path | None) -> EvaluatedModel:
    if not isinstance(entry, Mapping):
        raise EvaluationError(
            f"{where}: each entry is a table with name, path and sha256 ([[evaluate.models]])"
        )
    unknown = sorted(set(entry) - set(_MODEL_KEYS))
    missing = [k for k in _MODEL_KEYS if k not in entry]
    if unknown or missing:
        raise EvaluationError(
            f"{where}: give exactly name, path and sha256"
            + (f"; unknown {unknown}" if unknown else "")
            + (f"; missing {missing}" if missing else "")
        )
    name, path = entry["name"], entry["path"]
    if not isinstance(name, str) or not _NAME.match(name):
        raise EvaluationError(
            f"{where}: name = {shown(name)} is invalid: use up to 64 letters, digits, '.', '_', "
            "'-' or spaces, starting with a letter or digit"
        )
    if not isinstance(path, str) or not path.strip():
        raise EvaluationError(f"{where} {name!r}: path = {shown(path)}: give the model folder")
    try:
        return EvaluatedModel(name, InitialModel(resolve_path(path, base_dir), entry["sha256"]))
    except InitialModelError as error:
        raise EvaluationError(f"{where} {name!r}: {error}") from None


def parse_evaluation(source: str, table: Any, base_dir: Path | None) -> Evaluation:
    """The ``[evaluate]`` table, checked for its form (relative paths from ``base_dir``).

    Raises
    ------
    EvaluationError
        Naming ``source``, the key and the fix.
    """
    where = f"{source}: [evaluate]"
    if not isinstance(table, Mapping):
        raise EvaluationError(f"{where} must be a table (split, [[evaluate.models]])")
    unknown = sorted(set(table) - set(EVALUATE_KEYS))
    if unknown:
        raise EvaluationError(f"{where}: unknown key(s) {unknown}; it takes {list(EVALUATE_KEYS)}")
    split = _split(where, table.get("split", ALL_CASES))
    site_splits = _site_splits(where, table.get("site_splits", {}))
    entries = table.get("models", [])
    if not isinstance(entries, list):
        raise EvaluationError(f"{where} models: give a list of tables ([[evaluate.models]])")
    models = tuple(_model(f"{where} models", e, base_dir) for e in entries)
    names = [m.name for m in models]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise EvaluationError(f"{where} models: the names {repeated} repeat; name each once")
    return Evaluation(split=split, models=models, site_splits=site_splits)


def _site_splits(where: str, table: Any) -> tuple[tuple[str, Split | None], ...]:
    """``[evaluate.site_splits]``: site name → split, sorted by name."""
    if not isinstance(table, Mapping):
        raise EvaluationError(
            f'{where} site_splits must be a table of site = split, e.g. site-4 = "all"'
        )
    out = []
    for site, value in sorted(table.items()):
        if not isinstance(site, str) or not _SITE.match(site):
            raise EvaluationError(
                f"{where} site_splits: {shown(site)} is not a site name (up to 64 letters, "
                "digits, '.', '_' or '-', as the federation names its sites)"
            )
        out.append((site, _split(f"{where} site_splits:", value, key=site)))
    return tuple(out)
