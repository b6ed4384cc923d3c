"""``kind = "evaluate"``: an evaluation-only study, checked when it is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from neurofed.federated.study import Study, StudyError, StudyKind
from tests.federated.conftest import tiny_study

INITIAL = '\n[initial_model]\npath = "models/public"\nsha256 = "' + "ab" * 32 + '"\n'


def _text(kind: str, *, rounds: int = 1, initial: bool = True) -> str:
    body = tiny_study(rounds=rounds).to_toml()
    return f'kind = "{kind}"\n{body}' + (INITIAL if initial else "")


def test_an_evaluation_study_is_its_own_study_and_says_what_leaves_a_site(tmp_path: Path) -> None:
    # Execute
    evaluation = Study.from_toml(_text("evaluate"), base_dir=tmp_path)
    training = Study.from_toml(_text("train"), base_dir=tmp_path)

    # Assert: a new hash for the evaluation; "train" is the default and keeps the hash
    assert evaluation.kind is StudyKind.EVALUATE and training.kind is StudyKind.TRAIN
    assert evaluation.content_hash != training.content_hash
    assert (
        training.to_dict()
        == Study.from_toml(_text("train")[len('kind = "train"\n') :], base_dir=tmp_path).to_dict()
    )
    described = evaluation.describe()
    assert (
        "evaluation only" in described and "aggregate metrics (sums and counts) only" in described
    )
    assert (
        Study.from_toml(evaluation.to_toml(), base_dir=tmp_path).content_hash
        == evaluation.content_hash
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_text("evaluate", initial=False), r"add \[initial_model\]"),
        (_text("evaluate", rounds=2), "set rounds = 1"),
        (_text("score"), r"kind = 'score' is invalid: use \"train\" or \"evaluate\""),
    ],
)
def test_an_evaluation_study_without_what_it_needs_is_refused_with_the_fix(
    text: str, message: str
) -> None:
    with pytest.raises(StudyError, match=message):
        Study.from_toml(text)


def _models(
    *names: str, split: str | None = "validation", base: str = "models", sites: str = ""
) -> str:
    text = "\n[evaluate]\n" + (f'split = "{split}"\n' if split else "")
    text += f"[evaluate.site_splits]\n{sites}\n" if sites else ""
    for k, name in enumerate(names):
        sha = f"{k:x}" * 64
        text += f'[[evaluate.models]]\nname = "{name}"\npath = "{base}/{k}"\nsha256 = "{sha}"\n'
    return text


def test_an_evaluation_of_several_models_scores_one_per_round_on_the_split_it_names(
    tmp_path: Path,
) -> None:
    # Prepare
    text = _text("evaluate", rounds=3, initial=False) + _models("federated", "pooled", "local 1")
    moved = _text("evaluate", rounds=3, initial=False) + _models(
        "federated", "pooled", "local 1", base="elsewhere"
    )

    # Execute
    study = Study.from_toml(text, base_dir=tmp_path)

    # Assert: the models in order, the split, paths outside the hash, read back the same
    assert [m.name for m in study.evaluated_models()] == ["federated", "pooled", "local 1"]
    assert study.evaluated_models()[1].model.path == tmp_path / "models" / "1"
    assert study.evaluation_split is not None and study.evaluation_split.value == "validation"
    assert Study.from_toml(moved, base_dir=tmp_path).content_hash == study.content_hash
    assert Study.from_toml(study.to_toml()).content_hash == study.content_hash
    described = study.describe()
    assert "the site's validation split" in described
    assert "'pooled': weights.safetensors sha256:" + "1" * 64 in described


def test_named_sites_score_their_own_split_and_the_names_are_in_the_hash(tmp_path: Path) -> None:
    # Prepare: the training sites score validation, a site that trained nothing every case
    base = _text("evaluate", rounds=2, initial=False)
    plain = Study.from_toml(base + _models("a", "b"), base_dir=tmp_path)

    # Execute
    study = Study.from_toml(base + _models("a", "b", sites='site-4 = "all"'), base_dir=tmp_path)

    # Assert
    assert study.evaluation_split_for("site-4") is None
    assert str(study.evaluation_split_for("site-1")) == "validation"
    assert study.content_hash != plain.content_hash  # which cases a site scores is approved
    assert Study.from_toml(study.to_toml()).content_hash == study.content_hash
    assert "site-4     scores every case instead" in study.describe()
    study.check_evaluated_sites(["site-1", "site-4"])
    with pytest.raises(StudyError, match="names site-4, not a site of this federation"):
        study.check_evaluated_sites(["site-1", "site-2"])


def test_the_single_model_form_names_the_folder_and_scores_every_case(tmp_path: Path) -> None:
    study = Study.from_toml(_text("evaluate"), base_dir=tmp_path)
    assert [m.name for m in study.evaluated_models()] == ["public"]
    assert study.evaluation_split is None and "every case of the site" in study.describe()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_text("evaluate", rounds=2, initial=False) + _models("a", "b", "c"), "set rounds = 3"),
        (_text("evaluate", rounds=1) + _models("a"), "not both"),
        (_text("evaluate", rounds=2, initial=False) + _models("a", "a"), r"\['a'\] repeat"),
        (_text("evaluate", rounds=1, initial=False) + _models("a", split="holdout"), "holdout"),
        (_text("evaluate", rounds=1, initial=False) + _models("../x"), "name = '../x'"),
        (_text("train") + _models("a"), r"\[evaluate\] belongs to an evaluation study"),
        (
            _text("evaluate", rounds=1, initial=False) + _models("a", sites='site-2 = "most"'),
            r"site_splits: site-2 = 'most' is invalid: use \"all\"",
        ),
        (
            _text("evaluate", rounds=1, initial=False) + _models("a", sites='"../x" = "all"'),
            "'../x' is not a site name",
        ),
        (
            _text("evaluate", rounds=1, initial=False)
            + _models("a").replace("[evaluate]\n", '[evaluate]\nsite_splits = "all"\n'),
            "site_splits must be a table of site = split",
        ),
    ],
)
def test_a_malformed_evaluate_table_is_refused_naming_the_key_and_the_fix(
    text: str, message: str
) -> None:
    with pytest.raises(StudyError, match=message):
        Study.from_toml(text)
