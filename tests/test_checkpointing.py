"""Crash safety and retention of checkpoint folders; the training step: non-finite-loss guard, no host syncs."""

import functools
import json
import math
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode
from tqdm.auto import tqdm

from swin_tiny_hf import SwinTinyForImageClassification
from swin_tiny_hf.training.checkpointing import (
    ARGS_FILE,
    RUN_ID_KEY,
    SEQUENCE_KEY,
    STATE_FILE,
    checkpoint_name,
    complete_checkpoints,
    find_latest_checkpoint,
    prune_checkpoints,
    replace_folder,
    resolve_checkpoint,
    save_checkpoint,
)
from swin_tiny_hf.training.loop import Checkpointer, LoopSettings, TrainingLoop
from swin_tiny_hf.training.nonfinite_guard import NonFiniteGuard
from swin_tiny_hf.training.run_state import RunState

from conftest import tiny_config


def complete(folder, steps):
    folder.mkdir()
    (folder / STATE_FILE).write_text(json.dumps({"completed_steps": steps}))


def test_latest_checkpoint_ignores_temporary_and_incomplete_folders(tmp_path):
    assert find_latest_checkpoint(tmp_path) is None
    complete(tmp_path / "step_8", 8)
    complete(tmp_path / "epoch_1", 10)  # an epoch checkpoint counts by its steps, not its name
    complete(tmp_path / ".tmp-step_12", 12)  # killed before the rename
    (tmp_path / "step_16").mkdir()  # no training_state.json: killed mid-write
    complete(tmp_path / "notes_20", 20)  # not a checkpoint name
    assert find_latest_checkpoint(tmp_path) == tmp_path / "epoch_1"
    assert resolve_checkpoint("latest", tmp_path) == tmp_path / "epoch_1"
    with pytest.raises(ValueError, match="is not a complete checkpoint"):
        resolve_checkpoint(str(tmp_path / "step_16"), tmp_path)
    with pytest.raises(ValueError, match="no complete checkpoint in"):
        resolve_checkpoint("latest", tmp_path / "step_16")


def test_replace_folder_swaps_in_the_new_one_and_leaves_nothing_behind(tmp_path):
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "old.txt").write_text("old")
    (tmp_path / ".tmp-best").mkdir()
    (tmp_path / ".tmp-best" / "new.txt").write_text("new")
    replace_folder(tmp_path / ".tmp-best", tmp_path / "best")
    assert [p.name for p in (tmp_path / "best").iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def _loop(
    batches,
    max_nonfinite_steps=3,
    logging_steps=1,
    gradient_accumulation_steps=1,
    optimizer=None,
    max_grad_norm=3.0,
    as_loader=False,
):
    """TrainingLoop.train_one_epoch on a tiny model, as train.py sets it up: fused AdamW, the non-finite guard."""
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=gradient_accumulation_steps)
    # soft targets under a soft-target cross-entropy, as train.py's model_config sets it
    model = SwinTinyForImageClassification(tiny_config(drop_path_rate=0.0, problem_type="single_label_classification"))
    optimizer = optimizer(model) if optimizer else torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if as_loader:  # a prepared DataLoader: accelerate then knows where the epoch ends (and closes its last step)
        batches = accelerator.prepare(torch.utils.data.DataLoader(batches, batch_size=None))
    settings = LoopSettings(
        seed=0,
        per_device_train_batch_size=4,
        max_grad_norm=max_grad_norm,
        logging_steps=logging_steps,
        checkpointing_steps=None,
        with_tracking=False,
    )
    state = RunState()
    guard = NonFiniteGuard(max_nonfinite_steps, accelerator.device, output_dir="out")
    checkpointer = Checkpointer(accelerator, model, Path("out"), {}, None)  # checkpointing_steps None: unused
    loop = TrainingLoop(model, optimizer, scheduler, accelerator, settings, checkpointer, guard, tqdm(disable=True))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    try:
        metrics = loop.train_one_epoch(batches, state, max_train_steps=100)
    except RuntimeError as error:
        metrics = error
    changed = any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    return metrics, state, changed, (optimizer, scheduler)


