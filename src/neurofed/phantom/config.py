"""What a phantom federation looks like: the validated configuration and the run summary.

Examples
--------
>>> config = PhantomConfig(preset="glioma", sites=2, cases=3, seed=7, spacing=4.0)
>>> config.preset is PhantomPreset.GLIOMA, [m.value for m in config.modalities]
(True, ['T1', 'T1CE', 'T2', 'FLAIR'])
>>> PhantomConfig(preset="glioma", sites=2, cases=3, seed=7, unlabelled_sites=(3,))
Traceback (most recent call last):
...
ValueError: PhantomConfig.unlabelled_sites = (3,): site 3 does not exist; ...
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from neurofed.keys import ClinicalField, Modality, PhantomPreset

__all__ = [
    "MAX_CASES",
    "MAX_SITES",
    "PRESET_FIELDS",
    "PRESET_MODALITIES",
    "PhantomConfig",
    "PhantomPreset",
    "PhantomSummary",
]

MAX_SITES = 999  # BraTS ids are site * 1000 + case: five digits below site 100, then six
MAX_CASES = 999
#: The random stream of long-tailed site sizes (apart from every other draw of a site).
_TAIL_STREAM = 0x7A11


_M, _F = Modality, ClinicalField
PRESET_MODALITIES: Mapping[PhantomPreset, tuple[Modality, ...]] = MappingProxyType(
    {
        PhantomPreset.GLIOMA: (_M.T1, _M.T1CE, _M.T2, _M.FLAIR),
        PhantomPreset.MS: (_M.T1, _M.T2, _M.FLAIR),
        PhantomPreset.BRAIN_AGE: (_M.T1, _M.FLAIR),
    }
)
#: Clinical fields each preset writes (and may therefore leave unknown at a site).
PRESET_FIELDS: Mapping[PhantomPreset, tuple[ClinicalField, ...]] = MappingProxyType(
    {
        PhantomPreset.GLIOMA: (_F.AGE, _F.SEX, _F.GRADE, _F.IDH, _F.CODEL_1P19Q, _F.MGMT),
        PhantomPreset.MS: (_F.AGE, _F.SEX, _F.SDMT),
        PhantomPreset.BRAIN_AGE: (_F.AGE, _F.SEX, _F.SDMT),
    }
)


def _bad(name: str, value: object, why: str) -> ValueError:
    return ValueError(f"PhantomConfig.{name} = {value!r}: {why}")


def _preset(value: object) -> PhantomPreset:
    try:
        return PhantomPreset(str(value))
    except ValueError:
        names = [p.value for p in PhantomPreset]
        close = difflib.get_close_matches(str(value), names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise _bad("preset", value, f"{hint}choose one of {', '.join(names)}") from None


@dataclass(frozen=True)
class PhantomConfig:
    """A phantom federation, validated on construction.

    Attributes
    ----------
    preset:
        Study the sites imitate (:class:`PhantomPreset`).
    sites, cases:
        Number of sites (1..999) and cases per site (1..999).
    seed:
        Same seed, same bytes.
    spacing:
        Output grid in mm: 1 = full MNI 1 mm, 2 = quick; tests use 4.
    unlabelled_sites:
        Sites (1-based, as in ``site-<k>``) written without segmentations.
    missing_markers:
        Site (1-based) -> clinical fields left unknown at that site.
    broken_per_site:
        Cases per site deliberately broken for ``neurofed site check`` (see ``phantom.json``).
    qc_problems_per_site:
        Readable cases per site given a quality problem for ``neurofed site qc`` (low SNR, a
        misregistered modality, a cropped field of view, thick slices; see ``phantom.json``).
    missing_modalities:
        Site (1-based) -> modalities that site never acquired (their files are not written),
        as a hospital whose protocol has no FLAIR.
    site_cases:
        Site (1-based) -> its number of cases, instead of ``cases`` (e.g. a larger held-out
        site to evaluate on).
    long_tail:
        Site sizes with a long tail, as in real federations (FeTS: 71 sites from a handful of
        cases to several hundred): each site not in ``site_cases`` gets ``cases × e^Z`` cases,
        Z ~ N(0, 1) drawn from the seed (so ``cases`` is the median size), at least enough for
        its broken and QC cases plus one. ``False``: every site has ``cases`` — the default
        here, for programs that choose their sites' sizes (the demo, the benchmarks, tests);
        ``neurofed phantom`` defaults to ``True``.
    annotation_styles:
        Each labelled site's annotators have a habit (on by default, as in every real
        federation): masks drawn systematically looser or tighter, and for MS small lesions
        left out (:class:`~neurofed.phantom.site.Annotation`; recorded in ``phantom.json``).
        ``False``: every site's masks are the phantom's truth.
    """

    preset: PhantomPreset
    sites: int
    cases: int
    seed: int
    spacing: float = 1.0
    unlabelled_sites: tuple[int, ...] = ()
    missing_markers: Mapping[int, tuple[ClinicalField, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    broken_per_site: int = 0
    qc_problems_per_site: int = 0
    missing_modalities: Mapping[int, tuple[Modality, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    site_cases: Mapping[int, int] = field(default_factory=lambda: MappingProxyType({}))
    long_tail: bool = False
    annotation_styles: bool = True

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "preset", _preset(self.preset))
        for name, top in (("sites", MAX_SITES), ("cases", MAX_CASES)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= top:
                raise _bad(name, value, f"must be a whole number in 1..{top}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise _bad("seed", self.seed, "must be a whole number >= 0, e.g. seed=0")
        if not isinstance(self.spacing, int | float) or not 1.0 <= float(self.spacing) <= 8.0:
            raise _bad("spacing", self.spacing, "must lie in 1..8 mm (1 full, 2 quick, 4 tests)")
        set_(self, "spacing", float(self.spacing))
        set_(self, "unlabelled_sites", tuple(sorted({int(s) for s in self.unlabelled_sites})))
        for site in self.unlabelled_sites:
            self._check_site("unlabelled_sites", self.unlabelled_sites, site)
        missing: dict[int, tuple[ClinicalField, ...]] = {}
        allowed = PRESET_FIELDS[self.preset]
        for site, names in dict(self.missing_markers).items():
            self._check_site("missing_markers", dict(self.missing_markers), int(site))
            fields_: list[ClinicalField] = []
            for name in (names,) if isinstance(names, str) else names:
                try:
                    marker = ClinicalField(name)
                except ValueError:
                    marker = None
                if marker is None or marker not in allowed:
                    raise _bad(
                        "missing_markers",
                        dict(self.missing_markers),
                        f"{name!r} is not written by the {self.preset.value} preset; "
                        f"choose from {', '.join(f.value for f in allowed)}",
                    )
                fields_.append(marker)
            missing[int(site)] = tuple(f for f in allowed if f in fields_)
        set_(self, "missing_markers", MappingProxyType(dict(sorted(missing.items()))))
        absent: dict[int, tuple[Modality, ...]] = {}
        for site, given in dict(self.missing_modalities).items():
            self._check_site("missing_modalities", dict(self.missing_modalities), int(site))
            wanted = {str(n).upper() for n in ((given,) if isinstance(given, str) else given)}
            unknown = wanted - {m.value.upper() for m in self.modalities}
            if unknown or len(wanted) >= len(self.modalities):
                raise _bad(
                    "missing_modalities",
                    dict(self.missing_modalities),
                    f"a site may lack some of {', '.join(m.value for m in self.modalities)} "
                    "(not all of them)",
                )
            absent[int(site)] = tuple(m for m in self.modalities if m.value.upper() in wanted)
        set_(self, "missing_modalities", MappingProxyType(dict(sorted(absent.items()))))
        sizes: dict[int, int] = {}
        for site, count in dict(self.site_cases).items():
            self._check_site("site_cases", dict(self.site_cases), int(site))
            if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_CASES:
                raise _bad("site_cases", dict(self.site_cases), f"counts lie in 1..{MAX_CASES}")
            sizes[int(site)] = count
        set_(self, "site_cases", MappingProxyType(dict(sorted(sizes.items()))))
        for name in ("long_tail", "annotation_styles"):
            if not isinstance(getattr(self, name), bool):
                raise _bad(name, getattr(self, name), "must be true or false")
        smallest = min(self.cases_at(k) for k in range(1, self.sites + 1))
        b = self.broken_per_site
        if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b <= smallest:
            bound = (
                f"cases ({smallest})"
                if smallest == self.cases
                else f"{smallest} (the smallest site)"
            )
            raise _bad("broken_per_site", b, f"must be a whole number in 0..{bound}")
        q, room = self.qc_problems_per_site, smallest - b
        if isinstance(q, bool) or not isinstance(q, int) or not 0 <= q <= room:
            raise _bad(
                "qc_problems_per_site",
                q,
                f"must be a whole number in 0..{room} (cases minus broken cases: problems are "
                "planted in readable cases)",
            )

    def _check_site(self, name: str, value: object, site: int) -> None:
        if not 1 <= site <= self.sites:
            raise _bad(
                name,
                value,
                f"site {site} does not exist; sites are numbered 1..{self.sites} "
                f"(site-1 … site-{self.sites})",
            )

    def cases_at(self, site: int) -> int:
        """The number of cases of site ``site`` (1-based)."""
        if site in self.site_cases:
            return int(self.site_cases[site])
        if not self.long_tail:
            return self.cases
        z = float(np.random.default_rng([self.seed, site, _TAIL_STREAM]).standard_normal())
        floor = self.broken_per_site + self.qc_problems_per_site + 1
        return int(min(MAX_CASES, max(floor, round(self.cases * math.exp(z)))))

    @property
    def modalities(self) -> tuple[Modality, ...]:
        return PRESET_MODALITIES[self.preset]

    def to_json(self) -> dict[str, Any]:
        return {
            "preset": self.preset.value,
            "sites": self.sites,
            "cases": self.cases,
            "seed": self.seed,
            "spacing": self.spacing,
            "unlabelled_sites": list(self.unlabelled_sites),
            "missing_markers": {
                str(k): [f.value for f in v] for k, v in self.missing_markers.items()
            },
            "broken_per_site": self.broken_per_site,
            "qc_problems_per_site": self.qc_problems_per_site,
            "missing_modalities": {
                str(k): [m.value for m in v] for k, v in self.missing_modalities.items()
            },
            "site_cases": {str(k): v for k, v in self.site_cases.items()},
            "long_tail": self.long_tail,
            "annotation_styles": self.annotation_styles,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PhantomConfig:
        return cls(
            preset=PhantomPreset(data["preset"]),
            sites=int(data["sites"]),
            cases=int(data["cases"]),
            seed=int(data["seed"]),
            spacing=float(data.get("spacing", 1.0)),
            unlabelled_sites=tuple(int(s) for s in data.get("unlabelled_sites", ())),
            missing_markers={
                int(k): tuple(ClinicalField(f) for f in v)
                for k, v in data.get("missing_markers", {}).items()
            },
            broken_per_site=int(data.get("broken_per_site", 0)),
            qc_problems_per_site=int(data.get("qc_problems_per_site", 0)),
            missing_modalities={
                int(k): tuple(Modality(m) for m in v)
                for k, v in data.get("missing_modalities", {}).items()
            },
            site_cases={int(k): int(v) for k, v in data.get("site_cases", {}).items()},
            long_tail=bool(data.get("long_tail", False)),
            # a phantom.json written before annotation styles existed had none
            annotation_styles=bool(data.get("annotation_styles", False)),
        )


@dataclass(frozen=True)
class PhantomSummary:
    """What :func:`~neurofed.phantom.generate_federation` wrote and how long it took."""

    root: Path
    site_dirs: tuple[Path, ...]
    num_cases: int
    seconds: float
    manifest: Path  # phantom.json: config, site and case parameters, broken cases

    @property
    def seconds_per_case(self) -> float:
        return self.seconds / max(self.num_cases, 1)
