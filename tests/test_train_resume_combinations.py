"""train.py end to end: resumes that change the batch or the accumulation, resumes of resumes, and retention.

What a user meets after `--resume_with_changes`: which checkpoint `--resume_from_checkpoint latest` picks and which
ones `--checkpoints_total_limit` keeps, where the run goes on from (in samples), and how many micro-batches the
first optimizer step after the resume holds. The arithmetic itself is tested exhaustively in
test_resume_position.py; these runs show it in the real loop.
"""

import json
import shutil
import signal

import pytest
from train_runs import RESUME_RUN, assert_same_weights, checkpoints, history_without_timing, run_train

from swin_tiny_hf.training import loop as training_loop


def stopped_after_saves(count: int, *flags):
    """The run of `flags`, in this process, stopped by SIGTERM right after its `count`-th checkpoint is written (the
    run then stops at that step, as a preempted job does; exit code 143). Returns the run."""
    save = training_loop.save_checkpoint  # the checkpoint writer the loop calls
    saved = []

    def save_then_signal(*args, **kwargs):
        saved.append(save(*args, **kwargs))
        if len(saved) == count:
            # train.py's handler records the signal; without it the signal would end pytest itself
            assert callable(signal.getsignal(signal.SIGTERM)), "train.py's SIGTERM handler is not installed"
            signal.raise_signal(signal.SIGTERM)
        return saved[-1]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training_loop, "save_checkpoint", save_then_signal)
        return run_train(*flags, exit_code=128 + signal.SIGTERM)


def state_of(checkpoint):
    return json.loads((checkpoint / "training_state.json").read_text())


