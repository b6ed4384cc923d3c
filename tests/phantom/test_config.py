"""PhantomConfig validates early and names the field, the value and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from neurofed.data.layouts.brats import BratsReader
from neurofed.keys import ClinicalField, Layout, Modality
from neurofed.phantom import PhantomConfig, PhantomPreset
from neurofed.phantom.case import subject_id


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"sites": 0}, r"PhantomConfig.sites = 0: must be a whole number in 1..999"),
        ({"cases": 1000}, r"PhantomConfig.cases = 1000: must be a whole number in 1..999"),
        ({"seed": -1}, r"PhantomConfig.seed = -1: must be a whole number >= 0"),
        ({"spacing": 0.5}, r"PhantomConfig.spacing = 0.5: must lie in 1..8 mm"),
        ({"preset": "gliomaa"}, r"preset = 'gliomaa': did you mean 'glioma'\?"),
        ({"unlabelled_sites": (3,)}, r"site 3 does not exist; sites are numbered 1..2"),
        ({"missing_markers": {1: ("sdmt",)}}, r"'sdmt' is not written by the glioma preset"),
        ({"missing_markers": {0: ("mgmt",)}}, r"site 0 does not exist"),
        ({"broken_per_site": 4}, r"broken_per_site = 4: must be a whole number in 0..cases \(3\)"),
    ],
)
def test_invalid_config_names_field_value_and_fix(changes: dict, message: str) -> None:
    # Prepare
    base = {"preset": "glioma", "sites": 2, "cases": 3, "seed": 0}
    # Execute / Assert
    with pytest.raises(ValueError, match=message):
        PhantomConfig(**(base | changes))


def test_config_normalises_and_round_trips() -> None:
    config = PhantomConfig(
        preset="brain-age",
        sites=3,
        cases=2,
        seed=9,
        spacing=2,
        unlabelled_sites=(3, 1, 3),
        missing_markers={2: ("sdmt", "age")},
        broken_per_site=1,
    )
    assert config.preset is PhantomPreset.BRAIN_AGE
    assert config.spacing == 2.0
    assert config.unlabelled_sites == (1, 3)
    assert config.missing_markers[2] == (ClinicalField.AGE, ClinicalField.SDMT)
    assert config.modalities == (Modality.T1, Modality.FLAIR)
    assert PhantomConfig.from_json(config.to_json()) == config


def test_glioma_ids_beyond_site_99_are_unique_and_read_by_the_brats_layout(
    tmp_path: Path,
) -> None:
    # Prepare: the files of two cases whose ids would collide if the digits were cut
    ids = [subject_id(PhantomPreset.GLIOMA, 1, 100), subject_id(PhantomPreset.GLIOMA, 100, 1)]
    for case in ids:
        for part in ("t1", "t1ce", "t2", "flair", "seg"):
            (tmp_path / case).mkdir(exist_ok=True)
            (tmp_path / case / f"{case}_{part}.nii.gz").write_bytes(b"")
    # Execute
    read = BratsReader(Layout.BRATS_2021).read(tmp_path)
    # Assert
    assert ids == ["BraTS2021_01100", "BraTS2021_100001"]
    assert sorted(s.subject_id for s in read.subjects) == ids
    assert PhantomConfig(preset="glioma", sites=100, cases=2, seed=0).sites == 100
