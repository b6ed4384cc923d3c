"""Each site's annotation habit: sampled per site, recorded, and present in the written masks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neurofed.cli.main import app
from neurofed.phantom import PhantomConfig, render_case, sample_case, sample_site
from neurofed.phantom.annotation import annotate
from neurofed.phantom.site import Annotation

ONE_MM = np.eye(4)


def test_every_labelled_site_has_its_own_habit_within_the_documented_ranges() -> None:
    # Prepare
    glioma = PhantomConfig(preset="glioma", sites=6, cases=2, seed=0, unlabelled_sites=(6,))
    ms = PhantomConfig(preset="ms", sites=5, cases=2, seed=0)

    # Execute
    tumour = [sample_site(glioma, k).annotation for k in range(1, 7)]
    lesion = [sample_site(ms, k).annotation for k in range(1, 6)]

    # Assert
    assert all(-2.0 <= a.boundary_mm <= 2.0 and a.missed_below_mm3 == 0.0 for a in tumour[:5])
    assert tumour[5] == Annotation()  # an unlabelled site draws nothing
    assert len({a.boundary_mm for a in tumour[:5]}) == 5  # sites differ
    assert all(-1.0 <= a.boundary_mm <= 1.0 and 0 <= a.missed_below_mm3 <= 20 for a in lesion)
    assert [sample_site(glioma, k).annotation for k in range(1, 7)] == tumour  # deterministic
    off = dataclasses.replace(glioma, annotation_styles=False)
    assert {sample_site(off, k).annotation for k in range(1, 7)} == {Annotation()}


def test_the_habit_leaves_every_other_site_parameter_as_it_was() -> None:
    config = PhantomConfig(preset="ms", sites=2, cases=3, seed=7, broken_per_site=1)
    off = dataclasses.replace(config, annotation_styles=False)
    for k in (1, 2):
        on, plain = sample_site(config, k), sample_site(off, k)
        assert dataclasses.replace(on, annotation=Annotation()) == plain


def test_a_looser_site_draws_a_larger_whole_tumour_and_a_tighter_one_a_smaller() -> None:
    # Prepare: one glioma case at 2 mm, drawn by three habits
    config = PhantomConfig(preset="glioma", sites=1, cases=1, seed=2, spacing=2.0)
    site = sample_site(config, 1)
    case = sample_case(config, site, 1)

    def whole_tumour_ml(boundary_mm: float) -> float:
        habit = dataclasses.replace(site, annotation=Annotation(boundary_mm=boundary_mm))
        return render_case(habit, case, 2.0).measures["wt_ml"]

    # Execute
    tight, truth, loose = whole_tumour_ml(-2.0), whole_tumour_ml(0.0), whole_tumour_ml(2.0)

    # Assert: a 2 mm border on a tumour of tens of mL moves its volume by tens of percent
    assert tight < 0.9 * truth < truth < loose / 1.1
    assert whole_tumour_ml(2.0) == loose  # deterministic


def test_looser_glioma_masks_gain_oedema_only_and_tighter_ones_lose_the_rim() -> None:
    # Prepare: core (1) inside oedema (2) inside background
    label = np.zeros((11, 11, 11), dtype=np.uint8)
    label[2:9, 2:9, 2:9] = 2
    label[4:7, 4:7, 4:7] = 1

    # Execute
    loose = annotate(label, ONE_MM, Annotation(boundary_mm=1.0), glioma=True)
    tight = annotate(label, ONE_MM, Annotation(boundary_mm=-1.0), glioma=True)
    within = annotate(
        label, ONE_MM * 2 + np.diag([0, 0, 0, -1]), Annotation(boundary_mm=1.5), glioma=True
    )

    # Assert
    assert set(np.unique(loose[(loose != label)])) == {2} and (loose > 0).sum() > (label > 0).sum()
    assert (loose[label > 0] == label[label > 0]).all()  # the truth inside stays
    assert (tight > 0).sum() == 5**3 and (tight == 1).sum() == 27
    assert np.array_equal(within, label)  # a shift under the 2 mm voxel changes nothing
    assert label.sum() == 7**3 * 2 - 27  # the input is not modified


def test_small_ms_lesions_are_missed_and_large_ones_kept() -> None:
    label = np.zeros((12, 12, 12), dtype=np.uint8)
    label[1:3, 1:3, 1:3] = 1  # 8 mm³
    label[6:10, 6:10, 6:10] = 1  # 64 mm³

    drawn = annotate(label, ONE_MM, Annotation(missed_below_mm3=20.0), glioma=False)

    assert drawn[1:3, 1:3, 1:3].sum() == 0 and drawn[6:10, 6:10, 6:10].all()


def test_phantom_json_records_each_sites_habit_and_the_switch(tmp_path: Path) -> None:
    # Execute
    common = ["phantom", "--preset", "ms", "--sites", "2", "--cases", "1", "--spacing", "4"]
    result = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "on")])
    same = CliRunner().invoke(app, [*common, "--same-annotators", "--out", str(tmp_path / "off")])

    # Assert
    assert result.exit_code == 0 and same.exit_code == 0, result.output + same.output
    on = json.loads((tmp_path / "on/phantom.json").read_text())
    off = json.loads((tmp_path / "off/phantom.json").read_text())
    assert on["config"]["annotation_styles"] is True and off["config"]["annotation_styles"] is False
    habits = [s["annotation"] for s in on["sites"]]
    assert all(set(h) == {"boundary_mm", "missed_below_mm3"} for h in habits)
    assert habits[0] != habits[1]
    assert all(
        s["annotation"] == {"boundary_mm": 0.0, "missed_below_mm3": 0.0} for s in off["sites"]
    )
    # a phantom.json written before habits existed reads as one without them
    legacy = {k: v for k, v in on["config"].items() if k != "annotation_styles"}
    assert PhantomConfig.from_json(legacy).annotation_styles is False


@pytest.mark.parametrize("value", ["yes", 1])
def test_the_switch_must_be_a_boolean(value: object) -> None:
    with pytest.raises(ValueError, match="annotation_styles"):
        PhantomConfig(preset="ms", sites=1, cases=1, seed=0, annotation_styles=value)  # type: ignore[arg-type]
