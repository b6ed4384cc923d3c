"""A realistic, deterministic multi-site brain-MRI phantom (no patient data needed).

Anatomy comes from the MNI152 tissue maps shipped with nilearn, warped per subject; contrasts come
from MR signal equations with per-site sequence timing; pathology (gliomas with grade- and
marker-dependent appearance, MS lesions, age-driven atrophy) is drawn in subject space; every
site has its own scanner effects and cohort. The output is written in the BraTS 2021 or BIDS
layouts, with ``phantom.json`` holding the ground truth.

Examples
--------
>>> config = PhantomConfig(preset="brain-age", sites=3, cases=10, seed=0, spacing=2.0)
>>> config.sites, config.preset.is_bids
(3, True)
"""

from neurofed.phantom.case import CaseParams, sample_case, subject_id
from neurofed.phantom.config import PhantomConfig, PhantomPreset, PhantomSummary
from neurofed.phantom.federation import MANIFEST, CaseRecord, generate_case, generate_federation
from neurofed.phantom.render import RenderedCase, render_case
from neurofed.phantom.site import BROKEN_KINDS, QC_PROBLEMS, QCProblem, SiteParams, sample_site

__all__ = [
    "BROKEN_KINDS",
    "MANIFEST",
    "QC_PROBLEMS",
    "CaseParams",
    "CaseRecord",
    "PhantomConfig",
    "PhantomPreset",
    "PhantomSummary",
    "QCProblem",
    "RenderedCase",
    "SiteParams",
    "generate_case",
    "generate_federation",
    "render_case",
    "sample_case",
    "sample_site",
    "subject_id",
]
