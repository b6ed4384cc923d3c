"""The preprocessed cache recomputes only when it must, and never leaves half a file."""

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from neurofed import __version__
from neurofed.preprocess import (
    BrainMaskMethod,
    PreprocessedCache,
    PreprocessedCase,
    PreprocessParams,
    safe_file_stem,
)

PARAMS = PreprocessParams(spacing=(1.0, 1.0, 1.0), margin=1)


def make_case(value: float = 1.0, with_label: bool = True) -> PreprocessedCase:
    image = np.full((2, 3, 4, 5), value, np.float32)
    image[1] = np.arange(60).reshape(3, 4, 5)
    return PreprocessedCase(
        image=image,
        label=(np.arange(60) % 3).astype(np.uint8).reshape(3, 4, 5) if with_label else None,
        affine=np.diag([1.0, 1.0, 1.0, 1.0]),
        brain_mask_method=BrainMaskMethod.OTSU,
        original_spacing=(0.9, 0.9, 3.0),
        original_shape=(4, 5, 2),
        original_affine=np.diag([-0.9, -0.9, 3.0, 1.0]),
    )


class Counter:
    """A compute() callable that counts its calls."""

    def __init__(self, case: PreprocessedCase) -> None:
        self.case = case
        self.calls = 0

    def __call__(self) -> PreprocessedCase:
        self.calls += 1
        return self.case


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp"))


def test_miss_then_hit_returns_the_same_arrays(tmp_path: Path) -> None:
    # Prepare
    cache = PreprocessedCache(tmp_path, PARAMS)
    compute = Counter(make_case())
    # Execute
    first = cache.get_or_compute("BraTS-001", "stamp-a", compute)
    second = PreprocessedCache(tmp_path, PARAMS).get_or_compute("BraTS-001", "stamp-a", compute)
    # Assert
    assert compute.calls == 1
    assert first is compute.case
    assert second.label is not None and first.label is not None
    np.testing.assert_array_equal(second.image, first.image)
    np.testing.assert_array_equal(second.label, first.label)
    np.testing.assert_array_equal(second.original_affine, first.original_affine)
    assert second.brain_mask_method is BrainMaskMethod.OTSU
    assert second.original_spacing == (0.9, 0.9, 3.0)
    assert second.original_shape == (4, 5, 2)
    path = tmp_path / PARAMS.params_id / f"{safe_file_stem('BraTS-001')}.npz"
    assert cache.path_for("BraTS-001") == path
    assert path.is_file()


def test_files_load_without_pickle_and_params_are_recorded(tmp_path: Path) -> None:
    cache = PreprocessedCache(tmp_path, PARAMS)
    cache.get_or_compute("s1", "stamp", Counter(make_case(with_label=False)))
    with np.load(cache.path_for("s1"), allow_pickle=False) as data:
        assert "label" not in data.files
        assert str(data["subject_id"]) == "s1"
    again = cache.get_or_compute("s1", "stamp", lambda: pytest.fail("recomputed"))
    assert again.label is None
    record = json.loads((tmp_path / PARAMS.params_id / "params.json").read_text())
    assert record["params"] == PARAMS.to_json()
    assert record["params_id"] == PARAMS.params_id
    assert record["neurofed_version"] == __version__


def test_stale_source_stamp_is_recomputed(tmp_path: Path) -> None:
    cache = PreprocessedCache(tmp_path, PARAMS)
    cache.get_or_compute("s1", "size=10,mtime=1", Counter(make_case(1.0)))
    compute = Counter(make_case(7.0))
    fresh = cache.get_or_compute("s1", "size=10,mtime=2", compute)
    stored = cache.get_or_compute("s1", "size=10,mtime=2", Counter(make_case(1.0)))
    assert compute.calls == 1
    assert fresh.image[0, 0, 0, 0] == 7.0
    assert stored.image[0, 0, 0, 0] == 7.0


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],  # truncated (interrupted copy)
        lambda data: b"",  # empty
        lambda data: data[:100] + bytes(200) + data[300:],  # corrupt in the middle
    ],
    ids=["truncated", "empty", "corrupt"],
)
def test_damaged_file_is_recomputed_and_replaced(
    tmp_path: Path, damage: Callable[[bytes], bytes]
) -> None:
    cache = PreprocessedCache(tmp_path, PARAMS)
    cache.get_or_compute("s1", "stamp", Counter(make_case()))
    path = cache.path_for("s1")
    path.write_bytes(damage(path.read_bytes()))
    compute = Counter(make_case(3.0))
    case = cache.get_or_compute("s1", "stamp", compute)
    assert compute.calls == 1
    assert case.image[0, 0, 0, 0] == 3.0
    reread = cache.get_or_compute("s1", "stamp", Counter(make_case(9.0)))
    assert reread.image[0, 0, 0, 0] == 3.0


def test_file_of_another_subject_is_not_trusted(tmp_path: Path) -> None:
    cache = PreprocessedCache(tmp_path, PARAMS)
    cache.get_or_compute("s1", "stamp", Counter(make_case(1.0)))
    cache.path_for("s2").write_bytes(cache.path_for("s1").read_bytes())
    compute = Counter(make_case(2.0))
    assert cache.get_or_compute("s2", "stamp", compute).image[0, 0, 0, 0] == 2.0
    assert compute.calls == 1


def test_interrupted_write_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare: a valid entry, then a write that dies half way
    cache = PreprocessedCache(tmp_path, PARAMS)
    cache.get_or_compute("s1", "old", Counter(make_case(1.0)))

    def dying_savez(file: object, *args: object, **kwargs: object) -> None:
        file.write(b"PK\x03\x04 half a zip")  # type: ignore[attr-defined]
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", dying_savez)
    # Execute
    with pytest.raises(KeyboardInterrupt):
        cache.get_or_compute("s1", "new", Counter(make_case(5.0)))
    with pytest.raises(KeyboardInterrupt):
        cache.get_or_compute("s2", "new", Counter(make_case(5.0)))
    monkeypatch.undo()
    # Assert: the old entry is whole, no new entry, no temporary files
    assert leftovers(tmp_path) == []
    assert not cache.path_for("s2").exists()
    old = cache.get_or_compute("s1", "old", lambda: pytest.fail("old entry was damaged"))
    assert old.image[0, 0, 0, 0] == 1.0


def test_compute_error_leaves_nothing(tmp_path: Path) -> None:
    cache = PreprocessedCache(tmp_path, PARAMS)

    def broken() -> PreprocessedCase:
        raise ValueError("bad scan")

    with pytest.raises(ValueError, match="bad scan"):
        cache.get_or_compute("s1", "stamp", broken)
    assert not cache.path_for("s1").exists()
    assert leftovers(tmp_path) == []


def test_subject_ids_map_to_distinct_safe_names() -> None:
    ids = ["a/b", "a_b", "A_B", "../etc", "sub 01", "ü-ß", ".hidden", "x" * 300, "CON"]
    stems = [safe_file_stem(i) for i in ids]
    assert len({s.lower() for s in stems}) == len(ids)  # distinct even ignoring case
    for stem in stems:
        assert all(c.isascii() and (c.isalnum() or c in "._-") for c in stem)
        assert not stem.startswith(".")
        assert len(stem) <= 64 + 13
