"""Recognise a site folder's layout from names alone, and read it.

Examples
--------
>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> (root / "sub-01" / "anat").mkdir(parents=True)
>>> _ = (root / "sub-01" / "anat" / "sub-01_T1w.nii.gz").write_bytes(b"")
>>> detect_layout(root).layout.value
'bids'
>>> [s.subject_id for s in read_site(root).subjects]
['sub-01']
>>> detect_layout(root / "sub-01" / "anat")
Traceback (most recent call last):
...
neurofed.data.layouts.detect.LayoutError: ...sub-01/anat: matches no layout neurofed reads...
"""

from __future__ import annotations

from pathlib import Path

from neurofed.data.layouts.base import LayoutReader, LayoutScan
from neurofed.data.layouts.bids import BidsReader
from neurofed.data.layouts.brats import BratsReader
from neurofed.data.layouts.msd import MsdReader
from neurofed.data.layouts.nnunet import NnunetReader
from neurofed.data.layouts.table import TableReader
from neurofed.keys import LabelConvention, Layout

__all__ = ["LAYOUT_PATTERNS", "LayoutError", "detect_layout", "read_site", "reader_for"]

#: What each layout looks like, as shown to a custodian whose folder matches none or several.
LAYOUT_PATTERNS = {
    Layout.BRATS_2021: "BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz "
    "(case folders may sit one level down)",
    Layout.BRATS_2023: "BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz",
    Layout.MSD: 'dataset.json with "modality", "labels", "training"; imagesTr/, labelsTr/',
    Layout.NNUNET_V2: 'dataset.json with "channel_names", "labels", "file_ending"; '
    "imagesTr/<case>_0000.nii.gz, labelsTr/<case>.nii.gz",
    Layout.BIDS: "sub-01/[ses-01/]anat/sub-01_[ses-01_]{T1w,T2w,FLAIR}.nii.gz "
    "(+ derivatives/<pipeline>/.../sub-01_label-lesion_mask.nii.gz)",
    Layout.TABLE: "cases.csv with a subject_id column and one path column per modality "
    "(t1, t1ce, t2, flair, label)",
}


class LayoutError(ValueError):
    """A site folder is missing, or matches no layout or several; the message says the fix."""


def reader_for(layout: Layout, label_convention: LabelConvention | None = None) -> LayoutReader:
    """The reader of ``layout`` (``label_convention`` applies to the table layout only).

    Examples
    --------
    >>> reader_for(Layout.BRATS_2023), reader_for(Layout.TABLE, LabelConvention.BINARY_LESION)
    (BratsReader('brats-2023'), TableReader(label_convention=<LabelConvention.BINARY_LESION: \
'binary-lesion'>))
    """
    layout = Layout(layout)
    if label_convention is not None and layout is not Layout.TABLE:
        raise ValueError(
            f"label_convention applies to the table layout only, not {layout.value}; "
            "the other layouts name their own convention"
        )
    if layout in {Layout.BRATS_2021, Layout.BRATS_2023}:
        return BratsReader(layout)
    readers: dict[Layout, LayoutReader] = {
        Layout.MSD: MsdReader(),
        Layout.NNUNET_V2: NnunetReader(),
        Layout.BIDS: BidsReader(),
        Layout.TABLE: TableReader(label_convention),
    }
    return readers[layout]


def _check_root(root: Path) -> Path:
    root = Path(root)
    if not root.exists():
        raise LayoutError(f"{root}: no such folder; check the site's data path")
    if not root.is_dir():
        raise LayoutError(f"{root}: is a file, not a folder; pass the folder holding the scans")
    return root


def detect_layout(root: Path, label_convention: LabelConvention | None = None) -> LayoutReader:
    """The reader whose layout ``root`` matches.

    Raises
    ------
    LayoutError
        When ``root`` is missing, or matches no layout (the message shows each one), or several
        (the message names them and how to choose).
    """
    root = _check_root(root)
    readers = [reader_for(layout) for layout in Layout]
    found = [reader for reader in readers if reader.matches(root)]
    if len(found) == 1:
        return reader_for(found[0].layout, label_convention) if label_convention else found[0]
    choices = "\n".join(
        f"  {layout.value:<11} <root>/{LAYOUT_PATTERNS[layout]}" for layout in Layout
    )
    if not found:
        raise LayoutError(
            f"{root}: matches no layout neurofed reads. The layouts are:\n{choices}\n"
            "Fix: arrange the files like one of these, or write a table (cases.csv) listing "
            "each subject's files, then pass layout=… (CLI: --layout NAME) if needed."
        )
    names = ", ".join(reader.layout.value for reader in found)
    raise LayoutError(
        f"{root}: matches several layouts ({names}). Fix: pass layout=… "
        f"(CLI: --layout NAME) with one of {names}, or move the other files out of the folder."
    )


def read_site(
    root: Path,
    *,
    layout: Layout | None = None,
    clinical_table: Path | None = None,
    label_convention: LabelConvention | None = None,
) -> LayoutScan:
    """Read a site folder with the given ``layout`` or the one detected.

    Parameters
    ----------
    root:
        The folder holding the site's raw data.
    layout:
        Skip detection and read with this layout.
    clinical_table:
        A CSV / TSV / XLSX of clinical targets to join on subject id (else the layout's own:
        a clinical table at the root, ``participants.tsv``, or the table's columns).
    label_convention:
        For the table layout: the convention of its label maps when it has no
        ``label_convention`` column.

    Raises
    ------
    LayoutError
        When ``root`` is missing or its layout cannot be told (see :func:`detect_layout`).
    neurofed.data.clinical.ClinicalTableError
        When ``clinical_table`` cannot be read or has no subject id column.
    """
    root = _check_root(root)
    if layout is None:
        reader = detect_layout(root, label_convention)
    else:
        reader = reader_for(layout, label_convention)
    return reader.read(root, clinical_table)
