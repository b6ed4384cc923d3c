"""Same seed, same bytes: across runs, across worker counts; another seed, other bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from neurofed.phantom import PhantomConfig, generate_federation

from .conftest import GLIOMA, SPACING, Federation


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes(glioma_fed: Federation, tmp_path: Path) -> None:
    # Execute: the session federation again, into another folder
    generate_federation(GLIOMA, tmp_path / "again")
    # Assert
    first, again = _digest(glioma_fed.root), _digest(tmp_path / "again")
    assert len(first) == 3 * 5 + 3 * 4 + 2 + 1  # images, labels, two tables, phantom.json
    assert again == first


def test_other_seed_other_bytes(glioma_fed: Federation, tmp_path: Path) -> None:
    config = PhantomConfig.from_json(GLIOMA.to_json() | {"seed": GLIOMA.seed + 1})
    generate_federation(config, tmp_path / "other")
    first, other = _digest(glioma_fed.root), _digest(tmp_path / "other")
    assert first.keys() == other.keys()
    assert all(first[k] != other[k] for k in first)


def test_workers_do_not_change_bytes(tmp_path: Path) -> None:
    config = PhantomConfig(preset="ms", sites=1, cases=2, seed=3, spacing=SPACING)
    seen: list[tuple[int, int, str]] = []
    generate_federation(config, tmp_path / "one", workers=1)
    generate_federation(config, tmp_path / "two", workers=2, progress=lambda *a: seen.append(a))
    assert _digest(tmp_path / "one") == _digest(tmp_path / "two")
    assert sorted(done for done, _, _ in seen) == [1, 2]
    assert {total for _, total, _ in seen} == {2}
    assert {label for _, _, label in seen} == {"sub-s1c001", "sub-s1c002"}


def test_refuses_foreign_folder_and_replaces_own(tmp_path: Path) -> None:
    config = PhantomConfig(preset="brain-age", sites=1, cases=1, seed=0, spacing=SPACING)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match=r"not empty and holds no phantom\.json"):
        generate_federation(config, foreign)
    assert (foreign / "notes.txt").read_text() == "keep me"
    own = tmp_path / "own"
    generate_federation(PhantomConfig.from_json(config.to_json() | {"cases": 2}), own)
    generate_federation(config, own)
    assert sorted(p.name for p in (own / "site-1").iterdir() if p.name.startswith("sub-")) == [
        "sub-s1c001"
    ]
