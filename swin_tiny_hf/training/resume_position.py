"""Where a run stands in its training data, in samples, and where a resume with other batch settings goes on.

An epoch of the training loader is, on every process, `micro_batches` micro-batches, each full (drop_last, or
accelerate's even batches): `samples_per_micro_batch` = per-device batch x processes samples across processes,
taken in the epoch's shuffled order (a function of the seed and the epoch only, whatever the batch). Every
`accumulation` micro-batches make one optimizer step, and the loader's end closes the epoch's last step early when
`micro_batches` is not a multiple of `accumulation` (accelerate's `sync_with_dataloader`): an epoch has
ceil(micro_batches / accumulation) steps, and its last one may hold fewer samples than the others. Samples are
therefore not steps x samples a step: the run counts them, and its checkpoints record them
(training_state.json's `samples_seen`, and `samples_into_epoch`, the position in the epoch's order).

A resume with another per-device batch, process count or accumulation (`--resume_with_changes`) goes on in the
same epoch from the same position in its order, rounded down to a whole micro-batch of the new size (the samples
in between are trained again; at most one micro-batch), and counts the optimizer steps done so that the epoch ends
on the step where the new settings end it: the step counter, the schedule and the position in the epoch agree,
also when drop_last makes the new epoch shorter than the position. The first step after any resume holds the new
`accumulation` micro-batches (`restart_accumulation`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields


@dataclass(frozen=True)
class EpochLayout:
    """How one epoch of the training loader splits into micro-batches and optimizer steps."""

    micro_batches: int  # per process: len(train_dataloader)
    samples_per_micro_batch: int  # across processes: per-device batch x processes
    accumulation: int  # --gradient_accumulation_steps

    def __post_init__(self):
        for field in fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"EpochLayout.{field.name} must be an integer of at least 1, got {value!r}.")

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(self.micro_batches / self.accumulation)

    @property
    def samples_per_epoch(self) -> int:
        return self.micro_batches * self.samples_per_micro_batch

    def steps_left(self, batches_into_epoch: int) -> int:
        """Optimizer steps from micro-batch `batches_into_epoch` to the epoch's end, the accumulation counted afresh
        from there: steps of `accumulation` micro-batches, the last one closed by the loader's end."""
        if not 0 <= batches_into_epoch <= self.micro_batches:
            raise ValueError(
                f"batches_into_epoch must be in [0, {self.micro_batches}] (the epoch's micro-batches), got "
                f"{batches_into_epoch}."
            )
        return math.ceil((self.micro_batches - batches_into_epoch) / self.accumulation)


@dataclass(frozen=True)
class Position:
    """Where a run stands: optimizer steps done, the epoch (0-based), and how far into it (micro-batches of the
    run's layout, and samples of the epoch's order), and the samples trained since the run's start."""

    completed_steps: int
    epoch: int
    batches_into_epoch: int
    samples_into_epoch: int
    samples_seen: int


def recorded_position(state: dict, recorded_samples_per_micro_batch: int, recorded_accumulation: int) -> Position:
    """The position a checkpoint's training_state.json records.

    A checkpoint written before samples were recorded (no `samples_seen`) gets them from its counters and the
    batch it was written with (its args.json): the samples into the epoch exactly (micro-batches x samples a
    micro-batch); the samples trained as steps x samples a step, which over-counts when its epochs ended on a
    partial accumulation step (only the log and the record of a change use them; the position does not)."""
    batches = state["batches_into_epoch"]
    if "samples_seen" in state:
        into_epoch, seen = state["samples_into_epoch"], state["samples_seen"]
    else:
        into_epoch = batches * recorded_samples_per_micro_batch
        seen = state["completed_steps"] * recorded_accumulation * recorded_samples_per_micro_batch
    return Position(state["completed_steps"], state["epoch"], batches, into_epoch, seen)


def position_after_changes(position: Position, layout: EpochLayout) -> Position:
    """`position` under another layout (batch, processes, accumulation, and so the loader's length): the same epoch
    and samples trained, the position in the epoch rounded down to a whole micro-batch (no further than the new
    epoch's end), and the optimizer steps done counted back from the epoch's end, so that the steps left in the
    epoch end it at (epoch + 1) x steps_per_epoch, where a run with the new settings ends it."""
    batches = min(position.samples_into_epoch // layout.samples_per_micro_batch, layout.micro_batches)
    steps_into_epoch = layout.steps_per_epoch - layout.steps_left(batches)
    return Position(
        completed_steps=position.epoch * layout.steps_per_epoch + steps_into_epoch,
        epoch=position.epoch,
        batches_into_epoch=batches,
        samples_into_epoch=batches * layout.samples_per_micro_batch,
        samples_seen=position.samples_seen,
    )


def restart_accumulation(accelerator) -> None:
    """After `accelerator.load_state`: accelerate's micro-batch counter starts afresh, so the first optimizer step
    holds --gradient_accumulation_steps micro-batches. load_state brings back the checkpoint's count: with another
    accumulation (2 -> 4) the first step would close at the next multiple of 4, after 2 micro-batches, its loss
    divided by 4. Checkpoints are written on step boundaries, where the count of an unchanged run is a multiple
    of its accumulation: for an exact resume this changes nothing."""
    accelerator.step = 0
