"""Parse a study's TOML tables into validated objects, with errors naming file, key and fix.

Used by :meth:`neurofed.federated.study.Study.from_dict`. Every table is checked for unknown keys
("did you mean"); task, model, strategy and training settings are validated by the installed
code's own config classes, and checked against each other (the model's parameter names must
match the strategy's local patterns; ``mask_heads`` needs a model with labelled heads).
``[initial_model]`` is checked for its form only (:mod:`~neurofed.federated.study.initial_model`:
the server reads the weights when a run starts); a relative path is made absolute here.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import fields
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from neurofed.artifacts import shown
from neurofed.config import ConfigBase, is_local, look_up
from neurofed.federated.heads import heads_for_model
from neurofed.federated.selection import Selection
from neurofed.federated.strategies import (
    Strategy,
    StrategyName,
    get_strategy,
    get_strategy_type,
)
from neurofed.federated.study.evaluation import Evaluation, EvaluationError, parse_evaluation
from neurofed.federated.study.initial_model import (
    INITIAL_MODEL_KEYS,
    InitialModel,
    InitialModelError,
    resolve_path,
)
from neurofed.federated.study.participation import ParticipationConfig
from neurofed.federated.study.plan import PlanTableError, StudyPlan, parse_plan_table
from neurofed.federated.study.privacy import PrivacyConfig
from neurofed.keys import TaskId
from neurofed.models import parse_model_config
from neurofed.tasks import Task, get_task, task_ids
from neurofed.training.config import MAX_EPOCHS, TrainConfig

__all__ = [
    "MAX_LOCAL_EPOCHS",
    "MAX_ROUNDS",
    "MAX_ROUND_TIMEOUT_S",
    "MAX_SEED",
    "MAX_SITES",
    "OPTIONAL_KEYS",
    "REQUIRED_KEYS",
    "SETTABLE_TRAIN_FIELDS",
    "StudyError",
    "StudyKind",
    "parse_study",
]


class StudyError(ValueError):
    """A study file cannot be used; the message names the file, the key and the fix."""


#: Top-level keys every study must give.
REQUIRED_KEYS: tuple[str, ...] = ("name", "rounds", "task", "strategy", "selection")
#: Upper bounds a study's scalars are checked against when it is loaded (far above any real
#: federation; below them no count, seed or timer overflows).
MAX_ROUNDS = 10_000
MAX_LOCAL_EPOCHS = 1_000
MAX_SITES = 10_000
MAX_SEED = 2**63 - 1
MAX_ROUND_TIMEOUT_S = 7 * 24 * 3600.0
#: Top-level keys with defaults (see :class:`~neurofed.federated.study.Study`).
OPTIONAL_KEYS: tuple[str, ...] = (
    "kind",
    "local_epochs",
    "min_sites",
    "round_timeout_s",
    "seed",
    "max_update_norm",
    "dataset",
    "model",
    "train",
    "plan",
    "initial_model",
    "evaluate",
    "privacy",
    "participation",
)

#: TrainConfig fields the study sets elsewhere, or that each site chooses (``device``).
_TRAIN_OWNED = frozenset(
    {
        "task",
        "task_config",
        "model_config",
        "epochs",
        "seed",
        "fedprox_mu",
        "local_parameters",
        "device",
        # a transfer's frozen layers are not federated: a study starts from given weights with
        # [initial_model] and trains every parameter (a full fine-tune)
        "transfer",
        # a pooled-training control: a site's batches come from its own cases anyway
        "batches_by_site",
    }
)

#: Fields of the training ``TrainConfig`` a study's ``[train]`` table may set.
SETTABLE_TRAIN_FIELDS: tuple[str, ...] = tuple(
    f.name for f in fields(TrainConfig) if f.name not in _TRAIN_OWNED
)

_SELECTION_KEYS = ("metric", "direction")


class StudyKind(StrEnum):
    """What a study does: ``train`` a model over rounds (the default), or ``evaluate`` the
    ``[initial_model]`` on every case of every site in one round, training nothing."""

    TRAIN = "train"
    EVALUATE = "evaluate"


def _parse_evaluation(
    source: str, data: Mapping[str, Any], base_dir: Path | None
) -> dict[str, Evaluation]:
    """``{"evaluation": Evaluation}`` for a study with ``[evaluate]``; ``{}`` without."""
    if data.get("evaluate") is None:
        return {}
    try:
        return {"evaluation": parse_evaluation(source, data["evaluate"], base_dir)}
    except EvaluationError as error:
        raise StudyError(str(error)) from None


def _parse_kind(source: str, data: Mapping[str, Any], evaluation: Evaluation | None) -> StudyKind:
    value = data.get("kind", StudyKind.TRAIN.value)
    try:
        kind = StudyKind(value)
    except ValueError:
        choices = " or ".join(f'"{k.value}"' for k in StudyKind)
        raise StudyError(f"{source}: kind = {shown(value)} is invalid: use {choices}") from None
    if kind is StudyKind.TRAIN:
        if data.get("evaluate") is not None:
            raise StudyError(
                f'{source}: [evaluate] belongs to an evaluation study: add kind = "evaluate", '
                "or remove [evaluate]"
            )
        return kind
    listed = () if evaluation is None else evaluation.models
    if data.get("initial_model") is None and not listed:
        raise StudyError(
            f'{source}: kind = "evaluate" scores given models: add [initial_model] with its path '
            "and sha256 (e.g. a run's model/ folder), or several as [[evaluate.models]]"
        )
    if data.get("initial_model") is not None and listed:
        raise StudyError(
            f"{source}: give the models to score either as [initial_model] (one) or as "
            "[[evaluate.models]] (several), not both"
        )
    count = len(listed) or 1
    if data.get("rounds") != count:
        raise StudyError(
            f'{source}: kind = "evaluate" runs one round per model scored: set rounds = {count} '
            f"(got {shown(data.get('rounds'))})"
        )
    if data.get("plan") is not None:
        raise StudyError(
            f'{source}: kind = "evaluate" plans nothing: the model keeps the preprocessing '
            "it was trained with; remove [plan] and give [train.preprocess] as trained"
        )
    return kind


def _unknown(where: str, keys: Iterable[str], allowed: Iterable[str]) -> None:
    allowed = list(allowed)
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise StudyError(
                f"{where}: unknown key {key!r}{hint}; allowed keys: {', '.join(allowed)}"
            )


def _table(where: str, data: Mapping[str, Any], key: str, *, required: bool) -> dict[str, Any]:
    value = data.get(key)
    if value is None:
        if required:
            raise StudyError(f"{where}: the [{key}] table is required")
        return {}
    if not isinstance(value, Mapping):
        raise StudyError(f"{where}: {key} = {value!r} must be a table; write it as [{key}]")
    return dict(value)


def _deep_merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _parse_task(source: str, data: Mapping[str, Any]) -> tuple[TaskId, Task, tuple[str, ...]]:
    table = _table(source, data, "task", required=True)
    where = f"{source}: [task]"
    if "id" not in table:
        ids = ", ".join(t.value for t in task_ids())
        raise StudyError(f"{where}: the key 'id' is required (one of: {ids})")
    try:
        task_id = TaskId(look_up("task", str(table.pop("id")), [t.value for t in task_ids()]))
    except ValueError as error:
        raise StudyError(f"{where} id: {error}") from None
    config_type = get_task(task_id).config_type
    _unknown(where, table, ["id", *(f.name for f in fields(config_type))])
    try:
        return task_id, get_task(task_id, table), tuple(table)
    except (ValueError, TypeError) as error:
        raise StudyError(f"{where}: {error}") from None


def _parse_model(source: str, data: Mapping[str, Any], task: Task) -> ConfigBase:
    table = _table(source, data, "model", required=False)
    where = f"{source}: [model] ({task.model_name})"
    default = task.default_model_config()
    _unknown(where, table, [f.name for f in fields(default)])
    try:
        return parse_model_config(task.model_name, _deep_merge(default.to_json(), table))
    except (ValueError, TypeError) as error:
        raise StudyError(f"{where}: {error}") from None


def _network(task: Task, model: ConfigBase) -> Any:
    """The study's network, built without memory on the meta device."""
    import torch

    with torch.device("meta"):
        return task.build_model(model)


