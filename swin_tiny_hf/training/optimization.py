"""AdamW parameter groups and the learning-rate schedule (a pure function of the optimizer step)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..modeling_swin_tiny import no_weight_decay_parameter_names


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decay on weight matrices; none on biases, norm weights and bias tables."""
    no_decay = no_weight_decay_parameter_names(model)
    decay, plain = [], []
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            (plain if name in no_decay else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]


def learning_rate_at(
    step: int, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float, warmup_start_factor: float = 0.01
) -> float:
    """Linear warmup from warmup_start_factor * base_lr to base_lr over warmup_steps, then cosine to min_lr.

    `step` counts optimizer steps from 0; the last step is total_steps - 1.
    """
    if step < warmup_steps:
        return base_lr * (warmup_start_factor + (1.0 - warmup_start_factor) * step / warmup_steps)
    decay_steps = max(total_steps - 1 - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer,
    warmup_steps: int,
    total_steps: int,
    min_lr: float,
    warmup_start_factor: float = 0.01,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR that applies `learning_rate_at`; step it once per optimizer step."""
    base_lr = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: learning_rate_at(step, base_lr, warmup_steps, total_steps, min_lr, warmup_start_factor) / base_lr,
    )


def learning_rate_used(scheduler: torch.optim.lr_scheduler.LRScheduler, completed_steps: int) -> float:
    """The learning rate that optimizer step number `completed_steps` (counted from 1) ran with: the one the run
    logs and records. torch's `get_last_lr()` after that step's `scheduler.step()` is already the next step's.
    Before the first step: the first step's rate. `scheduler` may be accelerate's wrapper of a LambdaLR."""
    inner = getattr(scheduler, "scheduler", scheduler)
    step = max(completed_steps - 1, 0)
    return inner.base_lrs[0] * inner.lr_lambdas[0](step)


def rescale_partial_step(model: nn.Module, micro_batches: int, accumulation_steps: int) -> None:
    """An optimizer step that closes after fewer micro-batches than `accumulation_steps` (an epoch whose loader length
    is not a multiple of it ends on one): accelerate divided each micro-batch's loss by `accumulation_steps`, so the
    summed gradient is `micro_batches / accumulation_steps` of the mean. Scale it back to the mean, on the device.
    Call at the step's end, before clipping (linear, so it holds under a grad scaler's scale too)."""
    if micro_batches >= accumulation_steps:
        return
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    if gradients:
        torch._foreach_mul_(gradients, accumulation_steps / micro_batches)


def scaled_learning_rate(lr_base: float, lr_base_size: int, global_batch_size: int, rule: str = "linear") -> float:
    """The peak learning rate for a global batch, from one tuned at lr_base_size (as timm's --lr-base).

    "linear": lr_base * global_batch_size / lr_base_size (Goyal et al.; the reference recipe: 1e-3 at 256 is
    2.5e-4 at 64); "sqrt": lr_base * sqrt(global_batch_size / lr_base_size), which some prefer for Adam.
    """
    if lr_base <= 0 or lr_base_size < 1 or global_batch_size < 1:
        raise ValueError(
            f"need lr_base > 0 and batch sizes >= 1, got lr_base={lr_base}, lr_base_size={lr_base_size}, "
            f"global_batch_size={global_batch_size}."
        )
    ratio = global_batch_size / lr_base_size
    if rule == "linear":
        return lr_base * ratio
    if rule == "sqrt":
        return lr_base * math.sqrt(ratio)
    raise ValueError(f"rule must be 'linear' or 'sqrt', got {rule!r}.")
