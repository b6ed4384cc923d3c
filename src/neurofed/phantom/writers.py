"""Write cases and site tables in the community layouts the readers parse.

- glioma: BraTS 2021 (``BraTS2021_00001/BraTS2021_00001_{t1,t1ce,t2,flair,seg}.nii.gz``) and a
  ``clinical.csv`` (``subject_id,age,sex,grade,idh,codel_1p19q,mgmt``; empty = unknown);
- ms / brain-age: BIDS (``sub-s1c001/anat/sub-s1c001_{T1w,T2w,FLAIR}.nii.gz``, lesion masks under
  ``derivatives/lesions``) with ``dataset_description.json`` and ``participants.tsv``.

Examples
--------
>>> from neurofed.phantom.config import PhantomPreset
>>> paths = case_paths(PhantomPreset.GLIOMA, "BraTS2021_01001")
>>> str(paths[Modality.T1CE]), str(paths[LABEL])
('BraTS2021_01001/BraTS2021_01001_t1ce.nii.gz', 'BraTS2021_01001/BraTS2021_01001_seg.nii.gz')
>>> str(case_paths(PhantomPreset.MS, "sub-s2c007")[LABEL])
'derivatives/lesions/sub-s2c007/anat/sub-s2c007_label-lesion_mask.nii.gz'
>>> clinical = Clinical(idh=True, codel_1p19q=False, grade=4, age=54.2, sex=Sex.FEMALE)
>>> format_glioma_row(clinical)
['54.2', 'F', 'IV', 'mutant', 'intact', '']
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from neurofed.data.nifti import write_image, write_label
from neurofed.data.subject import Clinical
from neurofed.keys import ClinicalField, Modality, ProblemKind, Sex
from neurofed.phantom.config import PhantomPreset
from neurofed.phantom.render import RenderedCase

__all__ = [
    "BIDS_VERSION",
    "CLINICAL_CSV",
    "GLIOMA_COLUMNS",
    "LABEL",
    "PARTICIPANTS_COLUMNS",
    "case_paths",
    "format_glioma_row",
    "write_case",
    "write_site_tables",
]

LABEL = "label"  # key of the segmentation in :func:`case_paths`
BIDS_VERSION = "1.9.0"
CLINICAL_CSV = "clinical.csv"
GLIOMA_COLUMNS = ("subject_id", "age", "sex", "grade", "idh", "codel_1p19q", "mgmt")
PARTICIPANTS_COLUMNS = ("participant_id", "age", "sex", "sdmt")
_BRATS_SUFFIX = {
    Modality.T1: "t1",
    Modality.T1CE: "t1ce",
    Modality.T2: "t2",
    Modality.FLAIR: "flair",
}
_BIDS_SUFFIX = {Modality.T1: "T1w", Modality.T2: "T2w", Modality.FLAIR: "FLAIR"}
_ROMAN = {1: "I", 2: "II", 3: "III", 4: "IV"}


def case_paths(preset: PhantomPreset, subject_id: str) -> dict[Modality | str, PurePosixPath]:
    """Site-relative paths of one case's images (by modality) and label (key ``LABEL``)."""
    paths: dict[Modality | str, PurePosixPath] = {}
    if preset is PhantomPreset.GLIOMA:
        folder = PurePosixPath(subject_id)
        for modality, suffix in _BRATS_SUFFIX.items():
            paths[modality] = folder / f"{subject_id}_{suffix}.nii.gz"
        paths[LABEL] = folder / f"{subject_id}_seg.nii.gz"
        return paths
    anat = PurePosixPath(subject_id) / "anat"
    for modality, suffix in _BIDS_SUFFIX.items():
        paths[modality] = anat / f"{subject_id}_{suffix}.nii.gz"
    derivative = PurePosixPath("derivatives", "lesions", subject_id, "anat")
    paths[LABEL] = derivative / f"{subject_id}_label-lesion_mask.nii.gz"
    return paths