def _state_names(task: Task, model: ConfigBase) -> tuple[str, ...]:
    """State-dict names of the study's model."""
    return tuple(_network(task, model).state_dict())


def _parse_strategy(
    source: str, data: Mapping[str, Any], task: Task, model: ConfigBase
) -> Strategy:
    table = _table(source, data, "strategy", required=True)
    where = f"{source}: [strategy]"
    if "name" not in table:
        raise StudyError(f"{where}: the key 'name' is required, e.g. name = \"fedavg\"")
    try:
        strategy_type = get_strategy_type(str(table.pop("name")))
    except ValueError as error:
        raise StudyError(f"{where} name: {error}") from None
    _unknown(where, table, ["name", *(f.name for f in fields(strategy_type.params_type))])
    try:
        strategy = get_strategy(strategy_type.name, table, heads=heads_for_model(task.model_name))
    except (ValueError, TypeError) as error:
        raise StudyError(f"{where}: {error}") from None
    if strategy.name is StrategyName.DISTILL and task.task_id is not TaskId.GLIOMA_MULTITASK:
        raise StudyError(
            f"{where}: strategy 'distill' trains the marker heads of glioma-multitask; this "
            f"study's task is {task.task_id.value!r}: choose another strategy"
        )
    patterns = strategy.client_settings().local_parameters
    if patterns:
        names = _state_names(task, model)
        if not any(is_local(n, patterns) for n in names):
            raise StudyError(
                f"{where}: local_parameters {list(patterns)} match no parameter of "
                f"{task.model_name} with this [model] config (a model with norm = 'instance' "
                'may have no normalisation parameters); use norm = "batch" in [model], fix '
                "the patterns, or choose another strategy"
            )
    return strategy


