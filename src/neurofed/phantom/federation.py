"""Generate a whole phantom federation: ``site-1 … site-N`` plus ``phantom.json``.

``phantom.json`` records the configuration, every site's and every case's sampled parameters,
ground-truth measures, the files written, which cases are broken and which carry a planted
quality problem, and how: everything tests and benchmarks need. Its bytes (like every image's)
depend only on the configuration, never on ``workers`` or timing.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurofed.keys import LabelConvention, Layout
from neurofed.phantom.broken import break_case
from neurofed.phantom.case import CaseParams, sample_case
from neurofed.phantom.codec import from_json, to_json
from neurofed.phantom.config import PhantomConfig, PhantomPreset, PhantomSummary
from neurofed.phantom.render import render_case
from neurofed.phantom.site import SiteParams, sample_site
from neurofed.phantom.writers import write_case, write_site_tables
from neurofed.types import ProgressCallback

__all__ = ["MANIFEST", "CaseRecord", "generate_case", "generate_federation"]

MANIFEST = "phantom.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CaseRecord:
    """What was generated for one case: parameters, measures and site-relative files."""

    params: CaseParams
    measures: dict[str, float]
    files: tuple[str, ...]
    broken_file: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "subject_id": self.params.subject_id,
            "site": self.params.site,
            "case": self.params.case,
            "params": to_json(self.params),
            "measures": dict(self.measures),
            "files": list(self.files),
            "broken_file": self.broken_file,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CaseRecord:
        return cls(
            params=from_json(CaseParams, data["params"]),
            measures={k: float(v) for k, v in data["measures"].items()},
            files=tuple(data["files"]),
            broken_file=data.get("broken_file"),
        )


def generate_case(config: PhantomConfig, site: SiteParams, case: int, out: Path) -> CaseRecord:
    """Sample, render and write case ``case`` (1-based) of ``site`` under ``out/site-<k>``.

    Examples
    --------
    >>> import tempfile
    >>> from neurofed.phantom.site import sample_site
    >>> config = PhantomConfig(preset="brain-age", sites=1, cases=2, seed=0, spacing=4.0)
    >>> record = generate_case(config, sample_site(config, 1), 2, Path(tempfile.mkdtemp()))
    >>> record.params.subject_id, record.files
    ('sub-s1c002', ('sub-s1c002/anat/sub-s1c002_T1w.nii.gz', \
'sub-s1c002/anat/sub-s1c002_FLAIR.nii.gz', \
'derivatives/lesions/sub-s1c002/anat/sub-s1c002_label-lesion_mask.nii.gz'))
    """
    params = sample_case(config, site, case)
    rendered = render_case(site, params, config.spacing)
    site_dir = Path(out) / site.name
    files = write_case(
        site_dir,
        config.preset,
        params.subject_id,
        rendered,
        site.labelled,
        missing=site.missing_modalities,
    )
    broken_file = None
    if params.broken is not None:
        broken_file = break_case(
            site_dir,
            files,
            params.broken,
            case,
            rendered.affine,
            rendered.images,
            rendered.label,
            invalid_label=3 if config.preset is PhantomPreset.GLIOMA else 2,
        )
    return CaseRecord(
        params=params,
        measures=dict(rendered.measures),
        files=tuple(str(p) for p in files.values()),
        broken_file=broken_file,
    )


def _run(config_json: dict[str, Any], site: int, case: int, out: str) -> dict[str, Any]:
    config = PhantomConfig.from_json(config_json)
    return generate_case(config, sample_site(config, site), case, Path(out)).to_json()


def _prepare(out: Path) -> None:
    """Refuse a non-empty folder that is not an earlier phantom; clear an earlier phantom."""
    manifest = out / MANIFEST
    if manifest.is_file():
        old = json.loads(manifest.read_text(encoding="utf-8"))
        for site in old.get("sites", []):
            folder = out / f"site-{int(site['site'])}"
            if folder.is_dir():
                shutil.rmtree(folder)
        manifest.unlink()
    elif out.exists() and any(out.iterdir()):
        raise FileExistsError(
            f"{out}: folder is not empty and holds no {MANIFEST}; "
            "choose an empty or new folder for the phantom"
        )
    out.mkdir(parents=True, exist_ok=True)


def generate_federation(
    config: PhantomConfig,
    out: Path,
    *,
    workers: int = 1,
    progress: ProgressCallback | None = None,
) -> PhantomSummary:
    """Write ``out/site-1 … site-N`` and ``out/phantom.json``; same config, same bytes.

    ``workers > 1`` renders cases in a process pool (spawned, so no thread state is forked;
    scripts therefore need the usual ``if __name__ == "__main__":`` guard). ``progress`` is
    called as ``progress(done, total, subject_id)`` after each case. A folder holding an earlier
    phantom is replaced; any other non-empty folder is refused.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "fed"
    >>> config = PhantomConfig(preset="glioma", sites=1, cases=1, seed=0, spacing=4.0)
    >>> summary = generate_federation(config, out)
    >>> [p.name for p in summary.site_dirs], sorted(p.name for p in (out / "site-1").iterdir())
    (['site-1'], ['BraTS2021_01001', 'clinical.csv'])
    >>> summary.num_cases, summary.manifest.name
    (1, 'phantom.json')
    """
    if workers < 1:
        raise ValueError(f"workers = {workers}: must be 1 or more")
    start = time.perf_counter()
    out = Path(out)
    _prepare(out)
    sites = [sample_site(config, k) for k in range(1, config.sites + 1)]
    tasks = [(site.site, case) for site in sites for case in range(1, site.cases + 1)]
    results: dict[tuple[int, int], dict[str, Any]] = {}
    total = len(tasks)
    if workers == 1:
        for site_index, case in tasks:
            record = _run(config.to_json(), site_index, case, str(out))
            results[(site_index, case)] = record
            if progress is not None:
                progress(len(results), total, record["subject_id"])
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, total), mp_context=context) as pool:
            futures = {
                pool.submit(_run, config.to_json(), s, c, str(out)): (s, c) for s, c in tasks
            }
            for future in as_completed(futures):
                record = future.result()
                results[futures[future]] = record
                if progress is not None:
                    progress(len(results), total, record["subject_id"])
    records = [CaseRecord.from_json(results[key]) for key in sorted(results)]
    for site in sites:
        rows = [
            (r.params.subject_id, r.params.clinical, r.params.broken)
            for r in records
            if r.params.site == site.site
        ]
        write_site_tables(
            out / site.name, config.preset, site.name, rows, site.missing, site.labelled
        )
    manifest = out / MANIFEST
    manifest.write_text(_manifest(config, sites, records), encoding="utf-8")
    return PhantomSummary(
        root=out,
        site_dirs=tuple(out / site.name for site in sites),
        num_cases=total,
        seconds=time.perf_counter() - start,
        manifest=manifest,
    )


def _manifest(config: PhantomConfig, sites: list[SiteParams], records: list[CaseRecord]) -> str:
    glioma = config.preset is PhantomPreset.GLIOMA
    data = {
        "generator": "neurofed.phantom",
        "format_version": FORMAT_VERSION,
        "config": config.to_json(),
        "layout": (Layout.BRATS_2021 if glioma else Layout.BIDS).value,
        "label_convention": (
            LabelConvention.BRATS_2021 if glioma else LabelConvention.BINARY_LESION
        ).value,
        "sites": [{"dir": site.name, **to_json(site)} for site in sites],
        "cases": [record.to_json() for record in records],
        "broken": {r.params.subject_id: r.params.broken.value for r in records if r.params.broken},
        "qc_problems": {
            r.params.subject_id: r.params.qc_problem.value for r in records if r.params.qc_problem
        },
    }
    return json.dumps(data, indent=1) + "\n"
