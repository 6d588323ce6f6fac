"""What a resume may change: the checkpoint's recorded settings against the new run's (resume_changes.py)."""

from pathlib import Path

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swin_tiny_hf.training.optimization import warmup_cosine_scheduler
from swin_tiny_hf.training.resume_changes import (
    FREE_TO_CHANGE,
    apply_optimizer_settings,
    changed_settings,
    describe_changes,
    refusal,
)

import train

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


def test_every_free_setting_is_a_flag_of_train_py_or_a_recorded_value():
    flags = {action.dest for action in train.get_args_parser()._actions}
    assert FREE_TO_CHANGE - flags == {"resumed_with_changes"}  # the record of earlier accepted changes


def test_new_optimizer_settings_are_applied_after_the_checkpoint_is_loaded():
    model = torch.nn.Linear(2, 2)
    groups = [{"params": [model.weight], "weight_decay": 0.05}, {"params": [model.bias], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=2e-3, betas=(0.9, 0.999))
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=2, total_steps=10, min_lr=1e-5)

    class Args:
        learning_rate, adam_beta1, adam_beta2, weight_decay = 2e-3, 0.8, 0.99, 0.1

    apply_optimizer_settings(optimizer, scheduler, Args, completed_steps=6)
    factor = scheduler.lr_lambdas[0](6)
    assert [g["lr"] for g in optimizer.param_groups] == [2e-3 * factor] * 2
    assert [g["betas"] for g in optimizer.param_groups] == [(0.8, 0.99)] * 2
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]  # the no-decay group stays at 0
    assert scheduler.last_epoch == 6 and scheduler.get_last_lr() == [2e-3 * factor] * 2
