"""The run's accelerator: processes, device, mixed precision (what `auto` resolves to, and why), the GradScaler
(also fp16 on a CPU), torch.compile and the trackers."""

from __future__ import annotations

import logging
import os

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import GradScalerKwargs, TorchDynamoPlugin

logger = logging.getLogger("train")


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); without, bf16 is emulated and slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # private, hence the getattr
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def resolve_mixed_precision(requested: str) -> tuple[str, str]:
    """(precision, where it came from). auto: what `accelerate launch`/config says if not "no"; else fp16 on CUDA;
    bf16 on CPUs with native bf16 (measured on one: 2x the training throughput of fp32 and the same digits
    accuracy, see BENCHMARKS.md); else fp32. `accelerate launch` passes "no" when it was not told, so "no" from it
    does not force fp32: train.py's own --mixed_precision no does."""
    if requested != "auto":
        return requested, f"--mixed_precision {requested}"
    from_launcher = os.environ.get("ACCELERATE_MIXED_PRECISION")
    if from_launcher and from_launcher != "no":
        return from_launcher, f"--mixed_precision auto: accelerate's launch flags or config say {from_launcher}"
    told = "accelerate launch passed 'no' (its value when not told), " if from_launcher == "no" else ""
    if torch.cuda.is_available():
        return "fp16", f"--mixed_precision auto: {told}fp16 on CUDA"
    if native_cpu_bf16():
        return "bf16", (
            f"--mixed_precision auto: {told}this CPU computes bf16 natively (AVX512-BF16 or AMX); "
            "train.py --mixed_precision no forces fp32"
        )
    return "no", f"--mixed_precision auto: {told}fp32, this CPU has no native bf16 (emulated bf16 is slower)"


def enable_cpu_fp16(accelerator: Accelerator, init_scale: float) -> None:
    """accelerate leaves fp16 off on CPUs; torch has fp16 autocast and a GradScaler there. Turn them on through
    accelerate's own switches, so that `prepare` wraps the forward in autocast and the optimizer with the scaler,
    `backward` scales, `clip_grad_norm_` unscales and `save_state` keeps the scaler: the step that runs on a GPU.
    CPUs emulate fp16 (slow): this is for parity with GPU runs and for testing them."""
    accelerator.native_amp = True
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)


def build_accelerator(
    mixed_precision: str,
    gradient_accumulation_steps: int,
    fp16_init_scale: float,
    project_dir: str,
    log_with: str | None = None,
    torch_compile: str | None = None,
) -> Accelerator:
    """The accelerator, with `mixed_precision` ("auto" or a precision) resolved; the log says where it came from."""
    precision, source = resolve_mixed_precision(mixed_precision)
    accelerator = Accelerator(
        gradient_accumulation_steps=gradient_accumulation_steps,
        mixed_precision=precision,
        kwargs_handlers=[GradScalerKwargs(init_scale=fp16_init_scale)],
        log_with=log_with,
        project_dir=project_dir,
        # non_blocking: batches go to the GPU from pinned memory without stalling the host
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, non_blocking=True),
        step_scheduler_with_optimizer=False,
        dynamo_plugin=TorchDynamoPlugin(backend="inductor", mode=torch_compile) if torch_compile else None,
    )
    logger.setLevel(logging.INFO if accelerator.is_main_process else logging.WARNING)
    logger.info("precision: %s (%s)", "fp32" if precision == "no" else precision, source)
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu" and accelerator.scaler is None:
        enable_cpu_fp16(accelerator, fp16_init_scale)
    return accelerator