def _parse_selection(source: str, data: Mapping[str, Any]) -> Selection:
    table = _table(source, data, "selection", required=True)
    where = f"{source}: [selection]"
    _unknown(where, table, _SELECTION_KEYS)
    for key, example in zip(_SELECTION_KEYS, ('"WT/dice"', '"max" or "min"'), strict=True):
        if key not in table:
            raise StudyError(f"{where}: the key {key!r} is required, e.g. {key} = {example}")
    try:
        return Selection(table["metric"], table["direction"])
    except ValueError as error:
        raise StudyError(f"{where}: {error}") from None


def _parse_train(
    source: str,
    data: Mapping[str, Any],
    task_id: TaskId,
    task: Task,
    model: ConfigBase,
    owned: Mapping[str, Any],
) -> TrainConfig:
    table = _table(source, data, "train", required=False)
    where = f"{source}: [train]"
    _unknown(where, table, SETTABLE_TRAIN_FIELDS)
    if table.get("augment") is False:
        table["augment"] = None  # TOML has no null: `augment = false` switches it off
    elif table.get("augment") is True:
        raise StudyError(
            f"{where}: augment = true is ambiguous; give an [train.augment] table (or leave "
            "it out for the defaults), or augment = false to switch augmentation off"
        )
    for key in ("patch_shape",):
        if isinstance(table.get(key), list):
            table[key] = tuple(table[key])
    try:
        return TrainConfig(
            task=task_id, task_config=task.config, model_config=model, **owned, **table
        )
    except (ValueError, TypeError) as error:
        raise StudyError(f"{where}: {error}") from None


def _parse_plan(source: str, data: Mapping[str, Any], task_id: TaskId) -> dict[str, StudyPlan]:
    """``{"plan": StudyPlan}`` for a study with ``[plan]``; ``{}`` without one."""
    if data.get("plan") is None:
        return {}
    try:
        return {"plan": parse_plan_table(data, task_id)}
    except PlanTableError as error:
        raise StudyError(f"{source}: {error}") from None


C = TypeVar("C", bound=ConfigBase)


def _config_table(source: str, data: Mapping[str, Any], key: str, config: type[C]) -> C | None:
    """The optional table ``[key]`` as ``config`` (``None`` without it); unknown keys and
    invalid values are refused naming the table."""
    if data.get(key) is None:
        return None
    table = _table(source, data, key, required=False)
    where = f"{source}: [{key}]"
    _unknown(where, table, [f.name for f in fields(config)])
    try:
        return config.from_json(table)
    except (ValueError, TypeError) as error:
        raise StudyError(f"{where}: {error}") from None


def _parse_participation(source: str, data: Mapping[str, Any]) -> dict[str, ParticipationConfig]:
    """``{"participation": ParticipationConfig}`` for a study with ``[participation]``."""
    participation = _config_table(source, data, "participation", ParticipationConfig)
    return {} if participation is None else {"participation": participation}


def _parse_privacy(
    source: str, data: Mapping[str, Any], task: Task, model: ConfigBase, strategy: Strategy
) -> dict[str, PrivacyConfig]:
    """``{"privacy": PrivacyConfig}`` for a study with ``[privacy]``; ``{}`` without."""
    privacy = _config_table(source, data, "privacy", PrivacyConfig)
    if privacy is None:
        return {}
    where = f"{source}: [privacy]"
    from neurofed.training.private import uses_batch_norm

    if uses_batch_norm(_network(task, model)):
        fix = (
            f'use norm = "{getattr(model, "private_norm", "instance")}" in [model]'
            if "norm" in {f.name for f in fields(model)}
            else f"the {task.model_name} network has no other normalisation: drop [privacy]"
        )
        raise StudyError(
            f"{where}: DP-SGD cannot train a network with batch normalisation (it mixes the "
            f"cases of a batch, so no case's influence is bounded); {fix}"
        )
    if strategy.name is StrategyName.DISTILL and getattr(strategy.params, "proxy", None) is None:
        raise StudyError(
            f"{where}: strategy 'distill' sends volumes condensed from the site's cases, which "
            'DP-SGD does not cover; use its proxy mode (proxy = "NAME") or another strategy'
        )
    return {"privacy": privacy}


