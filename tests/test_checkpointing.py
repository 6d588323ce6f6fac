"""Crash safety of checkpoint folders, and the non-finite-loss guard of the training loop."""

import json
import math
from argparse import Namespace

import pytest
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from swin_tiny_hf import SwinTinyForImageClassification
from swin_tiny_hf.training.checkpointing import (
    STATE_FILE,
    find_latest_checkpoint,
    replace_folder,
    resolve_checkpoint,
)

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


def _loop(batches, max_nonfinite_steps):
    import train

    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    model = SwinTinyForImageClassification(tiny_config(drop_path_rate=0.0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    args = Namespace(seed=0, max_grad_norm=3.0, max_nonfinite_steps=max_nonfinite_steps, checkpointing_steps=None)
    state = {"completed_steps": 0, "epoch": 0, "batches_into_epoch": 0, "nonfinite_run": 0, "history": []}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    try:
        metrics = train.train_one_epoch(
            model, optimizer, scheduler, batches, accelerator, args, tqdm(disable=True), state, 100, None, {}
        )
    except RuntimeError as error:
        metrics = error
    changed = any(not torch.equal(before[n], p) for n, p in model.named_parameters())
    return metrics, state, changed


def _batch(nan: bool):
    pixels = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    if nan:
        pixels[0, 0, 0, 0] = float("nan")
    return {"pixel_values": pixels, "labels": torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 3]), 5).float()}


def test_a_non_finite_loss_skips_the_step_and_training_goes_on():
    metrics, state, changed = _loop([_batch(nan=True)], max_nonfinite_steps=3)
    assert not changed and state["nonfinite_run"] == 1 and state["completed_steps"] == 1
    metrics, state, changed = _loop([_batch(nan=True), _batch(nan=False)], max_nonfinite_steps=3)
    assert changed and state["nonfinite_run"] == 0
    assert math.isfinite(metrics["train_loss"]) and metrics["train_loss"] > 0  # the NaN batch is not averaged in


def test_consecutive_non_finite_losses_stop_the_run_with_a_clear_message():
    error, state, changed = _loop([_batch(nan=True)] * 5, max_nonfinite_steps=3)
    assert isinstance(error, RuntimeError) and "3 consecutive steps had a non-finite loss" in str(error)
    assert state["completed_steps"] == 2 and not changed
