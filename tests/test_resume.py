"""Resuming (resume.py): what a resume may change, and the state a run starts from, fresh or from a checkpoint."""

import json
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from hypothesis import given, settings
from hypothesis import strategies as st

from swin_tiny_hf.training.checkpointing import save_checkpoint
from swin_tiny_hf.training.flags import get_args_parser
from swin_tiny_hf.training.optimization import OptimizerSettings, apply_optimizer_settings, warmup_cosine_scheduler
from swin_tiny_hf.training.resume import (
    FREE_TO_CHANGE,
    ResumeRefused,
    changed_settings,
    describe_changes,
    initial_state,
    refusal,
)
from swin_tiny_hf.training.run_state import RunState

RECORDED = {
    "per_device_train_batch_size": 16,
    "num_processes": 4,
    "learning_rate": 1e-3,
    "window_size": (8, 8, 4, 2),  # as args hold it; args.json stores a list
    "logging_steps": 50,
    "max_eval_samples": 100,
}


def test_a_change_to_the_recipe_is_named_with_both_values_and_free_settings_are_not():
    current = {**RECORDED, "num_processes": 8, "window_size": [8, 8, 4, 2], "logging_steps": 10}
    current["max_eval_samples"] = 20  # what is evaluated, not what is trained
    assert changed_settings(RECORDED, current) == {"num_processes": (4, 8)}
    assert describe_changes({"num_processes": (4, 8), "learning_rate": (1e-3, 2e-3)}) == (
        "num_processes 4 -> 8, --learning_rate 0.001 -> 0.002"
    )
    message = refusal(Path("out/step_8"), {"seed": (1, 2)})
    assert "--resume_from_checkpoint 'out/step_8' would not resume exactly" in message
    assert "--seed 1 -> 2" in message and "--resume_with_changes" in message


def test_a_setting_only_one_side_has_is_not_compared():
    """A flag added or removed between versions of train.py: an older checkpoint still resumes."""
    assert changed_settings({**RECORDED, "old_flag": 1}, {**RECORDED, "new_flag": 2}) == {}


@settings(max_examples=50, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(FREE_TO_CHANGE)), st.integers() | st.text() | st.none()))
def test_free_settings_never_refuse_a_resume(free_changes):
    assert changed_settings({**RECORDED, **dict.fromkeys(free_changes, "old")}, {**RECORDED, **free_changes}) == {}


def test_the_free_settings_are_the_flags_declared_free_and_the_record_of_changes():
    """One declaration per flag: the parser's `resume=FREE` is the list (no list of names kept elsewhere)."""
    actions = {action.dest: action for action in get_args_parser()._actions if action.dest != "help"}
    assert FREE_TO_CHANGE - set(actions) == {"resumed_with_changes"}
    assert all(hasattr(action, "free_on_resume") for action in actions.values())  # every flag says which
    # where and how the run reports, saves or computes: free; what it trains with: not
    assert {"output_dir", "logging_steps", "max_eval_samples", "mixed_precision", "torch_compile"} <= FREE_TO_CHANGE
    exact = {"seed", "learning_rate", "per_device_train_batch_size", "max_train_steps", "window_size", "mixup_prob"}
    assert not exact & FREE_TO_CHANGE


def test_new_optimizer_settings_are_applied_after_the_checkpoint_is_loaded():
    model = torch.nn.Linear(2, 2)
    groups = [{"params": [model.weight], "weight_decay": 0.05}, {"params": [model.bias], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=2e-3, betas=(0.9, 0.999))
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=2, total_steps=10, min_lr=1e-5)
    new = OptimizerSettings(2e-3, 1e-5, 0.0, 0.01, weight_decay=0.1, betas=(0.8, 0.99))
    apply_optimizer_settings(optimizer, scheduler, new, completed_steps=6)
    factor = scheduler.lr_lambdas[0](6)
    assert [g["lr"] for g in optimizer.param_groups] == [2e-3 * factor] * 2
    assert [g["betas"] for g in optimizer.param_groups] == [(0.8, 0.99)] * 2
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]  # the no-decay group stays at 0
    assert scheduler.last_epoch == 6 and scheduler.get_last_lr() == [2e-3 * factor] * 2


# ---------------------------------------------------------------------------- initial_state, on real checkpoints
ARGS = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2, "learning_rate": 1e-2, "seed": 1}
SETTINGS = OptimizerSettings(1e-2, 1e-5, 0.0, 0.01, weight_decay=0.05, betas=(0.9, 0.999))


@pytest.fixture
def run_objects():
    """A prepared Linear model, AdamW and schedule on one CPU process, as train.py prepares them."""
    AcceleratorState._reset_state(reset_partial_state=True)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=0, total_steps=20, min_lr=1e-5)
    yield accelerator, *accelerator.prepare(model, optimizer, scheduler)
    AcceleratorState._reset_state(reset_partial_state=True)


def write_checkpoint(accelerator, model, folder: Path, state: dict, args: dict) -> Path:
    return save_checkpoint(accelerator, folder, "step_6", state, args, model=model)


POSITION = {"completed_steps": 6, "epoch": 1, "batches_into_epoch": 4, "samples_into_epoch": 16, "samples_seen": 48}


def test_a_fresh_run_starts_at_zero_with_its_own_id(run_objects):
    accelerator, _, optimizer, scheduler = run_objects
    first = initial_state(accelerator, None, ARGS, False, optimizer, scheduler, SETTINGS, 10)
    second = initial_state(accelerator, None, ARGS, False, optimizer, scheduler, SETTINGS, 10)
    assert (first.completed_steps, first.epoch, first.samples_seen, first.history, first.best_top1) == (
        0,
        0,
        0,
        [],
        -1,
    )
    assert first.run_id != second.run_id


