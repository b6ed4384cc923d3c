"""``neurofed phantom``: write a synthetic multi-site federation in the real layouts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from neurofed.cli.console import console, print_error, progress_bar
from neurofed.keys import ClinicalField, Modality, PhantomPreset

__all__ = ["parse_missing_markers", "phantom"]

T = TypeVar("T")


def _site_pairs(
    values: list[str], example: str, convert: Callable[[str], T], choices: str = ""
) -> list[tuple[int, T]]:
    """``SITE:VALUE`` options as ``(site, convert(VALUE))``; a malformed one names the format
    (``example``, e.g. ``SITE:MARKER such as 2:mgmt``) and the ``choices``."""
    pairs = []
    for value in values:
        site, sep, rest = value.partition(":")
        try:
            if not sep:
                raise ValueError
            pairs.append((int(site), convert(rest.strip())))
        except ValueError as exc:
            hint = f" ({choices})" if choices else ""
            raise typer.BadParameter(f"{value!r}: expected {example}{hint}") from exc
    return pairs


def _grouped(pairs: list[tuple[int, T]]) -> dict[int, tuple[T, ...]]:
    out: dict[int, list[T]] = {}
    for site, item in pairs:
        out.setdefault(site, []).append(item)
    return {site: tuple(items) for site, items in out.items()}


def parse_missing_markers(values: list[str]) -> dict[int, tuple[ClinicalField, ...]]:
    """Parse ``SITE:MARKER`` pairs (e.g. ``2:mgmt``) into site -> markers left unknown."""
    names = ", ".join(f.value for f in ClinicalField)
    pairs = _site_pairs(
        values,
        "SITE:MARKER such as 2:mgmt",
        lambda m: ClinicalField(m.lower()),
        f"markers: {names}",
    )
    return _grouped(pairs)


def parse_missing_modalities(values: list[str]) -> dict[int, tuple[Modality, ...]]:
    """Parse ``SITE:MODALITY`` pairs (e.g. ``2:FLAIR``) into site -> modalities not acquired."""
    names = ", ".join(m.value for m in Modality)
    pairs = _site_pairs(
        values,
        "SITE:MODALITY such as 2:FLAIR",
        lambda m: Modality(m.upper()),
        f"modalities: {names}",
    )
    return _grouped(pairs)


def parse_site_cases(values: list[str]) -> dict[int, int]:
    """Parse ``SITE:CASES`` pairs (e.g. ``4:30``) into site -> number of cases."""
    return dict(_site_pairs(values, "SITE:CASES such as 4:30", int))


def phantom(
    out: Annotated[Path, typer.Option(help="Folder to write site-1 … site-N into.")],
    preset: Annotated[PhantomPreset, typer.Option(help="Which study the sites look like.")] = (
        PhantomPreset.GLIOMA
    ),
    sites: Annotated[int, typer.Option(min=1, help="Number of sites.")] = 3,
    cases: Annotated[
        int, typer.Option(min=1, help="Cases per site (with --long-tail: the median site's).")
    ] = 10,
    seed: Annotated[int, typer.Option(help="Same seed, same files.")] = 0,
    spacing: Annotated[float, typer.Option(help="Output grid in mm (1 full, 2 quick).")] = 2.0,
    unlabelled_site: Annotated[
        list[int] | None, typer.Option(help="A site (1-based) written without segmentations.")
    ] = None,
    missing_marker: Annotated[
        list[str] | None, typer.Option(help="SITE:MARKER left unknown at a site, e.g. 2:mgmt.")
    ] = None,
    broken: Annotated[int, typer.Option(min=0, help="Broken cases per site (for site check).")] = 0,
    qc_problems: Annotated[
        int,
        typer.Option(
            min=0,
            help="Cases per site with a planted quality problem (for site qc): low SNR, "
            "misregistered FLAIR, cropped field of view, thick slices, in turn.",
        ),
    ] = 0,
    missing_modality: Annotated[
        list[str] | None,
        typer.Option(help="SITE:MODALITY a site never acquired (no such files), e.g. 2:FLAIR."),
    ] = None,
    site_cases: Annotated[
        list[str] | None,
        typer.Option(help="SITE:CASES, a site with its own number of cases, e.g. 4:30."),
    ] = None,
    long_tail: Annotated[
        bool,
        typer.Option(
            "--long-tail/--equal-sizes",
            help="Site sizes with a long tail as in real federations (a few sites with many "
            "cases, many with few); --cases is then the median size. --equal-sizes gives "
            "every site --cases.",
        ),
    ] = True,
    annotation_styles: Annotated[
        bool,
        typer.Option(
            "--annotation-styles/--same-annotators",
            help="Each labelled site draws its masks with its own habit (looser or tighter "
            "borders; MS: small lesions missed), as real sites do; --same-annotators writes "
            "the phantom's truth everywhere.",
        ),
    ] = True,
    workers: Annotated[int, typer.Option(min=1, help="Processes to use.")] = 1,
) -> None:
    """Generate a realistic multi-site brain-MRI phantom (offline, deterministic)."""
    from neurofed.phantom import PhantomConfig, generate_federation

    try:
        config = PhantomConfig(
            preset=preset,
            sites=sites,
            cases=cases,
            seed=seed,
            spacing=spacing,
            unlabelled_sites=tuple(unlabelled_site or ()),
            missing_markers=parse_missing_markers(missing_marker or []),
            broken_per_site=broken,
            qc_problems_per_site=qc_problems,
            missing_modalities=parse_missing_modalities(missing_modality or []),
            site_cases=parse_site_cases(site_cases or []),
            long_tail=long_tail,
            annotation_styles=annotation_styles,
        )
    except ValueError as exc:
        print_error(exc)
        raise typer.Exit(2) from exc
    with progress_bar(f"phantom {preset.value}") as progress:
        summary = generate_federation(config, out, workers=workers, progress=progress)
    sizes = [config.cases_at(k) for k in range(1, config.sites + 1)]
    shown = f"× {cases} cases" if len(set(sizes)) == 1 else f"({sum(sizes)} cases)"
    console.print(
        f"wrote {len(summary.site_dirs)} sites {shown} to {out} "
        f"in {summary.seconds:.1f} s ({summary.seconds_per_case:.2f} s/case)"
    )
    for site_dir, size in zip(summary.site_dirs, sizes, strict=True):
        console.print(f"  {site_dir} ({size} cases)")
    console.print(f"next: neurofed site check {summary.site_dirs[0]}")
