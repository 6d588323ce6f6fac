"""Where a training run stands: the typed state that `training_state.json` holds in every checkpoint.

One `RunState` lives for the whole run: the loop advances its counters, the epoch loop appends to its history,
a checkpoint writes it (`to_json`) and a resume reads it back (`from_json`). The JSON keys are the field names,
the same as train.py wrote before this class existed, so a checkpoint from then resumes now; keys a newer
version adds are kept and written back, not dropped.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field

# Written into training_state.json by the checkpoint writer (checkpointing.save_checkpoint), not run state.
WRITER_KEYS = frozenset({"checkpoint_sequence"})


@dataclass
class RunState:
    # The run (a start or a resume of train.py) that holds this state: its checkpoints replace no earlier run's.
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # Position. Optimizer steps and epochs done; in the current epoch, micro-batches and samples (every process's)
    # done; samples trained since the run's start. A resume with other batch settings maps the samples
    # (resume_position), the step and batch counts follow.
    completed_steps: int = 0
    epoch: int = 0
    batches_into_epoch: int = 0
    samples_into_epoch: int = 0
    samples_seen: int = 0
    # Consecutive optimizer steps skipped for a non-finite loss so far (NonFiniteGuard starts from it).
    nonfinite_run: int = 0
    # One row per epoch (train and validation figures, learning rate), and the best validation top-1 (-1: none).
    history: list[dict] = field(default_factory=list)
    best_top1: float = -1.0
    # --skip_bad_images: every bad image met, once (data_checks.record_bad_images), and those dropped at start.
    bad_images: list[dict] = field(default_factory=list)
    dropped_at_start: dict[str, int] = field(default_factory=dict)
    # Inside an epoch (a step checkpoint): its running (loss x samples, correct, samples) summed over processes,
    # and the images skipped so far; None between epochs.
    epoch_sums: list[float] | None = None
    epoch_skipped: list[dict] | None = None
    # Every accepted --resume_with_changes: {"samples": where, "changes": {setting: [old, new]}}.
    resume_changes: list[dict] = field(default_factory=list)
    # Seconds from the process's start to the first optimizer step of the run (None until then).
    time_to_first_step_seconds: float | None = None
    # Keys of a training_state.json that this version does not know (a newer train.py's): kept as they were.
    unknown: dict = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "unknown"}
        if values["time_to_first_step_seconds"] is None:  # absent until the first step, as before this class
            del values["time_to_first_step_seconds"]
        return {**self.unknown, **values}

    @classmethod
    def from_json(cls, values: dict) -> RunState:
        """A state from training_state.json. Keys missing in older files take their defaults (`run_id` a new
        one); a value of the wrong kind is refused naming the key."""
        if not isinstance(values, dict):
            raise ValueError(f"training_state.json: expected a JSON object, got {type(values).__name__}")
        known = {f.name: f for f in dataclasses.fields(cls) if f.name != "unknown"}
        given = {key: value for key, value in values.items() if key in known}
        unknown = {k: v for k, v in values.items() if k not in known and k not in WRITER_KEYS}  # a resume names them
        for key in ("completed_steps", "epoch", "batches_into_epoch", "samples_into_epoch", "samples_seen"):
            if key in given and (not isinstance(given[key], int) or isinstance(given[key], bool) or given[key] < 0):
                raise ValueError(f"training_state.json: expected {key} a whole number >= 0, got {given[key]!r}")
        if given.get("run_id") is None:
            given.pop("run_id", None)
        return cls(**given, unknown=unknown)
