"""Readers for the community layouts a site's raw data comes in.

:func:`read_site` detects the layout of a folder from names alone (:func:`detect_layout`) and
reads it into a :class:`LayoutScan`: subjects with site-relative file paths, label conventions
and clinical targets, plus the problems visible without opening any voxel data.
"""

from neurofed.data.layouts.base import LayoutReader, LayoutScan
from neurofed.data.layouts.bids import BidsReader, parse_bids_name
from neurofed.data.layouts.brats import BRATS_MODALITIES, BratsReader
from neurofed.data.layouts.detect import (
    LAYOUT_PATTERNS,
    LayoutError,
    detect_layout,
    read_site,
    reader_for,
)
from neurofed.data.layouts.msd import MsdReader
from neurofed.data.layouts.nnunet import NnunetReader, convention_from_label_names
from neurofed.data.layouts.table import TableReader, manifest_tables

__all__ = [
    "BRATS_MODALITIES",
    "LAYOUT_PATTERNS",
    "BidsReader",
    "BratsReader",
    "LayoutError",
    "LayoutReader",
    "LayoutScan",
    "MsdReader",
    "NnunetReader",
    "TableReader",
    "convention_from_label_names",
    "detect_layout",
    "manifest_tables",
    "parse_bids_name",
    "read_site",
    "reader_for",
]