def _batch(nan: bool, seed: int = 1):
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    if nan:
        pixels[0, 0, 0, 0] = float("nan")
    return {"pixel_values": pixels, "labels": torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3]), 5).float()}


def test_a_non_finite_loss_skips_the_step_and_training_goes_on():
    metrics, state, changed, (optimizer, _) = _loop([_batch(nan=True)], max_nonfinite_steps=3)
    assert not changed and state.nonfinite_run == 1 and state.completed_steps == 1
    # skipped on the device: AdamW's moments and step count are untouched too
    assert all(float(s["step"]) == 0 and not s["exp_avg"].any() for s in optimizer.optimizer.state.values())
    metrics, state, changed, _ = _loop([_batch(nan=True), _batch(nan=False)], max_nonfinite_steps=3)
    assert changed and state.nonfinite_run == 0
    assert math.isfinite(metrics["train_loss"]) and metrics["train_loss"] > 0  # the NaN batch is not averaged in


def test_consecutive_non_finite_losses_stop_the_run_with_a_clear_message():
    error, state, changed, _ = _loop([_batch(nan=True)] * 5, max_nonfinite_steps=3)
    assert isinstance(error, RuntimeError) and "3 consecutive steps had a non-finite loss" in str(error)
    assert state.completed_steps == 3 and not changed  # read at the check after the third skipped step


def test_the_guard_is_read_at_logging_steps_and_still_stops_the_run():
    """Between checks nothing is read on the host; the third NaN step trips the guard, the check at step 4 stops."""
    error, state, changed, _ = _loop([_batch(nan=True)] * 5, max_nonfinite_steps=3, logging_steps=4)
    assert isinstance(error, RuntimeError) and "3 consecutive steps had a non-finite loss" in str(error)
    assert state.completed_steps == 4 and not changed
    # a good step in between resets the run: 2 NaN, 1 good, 2 NaN never reaches 3 in a row
    batches = [_batch(True), _batch(True), _batch(False), _batch(True), _batch(True)]
    metrics, state, changed, _ = _loop(batches, max_nonfinite_steps=3, logging_steps=4)
    assert not isinstance(metrics, Exception) and changed and state.nonfinite_run == 2


def test_an_optimizer_that_cannot_skip_on_the_device_is_refused():
    with pytest.raises(ValueError, match=r"such as torch.optim.AdamW\(fused=True\); got SGD"):
        _loop([_batch(nan=False)], optimizer=lambda m: torch.optim.SGD(m.parameters(), lr=0.1))


class HostReads(TorchDispatchMode):
    """Records every op that makes the host wait for the device (a sync on a GPU): .item(), bool(), nonzero ..."""

    SYNCING = {"_local_scalar_dense", "is_nonzero", "nonzero", "equal", "masked_select", "_unique2", "unique_dim"}

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket.__name__ in self.SYNCING:
            self.calls.append(str(func))
        return func(*args, **(kwargs or {}))


def test_a_training_step_never_waits_for_the_device(monkeypatch):
    """Each step (forward, backward, clipping, the guard, the fused AdamW step, the schedule, the running sums)
    runs with a recorder of host reads; logging is due only after the last step."""
    recorder = HostReads()
    copies = []
    for name in ("tolist", "cpu", "numpy"):  # host copies that dispatch nothing on a CPU tensor
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(
            torch.Tensor, name, lambda self, *a, _o=original, _n=name, **k: (copies.append(_n), _o(self, *a, **k))[1]
        )
    steps = []

    def watched(batches):
        for batch in batches:
            recorder.__enter__()
            copies.clear()
            yield batch  # the loop body, one step, runs with the recorder on
            recorder.__exit__(None, None, None)
            steps.append(list(copies))

    batches = [_batch(nan=i == 1, seed=i) for i in range(4)]
    metrics, state, changed, _ = _loop(watched(batches), logging_steps=100)
    assert state.completed_steps == 4 and changed and len(steps) == 4
    assert recorder.calls == [] and steps == [[], [], [], []]
    assert state.nonfinite_run == 0 and math.isfinite(metrics["train_loss"])
    # the recorders do see host reads: .item() in the step would be caught, and so would the guard's check
    with HostReads() as control:
        torch.ones(2).sum().item()
    assert control.calls == ["aten._local_scalar_dense.default"]
    copies.clear()
    NonFiniteGuard(3, torch.device("cpu")).check(0)
    assert copies == ["tolist"]


