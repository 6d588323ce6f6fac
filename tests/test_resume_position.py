"""The resume arithmetic (swin_tiny_hf.training.resume_position), property-based: any per-device batch, process
count, accumulation, epoch length and drop_last, before and after a resume that changes them.

The reference is a model of the training loop as train.py runs it with accelerate: a micro-batch of
per-device batch x processes samples at a time, an optimizer step every `accumulation` micro-batches counted by
accelerate's counter, and the loader's last micro-batch closing the epoch's last step early (and resetting the
counter). The first-step property runs accelerate's own counter.
"""

import math

import pytest
import torch
from accelerate import Accelerator
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader

from swin_tiny_hf.training.loop import sums_dtype
from swin_tiny_hf.training.resume_position import (
    EpochLayout,
    Position,
    position_after_changes,
    recorded_position,
    restart_accumulation,
)

FAST = settings(max_examples=100, deadline=None)


def loader_length(rows: int, per_device: int, processes: int, drop_last: bool) -> int:
    """Micro-batches per process of accelerate's sharded loader: batches of `per_device` rows dealt to the processes
    in turn; drop_last drops an incomplete batch and the incomplete round, else both are completed from the start
    of the epoch's order (even batches)."""
    if drop_last:
        return rows // per_device // processes
    return math.ceil(math.ceil(rows / per_device) / processes)


def train_from(layout: EpochLayout, position: Position, epochs: int, counter: int = 0):
    """The reference loop from `position` to the end of `epochs` epochs: yields (the position a checkpoint after
    that optimizer step records, the micro-batches the step held). `counter` is accelerate's micro-batch counter
    at the start (train.py restarts it at 0 on a resume)."""
    epoch, batches, into_epoch = position.epoch, position.batches_into_epoch, position.samples_into_epoch
    steps, seen, in_step = position.completed_steps, position.samples_seen, 0
    while epoch < epochs:
        for batch in range(batches, layout.micro_batches):
            in_step += 1
            into_epoch += layout.samples_per_micro_batch
            seen += layout.samples_per_micro_batch
            if batch == layout.micro_batches - 1:  # the loader's end closes the step and resets the counter
                counter, sync = 0, True
            else:
                counter += 1
                sync = counter % layout.accumulation == 0
            if sync:
                steps += 1
                yield Position(steps, epoch, batch + 1, into_epoch, seen), in_step
                in_step = 0
        epoch, batches, into_epoch = epoch + 1, 0, 0


def runs():
    """(rows, drop_last, epochs, old layout, new layout): two settings of one data set."""

    @st.composite
    def draw(draw):
        rows = draw(st.integers(1, 300))
        drop_last = draw(st.booleans())
        layouts = []
        for _ in range(2):
            per_device, processes = draw(st.integers(1, 12)), draw(st.integers(1, 4))
            length = loader_length(rows, per_device, processes, drop_last)
            assume(length >= 1)
            layouts.append(EpochLayout(length, per_device * processes, draw(st.integers(1, 5))))
        return rows, drop_last, draw(st.integers(1, 3)), *layouts

    return draw()


START = Position(0, 0, 0, 0, 0)


@FAST
@given(runs(), st.data())
def test_a_changed_resume_goes_on_from_the_samples_trained_and_ends_each_epoch_on_its_last_step(run, data):
    _, _, epochs, old, new = run
    checkpoints = [position for position, _ in train_from(old, START, epochs)]
    recorded = data.draw(st.sampled_from(checkpoints), label="checkpoint")
    resumed = position_after_changes(recorded, new)
    # the same epoch and samples trained; the position in the epoch rounds down by less than one new micro-batch,
    # or stops at the new epoch's end (drop_last can make it shorter than the position)
    assert (resumed.epoch, resumed.samples_seen) == (recorded.epoch, recorded.samples_seen)
    assert resumed.samples_into_epoch == resumed.batches_into_epoch * new.samples_per_micro_batch
    if recorded.samples_into_epoch <= new.samples_per_epoch:
        assert 0 <= recorded.samples_into_epoch - resumed.samples_into_epoch < new.samples_per_micro_batch
    else:
        assert resumed.batches_into_epoch == new.micro_batches
    # the steps left end every epoch at (epoch + 1) x steps per epoch: the step counter, the schedule and the
    # position agree, and the run ends at its last scheduled step with every sample of its last epoch trained
    after = list(train_from(new, resumed, epochs))
    for position, _ in after:
        if position.batches_into_epoch == new.micro_batches:
            assert position.completed_steps == (position.epoch + 1) * new.steps_per_epoch
    last = after[-1][0] if after else resumed
    assert last.completed_steps == epochs * new.steps_per_epoch
    assert last.samples_into_epoch == new.samples_per_epoch
    trained_after = sum(steps * new.samples_per_micro_batch for _, steps in after)
    assert last.samples_seen == recorded.samples_seen + trained_after
    # every step holds the new accumulation, the first one included, but the epoch's last
    sizes = [steps for position, steps in after if position.batches_into_epoch < new.micro_batches]
    assert all(steps == new.accumulation for steps in sizes)


@FAST
@given(runs())
def test_the_position_is_unchanged_by_unchanged_settings_and_later_stays_later(run):
    _, _, epochs, old, new = run
    checkpoints = [position for position, _ in train_from(old, START, epochs)]
    assert [position_after_changes(position, old) for position in checkpoints] == checkpoints
    moved = [position_after_changes(position, new) for position in checkpoints]
    assert moved == sorted(moved, key=lambda p: (p.epoch, p.samples_into_epoch))
    assert [p.completed_steps for p in moved] == sorted(p.completed_steps for p in moved)


