import evaluate
import pytest
import torch

from swin_tiny_hf import SwinTinyForImageClassification
from swin_tiny_hf.training import top_k_accuracy
from swin_tiny_hf.training.optimization import (
    OptimizerSettings,
    Schedule,
    SettingsError,
    learning_rate_at,
    learning_rate_used,
    long_warmup_warning,
    parameter_groups,
    resolve_learning_rate,
    scaled_learning_rate,
    warmup_cosine_scheduler,
)

from conftest import tiny_config


def test_learning_rate_at_warmup_start_end_and_last_step():
    kwargs = dict(base_lr=2.5e-4, warmup_steps=10 * 1562, total_steps=200 * 1562, min_lr=5e-6)
    assert learning_rate_at(0, **kwargs) == pytest.approx(2.5e-6)  # 1% of the lr
    assert learning_rate_at(5 * 1562, **kwargs) == pytest.approx(2.5e-6 + 0.5 * (2.5e-4 - 2.5e-6))
    assert learning_rate_at(10 * 1562, **kwargs) == pytest.approx(2.5e-4)  # warmup end: the full lr
    assert learning_rate_at(200 * 1562 - 1, **kwargs) == pytest.approx(5e-6)  # last step: the minimum
    middle = 10 * 1562 + (200 * 1562 - 1 - 10 * 1562) // 2
    assert learning_rate_at(middle, **kwargs) == pytest.approx((2.5e-4 + 5e-6) / 2, rel=1e-4)
    after = [learning_rate_at(s, **kwargs) for s in range(10 * 1562, 200 * 1562, 997)]
    assert all(a >= b for a, b in zip(after, after[1:]))


def test_scheduler_applies_the_pure_function_every_step():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=3, total_steps=10, min_lr=1e-5)
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([learning_rate_at(s, 1e-3, 3, 10, 1e-5) for s in range(10)])
    assert seen[-1] == pytest.approx(1e-5) and seen[3] == pytest.approx(1e-3)


def test_the_logged_learning_rate_is_the_one_each_step_ran_with():
    """The run logs learning_rate_used: the rate of the step just done (get_last_lr() is already the next one's)."""
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=3, total_steps=10, min_lr=1e-5)
    assert learning_rate_used(scheduler, 0) == pytest.approx(1e-5 * 0 + 1e-3 * 0.01)  # before the first step
    for completed in range(1, 11):
        used = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        assert learning_rate_used(scheduler, completed) == pytest.approx(used, rel=1e-12)
        assert scheduler.get_last_lr()[0] != pytest.approx(used) or completed == 10  # torch's is the next one
    assert learning_rate_used(scheduler, 10) == pytest.approx(1e-5)  # the last step runs at the minimum


