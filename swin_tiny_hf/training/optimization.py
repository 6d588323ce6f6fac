"""AdamW parameter groups, the learning-rate schedule (a pure function of the optimizer step), the peak learning
rate scaled to the global batch, and the run's optimizer and scheduler built from them."""

from __future__ import annotations

import math
from dataclasses import dataclass

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


class SettingsError(ValueError):
    """Flags that cannot go together, found once the processes are known (a parse error, exit code 2)."""


def resolve_learning_rate(
    learning_rate: float | None,
    lr_base: float,
    lr_base_size: int,
    lr_base_scale: str,
    min_learning_rate: float,
    global_batch: int,
) -> tuple[float, str]:
    """(peak learning rate, how): `learning_rate` as given, else `lr_base` scaled to the global batch (per-device
    batch x processes x accumulation steps), so that one command is the same recipe on 1 GPU or 8."""
    if learning_rate is not None:
        how = "--learning_rate"
    else:
        learning_rate = scaled_learning_rate(lr_base, lr_base_size, global_batch, lr_base_scale)
        how = f"--lr_base {lr_base:g} x ({global_batch} / {lr_base_size}), {lr_base_scale}"
    if min_learning_rate > learning_rate:
        raise SettingsError(
            f"--min_learning_rate {min_learning_rate} is above the peak learning rate {learning_rate:g} "
            f"(global batch {global_batch}); lower it or raise the learning rate."
        )
    return learning_rate, how


@dataclass(frozen=True)
class OptimizerSettings:
    """AdamW and the warmup + cosine schedule, with the peak learning rate resolved (`resolve_learning_rate`)."""

    learning_rate: float
    min_learning_rate: float
    warmup_epochs: float
    warmup_start_factor: float
    weight_decay: float
    betas: tuple[float, float]


@dataclass(frozen=True)
class Schedule:
    """The run's length: optimizer steps per epoch (per process, after accumulation) and in all."""

    steps_per_epoch: int
    max_train_steps: int

    @property
    def num_epochs(self) -> int:
        return math.ceil(self.max_train_steps / self.steps_per_epoch)


def warmup_step_count(settings: OptimizerSettings, schedule: Schedule) -> int:
    """--warmup_epochs in optimizer steps."""
    return round(settings.warmup_epochs * schedule.steps_per_epoch)


def build_optimizer_and_scheduler(
    model: nn.Module, settings: OptimizerSettings, schedule: Schedule
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optimizer = torch.optim.AdamW(
        parameter_groups(model, settings.weight_decay),
        lr=settings.learning_rate,
        betas=settings.betas,
        # fused: one kernel for all parameters, and a step it can skip on the device (NonFiniteGuard, GradScaler)
        fused=True,
    )
    scheduler = warmup_cosine_scheduler(
        optimizer,
        warmup_step_count(settings, schedule),
        schedule.max_train_steps,
        settings.min_learning_rate,
        settings.warmup_start_factor,
    )
    return optimizer, scheduler


def long_warmup_warning(settings: OptimizerSettings, schedule: Schedule) -> str | None:
    """A warmup as long as the run or longer never reaches the peak learning rate: what to say, or None."""
    warmup = warmup_step_count(settings, schedule)
    if warmup < schedule.max_train_steps:
        return None
    last = learning_rate_at(
        schedule.max_train_steps - 1,
        settings.learning_rate,
        warmup,
        schedule.max_train_steps,
        settings.min_learning_rate,
        settings.warmup_start_factor,
    )
    return (
        f"the warmup (--warmup_epochs {settings.warmup_epochs:g}: {warmup} optimizer steps of "
        f"{schedule.steps_per_epoch} per epoch) is as long as the run or longer ({schedule.max_train_steps} steps): "
        f"the learning rate climbs from {settings.learning_rate * settings.warmup_start_factor:.3e} and never "
        f"reaches its peak {settings.learning_rate:.3e} (it ends at {last:.3e}). Lower --warmup_epochs or train "
        "longer."
    )


def apply_optimizer_settings(optimizer, scheduler, settings: OptimizerSettings, completed_steps: int) -> None:
    """After a resume's `load_state`: the new peak learning rate, weight decay and betas in every parameter group,
    and the (new) schedule at `completed_steps`. The checkpoint's optimizer state otherwise wins silently."""
    inner = getattr(scheduler, "scheduler", scheduler)  # accelerate's AcceleratedScheduler wraps torch's
    inner.base_lrs = [settings.learning_rate for _ in inner.base_lrs]
    inner.last_epoch = completed_steps
    factors = [factor(completed_steps) for factor in inner.lr_lambdas]
    for index, (group, factor) in enumerate(zip(optimizer.param_groups, factors)):
        group["initial_lr"] = settings.learning_rate
        group["lr"] = settings.learning_rate * factor
        group["betas"] = settings.betas
        if index == 0:  # parameter_groups: the decay group first, the no-decay group (0) after it
            group["weight_decay"] = settings.weight_decay
    inner._last_lr = [group["lr"] for group in optimizer.param_groups]
