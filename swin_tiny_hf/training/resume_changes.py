"""What a resume changes: the checkpoint's recorded settings (its args.json) against the new run's.

A checkpoint resumes exactly only with the settings it was written with. A change to the recipe (batch per
device, processes, accumulation, epochs or steps, learning rate and schedule, optimiser, augmentation, seed,
data, model, precision) is refused, naming each setting with its old and new value, unless the user accepts
it (`--resume_with_changes`). Then the run continues from the same position in *samples* (not optimizer steps:
a step holds another number of samples once the global batch changes; `resume_position`), with the new learning
rate and optimiser settings applied, and the change is recorded in the checkpoints and the model card.

Settings that only say where and how the run reports, saves or computes, and leave the numbers it trains with
alone, may change freely (`FREE_TO_CHANGE`).
"""

from __future__ import annotations

import json
from pathlib import Path

# Where and how a run reports, saves or computes: a change leaves its training numbers as they were.
FREE_TO_CHANGE = frozenset(
    {
        "output_dir",
        "resume_from_checkpoint",
        "resume_with_changes",
        "overwrite_output_dir",
        "logging_steps",
        "checkpointing_steps",
        "checkpoints_total_limit",
        "with_tracking",
        "report_to",
        "push_to_hub",
        "hub_model_id",
        "hub_token",
        "dataloader_num_workers",
        "per_device_eval_batch_size",
        # what is evaluated, not what is trained: the weights resume exactly; the history's validation figures
        # before and after the change are on different numbers of images (said in the README)
        "max_eval_samples",
        "cache_dir",
        "eval_only",
        "max_nonfinite_steps",
        "preemption_signals",
        "preemption_check_steps",
        "torch_compile",  # the same arithmetic, compiled
        "attn_implementation",  # the same attention, another kernel
        "mixed_precision",  # compared as mixed_precision_resolved: "auto" resolves per machine
        "resumed_with_changes",  # the record of earlier accepted changes
        # a run that met a bad image resumes with it: the rows that decode are the same, and a start without it
        # found no bad image (else it would have refused to start), so the data are the same
        "skip_bad_images",
    }
)


def changed_settings(recorded: dict, current: dict) -> dict[str, tuple]:
    """{setting: (checkpoint's value, new value)} for every setting that differs and is not free to change.
    Values are compared as JSON would store them (tuples as lists). A setting that only one side has (a flag
    added or removed between versions of train.py) is not compared."""
    normalise = lambda value: json.loads(json.dumps(value))  # noqa: E731
    changes = {}
    for key in sorted(set(recorded) & set(current)):
        if key in FREE_TO_CHANGE:
            continue
        old, new = normalise(recorded.get(key)), normalise(current.get(key))
        if old != new:
            changes[key] = (old, new)
    return changes


def describe_changes(changes: dict[str, tuple]) -> str:
    return ", ".join(f"{_flag(key)} {old!r} -> {new!r}" for key, (old, new) in changes.items())


def _flag(key: str) -> str:
    return (
        key
        if key in ("num_processes", "model_config", "mixed_precision_resolved", "global_batch_size")
        else f"--{key}"
    )


def refusal(checkpoint: Path, changes: dict[str, tuple]) -> str:
    return (
        f"--resume_from_checkpoint {str(checkpoint)!r} would not resume exactly: these settings differ from the "
        f"checkpoint's: {describe_changes(changes)}. Resume with the checkpoint's settings (its args.json), or pass "
        "--resume_with_changes to go on with the new ones from the same number of training samples."
    )


def apply_optimizer_settings(optimizer, scheduler, args, completed_steps: int) -> None:
    """After `load_state`: the new peak learning rate, weight decay and betas in every parameter group, and the
    (new) schedule at `completed_steps`. The checkpoint's optimizer state otherwise wins silently."""
    inner = getattr(scheduler, "scheduler", scheduler)  # accelerate's AcceleratedScheduler wraps torch's
    inner.base_lrs = [args.learning_rate for _ in inner.base_lrs]
    inner.last_epoch = completed_steps
    factors = [factor(completed_steps) for factor in inner.lr_lambdas]
    for index, (group, factor) in enumerate(zip(optimizer.param_groups, factors)):
        group["initial_lr"] = args.learning_rate
        group["lr"] = args.learning_rate * factor
        group["betas"] = (args.adam_beta1, args.adam_beta2)
        if index == 0:  # parameter_groups: the decay group first, the no-decay group (0) after it
            group["weight_decay"] = args.weight_decay
    inner._last_lr = [group["lr"] for group in optimizer.param_groups]