def test_no_decay_grouping_by_rule():
    model = SwinTinyForImageClassification(tiny_config())
    decay_group, plain_group = parameter_groups(model, weight_decay=0.05)
    assert decay_group["weight_decay"] == 0.05 and plain_group["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay_group["params"]}
    plain = {names[id(p)] for p in plain_group["params"]}
    assert decayed | plain == set(names.values()) and not decayed & plain
    assert "swin.stages.0.blocks.0.attention.relative_position_bias_table" in plain
    assert "swin.stages.0.blocks.0.attention.qkv.bias" in plain
    assert "swin.stages.0.blocks.0.norm1.weight" in plain and "swin.norm.weight" in plain
    assert "swin.embeddings.norm.weight" in plain and "classifier.bias" in plain
    assert "swin.stages.0.downsample.norm.weight" in plain
    assert decayed == {n for n in names.values() if n.endswith("weight") and "norm" not in n}
    assert "swin.embeddings.projection.weight" in decayed and "classifier.weight" in decayed


def test_top_k_accuracy_loads_offline_through_evaluate():
    metric = evaluate.load(top_k_accuracy.__file__, keep_in_memory=True)
    metric.add_batch(predictions=[[3, 1, 2], [0, 2, 1], [1, 0, 2]], references=[3, 2, 2])
    assert metric.compute(top_k=(1, 3)) == {"top1_accuracy": pytest.approx(1 / 3), "top3_accuracy": 1.0}


def test_learning_rate_follows_the_global_batch():
    assert scaled_learning_rate(2.5e-4, 64, 64) == 2.5e-4  # the reference: one GPU, batch 64
    assert scaled_learning_rate(2.5e-4, 64, 512) == pytest.approx(2e-3)  # 8 GPUs x 64
    assert scaled_learning_rate(1e-3, 256, 64) == pytest.approx(2.5e-4)  # how the reference got its 2.5e-4
    assert scaled_learning_rate(2.5e-4, 64, 256, "sqrt") == pytest.approx(5e-4)
    with pytest.raises(ValueError, match="rule must be 'linear' or 'sqrt'"):
        scaled_learning_rate(2.5e-4, 64, 64, "cubic")
    with pytest.raises(ValueError, match="need lr_base > 0"):
        scaled_learning_rate(2.5e-4, 0, 64)


def test_train_resolves_the_learning_rate_from_processes_batch_and_accumulation():
    """flags.py's resolve_flags: the global batch counts processes and accumulation, and --lr_base scales."""
    from swin_tiny_hf.training import flags

    args = flags.parse_args(
        ["--output_dir", "x", "--per_device_train_batch_size", "64", "--gradient_accumulation_steps", "2"]
    )
    resolved = flags.resolve_flags(args, 8, "cpu")
    assert resolved.global_batch_size == 1024 and resolved.learning_rate == pytest.approx(2.5e-4 * 1024 / 64)
    assert args.learning_rate is None  # the parsed flags stay as given
    assert (
        resolve_learning_rate(None, 2.5e-4, 64, "linear", 5e-6, 1024)[1] == "--lr_base 0.00025 x (1024 / 64), linear"
    )
    explicit = flags.parse_args(["--output_dir", "x", "--learning_rate", "1e-3"])
    resolved = flags.resolve_flags(explicit, 8, "cpu")
    assert (resolved.learning_rate, resolved.global_batch_size) == (1e-3, 512)
    with pytest.raises(SettingsError, match=r"--min_learning_rate 0.01 is above the peak learning rate 0.00025"):
        resolve_learning_rate(None, 2.5e-4, 64, "linear", 1e-2, 64)
    one = flags.resolve_flags(flags.parse_args(["--output_dir", "x"]), 1, "cpu")
    assert (one.global_batch_size, one.dataloader_num_workers) == (64, 0)  # CPU: no loader workers by default
    assert flags.resolve_flags(flags.parse_args(["--output_dir", "x"]), 1, "cuda").dataloader_num_workers >= 1


def test_a_warmup_longer_than_the_run_is_said_with_where_the_rate_ends():
    settings = OptimizerSettings(1e-3, 1e-5, warmup_epochs=10, warmup_start_factor=0.01, weight_decay=0, betas=(0, 0))
    assert long_warmup_warning(settings, Schedule(steps_per_epoch=10, max_train_steps=1000)) is None
    message = long_warmup_warning(settings, Schedule(steps_per_epoch=10, max_train_steps=50))
    ends_at = learning_rate_at(49, 1e-3, 100, 50, 1e-5, 0.01)
    assert "--warmup_epochs 10: 100 optimizer steps of 10 per epoch" in message
    assert f"never reaches its peak 1.000e-03 (it ends at {ends_at:.3e})" in message


def test_auto_precision_is_bf16_only_where_the_cpu_computes_it_natively(monkeypatch):
    from swin_tiny_hf.training import accelerator as train  # where resolve_mixed_precision and its check live

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for native, expected in ((True, "bf16"), (False, "no")):
        monkeypatch.setattr(train, "native_cpu_bf16", lambda native=native: native)
        assert train.resolve_mixed_precision("auto")[0] == expected
    assert train.resolve_mixed_precision("no") == ("no", "--mixed_precision no")  # an explicit choice always wins
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")  # accelerate launch --mixed_precision fp16
    assert train.resolve_mixed_precision("auto") == (
        "fp16",
        "--mixed_precision auto: accelerate's launch flags or config say fp16",
    )
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")  # what accelerate launch sets when not told
    monkeypatch.setattr(train, "native_cpu_bf16", lambda: True)
    precision, source = train.resolve_mixed_precision("auto")  # the quick start's case: the log says why bf16
    assert precision == "bf16" and "accelerate launch passed 'no' (its value when not told)" in source
    assert "this CPU computes bf16 natively" in source and "train.py --mixed_precision no forces fp32" in source
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert train.resolve_mixed_precision("auto")[0] == "fp16"
