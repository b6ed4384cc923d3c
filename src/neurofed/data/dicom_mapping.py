"""Which DICOM series become which modality: a mapping file the data custodian can read and edit.

A :class:`DicomMapping` holds skip patterns and, in order, one rule per modality: regular
expressions searched case-insensitively in a series' SeriesDescription, then (when nothing there
decides) its ProtocolName. The first rule with a ``match`` pattern found and no ``exclude``
pattern found gives the modality; a series that no rule matches gets none: it is reported and
skipped, never guessed. :meth:`DicomMapping.to_toml` writes the mapping as commented TOML (with
what it makes of the series found), :meth:`DicomMapping.load` reads an edited one back.

Examples
--------
>>> mapping = DicomMapping.default()
>>> [mapping.classify(d).modality for d in ("T1 MPRAGE +C", "t2_flair_tra", "T2 TSE ax")]
[<Modality.T1CE: 'T1CE'>, <Modality.FLAIR: 'FLAIR'>, <Modality.T2: 'T2'>]
>>> mapping.classify("localizer").skipped, mapping.classify("DTI 30 dir").modality is None
(True, True)
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from neurofed.data.modalities import normalise_modality
from neurofed.keys import Modality

__all__ = [
    "MAPPING_FILE",
    "MAPPING_VERSION",
    "DicomMapping",
    "FoundSeries",
    "MappingError",
    "MappingRule",
    "SeriesMatch",
]

#: The name the docs suggest for a site's mapping file.
MAPPING_FILE = "dicom-mapping.toml"
MAPPING_VERSION = 1


class MappingError(ValueError):
    """A mapping file cannot be used; the message names the file, the field and the fix."""


# --- the mapping ------------------------------------------------------------------------------

_B, _E = r"(?<![a-z0-9])", r"(?![a-z0-9])"  # word edges where "_" and "-" separate words too
_CONTRAST = rf"(\+|{_B}(gd|gad|gado|gadolinium|contrast|post|postcontrast|ce|km|mdc){_E})"
_DEFAULT_SKIP = (
    rf"{_B}(locali[sz]er|loc|scout|survey|aahscout|calibration)",
    rf"{_B}(mpr|mip|minip|reformat|reformatted){_E}",
    rf"{_B}(dwi|dti|diff|diffusion|adc|trace|tracew|perfusion|pwi|dsc|dce|asl|bold|fmri){_E}",
    rf"{_B}(swi|swan|phase|pha|t2\*|t2star|t2_star|fieldmap|b0|map|maps|pd|pdw|tof|mra){_E}",
)
_DEFAULT_RULES = (
    (
        Modality.T1CE,
        (
            rf"{_B}t1 ?w?[ _-]?(c|ce|gd|post){_E}",
            rf"{_B}t1.*{_CONTRAST}",
            rf"{_B}(post|postcontrast|gd|gado|contrast|ce){_E}.*{_B}t1",
            rf"{_B}mp-?rage.*{_CONTRAST}",
        ),
        (rf"{_B}(pre|precontrast|native|nativ|non[ _-]?contrast|w/o|wo|without){_E}",),
    ),
    (
        Modality.FLAIR,
        ("flair", rf"{_B}(t2f|tirm|dark[ _-]?fluid){_E}"),
        (_CONTRAST, rf"{_B}t1{_E}"),
    ),
    (
        Modality.T2,
        (rf"{_B}t2 ?w?(?![a-z0-9*])", rf"{_B}t2[ _-]?weighted"),
        ("flair", rf"{_B}(t2f|tirm|dark[ _-]?fluid){_E}", _CONTRAST),
    ),
    (
        Modality.T1,
        (rf"{_B}t1 ?w?{_E}", rf"{_B}t1[ _-]?weighted", rf"{_B}(mp-?rage|f?spgr|bravo){_E}"),
        (rf"{_B}(post|postcontrast|gd|gad|gado|c|ce){_E}", r"\+", rf"{_B}(mp2rage|t1rho){_E}"),
    ),
)


@dataclass(frozen=True)
class FoundSeries:
    """What a custodian may see of one series: no patient or DICOM identifier."""

    description: str  # SeriesDescription
    protocol: str  # ProtocolName
    series_number: int | None
    files: int
    image_types: tuple[str, ...] = ()


@lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


def _search(patterns: Iterable[str], text: str) -> str | None:
    """The first of ``patterns`` found in ``text``."""
    return next((p for p in patterns if _regex(p).search(text)), None)


@dataclass(frozen=True)
class MappingRule:
    """Series whose text matches a ``match`` pattern and no ``exclude`` pattern are ``modality``."""

    modality: Modality
    match: tuple[str, ...]
    exclude: tuple[str, ...] = ()


@dataclass(frozen=True)
class SeriesMatch:
    """What a mapping makes of one series: a modality, or why it is skipped."""

    modality: Modality | None
    reason: str
    skipped: bool = False  # left out on purpose (a skip pattern), rather than unmatched


@dataclass(frozen=True)
class DicomMapping:
    """Which series become which modality: skip patterns, then rules in order, first match wins.

    Patterns are Python regular expressions searched case-insensitively in the SeriesDescription,
    then (when nothing there decides) the ProtocolName.
    """

    rules: tuple[MappingRule, ...]
    skip: tuple[str, ...] = ()
    skip_image_types: tuple[str, ...] = ()
    source: str = "built-in defaults"

    @classmethod
    def default(cls) -> DicomMapping:
        """T1w, T1 post-contrast (T1c / T1Gd / +C / post), T2w and FLAIR from common names."""
        rules = tuple(MappingRule(m, match, exclude) for m, match, exclude in _DEFAULT_RULES)
        return cls(rules, _DEFAULT_SKIP, ("LOCALIZER", "MPR", "MIP", "PROJECTION IMAGE"))

    @classmethod
    def load(cls, path: Path) -> DicomMapping:
        """Read a mapping TOML file (as :meth:`to_toml` writes it).

        Raises
        ------
        MappingError
            The file is missing or not TOML, or a field is wrong (the message names it).
        """
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise MappingError(
                f"{path}: not a readable TOML mapping ({exc}); fix it, or write a fresh one "
                "with `neurofed site import-dicom DICOM_DIR --write-mapping FILE`"
            ) from exc
        return cls._parse(data, str(path))

    @classmethod
    def _parse(cls, data: Mapping[str, Any], source: str) -> DicomMapping:
        def fail(where: str, value: object, fix: str) -> MappingError:
            return MappingError(f"{source}: {where} = {value!r}: {fix}")

        def patterns(value: object, where: str) -> tuple[str, ...]:
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise fail(where, value, "give a list of strings, e.g. ['t1', 'mprage']")
            for pattern in value:
                try:
                    _regex(pattern)
                except re.error as exc:
                    raise fail(where, pattern, f"not a regular expression ({exc})") from exc
            return tuple(value)

        if data.get("format_version", MAPPING_VERSION) != MAPPING_VERSION:
            raise fail(
                "format_version", data["format_version"], f"this neurofed reads {MAPPING_VERSION}"
            )
        skip = data.get("skip", {})
        if not isinstance(skip, dict):
            raise fail("skip", skip, "make it a table: [skip] with patterns = [...]")
        rules = []
        tables = data.get("modality", [])
        if not isinstance(tables, list) or not tables:
            raise fail("modality", tables, "add [[modality]] tables with name and match")
        for index, table in enumerate(tables):
            where = f"[[modality]] #{index + 1}"
            name = table.get("name") if isinstance(table, dict) else None
            modality = normalise_modality(name) if isinstance(name, str) else None
            if modality is None:
                names = ", ".join(m.value for m in Modality)
                raise fail(f"{where} name", name, f"give one of {names}")
            match = patterns(table.get("match"), f"{where} match")
            rules.append(MappingRule(modality, match, patterns(table.get("exclude", []), where)))
        return cls(
            tuple(rules),
            patterns(skip.get("patterns", []), "[skip] patterns"),
            tuple(t.upper() for t in patterns(skip.get("image_types", []), "[skip] image_types")),
            source,
        )

    def classify(
        self, description: str, protocol: str = "", image_types: Sequence[str] = ()
    ) -> SeriesMatch:
        """The modality of a series, or why it has none."""
        hit = next((t for t in image_types if t.upper() in self.skip_image_types), None)
        if hit is not None:
            return SeriesMatch(None, f"ImageType {hit} is skipped by the mapping", skipped=True)
        for name, text in (("SeriesDescription", description), ("ProtocolName", protocol)):
            if not text.strip():
                continue
            pattern = _search(self.skip, text)
            if pattern is not None:
                return SeriesMatch(None, f"{name} matches skip pattern {pattern!r}", skipped=True)
            for rule in self.rules:
                found = _search(rule.match, text)
                if found is not None and _search(rule.exclude, text) is None:
                    why = f"{name} matches {rule.modality.value} pattern {found!r}"
                    return SeriesMatch(rule.modality, why)
        return SeriesMatch(None, "no mapping rule matches its SeriesDescription or ProtocolName")

    def to_toml(self, found: Sequence[FoundSeries] = ()) -> str:
        """The mapping as TOML with comments, then (as comments) what it makes of ``found``."""
        lines = [
            "# neurofed DICOM import: which DICOM series become which modality.",
            "# Edit it, then run `neurofed site import-dicom DICOM_DIR --out SITE --mapping FILE`.",
            "#",
            "# For each series neurofed looks at its SeriesDescription, then (if nothing decided",
            "# there) its ProtocolName. A series whose ImageType holds a [skip] image_types value,",
            "# or whose text matches a [skip] pattern, is left out. Otherwise the [[modality]]",
            "# tables are tried in order: the first with a `match` pattern found in the text and",
            "# no `exclude` pattern found decides. A series nothing matches is listed and skipped,",
            "# never guessed. Patterns are Python regular expressions, case-insensitive;",
            "# (?<![a-z0-9]) and (?![a-z0-9]) mark word edges where _ and - separate words too.",
            "# Modalities: T1 (T1w), T1CE (T1 post-contrast), T2 (T2w), FLAIR.",
            f"format_version = {MAPPING_VERSION}",
            "",
            "[skip]",
            f"image_types = {_toml_list(self.skip_image_types)}",
            f"patterns = {_toml_list(self.skip)}",
        ]
        for rule in self.rules:
            lines += ["", "[[modality]]", f'name = "{rule.modality.value}"']
            lines += [f"match = {_toml_list(rule.match)}", f"exclude = {_toml_list(rule.exclude)}"]
        if found:
            lines += [
                "",
                "# Series found (SeriesDescription | ProtocolName: series, files -> result)",
            ]
            groups: dict[tuple[str, str, tuple[str, ...]], list[FoundSeries]] = {}
            for series in found:
                key = (series.description, series.protocol, series.image_types)
                groups.setdefault(key, []).append(series)
            for (description, protocol, image_types), members in sorted(groups.items()):
                match = self.classify(description, protocol, image_types)
                result = match.modality.value if match.modality else f"skipped: {match.reason}"
                files = sum(s.files for s in members)
                text = f"{description!r} | {protocol!r}: {len(members)} series, {files} files"
                lines.append(f"#   {text} -> {result}".replace("\n", " "))
        return "\n".join(lines) + "\n"


def _toml_list(values: Iterable[str]) -> str:
    items = [f"'{v}'" if "'" not in v and "\n" not in v else json.dumps(v) for v in values]
    if sum(len(i) + 2 for i in items) < 80:
        return f"[{', '.join(items)}]"
    return "[\n" + "".join(f"    {i},\n" for i in items) + "]"