def contents(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def as_from_before_the_write_order(checkpoint):
    """The checkpoint's training_state.json as train.py wrote it before it recorded the write order and the samples
    (what an existing run's checkpoints hold)."""
    state = state_of(checkpoint)
    for key in ("checkpoint_sequence", "run_id", "samples_seen", "samples_into_epoch"):
        del state[key]
    (checkpoint / "training_state.json").write_text(json.dumps(state))


def test_latest_and_retention_follow_the_write_order_across_a_resume_to_a_bigger_batch(tmp_path):
    """Batch 16 -> 32 turns step 12 into step 6, so the changed run writes smaller step numbers than the first run.
    `latest` is still the last checkpoint written, retention deletes the oldest written, and a name the first run
    used gets a suffix instead of replacing its folder. The resume of that resume is exact. The first run's step_8,
    and the copy of its step_12 that the reference resumes from, are in the format of checkpoints written before
    the order and the samples were recorded: they still resume, and count as older than any that records them."""
    folder, limit = tmp_path / "run", ["--checkpoints_total_limit", "2"]
    stopped_after_saves(3, *RESUME_RUN, *limit, "--output_dir", folder)
    assert checkpoints(folder) == ["step_12", "step_8"]
    as_from_before_the_write_order(folder / "step_8")
    first_step_12 = contents(folder / "step_12")
    shutil.copytree(folder / "step_12", tmp_path / "first_step_12")  # for the uninterrupted reference below
    as_from_before_the_write_order(tmp_path / "first_step_12")

    bigger = ["--per_device_train_batch_size", "32"]
    second = stopped_after_saves(
        1,
        *RESUME_RUN,
        *bigger,
        *limit,
        *("--output_dir", folder, "--resume_from_checkpoint", "latest", "--resume_with_changes"),
    )
    assert "Going on from 192 training samples: step 6, batch 6 of epoch 1" in second.log
    # its first checkpoint, step 8 at 32 (256 samples), is written after the first run's step_12 (192 samples):
    # it is the latest, the first run's step_8 is the oldest written and goes, and step_12 is untouched
    assert checkpoints(folder) == ["step_12", "step_8-2"]
    assert f"stopped after a complete checkpoint, {folder / 'step_8-2'}" in second.log
    assert contents(folder / "step_12") == first_step_12
    newest = state_of(folder / "step_8-2")
    assert (newest["completed_steps"], newest["samples_seen"], newest["batches_into_epoch"]) == (8, 256, 8)

    # the resume of the resume: `latest` is the changed run's checkpoint, whose settings are batch 32: exact
    third = run_train(*RESUME_RUN, *bigger, *limit, "--output_dir", folder, "--resume_from_checkpoint", "latest")
    assert f"resumed from {folder / 'step_8-2'} at step 8" in third.log
    assert checkpoints(folder) == ["step_16", "step_20"]  # its step_12 took step_12-2, pruned since
    last = state_of(folder / "step_20")
    assert (last["completed_steps"], last["samples_seen"], last["epoch"]) == (20, 640, 1)
    assert [row["step"] for row in json.loads((folder / "history.json").read_text())] == [10, 20]

    # the same as going on from the first run's step_12 at 32 without stopping
    reference = tmp_path / "reference"
    run_train(
        *RESUME_RUN,
        *bigger,
        *("--output_dir", reference, "--resume_from_checkpoint", tmp_path / "first_step_12", "--resume_with_changes"),
    )
    assert_same_weights(reference, folder)
    assert history_without_timing(reference) == history_without_timing(folder)


# 320 digits in micro-batches of 16: 20 an epoch; in steps of 3 that is 6 whole steps and one of 2, 7 steps an
# epoch. step_10 is 3 steps into the second epoch: 20 + 9 micro-batches, 464 samples.
ACCUMULATE_3 = [*RESUME_RUN, "--gradient_accumulation_steps", "3", "--checkpointing_steps", "10"]


@pytest.fixture(scope="module")
def accumulation_3_to_4(tmp_path_factory):
    """The run above, stopped after its step_10; then a resume from that step_10 with accumulation 4 (5 steps an
    epoch: 4, 4, 4, 4, 4), with a checkpoint at every step. Returns (the resumed folder, the resumed run's log)."""
    folder = tmp_path_factory.mktemp("accumulation")
    stopped_after_saves(1, *ACCUMULATE_3, "--output_dir", folder / "first")  # the rest of it the resume never reads
    resumed = run_train(
        *ACCUMULATE_3,
        *"--gradient_accumulation_steps 4 --checkpointing_steps 1 --resume_with_changes".split(),
        *("--resume_from_checkpoint", folder / "first" / "step_10", "--output_dir", folder / "resumed"),
    )
    return folder / "resumed", resumed.log


def test_a_resume_goes_on_from_the_samples_trained_when_epochs_end_on_a_partial_step(accumulation_3_to_4):
    """The position is the samples trained (464), not steps x samples a step (10 x 48 = 480): the last step of each
    epoch held 2 micro-batches, not 3. The run then trains the rest of the epoch, all of it, and ends with it."""
    folder, log = accumulation_3_to_4
    # 9 micro-batches into epoch 2; the 11 left are steps of 4, 4 and 3, so the epoch ends at step 10 (5 an epoch)
    assert "Going on from 464 training samples: step 7, batch 9 of epoch 2" in log
    ends = state_of(folder / "step_10")
    assert (ends["batches_into_epoch"], ends["samples_into_epoch"], ends["samples_seen"]) == (20, 320, 640)
    assert [row["step"] for row in json.loads((folder / "history.json").read_text())] == [7, 10]


def test_the_first_step_after_a_resume_accumulates_the_new_number_of_micro_batches(accumulation_3_to_4):
    """accelerate's micro-batch counter was 9 in the checkpoint: with it the first step closed after 3 micro-batches
    (at 12, a multiple of 4). It starts afresh: 4 micro-batches, then 4, then the 3 the epoch has left."""
    folder, _ = accumulation_3_to_4
    positions = [state_of(folder / f"step_{step}")["batches_into_epoch"] for step in (8, 9, 10)]
    assert positions == [13, 17, 20]
    assert [state_of(folder / f"step_{step}")["samples_seen"] for step in (8, 9, 10)] == [528, 592, 640]
