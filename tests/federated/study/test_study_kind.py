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