def test_the_schedule_steps_once_per_optimizer_step_under_accumulation():
    metrics, state, _, (optimizer, scheduler) = _loop(
        [_batch(False, i) for i in range(6)], gradient_accumulation_steps=2
    )
    assert state.completed_steps == 3 and scheduler.scheduler.last_epoch == 3
    assert all(float(s["step"]) == 3 for s in optimizer.optimizer.state.values())


def test_an_epoch_s_last_step_with_fewer_micro_batches_takes_their_mean_gradient():
    """5 micro-batches at accumulation 3: the second step holds 2, and its gradient is their mean (accelerate alone
    divided each loss by 3, giving 2/3 of it). Plain SGD without clipping makes the update the gradient itself."""
    batches = [_batch(False, i) for i in range(5)]
    sgd = lambda model: torch.optim.SGD(model.parameters(), lr=0.5, fused=True)  # noqa: E731
    _, state, _, (optimizer, _) = _loop(
        batches, gradient_accumulation_steps=3, optimizer=sgd, max_grad_norm=0.0, as_loader=True
    )
    assert state.completed_steps == 2
    torch.manual_seed(0)  # the reference: the same model, two plain steps on the means
    reference = SwinTinyForImageClassification(
        tiny_config(drop_path_rate=0.0, problem_type="single_label_classification")
    )
    reference_optimizer = torch.optim.SGD(reference.parameters(), lr=0.5)
    for group in (batches[:3], batches[3:]):
        loss = sum(reference(**batch).loss for batch in group) / len(group)
        loss.backward()
        reference_optimizer.step()
        reference_optimizer.zero_grad()
    trained = [p for group in optimizer.param_groups for p in group["params"]]
    for expected, got in zip(reference.parameters(), trained):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def _fake_checkpoint(folder, steps):
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"w" * 1000)
    (folder / "optimizer.bin").write_bytes(b"o" * 2000)
    (folder / STATE_FILE).write_text(json.dumps({"completed_steps": steps}))


