"""Resuming a run: what the checkpoint's recorded settings allow, and the state a run starts from.

A checkpoint resumes exactly only with the settings it was written with. A change to the recipe (batch per
device, processes, accumulation, epochs or steps, learning rate and schedule, optimiser, augmentation, seed,
data, model, precision) is refused, naming each setting with its old and new value, unless the user accepts
it (`--resume_with_changes`). Then the run continues from the same position in *samples* (not optimizer steps:
a step holds another number of samples once the global batch changes; `resume_position`), with the new learning
rate and optimiser settings applied, and the change is recorded in the checkpoints and the model card.

Settings that only say where and how the run reports, saves or computes, and leave the numbers it trains with
alone, may change freely: the flags declared FREE (`flags.flag`), and the record of earlier changes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils.constants import SCALER_NAME

from swin_tiny_hf.training.checkpointing import ARGS_FILE, STATE_FILE, load_training_state
from swin_tiny_hf.training.flags import free_on_resume, get_args_parser
from swin_tiny_hf.training.optimization import OptimizerSettings, apply_optimizer_settings
from swin_tiny_hf.training.resume_position import (
    EpochLayout,
    position_after_changes,
    recorded_position,
    restart_accumulation,
)
from swin_tiny_hf.training.run_state import RunState

logger = logging.getLogger("train")

# Where and how a run reports, saves or computes: a change leaves its training numbers as they were. Besides the
# flags, the record of earlier accepted changes (in args.json as resumed_with_changes).
FREE_TO_CHANGE = free_on_resume(get_args_parser()) | {"resumed_with_changes"}
# Recorded settings that are not flags of their own (worked out from flags and processes).
DERIVED_SETTINGS = ("num_processes", "model_config", "mixed_precision_resolved", "global_batch_size")


class ResumeRefused(ValueError):
    """The checkpoint's settings differ from the new run's in ways that break an exact resume."""


def changed_settings(recorded: dict, current: dict, free: frozenset[str] = FREE_TO_CHANGE) -> dict[str, tuple]:
    """{setting: (checkpoint's value, new value)} for every setting that differs and is not free to change.
    Values are compared as JSON would store them (tuples as lists). A setting that only one side has (a flag
    added or removed between versions of train.py) is not compared."""
    normalise = lambda value: json.loads(json.dumps(value))  # noqa: E731
    changes = {}
    for key in sorted(set(recorded) & set(current)):
        if key in free:
            continue
        old, new = normalise(recorded.get(key)), normalise(current.get(key))
        if old != new:
            changes[key] = (old, new)
    return changes


def describe_changes(changes: dict[str, tuple]) -> str:
    return ", ".join(
        f"{key if key in DERIVED_SETTINGS else '--' + key} {old!r} -> {new!r}" for key, (old, new) in changes.items()
    )


def refusal(checkpoint: Path, changes: dict[str, tuple]) -> str:
    return (
        f"--resume_from_checkpoint {str(checkpoint)!r} would not resume exactly: these settings differ from the "
        f"checkpoint's: {describe_changes(changes)}. Resume with the checkpoint's settings (its args.json), or pass "
        "--resume_with_changes to go on with the new ones from the same number of training samples."
    )


def load_run_state(accelerator: Accelerator, checkpoint: Path) -> None:
    """accelerate's `load_state`, also for a checkpoint written without a grad scaler (fp32 or bf16) resumed in fp16
    (--resume_with_changes; `auto` gives bf16 on some CPUs, fp16 on a GPU): the scaler then starts afresh."""
    scaler = accelerator.scaler
    if scaler is not None and not (checkpoint / SCALER_NAME).exists():
        logger.warning("%s holds no grad scaler (written without fp16): the fp16 loss scale starts afresh", checkpoint)
        accelerator.scaler = None
    try:
        accelerator.load_state(str(checkpoint))
    finally:
        accelerator.scaler = scaler


def initial_state(
    accelerator: Accelerator,
    checkpoint: Path | None,
    current_args: dict,
    accept_changes: bool,
    optimizer,
    scheduler,
    optimizer_settings: OptimizerSettings,
    batches_per_epoch: int,
) -> RunState:
    """A fresh run's state (checkpoint None), or the state of `checkpoint` after loading its full accelerate
    state (model, optimizer, scheduler, scaler, RNGs) into the prepared objects.

    The checkpoint's recorded settings are compared with this run's (`current_args`, as args.json records them)
    first: a change that breaks the exact resume is refused (ResumeRefused), or with `accept_changes`
    (--resume_with_changes) applied: same epoch and position in samples, the step count of the new batch settings,
    new optimiser settings (resume_position). Either way the first optimizer step holds the run's accumulation
    of micro-batches, and the state names this run (its checkpoints replace no earlier run's)."""
    if checkpoint is None:
        return RunState()
    recorded = json.loads((checkpoint / ARGS_FILE).read_text()) if (checkpoint / ARGS_FILE).exists() else {}
    changes = changed_settings(recorded, current_args)
    if changes and not accept_changes:
        raise ResumeRefused(refusal(checkpoint, changes))
    per_device = current_args["per_device_train_batch_size"]
    processes, accumulation = accelerator.num_processes, current_args["gradient_accumulation_steps"]
    recorded_micro_batch = recorded.get("per_device_train_batch_size", per_device) * recorded.get(
        "num_processes", processes
    )
    # The run state is read before any weight is loaded: a file that cannot be resumed from stops the run cleanly.
    try:
        saved = load_training_state(checkpoint)
        state = RunState.from_json({**saved, "run_id": None})  # a new run: its own id
        position = recorded_position(
            saved, recorded_micro_batch, recorded.get("gradient_accumulation_steps", accumulation)
        )
    except KeyError as error:
        raise ResumeRefused(f"{checkpoint / STATE_FILE} cannot be resumed from: it has no {error.args[0]!r}") from None
    except (OSError, ValueError, TypeError) as error:
        raise ResumeRefused(f"{checkpoint / STATE_FILE} cannot be resumed from: {error}") from None
    if state.unknown and accelerator.is_main_process:
        logger.warning(
            "%s holds keys this version of swin_tiny_hf does not know, kept as they are: %s",
            checkpoint / STATE_FILE,
            ", ".join(sorted(state.unknown)),
        )
    load_run_state(accelerator, checkpoint)
    restart_accumulation(accelerator)
    logger.info(
        "resumed from %s at step %d (epoch %d, batch %d, %d training samples)",
        checkpoint,
        position.completed_steps,
        position.epoch,
        position.batches_into_epoch,
        position.samples_seen,
    )
    if changes:
        layout = EpochLayout(batches_per_epoch, per_device * processes, accumulation)
        resumed = position_after_changes(position, layout)
        note = ""
        if position.samples_into_epoch > layout.samples_per_epoch:
            note = f" At the new batch the epoch is {layout.samples_per_epoch} samples (drop_last): it is done."
        elif resumed.samples_into_epoch < position.samples_into_epoch:
            note = (
                f" The epoch's position, {position.samples_into_epoch} samples, rounds down to a whole micro-batch of "
                f"{layout.samples_per_micro_batch}: {position.samples_into_epoch - resumed.samples_into_epoch} are "
                "trained again."
            )
        position = resumed
        apply_optimizer_settings(optimizer, scheduler, optimizer_settings, position.completed_steps)
        record = {"samples": position.samples_seen, "changes": {k: list(v) for k, v in changes.items()}}
        state.resume_changes = [*state.resume_changes, record]
        logger.warning(
            "--resume_with_changes: %s. Going on from %d training samples: step %d, batch %d of epoch %d, peak "
            "learning rate %.4g.%s",
            describe_changes(changes),
            position.samples_seen,
            position.completed_steps,
            position.batches_into_epoch,
            position.epoch + 1,
            optimizer_settings.learning_rate,
            note,
        )
    state.completed_steps, state.batches_into_epoch = position.completed_steps, position.batches_into_epoch
    state.samples_into_epoch, state.samples_seen = position.samples_into_epoch, position.samples_seen
    return state