def test_a_resume_with_the_same_settings_loads_everything_and_keeps_the_position(run_objects, tmp_path):
    accelerator, model, optimizer, scheduler = run_objects
    history = [{"epoch": 1, "val_top1": 0.5}]
    written = RunState(**POSITION, history=history, best_top1=0.5, run_id="earlier")
    checkpoint = write_checkpoint(accelerator, model, tmp_path, written.to_json(), ARGS)
    saved_weight = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)  # the run's weights before loading differ from the checkpoint's
    state = initial_state(accelerator, checkpoint, ARGS, False, optimizer, scheduler, SETTINGS, 8)
    assert torch.equal(model.weight, saved_weight)
    assert {k: getattr(state, k) for k in POSITION} == POSITION
    assert (state.history, state.best_top1, state.resume_changes) == (history, 0.5, [])
    assert state.run_id not in ("earlier", None)  # this run's checkpoints replace none of the earlier run's


def test_a_changed_setting_is_refused_unless_accepted_and_then_applied_from_the_same_samples(run_objects, tmp_path):
    accelerator, model, optimizer, scheduler = run_objects
    checkpoint = write_checkpoint(accelerator, model, tmp_path, RunState(**POSITION).to_json(), ARGS)
    bigger = {**ARGS, "per_device_train_batch_size": 8, "learning_rate": 2e-2}
    with pytest.raises(ResumeRefused, match=r"--learning_rate 0.01 -> 0.02, --per_device_train_batch_size 4 -> 8"):
        initial_state(accelerator, checkpoint, bigger, False, optimizer, scheduler, SETTINGS, 4)
    new_settings = OptimizerSettings(2e-2, 1e-5, 0.0, 0.01, weight_decay=0.05, betas=(0.9, 0.999))
    # 4 micro-batches of 8 an epoch now: 16 samples into the epoch are micro-batch 2; steps of 2 micro-batches
    state = initial_state(accelerator, checkpoint, bigger, True, optimizer, scheduler, new_settings, 4)
    assert (state.samples_seen, state.samples_into_epoch, state.batches_into_epoch) == (48, 16, 2)
    assert state.resume_changes == [
        {"samples": 48, "changes": {"learning_rate": [0.01, 0.02], "per_device_train_batch_size": [4, 8]}}
    ]
    assert optimizer.param_groups[0]["initial_lr"] == 2e-2


def test_a_checkpoint_written_before_the_run_state_was_typed_resumes(run_objects, tmp_path):
    """training_state.json as train.py wrote it before samples and run ids were recorded: the position follows
    from the steps at the recorded batch, and the run gets an id of its own."""
    accelerator, model, optimizer, scheduler = run_objects
    old = {"completed_steps": 6, "epoch": 1, "batches_into_epoch": 4, "nonfinite_run": 0, "history": []}
    old.update(best_top1=-1.0, bad_images=[])
    checkpoint = write_checkpoint(accelerator, model, tmp_path, old, ARGS)
    state = initial_state(accelerator, checkpoint, ARGS, False, optimizer, scheduler, SETTINGS, 8)
    assert (state.completed_steps, state.batches_into_epoch, state.samples_into_epoch) == (6, 4, 16)
    assert state.samples_seen == 6 * 2 * 4 and state.run_id
    assert json.loads((checkpoint / "training_state.json").read_text())["checkpoint_sequence"] == 1


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"completed_steps": 1.0}, "expected completed_steps a whole number >= 0, got 1.0"),
        ({"batches_into_epoch": None}, "it has no 'batches_into_epoch'"),
        ("{not json", "Expecting property name"),
    ],
    ids=["a float step", "a missing key", "broken JSON"],
)
def test_a_run_state_that_cannot_be_resumed_from_is_refused_naming_the_file_before_loading(
    run_objects, tmp_path, edit, expected
):
    accelerator, model, optimizer, scheduler = run_objects
    checkpoint = write_checkpoint(accelerator, model, tmp_path, RunState(**POSITION).to_json(), ARGS)
    state_file = checkpoint / "training_state.json"
    if isinstance(edit, str):
        state_file.write_text(edit)
    else:
        values = {**json.loads(state_file.read_text()), **edit}
        state_file.write_text(json.dumps({k: v for k, v in values.items() if v is not None}))
    with torch.no_grad():
        model.weight.add_(1.0)
    before = model.weight.detach().clone()
    with pytest.raises(ResumeRefused, match=rf"{state_file} cannot be resumed from: .*{expected}"):
        initial_state(accelerator, checkpoint, ARGS, False, optimizer, scheduler, SETTINGS, 8)
    assert torch.equal(model.weight, before)  # refused before any weight was loaded


def test_keys_a_newer_version_wrote_are_named_once_with_the_file_and_kept(run_objects, tmp_path, caplog):
    accelerator, model, optimizer, scheduler = run_objects
    checkpoint = write_checkpoint(accelerator, model, tmp_path, {**RunState(**POSITION).to_json(), "ema": 0.9}, ARGS)
    with caplog.at_level("WARNING", logger="train"):
        state = initial_state(accelerator, checkpoint, ARGS, False, optimizer, scheduler, SETTINGS, 8)
    assert state.unknown == {"ema": 0.9} and state.to_json()["ema"] == 0.9
    [warning] = [r.getMessage() for r in caplog.records if "does not know" in r.getMessage()]
    expected = "holds keys this version of swin_tiny_hf does not know, kept as they are: ema"
    assert warning == f"{checkpoint / 'training_state.json'} {expected}"
