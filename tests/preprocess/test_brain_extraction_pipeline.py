"""Brain extraction inside the pipeline: full heads are stripped by deepbet (recorded in
provenance, judged by QC), skull-stripped scans are left alone, and QC calls a head a head."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neurofed.keys import Modality
from neurofed.phantom.config import PhantomConfig
from neurofed.phantom.federation import generate_federation
from neurofed.preprocess.ops import finish_case, harmonise_case
from neurofed.preprocess.params import BrainMaskMethod, PreprocessError, PreprocessParams
from neurofed.preprocess.pipeline import OutcomeStatus, preprocess_site
from neurofed.preprocess.qc import CaseMeasures, QCCheck, QCStatus, dice, evaluate_qc, measure_case
from neurofed.preprocess.skull import extraction_channel
from tests.preprocess.test_skull import MIN_DICE, Head, phantom_head
from tests.training.sites import prepare_site

EXTRACT = PreprocessParams(spacing=(4.0, 4.0, 4.0), brain_extraction=True)
PLAIN = PreprocessParams(spacing=(4.0, 4.0, 4.0))


@pytest.fixture(scope="module")
def head() -> Head:
    return phantom_head()


def test_a_full_head_is_stripped_by_deepbet_before_the_brain_mask(head: Head) -> None:
    image = head.t1[None]
    harmonised = harmonise_case(image, None, head.affine, EXTRACT)

    assert harmonised.stripped is not None and not harmonised.stripped.stripped
    assert harmonised.extraction is not None
    mask = harmonised.extraction.mask
    assert dice(mask, head.truth) >= MIN_DICE  # the phantom is stored RAS: same grid
    assert not np.any(harmonised.image[:, ~mask])  # every channel 0 outside the brain
    assert "brain_extraction" in harmonised.seconds
    case = finish_case(harmonised, EXTRACT)
    assert case.brain_mask_method is BrainMaskMethod.DEEPBET
    without = finish_case(harmonise_case(image, None, head.affine, PLAIN), PLAIN)
    assert without.brain_mask_method is BrainMaskMethod.OTSU  # the whole head, as before
    # the crop keeps the brain, not the head: a smaller box
    assert np.prod(case.image.shape[1:]) < 0.8 * np.prod(without.image.shape[1:])


def test_a_skull_stripped_scan_is_left_as_it_is(head: Head) -> None:
    image = head.stripped()[None]
    harmonised = harmonise_case(image, None, head.affine, EXTRACT)

    assert harmonised.stripped is not None and harmonised.stripped.stripped
    assert harmonised.extraction is None
    np.testing.assert_array_equal(harmonised.image, image)
    assert finish_case(harmonised, EXTRACT).brain_mask_method is BrainMaskMethod.NONZERO


def test_deepbet_reads_the_t1_channel_and_a_wrong_channel_is_an_error(head: Head) -> None:
    assert extraction_channel([Modality.FLAIR, Modality.T1]) == 1
    image = np.stack([head.images[Modality.FLAIR], head.t1])
    with pytest.raises(PreprocessError, match=r"extract_from = 2: the case has 2 channels"):
        harmonise_case(image, None, head.affine, EXTRACT, extract_from=2)


def test_qc_calls_a_head_a_head_and_judges_deepbets_mask(head: Head) -> None:
    image = head.t1[None]
    plain = measure_case("sub-1", harmonise_case(image, None, head.affine, PLAIN), [Modality.T1])
    stripped = measure_case(
        "sub-2", harmonise_case(image, None, head.affine, EXTRACT), [Modality.T1]
    )
    brainonly = measure_case(
        "sub-3", harmonise_case(head.stripped()[None], None, head.affine, PLAIN), [Modality.T1]
    )
    rows = {(r.subject_id, r.check): r for r in evaluate_qc([plain, stripped, brainonly]).rows}

    warned = rows["sub-1", QCCheck.BRAIN_MASK]
    assert warned.status is QCStatus.WARN
    assert "full head" in warned.reason and "--brain-extraction" in warned.reason
    assert "the head" in rows["sub-1", QCCheck.COVERAGE].reason
    extracted = rows["sub-2", QCCheck.BRAIN_MASK]
    assert extracted.status is QCStatus.PASS and "deepbet brain mask" in extracted.reason
    assert extracted.value is not None and 1000 < extracted.value < 2600
    assert "the brain" in rows["sub-2", QCCheck.COVERAGE].reason
    assert rows["sub-3", QCCheck.BRAIN_MASK].status is QCStatus.PASS
    assert rows["sub-3", QCCheck.BRAIN_MASK].reason.startswith("skull-stripped")
    # the measures survive provenance.json; measures written before the check have none
    again = CaseMeasures.from_json(json.loads(json.dumps(stripped.to_json())))
    assert again.anatomy == stripped.anatomy
    older = {k: v for k, v in stripped.to_json().items() if k != "anatomy"}
    assert CaseMeasures.from_json(older).anatomy is None
    assert QCCheck.BRAIN_MASK not in {
        r.check for r in evaluate_qc([CaseMeasures.from_json(older)]).rows
    }


def test_a_bad_deepbet_mask_is_a_qc_warning(head: Head) -> None:
    harmonised = harmonise_case(head.t1[None], None, head.affine, EXTRACT)
    assert harmonised.extraction is not None
    half = harmonised.extraction.mask.copy()
    half[: half.shape[0] // 2] = False  # a failed extraction: a quarter of the brain
    half[:, : half.shape[1] // 2] = False
    broken = type(harmonised)(
        **{
            **harmonised.__dict__,
            "extraction": type(harmonised.extraction)(
                **{**harmonised.extraction.__dict__, "mask": half}
            ),
        }
    )
    row = next(
        r
        for r in evaluate_qc([measure_case("sub-1", broken, [Modality.T1])]).rows
        if r.check is QCCheck.BRAIN_MASK
    )
    assert row.status is QCStatus.WARN and "below a whole adult brain" in row.reason


def test_the_site_pipeline_records_the_extraction_in_provenance(tmp_path: Path) -> None:
    config = PhantomConfig(
        preset="brain-age", sites=1, cases=3, seed=5, spacing=2.0, qc_problems_per_site=0
    )
    root = generate_federation(config, tmp_path / "fed").site_dirs[0]
    prepare_site(root)

    report = preprocess_site(root, (Modality.T1,), EXTRACT, with_label=False)

    assert report.count(OutcomeStatus.FAILED) == 0  # (QC may fail a noisy phantom scan)
    provenance = json.loads(next(root.rglob("provenance.json")).read_text())
    cases = [c for c in provenance["cases"].values() if c["status"] == "done"]
    assert len(cases) == 3
    for case in cases:
        assert "brain_extraction" in case["steps"] and case["brain_mask_method"] == "deepbet"
        record = case["brain_extraction"]
        assert record["skull_stripped"] is False and record["method"] == "deepbet"
        assert record["package"].startswith("deepbet==") and 1000 < record["volume_ml"] < 3000
        assert case["qc"]["anatomy"]["head"] is True
    assert "sub-" not in json.dumps([c["brain_extraction"] for c in cases])  # no ids in it