def write_case(
    site_dir: Path,
    preset: PhantomPreset,
    subject_id: str,
    rendered: RenderedCase,
    labelled: bool,
    missing: tuple[Modality, ...] = (),
) -> dict[Modality | str, PurePosixPath]:
    """Write the images but the ``missing`` ones (and the label if ``labelled``); returns what
    was written."""
    paths = case_paths(preset, subject_id)
    written: dict[Modality | str, PurePosixPath] = {}
    for modality, image in rendered.images.items():
        if modality in missing:
            continue
        write_image(site_dir / paths[modality], image, rendered.affine)
        written[modality] = paths[modality]
    if labelled:
        write_label(site_dir / paths[LABEL], rendered.label, rendered.affine)
        written[LABEL] = paths[LABEL]
    return written


def _flag(value: bool | None, yes: str, no: str) -> str:
    return "" if value is None else (yes if value else no)


def format_glioma_row(clinical: Clinical) -> list[str]:
    """Age, sex, grade, IDH, 1p/19q and MGMT as written in ``clinical.csv``."""
    return [
        "" if clinical.age is None else f"{clinical.age:.1f}",
        "" if clinical.sex is None else Sex(clinical.sex).value,
        "" if clinical.grade is None else _ROMAN[clinical.grade],
        _flag(clinical.idh, "mutant", "wildtype"),
        _flag(clinical.codel_1p19q, "codeleted", "intact"),
        _flag(clinical.mgmt, "methylated", "unmethylated"),
    ]


def _bids_row(clinical: Clinical) -> list[str]:
    return [
        "n/a" if clinical.age is None else f"{clinical.age:.1f}",
        "n/a" if clinical.sex is None else Sex(clinical.sex).value,
        "n/a" if clinical.sdmt is None else f"{clinical.sdmt:.0f}",
    ]


def _table(rows: Iterable[list[str]], delimiter: str) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
    writer.writerows(rows)
    return buffer.getvalue()


def write_site_tables(
    site_dir: Path,
    preset: PhantomPreset,
    site_name: str,
    rows: Iterable[tuple[str, Clinical, ProblemKind | None]],
    missing: tuple[ClinicalField, ...],
    labelled: bool,
) -> None:
    """``clinical.csv`` (BraTS) or ``dataset_description.json`` + ``participants.tsv`` (BIDS).

    ``missing`` fields are written as unknown; a case broken with ``CLINICAL_RANGE`` gets grade
    ``V`` (glioma) or age ``-3`` (BIDS).
    """
    site_dir.mkdir(parents=True, exist_ok=True)
    table: list[list[str]] = []
    for subject_id, clinical, broken in rows:
        known = clinical.without(*missing)
        if preset is PhantomPreset.GLIOMA:
            values = format_glioma_row(known)
            if broken is ProblemKind.CLINICAL_RANGE:
                values[2] = "V"
        else:
            values = _bids_row(known)
            if broken is ProblemKind.CLINICAL_RANGE:
                values[0] = "-3"
        table.append([subject_id, *values])
    if preset is PhantomPreset.GLIOMA:
        text = _table([list(GLIOMA_COLUMNS), *table], ",")
        (site_dir / CLINICAL_CSV).write_text(text, encoding="utf-8")
        return
    (site_dir / "participants.tsv").write_text(
        _table([list(PARTICIPANTS_COLUMNS), *table], "\t"), encoding="utf-8"
    )
    _write_json(
        site_dir / "dataset_description.json",
        {"Name": f"neurofed phantom ({preset.value}, {site_name})", "BIDSVersion": BIDS_VERSION,
         "DatasetType": "raw"},
    )  # fmt: skip
    if labelled:
        _write_json(
            site_dir / "derivatives" / "lesions" / "dataset_description.json",
            {
                "Name": "MS lesion masks (phantom ground truth)",
                "BIDSVersion": BIDS_VERSION,
                "DatasetType": "derivative",
                "GeneratedBy": [{"Name": "neurofed.phantom"}],
            },
        )


def _write_json(path: Path, data: Mapping[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
