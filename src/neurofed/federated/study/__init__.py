"""Studies: a ``study.toml`` parsed once into a frozen, validated :class:`Study` with its hash.

- :mod:`~neurofed.federated.study.study` — :class:`Study`, :func:`load_study`, the hash;
- :mod:`~neurofed.federated.study.parse` — the tables of a study file, checked with the fix;
- :mod:`~neurofed.federated.study.plan` — the ``[plan]`` table (a planned study);
- :mod:`~neurofed.federated.study.initial_model` — the ``[initial_model]`` table (given weights);
- :mod:`~neurofed.federated.study.toml_text` — the canonical TOML text a run folder keeps.
"""

from neurofed.federated.study.study import (
    REQUIRED_KEYS,
    SETTABLE_TRAIN_FIELDS,
    STUDY_FILE,
    Study,
    StudyError,
    StudyKind,
    canonical_json,
    load_study,
)

__all__ = [
    "REQUIRED_KEYS",
    "SETTABLE_TRAIN_FIELDS",
    "STUDY_FILE",
    "Study",
    "StudyError",
    "StudyKind",
    "canonical_json",
    "load_study",
]
