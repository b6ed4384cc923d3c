"""Site data: usable cases with logged reasons, clear site errors, cached preprocessing, pooling."""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from neurofed.data.manifest import load_manifest
from neurofed.data.subject import Subject
from neurofed.keys import ClinicalField, Split
from neurofed.preprocess import PreprocessParams
from neurofed.preprocess.cache import PREPROCESSED_FOLDER, source_stamp
from neurofed.tasks import get_task
from neurofed.training import CaseDataset, SiteData, SiteDataError
from tests.training.sites import prepare_site, write_glioma_site


def first_subject(site: Path) -> Subject:
    return load_manifest(site).subjects[0]


def test_training_split_loads_preprocessed_cases_in_task_order(glioma_site: Path) -> None:
    # Execute
    data = SiteData(glioma_site, get_task("tumor-regions"), PreprocessParams())
    train, validation = data.split(Split.TRAIN), data.split(Split.VALIDATION)
    # Assert: 9 + 3 cases, four channels, labels in the internal numbering (ET = 3)
    assert (len(train), len(validation)) == (9, 3)
    assert not set(train.subject_ids) & set(validation.subject_ids)
    case = train[0]
    assert case.image.shape[0] == 4 and case.image.dtype == np.float32
    assert case.label is not None and set(np.unique(case.label)) <= {0, 1, 2, 3}
    assert 3 in np.unique(case.label)
    assert case.site_id == "glioma-1" and train.site_ids == ("glioma-1",)
    assert data.split(Split.TRAIN) is train  # loaded once


def test_cases_without_a_label_map_are_skipped_with_a_logged_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: cases 0 and 1 have no segmentation
    site = prepare_site(write_glioma_site(tmp_path / "site", 6, unlabelled=(0, 1)))
    caplog.set_level(logging.INFO, logger="neurofed.training.site_data")
    # Execute
    segmentation = SiteData(site, get_task("tumor-regions"), PreprocessParams()).split(None)
    multitask = SiteData(site, get_task("glioma-multitask"), PreprocessParams()).split(None)
    # Assert: segmentation skips them, multitask keeps them for the marker heads
    assert len(segmentation) == 4 and len(multitask) == 6
    assert [s.subject_id for s in segmentation.skipped] == ["BraTS2021_00001", "BraTS2021_00002"]
    assert "has no label map" in segmentation.skipped[0].reason
    assert "BraTS2021_00001" in caplog.text and "has no label map" in caplog.text
    kept = {c.subject_id: c for c in multitask}
    assert kept["BraTS2021_00001"].label is None
    assert kept["BraTS2021_00001"].clinical.mgmt is None  # unknown stays unknown
    assert kept["BraTS2021_00002"].clinical.get(ClinicalField.IDH) is not None


def test_brain_age_reads_no_label_and_knows_the_age(bids_site: Path) -> None:
    dataset = SiteData(bids_site, get_task("brain-age"), PreprocessParams()).split(Split.TRAIN)
    assert all(c.label is None for c in dataset)
    assert all(c.clinical.age is not None and not math.isnan(c.clinical.age) for c in dataset)
    assert dataset[0].image.shape[0] == 1


def test_site_without_manifest_says_to_run_site_check(tmp_path: Path) -> None:
    site = write_glioma_site(tmp_path / "raw", 2)
    with pytest.raises(SiteDataError, match=r"run `neurofed site check .*raw` first"):
        SiteData(site, get_task("tumor-regions"), PreprocessParams())


def test_task_needing_a_modality_the_site_lacks_names_it_and_the_site(bids_site: Path) -> None:
    with pytest.raises(SiteDataError) as error:
        SiteData(bids_site, get_task("tumor-regions"), PreprocessParams())
    message = str(error.value)
    assert "T1CE" in message and "T2" in message and str(bids_site) in message
    assert "needs T1, T1CE, T2, FLAIR" in message


def test_cache_is_reused_and_refreshed_when_a_file_changes(tmp_path: Path) -> None:
    # Prepare
    site = prepare_site(write_glioma_site(tmp_path / "site", 2))
    task, params = get_task("tumor-regions"), PreprocessParams()
    first = SiteData(site, task, params).split(None)
    cached = sorted((site / "neurofed" / PREPROCESSED_FOLDER / params.params_id).glob("*.npz"))
    assert len(cached) == 2
    stamp_before = source_stamp(site, first_subject(site))
    times = [p.stat().st_mtime_ns for p in cached]
    # Execute: a second load reads the cache; then one source file changes
    again = SiteData(site, task, params).split(None)
    unchanged = [p.stat().st_mtime_ns for p in cached]
    image = site / "BraTS2021_00001" / "BraTS2021_00001_t1.nii.gz"
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    SiteData(site, task, params).split(None)
    # Assert
    assert unchanged == times
    assert np.array_equal(first[0].image, again[0].image)
    assert source_stamp(site, first_subject(site)) != stamp_before
    assert cached[0].stat().st_mtime_ns != times[0] or cached[1].stat().st_mtime_ns != times[1]


def test_pooled_data_is_the_union_of_the_sites(glioma_site: Path, tmp_path: Path) -> None:
    # Prepare: a second site with other cases
    other = prepare_site(write_glioma_site(tmp_path / "glioma-2", 4, seed=1))
    task = get_task("tumor-regions")
    # Execute
    pooled = SiteData([glioma_site, other], task, PreprocessParams()).split(Split.TRAIN)
    alone = [SiteData(s, task, PreprocessParams()).split(Split.TRAIN) for s in (glioma_site, other)]
    # Assert
    assert pooled.site_ids == ("glioma-1", "glioma-2")
    assert pooled.subject_ids == alone[0].subject_ids + alone[1].subject_ids
    assert pooled.num_examples == CaseDataset.pooled(alone).num_examples


def test_sites_with_the_same_folder_name_are_refused(glioma_site: Path, tmp_path: Path) -> None:
    twin = tmp_path / glioma_site.name
    shutil.copytree(glioma_site, twin)
    with pytest.raises(SiteDataError, match="share folder names"):
        SiteData([glioma_site, twin], get_task("tumor-regions"), PreprocessParams())
