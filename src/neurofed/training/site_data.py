"""A site's cases for one task: manifest + splits → usable cases → preprocessed, cached arrays.

:class:`SiteData` reads ``<site>/neurofed/manifest.json`` and the fixed splits (made with the
site's existing split parameters, or the defaults on first use), keeps the cases a task can use
(:func:`usable_cases`: it needs the task's modalities, and a label map or a known clinical target),
and loads them through :func:`~neurofed.data.loading.load_subject` →
:func:`~neurofed.preprocess.preprocess_case`, cached by
:class:`~neurofed.preprocess.PreprocessedCache` under ``<site>/neurofed/preprocessed/<params_id>/``.
A cached case is reused only while its files' sizes and modification times (and the neurofed
version) are unchanged; ``neurofed site preprocess`` fills the same folder with the same keys, so
what it made is reused here. Cases the custodian excluded after quality control
(``<site>/neurofed/qc-exclusions.json``, written by ``neurofed site qc --exclude-failures``) are
skipped for tasks reading a failed modality.

Cases that cannot be used are skipped with a logged reason, never a crash; a site that cannot
serve the task at all (no manifest, a modality no case has) raises :class:`SiteDataError`
naming the site, what is missing and the fix.

Several sites in one :class:`SiteData` give the union of their cases (the pooled baseline).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from neurofed.data.labels import is_tumor
from neurofed.data.loading import load_subject
from neurofed.data.manifest import Manifest, ManifestError, load_manifest, site_file
from neurofed.data.nifti import VolumeError
from neurofed.data.splits import SplitsError, site_splits
from neurofed.data.subject import Subject
from neurofed.keys import Modality, SiteFile, Split, TumorLabel
from neurofed.preprocess import (
    PreprocessedCache,
    PreprocessedCase,
    PreprocessError,
    PreprocessParams,
    preprocess_case,
)
from neurofed.preprocess.cache import cache_key, source_stamp
from neurofed.preprocess.pipeline import (
    PipelineError,
    QCExclusion,
    load_qc_exclusions,
)
from neurofed.preprocess.skull import extraction_channel
from neurofed.tasks import Task
from neurofed.training.dataset import CaseDataset, SkippedCase, TrainingCase
from neurofed.types import ProgressCallback

__all__ = [
    "SiteData",
    "SiteDataError",
    "usable_cases",
]

logger = logging.getLogger(__name__)


class SiteDataError(ValueError):
    """A site cannot serve a task; the message names the site, what is missing and the fix."""


def _needs_tumor_labels(task: Task) -> bool:
    return task.max_label == int(TumorLabel.ET)


def _skip_reason(subject: Subject, task: Task) -> str | None:
    missing = [m.value for m in task.modalities if m not in subject.images]
    if missing:
        return f"has no {', '.join(missing)} image (task {task.task_id.value!r} needs it)"
    has_label = subject.label is not None and task.needs_label_map
    convention = subject.label_convention
    if has_label and convention is not None and is_tumor(convention) != _needs_tumor_labels(task):
        kind = "glioma" if _needs_tumor_labels(task) else "lesion"
        return (
            f"its label map is {convention.value}, but task {task.task_id.value!r} needs "
            f"{kind} labels"
        )
    known = [f for f in task.clinical_fields if subject.clinical.get(f) is not None]
    if has_label or known:
        return None
    wanted = [f.value for f in task.clinical_fields]
    if task.needs_label_map and wanted:
        return f"has no label map and no known {', '.join(wanted)}"
    if task.needs_label_map:
        return "has no label map (needed to train and score segmentation)"
    return f"its {', '.join(wanted)} is unknown"


def usable_cases(
    manifest: Manifest, task: Task, subject_ids: Sequence[str] | None = None, site_id: str = ""
) -> tuple[tuple[Subject, ...], tuple[SkippedCase, ...]]:
    """The manifest's cases ``task`` can use (those in ``subject_ids``, if given), and the others.

    A case is usable when it has every modality of the task and either a label map (of the
    task's kind: glioma or lesion) or a known value of one of the task's clinical fields —
    so ``glioma-multitask`` keeps mask-less cases with known markers, ``brain-age`` needs a known
    age, and the segmentation tasks need a label map.
    """
    chosen = manifest.subjects
    if subject_ids is not None:
        wanted = set(subject_ids)
        chosen = tuple(s for s in chosen if s.subject_id in wanted)
    keep, skipped = [], []
    for subject in chosen:
        reason = _skip_reason(subject, task)
        if reason is None:
            keep.append(subject)
        else:
            skipped.append(SkippedCase(site_id, subject.subject_id, reason))
            logger.info("%s: skipping %s: %s", site_id, subject.subject_id, reason)
    return tuple(keep), tuple(skipped)


class SiteData:
    """The cases of one or several sites for one task, under one preprocessing.

    Parameters
    ----------
    sites
        Site roots (folders checked with ``neurofed site check``).
    task
        The task the cases are for (its modalities, labels and clinical fields).
    params
        Preprocessing; arrays are cached per site under ``neurofed/preprocessed/<params_id>``.
    progress
        Called as ``progress(done, total, subject_id)`` while cases are loaded.

    Raises
    ------
    SiteDataError
        A site has no manifest, or no case has a modality the task needs.
    """

    def __init__(
        self,
        sites: Path | Sequence[Path],
        task: Task,
        params: PreprocessParams,
        *,
        progress: ProgressCallback | None = None,
    ) -> None:
        roots = [Path(sites)] if isinstance(sites, str | Path) else [Path(s) for s in sites]
        if not roots:
            raise SiteDataError("no site given; pass at least one site folder")
        names = [r.name for r in roots]
        if len(set(names)) != len(names):
            raise SiteDataError(f"sites {names} share folder names; give each a distinct name")
        self.roots = tuple(roots)
        self.task = task
        self.params = params
        self.progress = progress
        self._manifests = {root: self._manifest(root) for root in roots}
        self._cache: dict[Split | None, CaseDataset] = {}

    @property
    def site_ids(self) -> tuple[str, ...]:
        """Each site's id: the name of its folder."""
        return tuple(r.name for r in self.roots)

    def _manifest(self, root: Path) -> Manifest:
        if not root.is_dir():
            raise SiteDataError(f"{root}: no such folder; pass the folder holding the site data")
        try:
            manifest = load_manifest(root)
        except ManifestError as exc:
            raise SiteDataError(str(exc)) from exc
        if not manifest.subjects:
            raise SiteDataError(
                f"site {root}: the manifest holds no usable case; see "
                f"{site_file(root, SiteFile.CHECK_REPORT)} for why, fix them and run "
                f"`neurofed site check {root}` again"
            )
        present = {m for s in manifest.subjects for m in s.modalities}
        absent = [m.value for m in self.task.modalities if m not in present]
        if absent:
            needed = ", ".join(m.value for m in self.task.modalities)
            has = ", ".join(m.value for m in Modality if m in present)
            raise SiteDataError(
                f"site {root} has no {', '.join(absent)} image in any case (it has {has}), but "
                f"task {self.task.task_id.value!r} needs {needed}; choose a task this site can "
                "serve, or add those scans and run `neurofed site check` again"
            )
        return manifest

    def split(self, split: Split | None) -> CaseDataset:
        """The usable cases of ``split`` (``None``: every split) of every site, loaded once.

        Raises
        ------
        SiteDataError
            When the splits file is unusable.
        """
        if split in self._cache:
            return self._cache[split]
        datasets = [self._load(root, split) for root in self.roots]
        dataset = CaseDataset.pooled(datasets) if len(datasets) > 1 else datasets[0]
        self._cache[split] = dataset
        return dataset

    def _load(self, root: Path, split: Split | None) -> CaseDataset:
        manifest = self._manifests[root]
        available = [s.subject_id for s in manifest.subjects]
        ids: Sequence[str] = available
        if split is not None:
            try:
                ids = site_splits(root, manifest.subjects)[0].subject_ids(split, available)
            except SplitsError as exc:
                raise SiteDataError(str(exc)) from exc
        subjects, skipped = usable_cases(manifest, self.task, ids, root.name)
        subjects, excluded = self._without_qc_exclusions(root, subjects)
        skipped += excluded
        cache = PreprocessedCache.for_site(root, self.params)
        cases, skipped_list = [], list(skipped)
        for done, subject in enumerate(subjects, start=1):
            try:
                cases.append(self._case(root, subject, cache))
            except (VolumeError, PreprocessError, OSError) as exc:
                reason = f"could not be loaded ({exc})"
                logger.warning("%s: skipping %s: %s", root.name, subject.subject_id, reason)
                skipped_list.append(SkippedCase(root.name, subject.subject_id, reason))
            if self.progress is not None:
                self.progress(done, len(subjects), subject.subject_id)
        return CaseDataset(cases, skipped_list)

    def _without_qc_exclusions(
        self, root: Path, subjects: tuple[Subject, ...]
    ) -> tuple[tuple[Subject, ...], tuple[SkippedCase, ...]]:
        """Drop the cases the custodian excluded after QC (``neurofed site qc
        --exclude-failures``) for a modality this task reads."""
        try:
            exclusions: dict[str, QCExclusion] = load_qc_exclusions(root)
        except PipelineError as exc:
            raise SiteDataError(str(exc)) from exc
        keep, skipped = [], []
        for subject in subjects:
            exclusion = exclusions.get(subject.subject_id)
            if exclusion is None or not exclusion.applies_to(self.task.modalities):
                keep.append(subject)
                continue
            reason = f"excluded by the custodian after QC: {'; '.join(exclusion.reasons)}"
            skipped.append(SkippedCase(root.name, subject.subject_id, reason))
            logger.info("%s: skipping %s: %s", root.name, subject.subject_id, reason)
        return tuple(keep), tuple(skipped)

    def _case(self, root: Path, subject: Subject, cache: PreprocessedCache) -> TrainingCase:
        task = self.task
        if not task.needs_label_map and subject.label is not None:
            subject = replace(subject, label=None, label_convention=None)  # not read, not cached
        key = cache_key(subject.subject_id, task.modalities)  # arrays depend on the channels

        def compute() -> PreprocessedCase:
            loaded = load_subject(root, subject, task.modalities)
            return preprocess_case(
                loaded.image,
                loaded.label,
                loaded.affine,
                self.params,
                subject_id=subject.subject_id,
                extract_from=extraction_channel(task.modalities),
            )

        case = cache.get_or_compute(key, source_stamp(root, subject), compute)
        return TrainingCase(subject.subject_id, root.name, case.image, case.label, subject.clinical)
