"""``[initial_model]``: parsing with named errors, where a relative path points, the study's hash
covering the weights' SHA-256 but not where they lie."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from neurofed.federated.study import Study, StudyError, load_study
from neurofed.federated.study.initial_model import InitialModel
from tests.federated.conftest import tiny_study

SHA = "ab" * 32
OTHER_SHA = "cd" * 32


def _with_initial(path: str, sha256: str = SHA, extra: str = "") -> str:
    """The tiny brain-age study's TOML with an ``[initial_model]`` table."""
    return (
        tiny_study().to_toml() + f'\n[initial_model]\npath = "{path}"\nsha256 = "{sha256}"\n{extra}'
    )


def test_a_study_with_an_initial_model_parses_it_and_round_trips(tmp_path: Path) -> None:
    # Execute
    study = Study.from_toml(_with_initial("/models/public"))
    # Assert
    assert study.initial_model == InitialModel(Path("/models/public"), SHA)
    again = Study.from_toml(study.to_toml())
    assert again.initial_model == study.initial_model
    assert again.content_hash == study.content_hash
    assert tomllib.loads(study.to_toml())["initial_model"] == {
        "path": "/models/public",
        "sha256": SHA,
    }
    # what the server sends a site parses back to the claimed hash there
    assert Study.from_dict(study.to_dict()).content_hash == study.content_hash


def test_a_relative_path_is_taken_from_the_study_files_folder(tmp_path: Path) -> None:
    # Prepare
    folder = tmp_path / "studies" / "age"
    folder.mkdir(parents=True)
    path = folder / "study.toml"
    path.write_text(_with_initial("../models/public"), encoding="utf-8")
    # Execute
    study = load_study(path)
    # Assert: absolute, `..` folded, so the study's dict names the folder wherever it is read
    assert study.initial_model is not None
    assert study.initial_model.path == tmp_path / "studies" / "models" / "public"
    assert study.to_dict()["initial_model"]["path"] == str(study.initial_model.path)


def test_without_a_file_a_relative_path_is_taken_from_base_dir_or_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    from_cwd = Study.from_toml(_with_initial("models/public"))
    from_base = Study.from_toml(_with_initial("models/public"), base_dir=Path("/elsewhere"))

    assert from_cwd.initial_model is not None and from_base.initial_model is not None
    assert from_cwd.initial_model.path == tmp_path / "models" / "public"
    assert from_base.initial_model.path == Path("/elsewhere/models/public")


def test_the_hash_covers_the_weights_sha256_and_not_their_path() -> None:
    # Prepare
    here = Study.from_toml(_with_initial("/models/public"))
    moved = Study.from_toml(_with_initial("/archive/other-name"))
    upper = Study.from_toml(_with_initial("/models/public", SHA.upper()))
    other = Study.from_toml(_with_initial("/models/public", OTHER_SHA))
    # Assert
    assert moved.content_hash == here.content_hash  # moving the weights needs no new approval
    assert upper.content_hash == here.content_hash and upper.initial_model == here.initial_model
    assert other.content_hash != here.content_hash  # other weights are another study
    assert here.content_hash != tiny_study().content_hash
    assert SHA in here.to_toml() and SHA in here.describe()


def test_a_study_without_an_initial_model_keeps_its_hash_and_dict() -> None:
    study = tiny_study()

    assert study.initial_model is None
    assert "initial_model" not in study.to_dict()
    assert "initial" not in study.describe()
    assert Study.from_dict(study.to_dict()).content_hash == study.content_hash


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            'path = "m"\nsha256 = "sha256:abab"',
            r"\[initial_model\]: sha256 = 'sha256:abab' is invalid: give the 64 hex digits.*"
            r"without 'sha256:'",
        ),
        ('path = "m"\nsha256 = "' + "g" * 64 + '"', r"sha256 = 'g{20}.* is invalid"),
        ('path = "m"\nsha256 = 12', r"sha256 = 12 is invalid"),
        ('path = "m"', r"\[initial_model\]: the key 'sha256' is required"),
        (f'sha256 = "{SHA}"', r"\[initial_model\]: the key 'path' is required, e.g. path ="),
        (f'path = ""\nsha256 = "{SHA}"', r"path = '' is invalid: give the model folder"),
        (f'path = 3\nsha256 = "{SHA}"', r"path = 3 is invalid"),
        (
            f'path = "m"\nsha = "{SHA}"',
            r"\[initial_model\]: unknown key 'sha' \(did you mean 'sha256'\?\); allowed keys: "
            r"path, sha256",
        ),
    ],
)
def test_a_bad_table_is_refused_naming_the_key_the_value_and_the_fix(
    table: str, message: str
) -> None:
    text = tiny_study().to_toml() + f"\n[initial_model]\n{table}\n"

    with pytest.raises(StudyError, match=message) as caught:
        Study.from_toml(text, source="age.toml")

    assert str(caught.value).startswith("age.toml: [initial_model]")


def test_initial_model_must_be_a_table() -> None:
    text = f'initial_model = "/models/public"\n{tiny_study().to_toml()}'

    with pytest.raises(StudyError, match=r"initial_model = .* must be a table; write it as"):
        Study.from_toml(text)
