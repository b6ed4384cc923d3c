"""Study files: a declarative ``study.toml`` validated once into a frozen :class:`Study`.

A study only *configures* code installed at every site — a task, its model and a strategy are
named, never shipped. Its identity is :attr:`Study.content_hash`, the SHA-256 of the canonical
JSON of the validated study (defaults filled, keys sorted, numbers normalised): comments,
whitespace and key order do not change it, any value does. Custodians approve studies by it.
One value is left out of it: ``[initial_model] path``, where the initial weights lie — the hash
covers their ``sha256`` instead, so approving a study approves exactly those weights, and moving
them to another folder needs no new approval.

.. code-block:: toml

    name = "fets-phantom"             # letters, digits, . _ -
    rounds = 20
    local_epochs = 1                  # default 1
    min_sites = 2                     # quorum per round, default 2
    round_timeout_s = 1800            # default 3600
    seed = 0                          # default 0
    max_update_norm = 1000.0          # optional L2 bound on a site's change; absent = off
    dataset = "phantom-fets"          # optional name sites can allow-list

    [task]                            # id + the task's config fields
    id = "tumor-regions"

    [model]                           # overrides of the task model's default config
    base_filters = 8

    [strategy]                        # name + the strategy's parameters
    name = "fedavg"

    [selection]                       # both required: no default direction
    metric = "WT/dice"
    direction = "max"

    [train]                           # fields of the TrainConfig a study may set
    batch_size = 2
    patch_shape = [48, 48, 48]
    [train.preprocess]
    spacing = [2.0, 2.0, 2.0]

    [plan]                            # optional: plan from a federated fingerprint round
    source = "fingerprint"
    memory_budget_gb = 8.0            # and the other planner settings (all optional)

    [initial_model]                   # optional: round 1 starts from these weights
    path = "models/public-initial"    # a model folder (RUN/model), relative to this file
    sha256 = "9c1f…"                  # SHA-256 of its weights.safetensors (64 hex digits)

With ``[plan]`` (:mod:`~neurofed.federated.study.plan`) the server runs a fingerprint round
before round 1 (sites send aggregate histograms and counts of their training split), merges the
fingerprints and plans with nnU-Net v2's rules; the plan sets the target spacing (and the
whole-volume shape, or for ``ms-lesion`` the whole network, patch and batch size), so a planned
study must leave those keys out — e.g. the example above, planned, drops
``[train.preprocess] spacing``. Without ``[plan]`` a study is what it always was (same hash).

With ``[initial_model]`` (:mod:`~neurofed.federated.study.initial_model`) round 1 sends the
weights of a model folder instead of a network initialised from ``seed`` — FeTS's public initial
model, or a brain-age model moved to another target (``[task] target = "sdmt"``). The server
checks at the start of a run that the folder's ``weights.safetensors`` has that SHA-256 and that
the model is of the study's task and network (``[model]``). A relative path is taken from the
study file's folder (:func:`load_study`), or from ``base_dir`` / the current directory for a study
built from text or a dict. Without ``[initial_model]`` a study keeps its hash.

Frozen dataclasses (not pydantic) because every config this one nests — task, model, strategy
and the training ``TrainConfig`` — is a frozen dataclass validated in ``__post_init__`` with
errors that name the field, the value and the fix; one mechanism keeps one error style.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurofed.config import ConfigBase
from neurofed.federated.heads import heads_for_model
from neurofed.federated.selection import Direction, Selection
from neurofed.federated.strategies import (
    ClientSettings,
    Strategy,
    StrategyName,
    StrategyParams,
    get_strategy,
    get_strategy_type,
)
from neurofed.federated.study.evaluation import EvaluatedModel, Evaluation
from neurofed.federated.study.initial_model import InitialModel, InitialModelError
from neurofed.federated.study.parse import (
    MAX_LOCAL_EPOCHS,
    MAX_ROUND_TIMEOUT_S,
    MAX_ROUNDS,
    MAX_SEED,
    MAX_SITES,
    REQUIRED_KEYS,
    SETTABLE_TRAIN_FIELDS,
    StudyError,
    StudyKind,
    parse_study,
)
from neurofed.federated.study.participation import ParticipationConfig
from neurofed.federated.study.plan import (
    StudyPlan,
    apply_plan,
    check_plan,
    planned_keys,
    strip_planned,
)
from neurofed.federated.study.privacy import PrivacyConfig
from neurofed.federated.study.toml_text import dumps
from neurofed.federated.update import Parameters
from neurofed.keys import Split, TaskId
from neurofed.preprocess.plan import Plan, PlanError
from neurofed.tasks import Task, get_task
from neurofed.training.config import TrainConfig
from neurofed.training.model_folder import MODEL_WEIGHTS, TrainedModel

__all__ = [
    "REQUIRED_KEYS",
    "SETTABLE_TRAIN_FIELDS",
    "STUDY_FILE",
    "Study",
    "StudyError",
    "StudyKind",
    "canonical_json",
    "load_study",
]

#: The study's file name in a run folder.
STUDY_FILE = "study.toml"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _canonical(value: Any, where: str) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _canonical(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v, where) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} = {value!r}: a study holds finite numbers only")
        if value.is_integer() and abs(value) < 2**53:
            return int(value)  # 600 and 600.0 mean the same; -0.0 becomes 0
        return value
    raise TypeError(f"{where} = {value!r}: not a JSON value")


def canonical_json(data: Mapping[str, Any]) -> str:
    """Compact JSON with sorted keys and normalised numbers (integral floats as integers).

    >>> canonical_json({"b": 1.0, "a": [0.5, -0.0]})
    '{"a":[0.5,0],"b":1}'
    """
    return json.dumps(
        _canonical(data, "study"), sort_keys=True, separators=(",", ":"), allow_nan=False
    )


def _whole(value: object, minimum: int, maximum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= maximum


@dataclass(frozen=True)
class Study:
    """A validated study (build one with :func:`load_study` or :meth:`Study.from_toml`).

    Attributes
    ----------
    name
        Letters, digits, ``.``, ``_``, ``-`` (used in run folders and job names).
    task, task_config
        The installed task and its validated config.
    model
        The task model's full config (its defaults with the study's overrides).
    strategy, strategy_params
        The installed strategy and its validated parameters.
    rounds, local_epochs, min_sites, round_timeout_s, seed
        Rounds, epochs per round at each site, the quorum of valid updates per round, how long
        a round waits for sites, and the seed of the run.
    selection
        The metric and direction that pick the best round.
    train
        The training config each site trains with (task, model, ``epochs = local_epochs``, seed
        and the strategy's client settings filled in; ``device`` is the site's choice).
    max_update_norm
        L2 bound on a site's change per round (``None`` = off).
    dataset
        A dataset name sites can allow-list (``None`` = any).
    plan
        The ``[plan]`` table (``None``: the study fixes its own spacing and network). A planned
        study's :attr:`train` holds placeholders for what the plan decides; train with
        :meth:`train_config` and the run's plan.
    initial_model
        The ``[initial_model]`` table (``None``: round 1 starts from the seed's weights); its
        ``sha256`` is part of :attr:`content_hash`, its ``path`` is not.
    kind
        ``train`` (the default) or ``evaluate`` (score given models, train nothing).
    evaluation
        An evaluation study's ``[evaluate]`` table (:mod:`~neurofed.federated.study.evaluation`:
        which cases each site scores, and several models, one per round).

    Examples
    --------
    >>> study = Study.from_toml('''
    ... name = "age"
    ... rounds = 3
    ... [task]
    ... id = "brain-age"
    ... [strategy]
    ... name = "fedprox"
    ... mu = 0.1
    ... [selection]
    ... metric = "mae"
    ... direction = "min"
    ... ''')
    >>> study.train.epochs, study.train.fedprox_mu, study.min_sites
    (3, 0.1, 2)
    >>> Study.from_toml(study.to_toml()).content_hash == study.content_hash
    True
    """

    name: str
    task: TaskId
    task_config: ConfigBase
    model: ConfigBase
    strategy: StrategyName
    strategy_params: StrategyParams
    rounds: int
    selection: Selection
    train: TrainConfig
    local_epochs: int = 1
    min_sites: int = 2
    round_timeout_s: float = 3600.0
    seed: int = 0
    max_update_norm: float | None = None
    dataset: str | None = None
    plan: StudyPlan | None = None
    initial_model: InitialModel | None = None
    kind: StudyKind = StudyKind.TRAIN
    evaluation: Evaluation | None = None
    privacy: PrivacyConfig | None = None
    participation: ParticipationConfig | None = None

    def __post_init__(self) -> None:
        def check(ok: bool, field: str, fix: str) -> None:
            if not ok:
                raise ValueError(f"{field} = {getattr(self, field)!r} is invalid: {fix}")

        letters = (
            "use letters, digits, '.', '_' or '-' (at most 100, starting with a letter or digit)"
        )
        check(isinstance(self.name, str) and bool(_NAME.match(self.name)), "name", letters)
        check(
            _whole(self.rounds, 1, MAX_ROUNDS), "rounds", f"use a whole number in 1..{MAX_ROUNDS}"
        )
        epochs = f"use a whole number in 1..{MAX_LOCAL_EPOCHS}"
        check(_whole(self.local_epochs, 1, MAX_LOCAL_EPOCHS), "local_epochs", epochs)
        sites = f"use a whole number of sites in 1..{MAX_SITES}"
        check(_whole(self.min_sites, 1, MAX_SITES), "min_sites", sites)
        check(_whole(self.seed, 0, MAX_SEED), "seed", "use a whole number in 0..2**63 - 1")
        timeout = self.round_timeout_s
        check(
            isinstance(timeout, int | float)
            and not isinstance(timeout, bool)
            and 0 < timeout <= MAX_ROUND_TIMEOUT_S,
            "round_timeout_s",
            f"use a number of seconds in (0, {MAX_ROUND_TIMEOUT_S:g}] (7 days), e.g. 3600",
        )
        object.__setattr__(self, "round_timeout_s", float(timeout))
        if self.max_update_norm is not None:
            bound = self.max_update_norm
            check(
                isinstance(bound, int | float) and not isinstance(bound, bool) and bound > 0,
                "max_update_norm",
                "use a number > 0, or leave it out to switch the check off",
            )
            check(math.isfinite(bound), "max_update_norm", "use a finite number > 0")
            object.__setattr__(self, "max_update_norm", float(bound))
        if self.dataset is not None:
            check(
                isinstance(self.dataset, str) and bool(_NAME.match(self.dataset)),
                "dataset",
                letters,
            )
        check(self.train.task is self.task, "train", "build the study with Study.from_dict")
        check(
            self.train.epochs == self.rounds * self.local_epochs,
            "train",
            "epochs must equal rounds × local_epochs (the learning-rate schedule's length)",
        )
        check(self.train.seed == self.seed, "train", "its seed must equal the study's seed")
        check(
            self.initial_model is None or isinstance(self.initial_model, InitialModel),
            "initial_model",
            "give an InitialModel (or build the study with Study.from_dict)",
        )
        check(isinstance(self.kind, StudyKind), "kind", 'use "train" or "evaluate"')
        if self.kind is StudyKind.EVALUATE:
            models = self.evaluated_models()
            check(bool(models), "kind", "an evaluation needs [initial_model] or [evaluate] models")
            check(
                self.initial_model is None or not (self.evaluation and self.evaluation.models),
                "kind",
                "give [initial_model] or [evaluate] models, not both",
            )
            check(self.rounds == len(models), "kind", "an evaluation runs one round per model")
            check(self.plan is None, "kind", "an evaluation plans nothing: remove [plan]")
        else:
            check(self.evaluation is None, "evaluation", 'only kind = "evaluate" has [evaluate]')
        incoming = self.participation is not None and self.participation.validate_incoming
        if incoming and self.strategy_params.secagg:
            raise ValueError(
                "[participation] validate_incoming = true is invalid with secagg = true: it "
                "scores the model inside the training task, which under secagg is one step of "
                "four; leave validate_incoming out or set secagg = false"
            )

    # -- reading -----------------------------------------------------------------------------

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], source: str = STUDY_FILE, *, base_dir: Path | None = None
    ) -> Study:
        """Validate parsed TOML; errors are :class:`StudyError` naming ``source`` and the key.

        A relative ``[initial_model] path`` is taken from ``base_dir`` (``None``: the current
        directory) and kept absolute.
        """
        kwargs = parse_study(data, source, base_dir)
        try:
            return cls(**kwargs)
        except ValueError as error:
            raise StudyError(f"{source}: {error}") from None

    @classmethod
    def from_toml(
        cls, text: str, source: str = STUDY_FILE, *, base_dir: Path | None = None
    ) -> Study:
        """Parse and validate TOML text (``base_dir`` as in :meth:`from_dict`)."""
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise StudyError(f"{source}: not valid TOML ({error}); fix the syntax") from None
        return cls.from_dict(data, source, base_dir=base_dir)

    # -- derived -----------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        """The registered model the task uses."""
        return str(self.build_task().model_name)

    def build_task(self) -> Task:
        """The task, configured."""
        return get_task(self.task, self.task_config)

    def build_strategy(self) -> Strategy:
        """The strategy, configured (with the model's head map for ``mask_heads``)."""
        return get_strategy(
            self.strategy, self.strategy_params, heads=heads_for_model(self.model_name)
        )

    def client_settings(self) -> ClientSettings:
        """What each site's training must do for the strategy."""
        return self.build_strategy().client_settings()

    def train_config(self, *, device: str = "auto", plan: Plan | None = None) -> TrainConfig:
        """The training config a site trains with; ``device`` is the site's own choice.

        A study with ``[plan]`` needs the run's ``plan`` (its ``plan.json``), whose settings
        replace what the plan decides (:func:`~neurofed.federated.study.plan.apply_plan`).

        Raises
        ------
        ValueError
            A planned study without a plan, or a plan for a study without ``[plan]``.
        """
        if (plan is None) != (self.plan is None):
            fix = (
                "pass the run's plan (plan.json, made by the fingerprint round)"
                if plan is None
                else "this study has no [plan]; train it without one"
            )
            raise ValueError(f"study {self.name!r}: {fix}")
        train = self.train if plan is None else apply_plan(self.train, plan)
        return train if device == train.device else train.with_changes(device=device)

    def baseline_config(
        self, training_sites: int, *, device: str = "auto", plan: Plan | None = None
    ) -> TrainConfig:
        """The training config of a baseline trained without federation for the same budget:
        the study's network, patch, learning rate, seed and (planned) spacing, ``rounds ×
        local_epochs`` epochs (validated after the last), and ``training_sites`` times the
        samples per epoch (a pooled model then takes as many steps as the whole federation).
        """
        config = self.train_config(device=device, plan=plan)
        epochs = self.rounds * self.local_epochs
        per_site = config.samples_per_epoch  # None: an epoch is one pass over the cases anyway
        return config.with_changes(
            epochs=epochs,
            seed=self.seed,
            samples_per_epoch=None if per_site is None else per_site * training_sites,
            validate_every=epochs,
        )

    def read_plan(self, path: Path) -> Plan:
        """A plan file of this study (the run's ``plan.json``, or the copy a site keeps).

        Raises
        ------
        PlanError
            The study has no ``[plan]``, the file is unreadable, or it holds a plan of another
            task or other planner settings; the message names the file.
        """
        path = Path(path)
        if self.plan is None:
            raise PlanError(f"{path}: study {self.name!r} has no [plan]; it trains without one")
        try:
            plan = Plan.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, ValueError) as exc:  # PlanError is a ValueError
            raise PlanError(
                f"{path}: cannot read the plan ({exc}); give the run's plan.json"
            ) from None
        try:
            check_plan(plan, self.task, self.plan.settings)
        except PlanError as exc:
            raise PlanError(f"{path}: {exc}") from None
        return plan

    def evaluated_models(self) -> tuple[EvaluatedModel, ...]:
        """The models an evaluation study scores, round ``k`` the ``k``-th (``()``: training)."""
        if self.kind is not StudyKind.EVALUATE:
            return ()
        if self.evaluation is not None and self.evaluation.models:
            return self.evaluation.models
        if self.initial_model is None:
            return ()
        return (EvaluatedModel(self.initial_model.path.name, self.initial_model),)

    @property
    def evaluation_split(self) -> Split | None:
        """Which cases an evaluation's sites score (``None``: every case), unless
        ``[evaluate.site_splits]`` names the site (:meth:`evaluation_split_for`)."""
        return None if self.evaluation is None else self.evaluation.split

    def evaluation_split_for(self, site: str) -> Split | None:
        """Which cases ``site`` scores in an evaluation (``None``: every case)."""
        return None if self.evaluation is None else self.evaluation.split_for(site)

    def check_evaluated_sites(self, sites: Sequence[str]) -> None:
        """Every site ``[evaluate.site_splits]`` names is one of the federation's ``sites``.

        Raises
        ------
        StudyError
            Naming the unknown site, the federation's sites and the fix.
        """
        named = () if self.evaluation is None else self.evaluation.site_splits
        unknown = [site for site, _ in named if site not in sites]
        if unknown:
            raise StudyError(
                f"{self.name}: [evaluate.site_splits] names {', '.join(unknown)}, not a site of "
                f"this federation (its sites: {', '.join(sorted(sites))}); correct the name or "
                "remove the entry"
            )

    def load_evaluated(self, index: int) -> tuple[TrainedModel, Parameters]:
        """The ``index``-th model of an evaluation study and the weights a round sends, checked
        as :meth:`load_initial_model` checks one, and that it preprocesses and scores as the
        study says.

        Raises
        ------
        InitialModelError
            Naming the folder and what differs, and the fix.
        """
        entry = self.evaluated_models()[index]
        trained = entry.model.load(self.task)
        parameters = entry.model.parameters(trained, self.train)  # checks the network
        self._check_evaluated(entry.model, trained)
        return trained, parameters

    def load_initial_model(self) -> TrainedModel | None:
        """The ``[initial_model]`` folder (``None`` without one), checked as far as it can be
        before a run: its weights' SHA-256, its seal, its task, and — unless the plan decides
        the network (``ms-lesion`` with ``[plan]``) — that it is the study's network.

        Raises
        ------
        InitialModelError
            Naming the folder, the expected and actual hashes or the differences, and the fix.
        """
        if self.kind is StudyKind.EVALUATE:  # every model scored, checked before any round
            first, _ = self.load_evaluated(0)
            for k in range(1, len(self.evaluated_models())):
                self.load_evaluated(k)
            return first
        if self.initial_model is None:
            return None
        trained = self.initial_model.load(self.task)
        if self.plan is None or ("model", "plan") not in planned_keys(self.task):
            self.initial_model.parameters(trained, self.train)  # the network is known: check it
        return trained

    def _describe_evaluation(self) -> list[str]:
        """What an evaluation study asks of a site, one line per model it scores."""
        if self.kind is not StudyKind.EVALUATE:
            return []
        split = self.evaluation_split
        cases = "every case of the site" if split is None else f"the site's {split.value} split"
        lines = [
            f"  kind       evaluation only: each model is scored on {cases}; nothing is trained"
        ]
        for site, own in () if self.evaluation is None else self.evaluation.site_splits:
            cases = "every case" if own is None else f"its {own.value} split"
            lines.append(f"  {site:<10} scores {cases} instead")
        if self.evaluation is not None and self.evaluation.models:
            lines += [
                f"  model {k}    {m.name!r}: {MODEL_WEIGHTS} sha256:{m.model.sha256} "
                f"(read by the server from {m.model.path})"
                for k, m in enumerate(self.evaluation.models, start=1)
            ]
        return lines

    def _check_evaluated(self, given: InitialModel, trained: TrainedModel) -> None:
        """An evaluation scores the model as it was trained: the sites must preprocess and
        score as its folder says, or the numbers describe another model."""
        pairs = (
            ("[train.preprocess]", trained.preprocess.to_json(), self.train.preprocess.to_json()),
            ("[task]", trained.config.task_config.to_json(), self.train.task_config.to_json()),
        )
        for table, theirs, ours in pairs:
            differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
            if differ:
                model_side = ", ".join(f"{k} = {theirs.get(k)!r}" for k in differ)
                study_side = ", ".join(f"{k} = {ours.get(k)!r}" for k in differ)
                raise InitialModelError(
                    f"{given.path}: the model was trained with {table} "
                    f"{model_side}; the evaluation study has {study_side} — give the study's "
                    f"{table} the model's values"
                )

    # -- writing -----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The validated study as TOML-ready data: every default filled, ``None`` left out."""
        train_json = self.train.to_json()
        train = {k: train_json[k] for k in SETTABLE_TRAIN_FIELDS if train_json[k] is not None}
        if self.train.augment is None:
            train["augment"] = False
        out: dict[str, Any] = {"name": self.name}
        if self.kind is not StudyKind.TRAIN:  # a training study keeps the hash it had
            out["kind"] = self.kind.value
        out |= {
            "rounds": self.rounds,
            "local_epochs": self.local_epochs,
            "min_sites": self.min_sites,
            "round_timeout_s": self.round_timeout_s,
            "seed": self.seed,
        }
        if self.max_update_norm is not None:
            out["max_update_norm"] = self.max_update_norm
        if self.dataset is not None:
            out["dataset"] = self.dataset
        out["task"] = {"id": self.task.value, **_drop_none(self.task_config.to_json())}
        out["model"] = _drop_none(self.model.to_json())
        out["strategy"] = {"name": self.strategy.value, **self.strategy_params.to_json()}
        out["selection"] = {
            "metric": self.selection.metric,
            "direction": self.selection.direction.value,
        }
        out["train"] = _drop_none(train)
        if self.plan is not None:  # what the plan decides is not the study's
            out = strip_planned(out, self.task) | {"plan": self.plan.to_dict()}
        if self.initial_model is not None:
            out["initial_model"] = self.initial_model.to_dict()
        if self.evaluation is not None:
            out["evaluate"] = self.evaluation.to_dict()
        if self.privacy is not None:
            out["privacy"] = self.privacy.to_dict()
        if self.participation is not None:
            out["participation"] = self.participation.to_dict()
        return out

    @property
    def content_hash(self) -> str:
        """SHA-256 (hex) of :func:`canonical_json` of :meth:`to_dict`: the study's identity.

        ``[initial_model]`` counts by its ``sha256`` only: where the weights lie is not the
        study (see the module docstring).
        """
        data = self.to_dict()
        if self.initial_model is not None:
            data["initial_model"] = self.initial_model.hashed()
        if self.evaluation is not None:
            data["evaluate"] = self.evaluation.hashed()
        return hashlib.sha256(canonical_json(data).encode()).hexdigest()

    def to_toml(self) -> str:
        """The study as TOML with every default filled (reads back to the same hash)."""
        header = f"# neurofed study {self.name!r}, content hash sha256:{self.content_hash}\n"
        return header + dumps(self.to_dict())

    def _describe_plan(self) -> list[str]:
        """The custodian's lines about ``[plan]`` (none without one)."""
        if self.plan is None:
            return []
        decided = ", ".join(".".join(k) for k in planned_keys(self.task))
        s = self.plan.settings
        return [
            f"  plan       from a federated {self.plan.source.value} round before round 1: it "
            f"decides {decided} (memory budget {s.memory_budget_gb:g} GB, filters "
            f"{s.base_filters}…{s.max_filters})",
            "             for it a site sends its training split's fingerprint: fixed-bin "
            "histograms of spacings, brain sizes and intensities, case counts and integer sums",
        ]

    def _planned_item(self, item: str) -> str:
        """``name=value`` as ``name=(plan)`` when the plan decides ``name``."""
        name = item.split("=", 1)[0]
        planned = self.plan is not None and any(k[-1] == name for k in planned_keys(self.task))
        return f"{name}=(plan)" if planned else item

    def _model_described(self) -> dict[str, Any]:
        model = self.model.to_json()
        if self.plan is not None and ("model", "plan") in planned_keys(self.task):
            model["plan"] = "(plan)"
        return model

    def describe(self) -> str:
        """A readable summary for a data custodian deciding whether to approve the study."""
        settings = self.client_settings()
        direction = "higher" if self.selection.direction is Direction.MAX else "lower"
        strategy_line = get_strategy_type(self.strategy).description
        params = _pairs(self.strategy_params.to_json())
        proxy = getattr(self.strategy_params, "proxy", None)
        t = self.train
        training = [
            f"batch_size={t.batch_size}",
            f"learning_rate={t.learning_rate:g} ({t.optimizer.value})",
            f"patch_shape={t.patch_shape}",
            f"spacing={t.preprocess.spacing}",
            f"spatial_shape={t.preprocess.spatial_shape}",
            f"augment={'on' if t.augment is not None else 'off'}",
        ]
        training = [self._planned_item(item) for item in training]
        site = []
        if settings.local_parameters:
            site.append(f"keep parameters matching {list(settings.local_parameters)} local")
        if settings.fedprox_mu:
            site.append(f"add a FedProx proximal term (mu={settings.fedprox_mu:g})")
        if settings.ditto_lambda is not None:
            site.append(f"train a personalised model (Ditto lambda={settings.ditto_lambda:g})")
        norm = (
            f"rejected above an L2 norm of {self.max_update_norm:g}"
            if self.max_update_norm is not None
            else "checked for names, shapes, dtypes and NaN/Inf (no norm bound)"
        )
        lines = [
            f"Study {self.name!r}  sha256:{self.content_hash}",
            f"  task       {self.task.value} ({_pairs(self.task_config.to_json())})",
            f"  model      {self.model_name} ({_pairs(self._model_described())})",
            f"  strategy   {self.strategy.value}: {strategy_line} ({params})",
            f"  rounds     {self.rounds} × {self.local_epochs} local epoch(s); a round needs "
            f"{self.min_sites} valid site update(s) and waits at most {self.round_timeout_s:g} s",
            f"  selection  best round by {self.selection.metric} ({direction} is better)",
            f"  training   {', '.join(training)}; seed {self.seed}",
            f"  dataset    {self.dataset or 'any (no dataset name given)'}",
            f"  sites      {'; '.join(site) if site else 'train the shared model only'}",
            f"  updates    {norm}",
            *self._describe_plan(),
            *(
                []
                if self.initial_model is None
                else [f"  initial    {self.initial_model.describe()}"]
            ),
            *self._describe_evaluation(),
            *([] if self.privacy is None else [f"  privacy    {self.privacy.describe()}"]),
            *(
                []
                if self.participation is None
                else [f"  rounds     {self.participation.describe()}"]
            ),
            "  leaves a site: "
            + (
                "aggregate metrics (sums and counts) only"
                if self.kind is StudyKind.EVALUATE
                else "model parameters, the model's logits on the cases of the public dataset "
                f"{proxy!r} that every party holds (`neurofed site public-dataset`), and "
                "aggregate metrics; nothing derived from the site's images"
                if proxy is not None
                else "model parameters, class-mean logits of classes of at least "
                f"{getattr(self.strategy_params, 'n_min', 0)} cases and SYNTHETIC VOLUMES "
                "condensed from the site's cases (derived patient data; sent only where the "
                "custodian ran `neurofed site allow-condensed`), and aggregate metrics"
                if self.strategy is StrategyName.DISTILL
                else "model parameters and aggregate metrics (sums and counts) only"
            ),
            "  code       none travels: task, model and strategy are names of installed code",
        ]
        return "\n".join(lines)


def _drop_none(data: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: _drop_none(v) if isinstance(v, Mapping) else v for k, v in data.items() if v is not None
    }


def _pairs(data: Mapping[str, Any], prefix: str = "") -> str:
    return ", ".join(
        _pairs(v, f"{prefix}{k}.") if isinstance(v, Mapping) else f"{prefix}{k}={v}"
        for k, v in data.items()
    )


def load_study(path: Path | str) -> Study:
    """Read and validate a ``study.toml``.

    A relative ``[initial_model] path`` is taken from the file's folder.

    Raises
    ------
    StudyError
        The file is missing or not TOML, or a key is unknown, missing or invalid — the message
        names the file, the key and the fix.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StudyError(f"{path}: no such study file; check the path") from None
    except (OSError, UnicodeDecodeError) as error:
        raise StudyError(f"{path}: cannot read the study ({error})") from None
    return Study.from_toml(text, str(path), base_dir=path.parent)