@FAST
@given(runs(), st.data())
def test_a_checkpoint_from_before_samples_were_recorded_gets_its_position_from_its_counters(run, data):
    _, _, epochs, old, _ = run
    checkpoints = [position for position, _ in train_from(old, START, epochs)]
    truth = data.draw(st.sampled_from(checkpoints), label="checkpoint")
    legacy = {
        "completed_steps": truth.completed_steps,
        "epoch": truth.epoch,
        "batches_into_epoch": truth.batches_into_epoch,
    }
    position = recorded_position(legacy, old.samples_per_micro_batch, old.accumulation)
    assert position.samples_into_epoch == truth.samples_into_epoch  # exact: the position never over-counts
    estimate = truth.completed_steps * old.accumulation * old.samples_per_micro_batch
    assert position.samples_seen == estimate >= truth.samples_seen
    if old.micro_batches % old.accumulation == 0:  # every step whole: the estimate is exact
        assert position.samples_seen == truth.samples_seen
    recorded = {**legacy, "samples_seen": truth.samples_seen, "samples_into_epoch": truth.samples_into_epoch}
    assert recorded_position(recorded, old.samples_per_micro_batch, old.accumulation) == truth


def test_the_issue_s_figures_partial_steps_over_counted_the_samples():
    """20 micro-batches of 16 an epoch in steps of 3: 7 steps, the last of 2. After 10 steps (the epoch and 3 steps),
    464 samples were trained; steps x samples a step, the former inference, said 480. At accumulation 4 the run
    goes on from micro-batch 9 at step 7, so that the 11 micro-batches left (4, 4, 3) end the epoch at step 10."""
    old, new = EpochLayout(20, 16, 3), EpochLayout(20, 16, 4)
    checkpoint = [position for position, _ in train_from(old, START, 2)][9]
    assert checkpoint == Position(10, 1, 9, 144, 464)
    assert 10 * 3 * 16 == 480
    assert position_after_changes(checkpoint, new) == Position(7, 1, 9, 144, 464)
    assert [steps for _, steps in train_from(new, position_after_changes(checkpoint, new), 2)] == [4, 4, 3]


def test_an_epoch_layout_refuses_what_cannot_be_a_loader():
    with pytest.raises(ValueError, match=r"EpochLayout.accumulation must be an integer of at least 1, got 0"):
        EpochLayout(10, 16, 0)
    with pytest.raises(ValueError, match=r"batches_into_epoch must be in \[0, 10\].*got 11"):
        EpochLayout(10, 16, 2).steps_left(11)


def accelerate_step_sizes(micro_batches: int, accumulation: int, start: int, counter: int, restart: bool) -> list:
    """The micro-batches of each optimizer step that accelerate's own counter makes from micro-batch `start` of an
    epoch, after a load_state that brought back `counter` (and train.py's restart_accumulation, if `restart`)."""
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=accumulation)
    model = torch.nn.Linear(1, 1)
    loader = accelerator.prepare(DataLoader(list(range(micro_batches)), batch_size=1))
    loader = accelerator.skip_first_batches(loader, start) if start else loader
    accelerator.step = counter
    if restart:
        restart_accumulation(accelerator)
    sizes, in_step = [], 0
    for _ in loader:
        with accelerator.accumulate(model):
            in_step += 1
        if accelerator.sync_gradients:
            sizes.append(in_step)
            in_step = 0
    return sizes


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 24), st.integers(1, 5), st.data())
def test_the_first_step_after_a_resume_holds_the_new_accumulation(micro_batches, accumulation, data):
    start = data.draw(st.integers(0, micro_batches - 1), label="start")
    counter = data.draw(st.integers(0, 40), label="restored counter")
    sizes = accelerate_step_sizes(micro_batches, accumulation, start, counter, restart=True)
    left = micro_batches - start
    assert sizes == [accumulation] * (left // accumulation) + ([left % accumulation] if left % accumulation else [])
    assert len(sizes) == EpochLayout(micro_batches, 1, accumulation).steps_left(start)


def test_without_the_restart_the_restored_counter_closes_the_first_step_early():
    """Accumulation 2 -> 4 at micro-batch 6 (accelerate's counter 6): the first step closed at 8, after 2."""
    assert accelerate_step_sizes(20, 4, 6, 6, restart=False)[0] == 2
    assert accelerate_step_sizes(20, 4, 6, 6, restart=True)[0] == 4


@FAST
@given(
    losses=st.lists(st.floats(2.0**-13, 20.0, width=32), min_size=2, max_size=400),
    batch=st.integers(1, 1024),
    data=st.data(),
)
def test_the_running_sums_of_an_epoch_are_the_same_however_processes_and_a_resume_group_them(losses, batch, data):
    """The loop's running loss sum (float32 loss x batch size per micro-batch, summed in `sums_dtype`): two
    processes, a checkpoint at any micro-batch that stores the reduced sums, the main process resuming from them and
    the other from zero, gives the uninterrupted run's sum exactly (float32 sums did not)."""
    dtype = sums_dtype(torch.device("cpu"))
    terms = torch.tensor(losses, dtype=torch.float32) * batch  # (N,), as the loop computes them
    ranks = [terms[0::2], terms[1::2]]  # each process's micro-batches

    def total(parts):
        return sum(p.to(dtype).sum(dtype=dtype) if len(p) else torch.zeros((), dtype=dtype) for p in parts)

    uninterrupted = total(ranks)
    cut = data.draw(st.integers(0, len(ranks[1])), label="micro-batches per process before the checkpoint")
    saved = total([r[:cut] for r in ranks]).item()  # reduced over processes, into training_state.json
    resumed = torch.tensor(saved, dtype=dtype) + total([ranks[0][cut:]]) + total([ranks[1][cut:]])
    assert resumed.item() == uninterrupted.item()
