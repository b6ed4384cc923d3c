"""Render one case: warp the template, draw pathology, mix tissue signals, acquire.

:func:`render_case` is a deterministic function of the sampled :class:`SiteParams` and
:class:`CaseParams` (and the output spacing): the same parameters give the same arrays.

Examples
--------
>>> from neurofed.phantom.config import PhantomConfig
>>> from neurofed.phantom.site import sample_site
>>> from neurofed.phantom.case import sample_case
>>> config = PhantomConfig(preset="glioma", sites=1, cases=1, seed=0, spacing=4.0)
>>> site = sample_site(config, 1)
>>> rendered = render_case(site, sample_case(config, site, 1), spacing=4.0)
>>> sorted(rendered.images) == sorted(config.modalities)
True
>>> set(np.unique(rendered.label).tolist()) <= {0, 1, 2, 4}
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from neurofed.keys import Modality
from neurofed.phantom.acquisition import bias_log, flip_to, rician, slice_average, slices_to_iso
from neurofed.phantom.anatomy import Lattice, brain_box_mm, ventricle_roi
from neurofed.phantom.annotation import annotate
from neurofed.phantom.case import CaseParams
from neurofed.phantom.deformation import (
    Deformation,
    MassEffect,
    sampling_grid,
    subject_lattice,
    warp,
)
from neurofed.phantom.fields import Inclusion
from neurofed.phantom.glioma import draw_glioma
from neurofed.phantom.physics import Tissue, signal
from neurofed.phantom.population import draw_lesions
from neurofed.phantom.qc_problems import label_measures, plant
from neurofed.phantom.site import Annotation, SiteParams
from neurofed.phantom.sources import FAR_MM, head_layers, source, support_mask, thinned_source

__all__ = ["RenderedCase", "render_brain_mask", "render_case"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

_HEAD_MM = 16.0  # room for CSF, skull and scalp around the brain box
_GLIOMA_CROP_VOXELS = 2
_COARSE_MM = 4.0  # the pull-back map is evaluated on this grid and upsampled


@dataclass(frozen=True)
class RenderedCase:
    """Arrays of one case on one grid (as they will be written) and ground-truth measures."""

    images: Mapping[Modality, F32]
    label: U8  # BraTS 2021 values for glioma, {0, 1} lesion mask otherwise
    affine: F64
    measures: Mapping[str, float]  # volumes in mL of what was written


_HEAD_TISSUES = (Tissue.CSF, Tissue.SKULL, Tissue.FAT)


@dataclass
class _Anatomy:
    """Subject-space tissue fractions (GM and WM are modified in place by the pathology)."""

    lattice: Lattice
    maps: F32  # (C, X, Y, Z): GM, WM, CSF first
    brain: F32  # GM + WM + CSF before pathology (skull-strip mask source)
    measures: dict[str, float]
    shell: npt.NDArray[np.intp] | None = None  # flat voxels outside the brain with head tissue
    layers: F32 | None = None  # (3, P) extra-axial CSF, skull and scalp fractions of ``shell``

    @property
    def gm(self) -> F32:
        return np.asarray(self.maps[0], dtype=np.float32)  # a view

    @property
    def wm(self) -> F32:
        return np.asarray(self.maps[1], dtype=np.float32)  # a view


def _fov(n: int, step_mm: float, top_mm: float, bottom_mm: float) -> slice:
    """Slices kept when a site cuts ``top_mm``/``bottom_mm`` (at least 60 % stay)."""
    keep = max(int(0.6 * n), 1)
    bottom = min(int(bottom_mm // step_mm), (n - keep) // 2)
    top = min(int(top_mm // step_mm), n - keep - bottom)
    return slice(bottom, n - top)


def _render_z_spacing(thickness_mm: float, spacing: float) -> float:
    """Slice spacing to render a thick-slice BIDS site on: whole samples per slab, <= 1.5 x
    the in-plane spacing (a midpoint-rule slab average), never finer than ``spacing``."""
    if thickness_mm <= spacing:
        return spacing
    per_slab = max(1, math.ceil(thickness_mm / (1.5 * spacing) - 1e-9))
    return thickness_mm / per_slab


def _steps(lattice: Lattice) -> tuple[int, int, int]:
    x, y, z = (max(1, round(_COARSE_MM / s)) for s in lattice.spacing)
    return x, y, z


def _slab_ratio(thickness_mm: float, z_spacing: float) -> float:
    """Samples per slab (an exact whole number when rendered for it), at least 1."""
    ratio = max(thickness_mm / z_spacing, 1.0)
    return float(round(ratio)) if abs(ratio - round(ratio)) < 1e-6 else ratio


def _crop_box(mask: npt.NDArray[np.bool_], margin: int) -> tuple[slice, slice, slice]:
    out = []
    for axis in range(3):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        lo, hi = (int(hits[0]), int(hits[-1])) if hits.size else (0, mask.shape[axis] - 1)
        out.append(slice(max(lo - margin, 0), hi + 1 + margin))
    return out[0], out[1], out[2]


def _anatomy(
    site: SiteParams, case: CaseParams, deformation: Deformation, spacing: float
) -> _Anatomy:
    """Warp the template into subject space (one ``grid_sample`` over the support)."""
    bids = site.preset.is_bids
    lo, hi = brain_box_mm()
    if bids:
        lo = (lo[0] - _HEAD_MM, lo[1] - _HEAD_MM, lo[2])
        hi = (hi[0] + _HEAD_MM, hi[1] + _HEAD_MM, hi[2] + _HEAD_MM)
    margin = 3.0 * case.spatial.warp_mm + case.spatial.ventricle_expansion_mm + 2.0
    z_spacing = _render_z_spacing(site.acquisition.slice_thickness_mm, spacing) if bids else 0.0
    lattice = subject_lattice(deformation, (lo, hi), spacing, margin, z_spacing)
    steps = _steps(lattice)
    coarse = deformation.coarse_pullback(lattice, steps)  # (cx, cy, cz, 3) template mm
    support = support_mask(coarse, bids, steps, lattice.shape)
    thinning = case.ageing.cortical_thinning_mm if case.ageing is not None else 0.0
    if bids:
        with thinned_source(spacing, thinning) as (tensor, source_lattice):
            grid = sampling_grid(coarse, source_lattice, steps, lattice.shape)  # (X, Y, Z, 3)
            maps = warp(tensor, grid, support)  # (4, X, Y, Z)
    else:
        tensor, source_lattice = source(spacing, False)
        grid = sampling_grid(coarse, source_lattice, steps, lattice.shape)
        maps = warp(tensor, grid, support)  # (3, X, Y, Z)
    gm, wm, csf = maps[0], maps[1], maps[2]
    brain = gm + wm + csf
    ml = float(np.prod(lattice.spacing)) / 1000.0
    measures = {"gm_ml": float(gm.sum()) * ml, "wm_ml": float(wm.sum()) * ml}
    measures["csf_ml"] = float(csf.sum()) * ml
    anatomy = _Anatomy(lattice, maps, brain, measures)
    if bids:
        fluid = csf > 0.05
        points = grid[fluid]  # (P, 3) normalised (z, y, x) template coordinates
        top = np.asarray(source_lattice.shape[::-1]) - 1
        index = np.clip(np.rint((points + 1.0) * 0.5 * top), 0, top).astype(np.intp)
        roi = ventricle_roi(int(source_lattice.resolution))[index[:, 2], index[:, 1], index[:, 0]]
        measures["ventricles_ml"] = float(csf[fluid][roi].sum()) * ml
        assert case.head is not None
        thickness = (case.head.csf_mm, case.head.skull_mm, case.head.scalp_mm)
        distance = maps[3] + np.float32(FAR_MM)
        voxel = spacing / case.spatial.scale
        anatomy.shell, anatomy.layers = head_layers(distance, brain, thickness, voxel)
    return anatomy


def _signals(site: SiteParams, case: CaseParams, tissues: tuple[Tissue, ...]) -> F32:
    """(M, T) signal of each tissue in each sequence of the site."""
    acq = site.acquisition
    return np.array(
        [
            [signal(case.tissues[t], s, 0.0, acq.field_t) for t in tissues]
            for s in acq.sequences.values()
        ],
        dtype=np.float32,
    )


def _mix(
    site: SiteParams, case: CaseParams, anatomy: _Anatomy, inclusions: tuple[Inclusion, ...]
) -> F32:
    """(M, X, Y, Z) noise-free signal of every sequence: partial-volume mix of tissues."""
    acq = site.acquisition
    shape = anatomy.lattice.shape
    signals = _signals(site, case, (Tissue.GM, Tissue.WM, Tissue.CSF))
    ideal = (signals @ anatomy.maps[:3].reshape(3, -1)).reshape(len(signals), *shape)
    if anatomy.shell is not None and anatomy.layers is not None:
        flat = ideal.reshape(len(signals), -1)
        flat[:, anatomy.shell] += _signals(site, case, _HEAD_TISSUES) @ anatomy.layers
    for m, seq in enumerate(acq.sequences.values()):
        for inc in inclusions:
            s = np.float32(signal(inc.relaxation, seq, inc.gd_mmol, acq.field_t))
            view = ideal[m][inc.box.slices]
            view += inc.fraction * s if inc.texture is None else inc.fraction * inc.texture * s
    return ideal


def _acquire(
    site: SiteParams,
    case: CaseParams,
    ideal: F32,
    lattice: Lattice,
    strip: npt.NDArray[np.bool_] | None,
) -> dict[Modality, F32]:
    """Thick slices, bias, gain and Rician noise; with ``strip``, back to iso and skull-strip."""
    acq = site.acquisition
    z_spacing = lattice.spacing[2]
    ratio = _slab_ratio(acq.slice_thickness_mm, z_spacing)
    x, y, z = lattice.axes()
    rng = np.random.default_rng(case.noise_seed)
    images: dict[Modality, F32] = {}
    where = log_bias = None
    for m, (modality, seq) in enumerate(acq.sequences.items()):
        thick, first = slice_average(ideal[m], ratio)
        if log_bias is None:
            z_thick = z[0] + z_spacing * (first + ratio * np.arange(thick.shape[2]))
            log_bias = bias_log(acq.bias_coefficients, x, y, z_thick)
            if strip is not None:  # noise is only needed where the brain will be kept
                where = ndimage.binary_dilation(thick > 0.0, structure=np.ones((1, 1, 3), bool))
        gain = acq.intensity_scale[modality] * case.gain[modality]
        thick *= np.exp(np.float32(acq.bias_gain[modality]) * log_bias) * np.float32(gain)
        sigma = acq.noise_fraction * signal(case.tissues[Tissue.WM], seq, 0.0, acq.field_t) * gain
        noisy = rician(thick, sigma, rng, where)
        if strip is not None:
            noisy = slices_to_iso(noisy, ratio, first, lattice.shape[2])
            noisy[~strip] = 0.0
        images[modality] = np.rint(noisy, out=noisy)  # scanners store whole numbers
    return images


def _finish_bids(
    site: SiteParams, anatomy: _Anatomy, images: dict[Modality, F32], lesion: F32
) -> RenderedCase:
    """Native thick-slice grid, FOV cut and storage orientation, with a matching affine."""
    acq = site.acquisition
    sx, sy, sz = anatomy.lattice.spacing
    ratio = _slab_ratio(acq.slice_thickness_mm, sz)
    thick_lesion, first = slice_average(lesion, ratio)
    labels = (thick_lesion >= 0.5).astype(np.uint8)
    step_z = sz * ratio
    keep = _fov(labels.shape[2], step_z, acq.fov_cut_top_mm, acq.fov_cut_bottom_mm)
    affine = anatomy.lattice.affine()
    affine[:3, 2] *= ratio
    affine[2, 3] += sz * first + step_z * keep.start
    measures = dict(anatomy.measures)
    measures["lesion_ml"] = float(labels[:, :, keep].sum()) * sx * sy * step_z / 1000.0
    out: dict[Modality, F32] = {}
    for modality, image in images.items():
        out[modality] = np.asarray(flip_to(image[:, :, keep], affine, acq.orientation)[0])
    flipped, out_affine = flip_to(labels[:, :, keep], affine, acq.orientation)
    label = np.asarray(flipped, dtype=np.uint8)
    return RenderedCase(MappingProxyType(out), label, out_affine, MappingProxyType(measures))


def _finish_brats(
    site: SiteParams,
    anatomy: _Anatomy,
    images: dict[Modality, F32],
    labels: U8,
    strip: npt.NDArray[np.bool_],
) -> RenderedCase:
    """FOV cut, then crop to the skull-stripped brain plus a margin (as BraTS data are)."""
    acq = site.acquisition
    spacing = anatomy.lattice.resolution
    keep = _fov(labels.shape[2], spacing, acq.fov_cut_top_mm, acq.fov_cut_bottom_mm)
    strip[:, :, : keep.start] = False
    strip[:, :, keep.stop :] = False
    labels[~strip] = 0
    for image in images.values():
        image[~strip] = 0.0
    box = _crop_box(strip, _GLIOMA_CROP_VOXELS)
    affine = anatomy.lattice.affine()
    affine[:3, 3] += spacing * np.array([s.start for s in box])
    cropped = {m: np.ascontiguousarray(v[box]) for m, v in images.items()}
    label = np.ascontiguousarray(labels[box])
    measures = dict(anatomy.measures)
    ml = spacing**3 / 1000.0
    for name, values in (("wt_ml", (1, 2, 4)), ("tc_ml", (1, 4)), ("et_ml", (4,))):
        measures[name] = float(np.isin(label, values).sum()) * ml
    return RenderedCase(MappingProxyType(cropped), label, affine, MappingProxyType(measures))


def render_case(site: SiteParams, case: CaseParams, spacing: float) -> RenderedCase:
    """Render ``case`` at ``spacing`` mm (deterministic), its label map drawn with the site's
    annotation habit, with its QC problem if it has one."""
    glioma = case.glioma is not None
    rendered = _render(site, case, spacing)
    if site.annotation != Annotation():
        label = annotate(rendered.label, rendered.affine, site.annotation, glioma=glioma)
        measures = dict(rendered.measures) | label_measures(label, rendered.affine, glioma)
        rendered = RenderedCase(rendered.images, label, rendered.affine, MappingProxyType(measures))
    if case.qc_problem is None:
        return rendered
    planted = plant(
        case.qc_problem,
        rendered.images,
        rendered.label,
        rendered.affine,
        spacing=spacing,
        noise_seed=case.noise_seed,
        label_follows_last=not glioma,
    )
    measures = dict(rendered.measures) | label_measures(planted.label, planted.affine, glioma)
    return RenderedCase(
        MappingProxyType(planted.images),
        planted.label,
        planted.affine,
        MappingProxyType(measures),
    )


def render_brain_mask(site: SiteParams, case: CaseParams, spacing: float) -> npt.NDArray[np.bool_]:
    """The true brain of a BIDS (full-head) case, on the grid :func:`render_case` writes.

    Brain = GM + WM + CSF fraction >= 0.5 before pathology (the rule that skull-strips the glioma
    preset), averaged over the site's thick slices, cut to its field of view and stored in its
    orientation, so it matches ``render_case(site, case, spacing).images`` voxel for voxel.
    Skull, scalp and the extra-axial CSF around the brain are outside it.

    Examples
    --------
    >>> from neurofed.phantom.config import PhantomConfig
    >>> from neurofed.phantom.site import sample_site
    >>> from neurofed.phantom.case import sample_case
    >>> config = PhantomConfig(preset="brain-age", sites=1, cases=1, seed=0, spacing=4.0)
    >>> site = sample_site(config, 1)
    >>> case = sample_case(config, site, 1)
    >>> rendered, brain = render_case(site, case, 4.0), render_brain_mask(site, case, 4.0)
    >>> brain.shape == rendered.label.shape
    True
    >>> ml = float(brain.sum() * abs(np.linalg.det(rendered.affine[:3, :3]))) / 1000.0
    >>> 1200.0 < ml < 2600.0
    True
    """
    if not site.preset.is_bids:
        raise ValueError(
            f"render_brain_mask: preset {site.preset.value!r} is skull-stripped already; "
            "its brain is where the written images are non-zero"
        )
    if case.qc_problem is not None:
        raise ValueError(
            f"render_brain_mask: case {case.subject_id} carries the planted QC problem "
            f"{case.qc_problem.value!r}, which may change its grid; use a case without one"
        )
    anatomy = _anatomy(site, case, Deformation(case.spatial), spacing)
    written = _finish_bids(site, anatomy, {}, anatomy.brain)
    return np.asarray(written.label, dtype=bool)


def _render(site: SiteParams, case: CaseParams, spacing: float) -> RenderedCase:
    deformation = Deformation(case.spatial)
    params = case.glioma
    if params is None:
        anatomy = _anatomy(site, case, deformation, spacing)
        lattice = anatomy.lattice
        inclusions, lesion = draw_lesions(
            case.lesions, deformation, lattice, anatomy.gm, anatomy.wm, case.tissues
        )
        ideal = _mix(site, case, anatomy, inclusions)
        del inclusions
        images = _acquire(site, case, ideal, lattice, strip=None)
        return _finish_bids(site, anatomy, images, lesion)
    centre = deformation.forward(np.asarray([params.centre_mm]))[0]
    radius = 1.5 * params.radius_mm * case.spatial.scale
    where = (float(centre[0]), float(centre[1]), float(centre[2]))
    deformation = Deformation(case.spatial, MassEffect(where, radius, params.mass_effect))
    anatomy = _anatomy(site, case, deformation, spacing)
    lattice = anatomy.lattice
    drawing = draw_glioma(
        params, centre, case.spatial.scale, lattice, anatomy.gm, anatomy.wm, case.tissues
    )
    labels = np.zeros(lattice.shape, dtype=np.uint8)
    labels[drawing.box.slices] = drawing.labels
    ideal = _mix(site, case, anatomy, drawing.inclusions)
    del drawing
    strip = anatomy.brain >= 0.5
    images = _acquire(site, case, ideal, lattice, strip)
    return _finish_brats(site, anatomy, images, labels, strip)