def test_pruning_keeps_the_newest_and_clears_leftovers(tmp_path):
    for steps in (2, 4, 6, 8):
        _fake_checkpoint(tmp_path / f"step_{steps}", steps)
    _fake_checkpoint(tmp_path / "epoch_1", 5)  # counted by its steps, with the step checkpoints
    (tmp_path / "best").mkdir()  # not a checkpoint: never counted, never deleted
    (tmp_path / ".tmp-step_10").mkdir()  # a save killed before its rename
    assert prune_checkpoints(tmp_path, 2) == ["step_2", "step_4", "epoch_1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "step_6", "step_8"]
    assert find_latest_checkpoint(tmp_path) == tmp_path / "step_8"
    assert prune_checkpoints(tmp_path, 2) == []
    with pytest.raises(ValueError, match="total_limit must be at least 1"):
        prune_checkpoints(tmp_path, 0)


def test_a_name_an_earlier_run_holds_takes_a_suffix_and_a_run_replaces_only_its_own():
    taken = {"step_8": "first", "step_8-2": "second", "step_12": None}
    assert checkpoint_name("step_4", taken, "third") == "step_4"
    assert checkpoint_name("step_8", taken, "third") == "step_8-3"
    assert checkpoint_name("step_8", taken, "second") == "step_8-2"  # its own: written again in place
    assert checkpoint_name("step_12", taken, "third") == "step_12-2"  # None: a checkpoint of an unknown run
    assert checkpoint_name("epoch_8", taken, None) == "epoch_8"
    with pytest.raises(ValueError, match="a checkpoint is named step_N or epoch_N .* got 'step_8-2'"):
        checkpoint_name("step_8-2", taken, "third")


def test_latest_and_retention_follow_the_write_order_not_the_step_numbers(tmp_path):
    """A resume to a bigger global batch writes smaller step numbers after bigger ones; checkpoints of today's
    format (no order recorded) come first, among themselves by the samples they had trained."""
    for name, steps, global_batch in (("step_3000", 3000, 256), ("step_1700", 1700, 512), ("step_1600", 1600, 512)):
        _fake_checkpoint(tmp_path / name, steps)
        (tmp_path / name / ARGS_FILE).write_text(json.dumps({"global_batch_size": global_batch}))
    assert find_latest_checkpoint(tmp_path) == tmp_path / "step_1700"  # 870,400 samples, step_3000 768,000
    state = {"completed_steps": 1750, RUN_ID_KEY: "new"}
    saved = save_checkpoint(_writes_nothing(), tmp_path, "step_1750", state, {}, total_limit=2)
    assert saved == tmp_path / "step_1750" == find_latest_checkpoint(tmp_path)
    assert json.loads((saved / STATE_FILE).read_text())[SEQUENCE_KEY] == 1
    assert [folder.name for _, folder in complete_checkpoints(tmp_path)] == ["step_1700", "step_1750"]


@functools.cache
def _writes_nothing() -> Accelerator:
    """An accelerator whose save_state only makes the folder: save_checkpoint's naming, order and retention, fast."""
    accelerator = Accelerator(cpu=True)
    accelerator.save_state = lambda folder: Path(folder).mkdir(parents=True)
    return accelerator


@st.composite
def save_histories(draw):
    """Checkpoints of today's format (steps, global batch), then runs: each a start or a resume from any step (a
    resume with a bigger batch, or from an older checkpoint, starts lower), with its checkpoint interval, count and
    --checkpoints_total_limit, step or epoch checkpoints, and maybe its last one written again (a signal during
    evaluation)."""
    legacy = draw(
        st.lists(st.tuples(st.integers(0, 30), st.sampled_from([8, 16, 32])), max_size=3, unique_by=lambda c: c[0])
    )
    runs = st.tuples(
        st.integers(0, 20),
        st.integers(1, 4),
        st.integers(1, 5),
        st.one_of(st.none(), st.integers(1, 4)),
        st.sampled_from(["step", "epoch"]),
        st.booleans(),
    )
    return legacy, draw(st.lists(runs, min_size=1, max_size=4))


@settings(max_examples=50, deadline=None)
@given(save_histories())
def test_across_resumes_latest_is_the_last_written_and_retention_keeps_the_newest_written(history):
    legacy, runs = history
    accelerator = _writes_nothing()
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        for steps, global_batch in legacy:
            _fake_checkpoint(folder / f"step_{steps}", steps)
            (folder / f"step_{steps}" / ARGS_FILE).write_text(json.dumps({"global_batch_size": global_batch}))
        # the expected folders, oldest written first, and the save each one holds (None: today's format)
        order = [f"step_{steps}" for steps, global_batch in sorted(legacy, key=lambda c: (c[0] * c[1], c[0]))]
        holds = dict.fromkeys(order)
        saves = 0
        for first, every, count, limit, kind, again in runs:
            run_id, own = uuid.uuid4().hex, set()
            numbers = [first + every * k for k in range(1, count + 1)]
            for number in numbers + numbers[-1:] * again:
                saves += 1
                before = {p.name for p in folder.iterdir()}
                state = {"completed_steps": number, RUN_ID_KEY: run_id, "save": saves}
                name = save_checkpoint(accelerator, folder, f"{kind}_{number}", state, {}, limit).name
                assert name in (f"{kind}_{number}", *(f"{kind}_{number}-{k}" for k in range(2, 30)))
                assert name not in before or name in own  # no folder of an earlier run is replaced
                own.add(name)
                order = [kept for kept in order if kept != name] + [name]
                order = order[-limit:] if limit else order
                holds = {kept: saves if kept == name else holds[kept] for kept in order}
                assert [f.name for _, f in complete_checkpoints(folder)] == order
                assert find_latest_checkpoint(folder) == folder / name
                on_disk = {
                    f.name: json.loads((f / STATE_FILE).read_text()).get("save")
                    for _, f in complete_checkpoints(folder)
                }
                assert on_disk == holds
                assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("kill_at", ["after_renames", "mid_delete"])
def test_a_kill_during_pruning_leaves_the_kept_checkpoints_whole(tmp_path, kill_at):
    for steps in (2, 4, 6, 8):
        _fake_checkpoint(tmp_path / f"step_{steps}", steps)
    script = f"""
import os, shutil, signal
from pathlib import Path
from swin_tiny_hf.training import checkpointing

def rmtree(path, ignore_errors=False):
    if {kill_at!r} == "mid_delete":
        next(Path(path).iterdir()).unlink()  # one file gone, then the kill
    os.kill(os.getpid(), signal.SIGKILL)

checkpointing.shutil.rmtree = rmtree
checkpointing.prune_checkpoints({str(tmp_path)!r}, 2)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == -signal.SIGKILL, result.stderr
    kept = complete_checkpoints(tmp_path)
    assert [folder.name for _, folder in kept] == ["step_6", "step_8"]
    for _, folder in kept:  # whole
        assert {p.name for p in folder.iterdir()} == {"model.safetensors", "optimizer.bin", STATE_FILE}
    assert resolve_checkpoint("latest", tmp_path) == tmp_path / "step_8"
    # the next save's pruning clears what the kill left
    assert any(p.name.startswith(".trash-") for p in tmp_path.iterdir())
    prune_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_6", "step_8"]


def _prepared(tmp_path):
    accelerator = Accelerator(cpu=True)
    model = SwinTinyForImageClassification(tiny_config())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model


def test_a_checkpoint_is_never_written_from_non_finite_weights(tmp_path):
    from swin_tiny_hf.training.checkpointing import NonFiniteWeightsError, save_checkpoint

    accelerator, model = _prepared(tmp_path)
    save_checkpoint(accelerator, tmp_path, "step_4", {"completed_steps": 4}, {}, model=model)
    with torch.no_grad():
        model.swin.stages[1].blocks[0].mlp.fc1.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteWeightsError) as error:
        save_checkpoint(accelerator, tmp_path, "step_8", {"completed_steps": 8}, {}, model=model)
    message = str(error.value)
    assert "swin.stages.1.blocks.0.mlp.fc1.weight" in message and "step_4, holds finite weights" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_4"]  # nothing of step_8, not even a temporary


def test_a_failed_save_names_the_path_and_the_os_error_and_keeps_the_earlier_checkpoints(tmp_path, monkeypatch):
    """torch's writers report a full disk as "basic_ios::clear: iostream error", without the OS error: the free
    space left tells it. The partial folder goes; step_4 stays whole."""
    import shutil

    from swin_tiny_hf.training.checkpointing import CheckpointWriteError, save_checkpoint

    accelerator, model = _prepared(tmp_path)
    save_checkpoint(accelerator, tmp_path, "step_4", {"completed_steps": 4}, {}, model=model)
    step_4 = {p.name: p.read_bytes() for p in (tmp_path / "step_4").iterdir()}

    def full_disk(folder):
        (tmp_path / ".tmp-step_8").mkdir()
        (tmp_path / ".tmp-step_8" / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1234 vs 1180")

    monkeypatch.setattr(accelerator, "save_state", lambda folder: full_disk(folder))
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage._replace(free=4096))
    with pytest.raises(CheckpointWriteError) as error:
        save_checkpoint(accelerator, tmp_path, "step_8", {"completed_steps": 8}, {}, model=model)
    message = str(error.value)
    assert f"could not write checkpoint '{tmp_path / 'step_8'}'" in message
    assert "No space left on device (0.0 MiB free on its device" in message and "unexpected pos" in message
    assert "the checkpoints already there are kept (step_4)" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_4"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "step_4").iterdir()} == step_4