def _parse_initial_model(
    source: str, data: Mapping[str, Any], base_dir: Path | None
) -> dict[str, InitialModel]:
    """``{"initial_model": InitialModel}`` for a study with ``[initial_model]``; ``{}`` without."""
    if data.get("initial_model") is None:
        return {}
    table = _table(source, data, "initial_model", required=False)
    where = f"{source}: [initial_model]"
    _unknown(where, table, INITIAL_MODEL_KEYS)
    examples = ('"models/public-initial" (a model folder)', '"<64 hex digits>"')
    for key, example in zip(INITIAL_MODEL_KEYS, examples, strict=True):
        if key not in table:
            raise StudyError(f"{where}: the key {key!r} is required, e.g. {key} = {example}")
    path = table["path"]
    if not isinstance(path, str) or not path.strip():
        raise StudyError(
            f"{where}: path = {shown(path)} is invalid: give the model folder (RUN/model) as a "
            "string, relative to the study file's folder or absolute"
        )
    try:
        return {"initial_model": InitialModel(resolve_path(path, base_dir), table["sha256"])}
    except InitialModelError as error:
        raise StudyError(f"{where}: {error}") from None


def parse_study(
    data: Mapping[str, Any], source: str, base_dir: Path | None = None
) -> dict[str, Any]:
    """Keyword arguments of :class:`~neurofed.federated.study.Study` from parsed TOML.

    A relative ``[initial_model] path`` is taken from ``base_dir`` (the study file's folder;
    ``None``: the current directory).

    Raises
    ------
    StudyError
        Naming ``source``, the table and key, and the fix.
    """
    if not isinstance(data, Mapping):
        raise StudyError(f"{source}: expected a TOML document of tables, got {type(data).__name__}")
    _unknown(source, data, (*REQUIRED_KEYS, *OPTIONAL_KEYS))
    for key in REQUIRED_KEYS:
        if key not in data:
            raise StudyError(f"{source}: the key {key!r} is required (see the study docs)")
    task_id, task, task_keys = _parse_task(source, data)
    planned = _parse_plan(source, data, task_id)  # before [model]/[train]: it names conflicts
    model = _parse_model(source, data, task)
    strategy = _parse_strategy(source, data, task, model)
    selection = _parse_selection(source, data)
    initial = _parse_initial_model(source, data, base_dir)
    evaluation = _parse_evaluation(source, data, base_dir)
    kind = _parse_kind(source, data, evaluation.get("evaluation"))
    privacy = _parse_privacy(source, data, task, model, strategy)
    participation = _parse_participation(source, data)
    scalars = {k: data[k] for k in (*REQUIRED_KEYS, *OPTIONAL_KEYS) if k in data}
    scalars["kind"] = kind
    tables = ("task", "model", "strategy", "selection", "train", "plan")
    for key in (*tables, "initial_model", "evaluate", "privacy", "participation"):
        scalars.pop(key, None)
    client = strategy.client_settings()
    bounds = (
        ("rounds", 1, MAX_ROUNDS),
        ("local_epochs", 1, MAX_LOCAL_EPOCHS),
        ("seed", 0, MAX_SEED),
    )
    for key, minimum, maximum in bounds:
        value = scalars.get(key, minimum)
        if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
            raise StudyError(
                f"{source}: {key} = {shown(value)} is invalid: use a whole number in "
                f"{minimum}..{maximum}"
            )
    epochs = scalars["rounds"] * scalars.get("local_epochs", 1)
    if epochs > MAX_EPOCHS:
        raise StudyError(
            f"{source}: rounds × local_epochs = {epochs} epochs of training; at most {MAX_EPOCHS}"
        )
    owned = {
        # the whole run is the learning-rate schedule's length; a site trains local_epochs
        # of it per round (its epoch counter continues from round to round)
        "epochs": scalars["rounds"] * scalars.get("local_epochs", 1),
        "seed": scalars.get("seed", 0),
        "fedprox_mu": client.fedprox_mu,
        "local_parameters": client.local_parameters,
    }
    train = _parse_train(source, data, task_id, task, model, owned)
    given, effective = task.config.to_json(), train.task_config.to_json()
    for key in task_keys:
        if given[key] != effective[key]:
            raise StudyError(
                f"{source}: [task] {key} = {given[key]!r} conflicts with [train], which makes it "
                f"{effective[key]!r} (e.g. distances are measured on the preprocessed grid); "
                f"leave {key} out of [task] or make the two agree"
            )
    return {
        "task": task_id,
        "task_config": train.task_config,
        "model": model,
        "strategy": strategy.name,
        "strategy_params": strategy.params,
        "selection": selection,
        "train": train,
        **planned,
        **initial,
        **evaluation,
        **privacy,
        **participation,
        **scalars,
    }
