"""The site config file: backwards compatible reading, approvals and the refusal rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neurofed.federated.site.config import ApprovedStudy, SiteConfig, SiteConfigError

A, B = "ab" * 32, "ac" * 32


def test_a_format_1_file_still_loads_and_requires_nothing(tmp_path: Path) -> None:
    path = tmp_path / "site.json"
    path.write_text(json.dumps({"format": 1, "data_root": "/data/a", "device": "cpu"}))

    config = SiteConfig.load(path)

    assert config.require_approval is False and config.approved_studies == ()
    assert config.allowed_datasets == () and config.audit_log is None
    assert config.refusal(A, "x", None) is None
    assert config.to_json()["format"] == 1  # unchanged when written back


def test_approvals_round_trip_as_format_2(tmp_path: Path) -> None:
    config = SiteConfig(
        Path("/data/a"),
        require_approval=True,
        allowed_datasets=("fets", "brats"),
        audit_log=tmp_path / "audit.jsonl",
    ).with_approval(A, "fets", "2026-01-01T00:00:00+00:00")

    back = SiteConfig.load(config.write(tmp_path / "site.json"))

    assert back == config
    raw = json.loads((tmp_path / "site.json").read_text())
    assert raw["format"] == 2 and raw["allowed_datasets"] == ["brats", "fets"]
    assert raw["approved_studies"] == {
        A: {"name": "fets", "approved_at": "2026-01-01T00:00:00+00:00"}
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": 3}, "written by a newer neurofed"),
        ({"approved_studies": {"1234": {"name": "x"}}}, "'1234' is not a SHA-256 content hash"),
        ({"approved_studies": [A]}, "must map study hashes"),
        ({"require_approval": "yes"}, "require_approval = 'yes'"),
        ({"allowed_datasets": "fets"}, "list of dataset names"),
    ],
)
def test_a_bad_file_is_refused_naming_it(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    path = tmp_path / "site.json"
    path.write_text(json.dumps({"format": 2, "data_root": "/data/a"} | change))

    with pytest.raises(SiteConfigError, match=message) as failure:
        SiteConfig.load(path)

    assert str(path) in str(failure.value)


def test_approve_revoke_and_find_by_prefix() -> None:
    config = SiteConfig(Path("/d"), require_approval=True).with_approval(A, "one")
    config = config.with_approval(B, "two").with_approval(f"sha256:{A.upper()}", "one again")

    assert [a.name for a in config.approved_studies] == ["two", "one again"]
    assert [a.name for a in config.find_approvals("sha256:ab")] == ["one again"]
    assert len(config.find_approvals("a")) == 2 and config.find_approvals("") == []
    assert config.without_approval(A).approved_studies == (config.approval(B),)
    assert isinstance(config.approval(B), ApprovedStudy)


def test_refusal_reasons() -> None:
    guarded = SiteConfig(Path("/d"), require_approval=True, allowed_datasets=("fets",))
    approved = guarded.with_approval(A, "fets-study")
    datasets_only = SiteConfig(Path("/d"), allowed_datasets=("fets",))

    unapproved = guarded.refusal(A, "fets-study", "fets")
    other_dataset = approved.refusal(A, "fets-study", "brats")
    no_dataset = datasets_only.refusal(B, "x", None)

    assert unapproved is not None and unapproved.startswith(
        f"refused: study sha256:{A} ('fets-study') is not approved at this site; the custodian "
        "runs `neurofed site approve"
    )
    assert other_dataset is not None and "names dataset 'brats'; this site allows fets" in (
        other_dataset
    )
    assert no_dataset is not None and "names no dataset" in no_dataset
    assert approved.refusal(A, "fets-study", "fets") is None
