"""``neurofed demo``: phantom → site check → federated, local-only and pooled training →
evaluation on every site and on a held-out site → a summary a person can read.

It sits at the top of the package and orchestrates every layer, so nothing below imports it.
"""

from neurofed.demo.config import DemoBudget, DemoConfig
from neurofed.demo.report import SUMMARY_JSON, SUMMARY_MD
from neurofed.demo.run import DemoResult, StageProgress, run_demo

__all__ = [
    "SUMMARY_JSON",
    "SUMMARY_MD",
    "DemoBudget",
    "DemoConfig",
    "DemoResult",
    "StageProgress",
    "run_demo",
]
