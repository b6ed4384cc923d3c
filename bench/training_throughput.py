"""Training throughput of ``LocalTrainer`` against a bare PyTorch loop on the same model.

For a small configuration of each segmentation / regression model, both loops train the same
architecture (same seed) with the same optimiser on the same in-memory cases, without
augmentation: the bare loop iterates over pre-built batches (``model(x)``, ``task.loss``,
``backward``, ``step``); the engine runs ``LocalTrainer.fit`` (patch sampling from the in-memory
cases, collation, progress bookkeeping, its own RNG handling) with no validation and no run
folder. Runs alternate (engine, bare, engine, bare, ...) so that a busy machine slows both alike;
the first epoch of each is a warm-up. The time to write one checkpoint is reported separately.

Each timed engine run is one ``fit`` of ``--epochs-per-fit`` epochs (default 1, a federated
round's shape). A model with batch norm replays the last epoch's batches once per ``fit``
(``neurofed.training.batch_norm``), so its engine time includes that replay: more epochs per
fit spread it over more steps, as local and pooled training do.

Usage::

    python bench/training_throughput.py [--threads N] [--repeats R] [--steps S]
                                        [--epochs-per-fit E] [--out FILE]

Prints a table and writes JSON (default ``bench/results/training_throughput.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurofed import __version__
from neurofed.data.subject import Clinical
from neurofed.keys import TaskId
from neurofed.tasks import Batch, Task
from neurofed.training import (
    CaseDataset,
    LocalTrainer,
    TrainConfig,
    TrainingCase,
    default_train_config,
    epoch_batches,
)

TARGET = 0.9


@dataclass(frozen=True)
class Setup:
    """One benchmarked model: its task, the input each step sees, and the batch size."""

    task: TaskId
    input_shape: tuple[int, int, int]
    batch_size: int

    def config(self, steps: int) -> TrainConfig:
        patch = self.input_shape if self.task in (TaskId.TUMOR_REGIONS, TaskId.MS_LESION) else None
        base = default_train_config(self.task, patch_shape=patch)
        return base.with_changes(
            augment=None,
            batch_size=self.batch_size,
            samples_per_epoch=steps * self.batch_size,
            validate_every=0,
            device="cpu",
        )


SETUPS = (
    Setup(TaskId.TUMOR_REGIONS, (48, 48, 48), 2),  # residual-unet, base 8, depth 4
    Setup(TaskId.GLIOMA_MULTITASK, (40, 48, 40), 2),  # multitask-unet, base 8
    Setup(TaskId.MS_LESION, (48, 48, 48), 2),  # dynunet, planned for 48³ at 2 mm
    Setup(TaskId.BRAIN_AGE, (64, 96, 64), 4),  # sfcn, width 0.25
)


def _cases(task: Task, shape: tuple[int, int, int], count: int) -> CaseDataset:
    """In-memory cases of exactly the input shape, with labels and clinical targets."""
    rng = np.random.default_rng(0)
    cases = []
    for index in range(count):
        image = rng.standard_normal((len(task.modalities), *shape)).astype(np.float32)
        label = None
        if task.needs_label_map:
            label = np.zeros(shape, np.uint8)
            x, y, z = (n // 4 for n in shape)
            label[x : 3 * x, y : 3 * y, z : 3 * z] = 1 + index % task.max_label
        clinical = Clinical(idh=bool(index % 2), codel_1p19q=False, mgmt=True, grade=2 + index % 3)
        clinical = Clinical(**{**clinical.to_json(), "age": 30.0 + 5 * index})
        cases.append(TrainingCase(f"c{index}", "bench", image, label, clinical))
    return CaseDataset(cases)


def _bare_epoch(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, task: Task, batches: list[Batch]
) -> float:
    model.train()
    began = time.perf_counter()
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        loss = task.loss(model(batch.image), batch)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - began


def run_setup(setup: Setup, *, steps: int, repeats: int, epochs: int = 1) -> dict[str, Any]:
    config = setup.config(steps)
    task = config.build_task()
    dataset = _cases(task, setup.input_shape, count=max(4, setup.batch_size * 2))
    engine = LocalTrainer(config, dataset)
    bare = LocalTrainer(config, dataset)  # same seed: same initial weights, same optimiser
    batches = list(epoch_batches(dataset, config, epoch=1, task=task))
    engine.fit(1)  # warm-up (allocations, oneDNN primitives)
    _bare_epoch(bare.model, bare.optimizer, task, batches)
    engine_times, bare_times = [], []
    for _ in range(repeats):
        began = time.perf_counter()
        engine.fit(epochs)
        engine_times.append((time.perf_counter() - began) / epochs)
        bare_times.append(
            sum(_bare_epoch(bare.model, bare.optimizer, task, batches) for _ in range(epochs))
            / epochs
        )
    with tempfile.TemporaryDirectory() as folder:
        engine.run_dir = Path(folder)
        began = time.perf_counter()
        engine.save_checkpoint()
        checkpoint_seconds = time.perf_counter() - began
    engine_rate = [steps / t for t in engine_times]
    bare_rate = [steps / t for t in bare_times]
    ratios = [e / b for e, b in zip(engine_rate, bare_rate, strict=True)]
    return {
        "task": config.task.value,
        "model": config.model_name,
        "model_config": config.model_config.to_json(),
        "input_shape": list(setup.input_shape),
        "batch_size": setup.batch_size,
        "parameters": sum(p.numel() for p in engine.model.parameters()),
        "steps_per_epoch": steps,
        "repeats": repeats,
        "epochs_per_fit": epochs,
        "engine_steps_per_s": statistics.median(engine_rate),
        "bare_steps_per_s": statistics.median(bare_rate),
        "ratio": statistics.median(engine_rate) / statistics.median(bare_rate),
        "ratio_of_pairs_median": statistics.median(ratios),
        "engine_epoch_seconds": engine_times,
        "bare_epoch_seconds": bare_times,
        "checkpoint_seconds": checkpoint_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--repeats", type=int, default=5, help="timed fits per loop")
    parser.add_argument("--epochs-per-fit", type=int, default=1, help="epochs of each timed fit")
    parser.add_argument("--steps", type=int, default=8, help="optimiser steps per epoch")
    parser.add_argument("--only", nargs="*", default=None, help="task ids to run")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "training_throughput.json"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    rows = []
    print(
        f"{'task':<17} {'model':<15} {'input':<12} {'B':>2} {'bare steps/s':>13} "
        f"{'engine steps/s':>15} {'engine/bare':>12} {'ckpt s':>7}"
    )
    for setup in SETUPS:
        if args.only and setup.task.value not in args.only:
            continue
        row = run_setup(setup, steps=args.steps, repeats=args.repeats, epochs=args.epochs_per_fit)
        rows.append(row)
        shape = "x".join(map(str, row["input_shape"]))
        print(
            f"{row['task']:<17} {row['model']:<15} {shape:<12} {row['batch_size']:>2} "
            f"{row['bare_steps_per_s']:>13.3f} {row['engine_steps_per_s']:>15.3f} "
            f"{row['ratio']:>11.1%} {row['checkpoint_seconds']:>7.3f}",
            flush=True,
        )
    worst = min(r["ratio"] for r in rows)
    print(f"lowest engine/bare: {worst:.1%} (target >= {TARGET:.0%})")
    payload = {
        "benchmark": "training_throughput",
        "neurofed": __version__,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "target_ratio": TARGET,
        "lowest_ratio": worst,
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
