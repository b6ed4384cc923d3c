"""Site-only settings: where a site's data lives, which device it trains on, where its state is.

These never travel with a job. A site's executor is given the path of its site-config JSON
(``neurofed simulate`` writes one per simulated site, outside the job, under ``<run>/sites/``);
in a deployed federation the custodian puts the file in the site's kit ``local/`` folder and the
executor finds it there by name (:data:`SITE_CONFIG_FILE`).

.. code-block:: json

    {"format": 1, "data_root": "/data/neurofed/site-a", "device": "cpu"}

Optional keys: ``audit_dir`` (every payload the site sends is recorded there) and ``state_dir``
(where the site keeps what it must not send but needs after a restart — FedBN's local layers,
Ditto's personalised model — one folder per study; default ``<data_root>/neurofed/federated``).

The custodian's control (format 2, written by ``neurofed site init`` / ``approve`` /
``revoke``; :mod:`~neurofed.federated.engine.kit`)::

    {"format": 2, "data_root": "...", "device": "cpu",
     "require_approval": true,
     "approved_studies": {"<64 hex digits>": {"name": "fets", "approved_at": "2026-…Z"}},
     "allowed_datasets": ["phantom-fets"],
     "audit_log": "/opt/neurofed-site-a/neurofed/audit.jsonl"}

``require_approval`` (default ``false``, so ``neurofed simulate`` runs any study): only studies
whose content hash is in ``approved_studies`` run here. ``allowed_datasets`` (default empty =
any): a study must name one of them in its ``dataset`` — enforced whenever the list is not
empty. :meth:`SiteConfig.refusal` gives the reason a study is refused. ``audit_log``: the
site's append-only, hash-chained log (:mod:`neurofed.federated.site.audit`). A file without these
keys (format 1) still loads; one that sets them is written as format 2, so an older neurofed
that would not enforce them refuses to load it instead of running unapproved studies.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> path = SiteConfig(data_root=folder, device="cpu").write(folder / "site.json")
>>> SiteConfig.load(path).device
'cpu'
>>> SiteConfig.load(path).study_state_dir("ab" * 32).relative_to(folder).as_posix()
'neurofed/federated/abababababababab'
>>> guarded = SiteConfig(data_root=folder, require_approval=True)
>>> guarded.refusal("ab" * 32, "fets", None)[:30]
'refused: study sha256:abababab'
>>> guarded.with_approval("ab" * 32, "fets").refusal("ab" * 32, "fets", None) is None
True
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from neurofed.artifacts import write_json_atomically
from neurofed.keys import SiteFile

__all__ = [
    "DEFAULT_MIN_CASES",
    "SITE_CONFIG_FILE",
    "STATE_FOLDER",
    "ApprovedStudy",
    "SiteConfig",
    "SiteConfigError",
]

#: A site sends nothing derived from per-case values of fewer validation cases than this,
#: unless its custodian sets ``min_cases_per_metric``.
DEFAULT_MIN_CASES = 5
#: The file name looked up in a deployed site's ``local/`` folder.
SITE_CONFIG_FILE = "neurofed_site.json"
#: The default state root inside the site folder: ``<data_root>/neurofed/federated``.
STATE_FOLDER = "federated"
#: Hex digits of the study's content hash that name its state folder.
STUDY_FOLDER_DIGITS = 16
_FORMAT = 1
#: The format of a config that sets the custodian's control (approvals, datasets).
_GUARDED_FORMAT = 2
_HASH = re.compile(r"^[0-9a-f]{64}$")
_APPROVE = "the custodian runs `neurofed site approve STUDY.toml` after reading it"


class SiteConfigError(ValueError):
    """A site config is missing or unusable; the message names the file and the fix."""


def _study_hash(value: str) -> str:
    """``value`` without a ``sha256:`` prefix, lower case."""
    text = str(value).strip().lower()
    return text.removeprefix("sha256:")


@dataclass(frozen=True)
class ApprovedStudy:
    """A study the custodian approved: its content hash, its name and when.

    >>> ApprovedStudy("AB" * 32, "fets", "2026-01-01T00:00:00Z").study_hash[:4]
    'abab'
    """

    study_hash: str
    name: str
    approved_at: str

    def __post_init__(self) -> None:
        digest = _study_hash(self.study_hash)
        if not _HASH.match(digest):
            raise SiteConfigError(
                f"approved study {self.name!r}: {self.study_hash!r} is not a SHA-256 content "
                "hash (64 hex digits); approve the study file with `neurofed site approve`"
            )
        object.__setattr__(self, "study_hash", digest)

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "approved_at": self.approved_at}


@dataclass(frozen=True)
class SiteConfig:
    """Settings of one site that stay at the site.

    Attributes
    ----------
    data_root
        The site folder (checked with ``neurofed site check``).
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:<n>"``.
    audit_dir
        If set, every payload the site sends is also written there (arrays described by dtype
        and shape, every string and number as sent) so a custodian can inspect what left the
        site (:func:`~neurofed.federated.site.worker.describe_payload`).
    state_dir
        Root of the site's per-study state folders (``<state_dir>/<first 16 hex digits of the
        study hash>/``, see :mod:`~neurofed.federated.site.state`); ``None``:
        ``<data_root>/neurofed/federated``. Nothing in it ever leaves the site.
    approved_studies
        The studies the custodian approved (one per content hash).
    allowed_datasets
        Dataset names a study must name one of (``Study.dataset``); empty: any dataset.
    require_approval
        Refuse every study whose content hash is not approved (``neurofed site init`` sets
        it; ``False`` by default so ``neurofed simulate`` runs any study).
    audit_log
        The site's append-only audit log (:class:`~neurofed.federated.site.audit.AuditLog`);
        ``None``: no log.
    min_cases_per_metric
        The site sends nothing derived from per-case values (a mean Dice, an AUC) of fewer
        validation cases than this, and says so (:mod:`~neurofed.tasks.sharing`; default 5).
    share_case_values
        Datasets whose studies may receive per-case metric values (shuffled, without
        identifiers) besides the histograms; empty (the default): none.
    allow_condensed
        Datasets whose studies may receive condensed volumes (the ``distill`` strategy:
        synthetic volumes derived from this site's cases); empty (the default): a study that
        would send them is refused.
    public_datasets
        Public datasets this site holds a copy of, by name, and the site folder of each (the
        ``distill`` strategy's proxy mode distils on one; ``neurofed site public-dataset``).
        Nothing of them is private: they are what every party holds.
    privacy_budgets
        Per dataset name, the most ε (of DP-SGD, at the study's δ) this site may spend on it over
        all studies (``neurofed site privacy-budget``); a round that would spend more is refused
        (:mod:`~neurofed.federated.site.privacy`). A dataset without a cap is not capped.
    """

    data_root: Path
    device: str = "auto"
    audit_dir: Path | None = None
    state_dir: Path | None = None
    approved_studies: tuple[ApprovedStudy, ...] = ()
    allowed_datasets: tuple[str, ...] = ()
    require_approval: bool = False
    audit_log: Path | None = None
    min_cases_per_metric: int = DEFAULT_MIN_CASES
    share_case_values: tuple[str, ...] = ()
    allow_condensed: tuple[str, ...] = ()
    public_datasets: Mapping[str, Path] = field(default_factory=dict)
    privacy_budgets: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_root", Path(self.data_root))
        for name in ("audit_dir", "state_dir", "audit_log"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        ):
            raise SiteConfigError(f"device = {self.device!r}: use auto, cpu, cuda or cuda:<n>")
        if not isinstance(self.require_approval, bool):
            raise SiteConfigError(
                f"require_approval = {self.require_approval!r}: use true or false"
            )
        approvals = tuple(self.approved_studies)
        if not all(isinstance(a, ApprovedStudy) for a in approvals):
            raise SiteConfigError("approved_studies must hold ApprovedStudy entries")
        hashes = [a.study_hash for a in approvals]
        if len(set(hashes)) != len(hashes):
            raise SiteConfigError("approved_studies: a study hash is listed twice")
        object.__setattr__(self, "approved_studies", approvals)
        minimum = self.min_cases_per_metric
        if isinstance(minimum, bool) or not isinstance(minimum, int) or not 1 <= minimum <= 10**6:
            raise SiteConfigError(
                f"min_cases_per_metric = {minimum!r}: use a whole number of cases >= 1 "
                f"(default {DEFAULT_MIN_CASES})"
            )
        for name in ("allowed_datasets", "share_case_values", "allow_condensed"):
            datasets = tuple(getattr(self, name))
            if not all(isinstance(d, str) and d.strip() for d in datasets):
                raise SiteConfigError(
                    f"{name} = {list(datasets)!r}: give dataset names (non-empty strings)"
                )
            object.__setattr__(self, name, tuple(sorted(set(datasets))))
        public = self.public_datasets
        if not isinstance(public, Mapping) or not all(
            isinstance(k, str) and k.strip() and isinstance(v, str | Path) and str(v)
            for k, v in public.items()
        ):
            raise SiteConfigError(
                f"public_datasets = {public!r}: map dataset names to site folders"
            )
        object.__setattr__(self, "public_datasets", {k: Path(public[k]) for k in sorted(public)})

    def shares_cases(self, dataset: str | None) -> bool:
        """Whether a study on ``dataset`` may receive per-case metric values from this site."""
        return dataset is not None and dataset in self.share_case_values

    @property
    def guarded(self) -> bool:
        """Whether the custodian's control is set (the file is then written as format 2)."""
        return self.require_approval or bool(self.approved_studies or self.allowed_datasets)

    # -- approvals ------------------------------------------------------------------------------

    def approval(self, study_hash: str) -> ApprovedStudy | None:
        """The approval of the study with content hash ``study_hash``, if any."""
        digest = _study_hash(study_hash)
        return next((a for a in self.approved_studies if a.study_hash == digest), None)

    def with_approval(
        self, study_hash: str, name: str, approved_at: str | None = None
    ) -> SiteConfig:
        """This config with the study approved (now, unless ``approved_at`` is given)."""
        when = approved_at or datetime.now(UTC).isoformat(timespec="seconds")
        entry = ApprovedStudy(study_hash, name, when)
        kept = tuple(a for a in self.approved_studies if a.study_hash != entry.study_hash)
        return replace(self, approved_studies=(*kept, entry))

    def without_approval(self, study_hash: str) -> SiteConfig:
        """This config with the approval of ``study_hash`` (full hash) removed."""
        digest = _study_hash(study_hash)
        return replace(
            self,
            approved_studies=tuple(a for a in self.approved_studies if a.study_hash != digest),
        )

    def find_approvals(self, prefix: str) -> list[ApprovedStudy]:
        """Approved studies whose hash starts with ``prefix`` (``sha256:`` optional)."""
        digest = _study_hash(prefix)
        if not digest:
            return []
        return [a for a in self.approved_studies if a.study_hash.startswith(digest)]

    def refusal(
        self,
        study_hash: str,
        name: str,
        dataset: str | None,
        *,
        condensed: bool = False,
        proxy: str | None = None,
    ) -> str | None:
        """Why this site refuses the study (``None``: it may run).

        Unapproved hashes are refused when ``require_approval`` is set; a dataset outside a
        non-empty ``allowed_datasets`` always; a study that would receive condensed volumes
        (``condensed``) unless its dataset is in ``allow_condensed``; a study that distils on
        the public dataset ``proxy`` unless this site holds it (``public_datasets``).
        """
        digest = _study_hash(study_hash)
        if self.require_approval and self.approval(digest) is None:
            return (
                f"refused: study sha256:{digest} ({name!r}) is not approved at this site; "
                f"{_APPROVE}"
            )
        if self.allowed_datasets and dataset not in self.allowed_datasets:
            named = "names no dataset" if dataset is None else f"names dataset {dataset!r}"
            return (
                f"refused: study sha256:{digest} ({name!r}) {named}; this site allows "
                f"{', '.join(self.allowed_datasets)} only (the custodian runs `neurofed site "
                "allow-dataset NAME` to allow another)"
            )
        if condensed and (dataset is None or dataset not in self.allow_condensed):
            named = "names no dataset" if dataset is None else f"is on dataset {dataset!r}"
            return (
                f"refused: study sha256:{digest} ({name!r}) would send synthetic volumes "
                f"condensed from this site's cases (strategy distill) and {named}, which this "
                "site does not allow; the custodian runs `neurofed site allow-condensed "
                "DATASET` to allow it for a study that names that dataset"
            )
        if proxy is not None and proxy not in self.public_datasets:
            return (
                f"refused: study sha256:{digest} ({name!r}) distils on the public dataset "
                f"{proxy!r}, which this site does not hold; the custodian runs `neurofed site "
                f"public-dataset {proxy} DIR` with the folder of its copy"
            )
        return None

    @property
    def state_root(self) -> Path:
        """``state_dir``, or ``<data_root>/neurofed/federated`` when it is not set."""
        if self.state_dir is not None:
            return self.state_dir
        return self.data_root / SiteFile.FOLDER.value / STATE_FOLDER

    def study_state_dir(self, study_hash: str) -> Path:
        """The state folder of the study with content hash ``study_hash`` at this site."""
        return self.state_root / str(study_hash)[:STUDY_FOLDER_DIGITS]

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "format": _GUARDED_FORMAT if self.guarded else _FORMAT,
            "data_root": str(self.data_root),
            "device": self.device,
        }
        if self.audit_dir is not None:
            out["audit_dir"] = str(self.audit_dir)
        if self.state_dir is not None:
            out["state_dir"] = str(self.state_dir)
        if self.audit_log is not None:
            out["audit_log"] = str(self.audit_log)
        if self.min_cases_per_metric != DEFAULT_MIN_CASES:
            out["min_cases_per_metric"] = self.min_cases_per_metric
        if self.share_case_values:
            out["share_case_values"] = list(self.share_case_values)
        if self.allow_condensed:
            out["allow_condensed"] = list(self.allow_condensed)
        if self.public_datasets:
            out["public_datasets"] = {k: str(v) for k, v in self.public_datasets.items()}
        if self.privacy_budgets:
            out["privacy_budgets"] = dict(self.privacy_budgets)
        if self.guarded:
            out["require_approval"] = self.require_approval
            out["approved_studies"] = {a.study_hash: a.to_json() for a in self.approved_studies}
            out["allowed_datasets"] = list(self.allowed_datasets)
        return out

    def write(self, path: Path) -> Path:
        """Write the config as JSON (atomically); returns ``path``."""
        return write_json_atomically(Path(path), self.to_json())

    @classmethod
    def load(cls, path: Path) -> SiteConfig:
        """Read a site config.

        Raises
        ------
        SiteConfigError
            The file is missing, not JSON, or lacks ``data_root``.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SiteConfigError(
                f"{path}: no site config; write one with data_root (the site folder)"
            ) from None
        except (OSError, ValueError) as exc:
            raise SiteConfigError(f"{path}: unreadable site config ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("data_root"), str):
            raise SiteConfigError(f"{path}: 'data_root' (the site folder) is required")
        if data.get("format", _FORMAT) not in (_FORMAT, _GUARDED_FORMAT):
            raise SiteConfigError(
                f"{path}: format {data.get('format')!r} is not {_FORMAT} or {_GUARDED_FORMAT}; "
                "it was written by a newer neurofed: update neurofed at this site"
            )
        audit, state, log = data.get("audit_dir"), data.get("state_dir"), data.get("audit_log")
        try:
            return cls(
                data_root=Path(data["data_root"]),
                device=str(data.get("device", "auto")),
                audit_dir=None if audit is None else Path(str(audit)),
                state_dir=None if state is None else Path(str(state)),
                approved_studies=_read_approvals(data.get("approved_studies", {})),
                allowed_datasets=_read_names(data.get("allowed_datasets", [])),
                require_approval=data.get("require_approval", False),
                audit_log=None if log is None else Path(str(log)),
                min_cases_per_metric=data.get("min_cases_per_metric", DEFAULT_MIN_CASES),
                share_case_values=_read_names(
                    data.get("share_case_values", []), "share_case_values"
                ),
                allow_condensed=_read_names(data.get("allow_condensed", []), "allow_condensed"),
                public_datasets=_read_folders(data.get("public_datasets", {})),
                privacy_budgets=_read_budgets(data.get("privacy_budgets", {})),
            )
        except SiteConfigError as exc:
            raise SiteConfigError(f"{path}: {exc}") from None


def _read_approvals(value: Any) -> tuple[ApprovedStudy, ...]:
    if not isinstance(value, Mapping):
        raise SiteConfigError(
            "'approved_studies' must map study hashes to {name, approved_at}; fix it with "
            "`neurofed site approve` / `revoke`"
        )
    out = []
    for digest, entry in value.items():
        if not isinstance(entry, Mapping):
            raise SiteConfigError(f"approved_studies[{digest!r}] must be {{name, approved_at}}")
        out.append(
            ApprovedStudy(str(digest), str(entry.get("name", "")), str(entry.get("approved_at")))
        )
    return tuple(out)


def _read_folders(value: Any) -> dict[str, Path]:
    if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
        raise SiteConfigError(
            "'public_datasets' must map dataset names to folders; fix it with `neurofed site "
            "public-dataset`"
        )
    return {str(k): Path(v) for k, v in value.items()}


def _read_budgets(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        raise SiteConfigError(
            "'privacy_budgets' must map dataset names to an ε each; fix it with `neurofed site "
            "privacy-budget`"
        )
    return dict(value)


def _read_names(value: Any, key: str = "allowed_datasets") -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SiteConfigError(f"'{key}' must be a list of dataset names")
    return tuple(value)
