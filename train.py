"""Train SwinTinyForImageClassification with the Tiny ImageNet reference recipe, on accelerate.

    accelerate launch train.py --output_dir outputs/tiny-imagenet          # GPUs: fp16 by default
    python train.py --dataset_name digits --output_dir outputs/digits      # offline, CPU, minutes

Flags follow transformers' run_image_classification_no_trainer.py where they overlap. Every
SwinTinyConfig field is a flag too (--drop_path_rate, --window_size 8 8 4 2, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import functools
import json
import logging
import math
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import evaluate
import psutil  # an accelerate dependency
import torch
import torch.nn.functional as F
from accelerate import Accelerator, DataLoaderConfiguration
from accelerate.utils import GradScalerKwargs, TorchDynamoPlugin, broadcast_object_list, set_seed
from accelerate.utils.constants import SCALER_NAME
from datasets import DatasetDict
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoImageProcessor, BaseImageProcessor

from swin_tiny_hf import SwinTinyConfig, SwinTinyForImageClassification, make_image_processor, save_model_and_processor
from swin_tiny_hf.imagenet_classes import label_config
from swin_tiny_hf.training import top_k_accuracy
from swin_tiny_hf.training.batch_augmentation import ReferenceTrainAugmentation
from swin_tiny_hf.training.checkpointing import (
    ARGS_FILE,
    RUN_ID_KEY,
    CheckpointWriteError,
    NonFiniteWeightsError,
    OutputWriteError,
    check_finite_weights,
    describe_write_error,
    ensure_free_space,
    folder_bytes,
    load_training_state,
    raise_on_every_process,
    resolve_checkpoint,
    save_checkpoint,
    write_atomically,
    write_json_output,
    write_model_in_place,
)
from swin_tiny_hf.training.collate import MixupCutmixCollator, eval_collate
from swin_tiny_hf.training.data import (
    DEFAULT_DATASET,
    DEFAULT_VALIDATION_FRACTION,
    BadImageError,
    load_image_dataset,
)
from swin_tiny_hf.training.data_checks import SkippedImages, check_data, record_bad_images
from swin_tiny_hf.training.flag_types import finite_float, parse_bool, ranged
from swin_tiny_hf.training.model_card import render_model_card
from swin_tiny_hf.training.next_steps import data_flags, next_steps
from swin_tiny_hf.training.nonfinite_guard import NonFiniteGuard, NonFiniteLossError
from swin_tiny_hf.training.optimization import (
    learning_rate_at,
    learning_rate_used,
    parameter_groups,
    rescale_partial_step,
    scaled_learning_rate,
    warmup_cosine_scheduler,
)
from swin_tiny_hf.training.output_folder import (
    OutputFolderError,
    lock_output_folder,
    prepare_output_folder,
    release_output_folder,
)
from swin_tiny_hf.training.preemption import (
    DEFAULT_SIGNALS,
    Preempted,
    PreemptionHandler,
    ignore_in_worker,
    parse_signals,
    stop_data_workers,
)
from swin_tiny_hf.training.resume_changes import (
    apply_optimizer_settings,
    changed_settings,
    describe_changes,
    refusal,
)
from swin_tiny_hf.training.resume_position import (
    EpochLayout,
    position_after_changes,
    recorded_position,
    restart_accumulation,
)
from swin_tiny_hf.training.seeding import batch_seed
from swin_tiny_hf.training.transforms import EvalTransform, TrainTransform

logger = logging.getLogger("train")
# Config fields that are flags of their own; the transformers base fields (id2label, ...), the backbone's
# outputs and the labels' WordNet ids (set from the dataset) are not.
MODEL_FIELDS = [
    f
    for f in fields(SwinTinyConfig)
    if f.name in SwinTinyConfig.__annotations__ and not f.name.startswith("_") and f.name != "wordnet_ids"
]
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
AT_LEAST_1 = ranged(int, "[1, inf)")
SEED_MAX = 2**32 - 1  # NumPy's seeds (accelerate's set_seed seeds NumPy too)


def _steps(value: str) -> str | int:
    if value == "epoch":
        return value
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise argparse.ArgumentTypeError(f"expected a positive number of steps or 'epoch', got {value!r}")


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset_name",
        default=DEFAULT_DATASET,
        help="Hub dataset, 'digits' (bundled, offline) or a save_to_disk folder",
    )
    data.add_argument("--dataset_config_name", default=None)
    data.add_argument("--train_dir", default=None, help="local image folder (one sub-folder per class)")
    data.add_argument("--validation_dir", default=None)
    data.add_argument("--image_column_name", default="image")
    data.add_argument("--label_column_name", default="label")
    data.add_argument(
        "--validation_fraction",
        type=ranged(float, "(0, 1)"),
        default=DEFAULT_VALIDATION_FRACTION,
        help="stratified split of train when the dataset has no validation split",
    )
    data.add_argument(
        "--validation_split_seed",
        type=ranged(int, f"[0, {SEED_MAX}]"),
        default=0,
        help="seed of that split (and of the digits split); independent of --seed so that runs "
        "with different seeds are scored on the same images",
    )
    data.add_argument(
        "--max_train_samples",
        type=AT_LEAST_1,
        default=None,
        help="train on this many rows of the shuffled training split",
    )
    data.add_argument(
        "--max_eval_samples", type=AT_LEAST_1, default=None, help="evaluate on the first N validation rows"
    )
    data.add_argument(
        "--skip_bad_images",
        action="store_true",
        help="leave out images that cannot be read instead of stopping: found at start (every validation image is "
        "decoded then) or in training (skipped in its batch); each is logged, counted per epoch and listed in "
        "all_results.json",
    )
    data.add_argument(
        "--dataloader_num_workers",
        type=ranged(int, "[0, inf)"),
        default=None,
        help="default: 0 on CPU (workers would steal the cores the model's threads spin on), "
        "else min(8, CPU cores per local process)",
    )
    data.add_argument("--cache_dir", default=None)

    model = parser.add_argument_group("model (any SwinTinyConfig field)")
    model.add_argument("--model_name_or_path", default=None, help="start from a save_pretrained folder or Hub id")
    model.add_argument(
        "--ignore_mismatched_sizes",
        action="store_true",
        help="with --model_name_or_path: a new classifier head when the number of classes differs",
    )
    for field in MODEL_FIELDS:
        kind = {"depths": int, "num_heads": int, "window_size": int}.get(field.name)
        if kind is not None:
            model.add_argument(f"--{field.name}", type=kind, nargs="+", default=None)
        elif field.type in ("bool",) or isinstance(field.default, bool):
            model.add_argument(f"--{field.name}", type=parse_bool, default=None)
        else:  # ranges are the config's to check (parse_args builds it), with its own messages
            kind = finite_float if isinstance(field.default, float) else type(field.default)
            model.add_argument(f"--{field.name}", type=kind, default=None)
    model.add_argument("--attn_implementation", choices=("sdpa", "eager"), default="sdpa")
    model.add_argument(
        "--torch_compile",
        nargs="?",
        const="default",
        default=None,
        choices=COMPILE_MODES,
        help="compile the model with torch.compile (inductor), in this mode (default: 'default'; "
        "'reduce-overhead' uses CUDA graphs)",
    )

    optim = parser.add_argument_group("optimisation (reference recipe defaults)")
    optim.add_argument("--per_device_train_batch_size", type=AT_LEAST_1, default=64)
    optim.add_argument("--per_device_eval_batch_size", type=AT_LEAST_1, default=128)
    optim.add_argument(
        "--learning_rate",
        type=ranged(float, "(0, inf)"),
        default=None,
        help="the peak learning rate as is; default: --lr_base scaled to the global batch",
    )
    optim.add_argument(
        "--lr_base",
        type=ranged(float, "(0, inf)"),
        default=2.5e-4,
        help="the peak learning rate at a global batch of --lr_base_size (reference: 2.5e-4 at 64)",
    )
    optim.add_argument("--lr_base_size", type=AT_LEAST_1, default=64)
    optim.add_argument(
        "--lr_base_scale",
        choices=("linear", "sqrt"),
        default="linear",
        help="lr = lr_base x (global batch / lr_base_size), or its square root",
    )
    optim.add_argument("--min_learning_rate", type=ranged(float, "[0, inf)"), default=5e-6)
    optim.add_argument("--warmup_epochs", type=ranged(float, "[0, inf)"), default=10)
    optim.add_argument("--warmup_start_factor", type=ranged(float, "(0, 1]"), default=0.01)
    optim.add_argument("--weight_decay", type=ranged(float, "[0, inf)"), default=0.05)
    optim.add_argument("--adam_beta1", type=ranged(float, "[0, 1)"), default=0.9)
    optim.add_argument("--adam_beta2", type=ranged(float, "[0, 1)"), default=0.999)
    optim.add_argument("--max_grad_norm", type=ranged(float, "[0, inf)"), default=3.0, help="0: no clipping")
    optim.add_argument("--num_train_epochs", type=AT_LEAST_1, default=200)
    optim.add_argument(
        "--max_train_steps",
        type=AT_LEAST_1,
        default=None,
        help="the run's length in optimizer steps, instead of --num_train_epochs (its epochs: this many steps, "
        "rounded up to whole epochs, the last one cut short)",
    )
    optim.add_argument("--gradient_accumulation_steps", type=AT_LEAST_1, default=1)
    optim.add_argument(
        "--max_nonfinite_steps",
        type=AT_LEAST_1,
        default=5,
        help="stop after this many consecutive steps with a non-finite loss",
    )
    optim.add_argument(
        "--mixed_precision",
        choices=("auto", "no", "fp16", "bf16"),
        default="auto",
        help="auto: what accelerate's config or launch flags say, else fp16 on CUDA, bf16 on CPUs with native bf16 "
        "(AVX512-BF16, AMX), fp32 on other CPUs",
    )
    optim.add_argument("--seed", type=ranged(int, f"[0, {SEED_MAX}]"), default=42)
    optim.add_argument(
        "--fp16_init_scale",
        type=ranged(float, "(0, inf)"),
        default=65536.0,
        help="fp16: the GradScaler's first loss scale (torch's default); it halves on every overflow step",
    )

    aug = parser.add_argument_group("augmentation")
    aug.add_argument(
        "--randaugment_magnitude", type=ranged(int, "[0, 30]"), default=5, help="torchvision's 31 magnitude bins"
    )
    aug.add_argument(
        "--hflip_prob", type=ranged(float, "[0, 1]"), default=0.5, help="0 for data that is not mirror-symmetric"
    )
    aug.add_argument("--mixup_alpha", type=ranged(float, "[0, inf)"), default=0.4)
    aug.add_argument("--cutmix_alpha", type=ranged(float, "[0, inf)"), default=0.8)
    aug.add_argument("--mixup_prob", type=ranged(float, "[0, 1]"), default=0.3)
    aug.add_argument("--cutmix_prob", type=ranged(float, "[0, 1]"), default=0.3)
    aug.add_argument("--label_smoothing", type=ranged(float, "[0, 1)"), default=0.05)
    aug.add_argument(
        "--mix_off_first_epochs", type=ranged(int, "[0, inf)"), default=1, help="no Mixup/CutMix in the first N epochs"
    )
    aug.add_argument(
        "--mix_off_last_epochs",
        type=ranged(int, "[0, inf)"),
        default=10,
        help="no Mixup/CutMix in the last N epochs of the run (its real length: --max_train_steps included)",
    )

    out = parser.add_argument_group("outputs")
    out.add_argument("--output_dir", required=True)
    out.add_argument("--checkpointing_steps", type=_steps, default=None, help="N optimizer steps, or 'epoch'")
    out.add_argument(
        "--checkpoints_total_limit",
        type=AT_LEAST_1,
        default=None,
        help="keep only the newest N step/epoch checkpoints (317 MB each at 64 px); best/ and the final model are "
        "not counted; default: keep all",
    )
    out.add_argument(
        "--logging_steps",
        type=AT_LEAST_1,
        default=50,
        help="every N optimizer steps: the non-finite-loss check, the running loss and the trackers "
        "(the only host-device syncs of the loop between checkpoints)",
    )
    out.add_argument("--resume_from_checkpoint", default=None, help="a checkpoint folder, or 'latest' in output_dir")
    out.add_argument(
        "--resume_with_changes",
        action="store_true",
        help="resume although the recipe's settings differ from the checkpoint's (batch, processes, learning rate, "
        "...): the run goes on from the same number of samples with the new settings (without it: refused)",
    )
    out.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="delete what a previous run left in --output_dir and start afresh (without it, a non-empty folder is "
        "refused unless the run resumes)",
    )
    out.add_argument(
        "--preemption_signals",
        nargs="+",
        default=list(DEFAULT_SIGNALS),
        help="signals that stop the run at the next optimizer step after a checkpoint (exit code 128 + signal); "
        "'none' to leave them to their default action",
    )
    out.add_argument(
        "--preemption_check_steps",
        type=AT_LEAST_1,
        default=10,
        help="with several processes: agree on a received signal every N optimizer steps (a host-side all-reduce "
        "that costs about a millisecond on a busy host); one process checks at every step",
    )
    out.add_argument("--eval_only", action="store_true", help="evaluate --model_name_or_path and exit")
    out.add_argument("--with_tracking", action="store_true")
    out.add_argument("--report_to", default="tensorboard", help="accelerate tracker(s): tensorboard, wandb, all, ...")
    out.add_argument("--push_to_hub", action="store_true")
    out.add_argument("--hub_model_id", default=None)
    out.add_argument("--hub_token", default=None)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = get_args_parser()
    args = parser.parse_args(argv)
    if args.eval_only and args.model_name_or_path is None:
        parser.error("--eval_only needs --model_name_or_path")
    if args.eval_only and args.resume_from_checkpoint is not None:
        parser.error("--eval_only evaluates --model_name_or_path: it resumes nothing (--resume_from_checkpoint)")
    if args.train_dir is None and args.validation_dir is not None:
        parser.error("--validation_dir needs --train_dir")
    if args.mixup_prob + args.cutmix_prob > 1:
        parser.error(f"--mixup_prob + --cutmix_prob must be at most 1, got {args.mixup_prob} + {args.cutmix_prob}")
    for kind in ("mixup", "cutmix"):  # the collator's rule, here where the flags are read
        alpha, probability = getattr(args, f"{kind}_alpha"), getattr(args, f"{kind}_prob")
        if probability > 0 and alpha <= 0:
            parser.error(
                f"--{kind}_alpha must be positive when --{kind}_prob > 0, got {alpha} (--{kind}_prob {probability})"
            )
    if args.learning_rate is not None and args.min_learning_rate > args.learning_rate:
        parser.error(f"--min_learning_rate {args.min_learning_rate} is above --learning_rate {args.learning_rate}")
    try:
        args.preemption_signals = parse_signals(args.preemption_signals)
    except ValueError as error:
        parser.error(str(error))
    try:  # a bad size fails here, before any data is loaded, with the config's own message
        model_config(args)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    return args


class SettingsError(ValueError):
    """Flags that cannot go together, found once the processes are known (a parse error, exit code 2)."""


def resolve_learning_rate(args: argparse.Namespace, num_processes: int) -> tuple[float, int, str]:
    """(peak learning rate, global batch, how): --learning_rate as given, else --lr_base scaled to the global batch
    (per-device batch x processes x accumulation steps), so that one command is the same recipe on 1 GPU or 8."""
    global_batch = args.per_device_train_batch_size * num_processes * args.gradient_accumulation_steps
    if args.learning_rate is not None:
        learning_rate, how = args.learning_rate, "--learning_rate"
    else:
        learning_rate = scaled_learning_rate(args.lr_base, args.lr_base_size, global_batch, args.lr_base_scale)
        how = f"--lr_base {args.lr_base:g} x ({global_batch} / {args.lr_base_size}), {args.lr_base_scale}"
    if args.min_learning_rate > learning_rate:
        raise SettingsError(
            f"--min_learning_rate {args.min_learning_rate} is above the peak learning rate {learning_rate:g} "
            f"(global batch {global_batch}); lower it or raise the learning rate."
        )
    return learning_rate, global_batch, how


def model_overrides(args: argparse.Namespace) -> dict:
    overrides = {f.name: getattr(args, f.name) for f in MODEL_FIELDS if getattr(args, f.name) is not None}
    if len(overrides.get("window_size", ())) == 1:  # one value: every stage, as an int in the config
        overrides["window_size"] = overrides["window_size"][0]
    return overrides


def model_config(args: argparse.Namespace, label_names: list[str] | None = None) -> SwinTinyConfig:
    """The run's model config: --model_name_or_path's (or the default one) with the model flags and the dataset's
    labels applied, built and so validated as one config: a bad size is refused with the config's own message
    whether or not the run starts from a checkpoint.

    WordNet ids ("n01443537", Tiny ImageNet's) become readable names ("goldfish") in id2label, and the ids
    are kept in config.wordnet_ids (None for other names: the starting checkpoint's ids go with its head)."""
    values = model_overrides(args)
    if label_names is not None:
        values.update(label_config(label_names))
        # The recipe's labels are soft targets (Mixup, CutMix, label smoothing): a soft-target cross-entropy. Where
        # problem_type is None the model reads float labels as multi-label targets (transformers' rule).
        values["problem_type"] = "single_label_classification"
    if args.model_name_or_path is None:
        return SwinTinyConfig(**values)
    return SwinTinyConfig.from_pretrained(args.model_name_or_path, cache_dir=args.cache_dir, **values)


class StartingModelError(ValueError):
    """--model_name_or_path's weights do not fit the run's model."""


def build_model(args: argparse.Namespace, label_names: list[str]) -> SwinTinyForImageClassification:
    """A new model from the flags, or --model_name_or_path's weights; either way with the dataset's labels."""
    config = model_config(args, label_names)
    if args.model_name_or_path:
        try:
            return SwinTinyForImageClassification.from_pretrained(
                args.model_name_or_path,
                config=config,
                ignore_mismatched_sizes=args.ignore_mismatched_sizes,
                attn_implementation=args.attn_implementation,
                cache_dir=args.cache_dir,
            )
        except RuntimeError as error:
            if "size mismatch" not in str(error) and "ignore_mismatched_sizes" not in str(error):
                raise
            raise StartingModelError(
                f"--model_name_or_path {args.model_name_or_path!r}: its weights do not fit the run's model "
                f"({config.num_labels} classes from the dataset; transformers' report above names the tensors). "
                "Pass --ignore_mismatched_sizes to start those weights (a new classifier head) afresh."
            ) from None
    return SwinTinyForImageClassification._from_config(config, attn_implementation=args.attn_implementation)


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


def load_metric(accelerator: Accelerator):
    """The offline top-k metric, on the main process only (the others only gather); reusable: compute() resets it."""
    return evaluate.load(top_k_accuracy.__file__, keep_in_memory=True) if accelerator.is_main_process else None


class EvaluationInterrupted(Exception):
    """A preemption signal arrived during evaluation."""

    def __init__(self, signal_received):
        super().__init__(signal_received.name)
        self.signal = signal_received


def evaluate_model(
    model, dataloader, accelerator: Accelerator, metric, num_labels: int, stop_requested: Callable | None = None
) -> dict:
    """Validation loss (hard labels), top-1 and top-5 with `evaluate`, each sample counted once across processes.

    `stop_requested` (a preemption check, collective) is asked before every batch; if it answers, evaluation
    stops with EvaluationInterrupted."""
    model.eval()
    k = min(5, num_labels)
    total_loss, total = 0.0, 0
    for batch in dataloader:
        if stop_requested is not None and (signal_received := stop_requested()):
            raise EvaluationInterrupted(signal_received)
        with torch.no_grad():
            logits = model(pixel_values=batch["pixel_values"]).logits
        losses = F.cross_entropy(logits.float(), batch["labels"], reduction="none")  # (B,)
        top_k = logits.topk(k, dim=-1).indices  # (B, k)
        top_k, labels, losses = accelerator.gather_for_metrics((top_k, batch["labels"], losses))
        total_loss += losses.sum().item()
        total += labels.numel()
        if metric is not None:
            metric.add_batch(predictions=top_k.tolist(), references=labels.tolist())
    results = {"val_loss": total_loss / max(total, 1), "eval_samples": total}
    if metric is not None:
        scores = metric.compute(top_k=(1, k))
        results.update(val_top1=scores["top1_accuracy"], val_top5=scores[f"top{k}_accuracy"])
    return results


def format_row(row: dict) -> str:
    """A history row for the log: the learning rate in scientific notation (2.500e-06, where rounding to 4
    decimals printed 0.0), other floats to 4 decimals, integers as they are."""
    parts = []
    for key, value in row.items():
        if isinstance(value, float):
            value = f"{value:.3e}" if key == "lr" else f"{round(value, 4)}"
        parts.append(f"{key} {value}")
    return ", ".join(parts)


def results_summary(results: dict, **extra) -> dict:
    """evaluate_model's figures under the names of all_results.json and the model card."""
    return {
        "eval_accuracy": results["val_top1"],
        "eval_top5_accuracy": results["val_top5"],
        "eval_loss": results["val_loss"],
        "eval_samples": results["eval_samples"],
        **extra,
    }


def train_one_epoch(
    model,
    optimizer,
    scheduler,
    dataloader,
    accelerator: Accelerator,
    args,
    progress,
    state: dict,
    max_train_steps: int,
    output_dir: Path,
    resolved_args: dict,
    guard: NonFiniteGuard,
    preemption: PreemptionHandler | None = None,
) -> dict:
    """One pass over `dataloader`; updates `state` (completed_steps, batches_into_epoch, samples_into_epoch,
    samples_seen, nonfinite_run, epoch_sums).

    A step reads nothing from the device on the host: the non-finite-loss guard and the running sums stay
    on the device and are read every --logging_steps steps, before a checkpoint and at the end of the epoch.
    At every optimizer-step boundary `preemption` is asked whether a signal came (a host-side flag); if so, the
    step's checkpoint is written and Preempted raised.
    """
    model.train()
    # Running sums of (loss * samples, correct, samples). A checkpoint stores them reduced over processes;
    # after a resume the main process starts from them, the others from zero, so the epoch-end reduction
    # gives the uninterrupted run's numbers.
    start_sums = state.get("epoch_sums") if accelerator.is_main_process else None
    sums = torch.tensor(start_sums or [0.0, 0.0, 0.0], dtype=torch.float32, device=accelerator.device)
    skipped = SkippedImages(state.get("epoch_skipped") if accelerator.is_main_process else None)
    # every micro-batch is full (drop_last): its samples across processes, counted on the host (resume_position)
    samples_per_micro_batch = args.per_device_train_batch_size * accelerator.num_processes
    data_seconds = 0.0
    micro_batches_in_step = 0
    start = waiting = time.perf_counter()
    for batch in dataloader:
        data_seconds += time.perf_counter() - waiting
        if batch.get("skipped_images"):  # --skip_bad_images: rows the transform could not decode
            skipped.add(batch["skipped_images"])
        if state["completed_steps"] >= max_train_steps:  # resumed from the run's last step: only evaluation is left
            break
        # The model's randomness (drop path, dropout) is a function of (seed, step, micro-batch, process):
        # creating a data-loader iterator draws from the global RNG, so on resume the saved RNG state alone
        # would shift every later draw.
        torch.manual_seed(
            batch_seed(
                args.seed, state["completed_steps"], [state["batches_into_epoch"], accelerator.process_index], stream=2
            )
        )
        with accelerator.accumulate(model):
            outputs = model(pixel_values=batch["pixel_values"], labels=batch["labels"])
            finite = guard.observe(outputs.loss)  # a device bool
            accelerator.backward(outputs.loss)
            micro_batches_in_step += 1
            if accelerator.sync_gradients:
                rescale_partial_step(model, micro_batches_in_step, accelerator.gradient_accumulation_steps)
                micro_batches_in_step = 0
                if args.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                guard.arm(optimizer, accelerator)  # a non-finite loss anywhere skips this step, on the device
            optimizer.step()
            if accelerator.sync_gradients:
                guard.disarm()
                scheduler.step()  # once per optimizer step: the schedule counts optimizer steps
            optimizer.zero_grad(set_to_none=True)
        labels = batch["labels"]
        batch_sums = torch.stack(
            [
                outputs.loss.detach().float() * labels.shape[0],
                (outputs.logits.argmax(-1) == labels.argmax(-1)).sum().float(),
                torch.full((), float(labels.shape[0]), device=sums.device),  # a fill, not a host-to-device copy
            ]
        )
        sums += torch.where(finite, batch_sums, 0.0)  # a skipped micro-batch counts nowhere
        state["batches_into_epoch"] += 1
        state["samples_into_epoch"] += samples_per_micro_batch
        state["samples_seen"] += samples_per_micro_batch
        if accelerator.sync_gradients:
            state["completed_steps"] += 1
            progress.update(1)
            if state["completed_steps"] == 1 and "time_to_first_step_seconds" not in state:
                if accelerator.device.type == "cuda":
                    torch.cuda.synchronize()  # once per run: the first step really done
                # from the process's start: Python, imports, data loading, model building, the first step
                state["time_to_first_step_seconds"] = time.time() - psutil.Process().create_time()
                logger.info("first optimizer step done %.1f s after start", state["time_to_first_step_seconds"])
            if state["completed_steps"] % args.logging_steps == 0:
                log_training_progress(accelerator, args, state, sums, scheduler, progress, guard)
            name = f"step_{state['completed_steps']}"
            saved = (
                isinstance(args.checkpointing_steps, int) and state["completed_steps"] % args.checkpointing_steps == 0
            )
            if saved:
                written = save_step_checkpoint(
                    accelerator, model, output_dir, name, state, sums, skipped, resolved_args, args, guard
                )
            if preemption is not None and (signal_received := preemption.stop_requested()):
                if not saved:
                    written = save_step_checkpoint(
                        accelerator, model, output_dir, name, state, sums, skipped, resolved_args, args, guard
                    )
                raise Preempted(signal_received.name, signal_received.value, str(written))
        waiting = time.perf_counter()
    state["nonfinite_run"] = guard.check(state["completed_steps"])  # a sync: the queued GPU work is done
    seconds = time.perf_counter() - start
    state["epoch_sums"] = accelerator.reduce(sums, reduction="sum").tolist()  # kept until the epoch is evaluated
    state["epoch_skipped"] = skipped.merged()
    loss_sum, correct, seen = state["epoch_sums"]
    return {
        "skipped_images": len(state["epoch_skipped"]),
        "train_loss": loss_sum / max(seen, 1),
        "train_acc": correct / max(seen, 1),
        "images_per_second": seen / max(seconds, 1e-9),
        "epoch_seconds": seconds,
        "data_seconds": data_seconds,
    }


def save_step_checkpoint(
    accelerator: Accelerator,
    model,
    output_dir: Path,
    name: str,
    state: dict,
    sums,
    skipped: SkippedImages,
    resolved_args: dict,
    args,
    guard,
) -> Path:
    """A checkpoint inside an epoch: the guard checked first (a tripped guard stops before saving), the epoch's
    running sums reduced, and its skipped images gathered, over processes into the state. Returns its folder."""
    state["nonfinite_run"] = guard.check(state["completed_steps"])
    state["epoch_sums"] = accelerator.reduce(sums.clone(), reduction="sum").tolist()
    state["epoch_skipped"] = skipped.merged()
    return save_run_checkpoint(accelerator, model, output_dir, name, state, resolved_args, args)


def save_run_checkpoint(
    accelerator: Accelerator, model, output_dir: Path, name: str, state: dict, resolved_args: dict, args
) -> Path:
    """`save_checkpoint` as the run takes it: with the retention limit, and from finite weights only. `name` is
    step_N or epoch_N; the folder it returns is step_N-2 (-3, ...) where an earlier run's checkpoint holds that."""
    limit, unwrapped = args.checkpoints_total_limit, accelerator.unwrap_model(model)
    return save_checkpoint(accelerator, output_dir, name, state, resolved_args, limit, model=unwrapped)


def log_training_progress(
    accelerator: Accelerator, args, state: dict, sums: torch.Tensor, scheduler, progress, guard: NonFiniteGuard
) -> None:
    """Every --logging_steps optimizer steps (a host-device sync): the guard's check, the running loss and accuracy."""
    state["nonfinite_run"] = guard.check(state["completed_steps"])
    loss_sum, correct, seen = accelerator.reduce(sums.clone(), reduction="sum").tolist()
    running = {
        "train_loss_running": loss_sum / max(seen, 1),
        "train_acc_running": correct / max(seen, 1),
        "lr": learning_rate_used(scheduler, state["completed_steps"]),
    }
    progress.set_postfix(loss=f"{running['train_loss_running']:.4f}", lr=f"{running['lr']:.3g}")
    if args.with_tracking:
        accelerator.log(running, step=state["completed_steps"])


def save_training_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot(epochs, [r["train_loss"] for r in history], label="train (mixed targets)")
    loss_axis.plot(epochs, [r["val_loss"] for r in history], label="validation")
    loss_axis.set(xlabel="epoch", ylabel="loss", title="loss")
    accuracy_axis.plot(epochs, [r["train_acc"] for r in history], label="train")
    accuracy_axis.plot(epochs, [r["val_top1"] for r in history], label="validation top-1")
    accuracy_axis.plot(epochs, [r["val_top5"] for r in history], label="validation top-5")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1))
    for axis in (loss_axis, accuracy_axis):
        axis.legend()
        axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def save_model_folder(
    model, image_processor, folder: Path, args, results: dict, history: list[dict], local_path: Path
) -> None:
    """save_pretrained (weights, config, remote code), image processor and model card into `folder`, a temporary
    one (`write_atomically`, `write_model_in_place` put it in place); the card loads it from `local_path`."""
    save_model_and_processor(model, folder, image_processor)
    recipe = {k: v for k, v in vars(args).items() if k not in ("hub_token", "output_dir")}
    card = render_model_card(
        model_name=args.hub_model_id or Path(args.output_dir).name,
        # image folders are named by their path: --dataset_name (a default) was not read
        dataset_name=args.dataset_name if args.train_dir is None else os.path.abspath(args.train_dir),
        results=results,
        recipe=recipe,
        history=history,
        repo_id=(args.hub_model_id or Path(args.output_dir).name) if args.push_to_hub else None,
        base_model=args.model_name_or_path,
        local_path=local_path,
    )
    card.save(folder / "README.md")


# ------------------------------------------------------------------------------------------ phases of main
@dataclass
class TrainingData:
    """What the epoch loop iterates: the two loaders, and the epoch-aware transform and collator."""

    train_dataloader: DataLoader
    eval_dataloader: DataLoader
    train_transform: TrainTransform
    collator: MixupCutmixCollator
    num_labels: int

    def set_epoch(self, epoch: int) -> None:
        """Augmentation, mixing and shuffling are functions of the epoch (and of the seed), for exact resume."""
        self.train_transform.set_epoch(epoch)
        self.collator.set_epoch(epoch)
        self.train_dataloader.set_epoch(epoch)


@dataclass
class Schedule:
    steps_per_epoch: int  # optimizer steps
    max_train_steps: int

    @property
    def num_epochs(self) -> int:
        return math.ceil(self.max_train_steps / self.steps_per_epoch)


def setup(args: argparse.Namespace) -> Accelerator:
    """The accelerator (processes, device, precision, trackers), logging, the global seed and the output folder."""
    precision, precision_source = resolve_mixed_precision(args.mixed_precision)
    compile_plugin = None
    if args.torch_compile:
        compile_plugin = TorchDynamoPlugin(backend="inductor", mode=args.torch_compile)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=precision,
        kwargs_handlers=[GradScalerKwargs(init_scale=args.fp16_init_scale)],
        log_with=args.report_to if args.with_tracking else None,
        project_dir=args.output_dir,
        # non_blocking: batches go to the GPU from pinned memory without stalling the host
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, non_blocking=True),
        step_scheduler_with_optimizer=False,
        dynamo_plugin=compile_plugin,
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logger.setLevel(logging.INFO if accelerator.is_main_process else logging.WARNING)
    set_seed(args.seed)
    logger.info("precision: %s (%s)", "fp32" if precision == "no" else precision, precision_source)
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu" and accelerator.scaler is None:
        enable_cpu_fp16(accelerator, args.fp16_init_scale)
    if args.dataloader_num_workers is None:
        cores_per_process = (os.cpu_count() or 1) // max(accelerator.num_processes, 1)
        args.dataloader_num_workers = 0 if accelerator.device.type == "cpu" else max(min(8, cores_per_process), 1)
    # resolved here, so that args.json and the trackers record the learning rate and batch the run used
    args.learning_rate, args.global_batch_size, how = resolve_learning_rate(args, accelerator.num_processes)
    logger.info(
        "global batch %d (%d per device x %d processes x %d accumulation steps): peak learning rate %.4g (%s)",
        args.global_batch_size,
        args.per_device_train_batch_size,
        accelerator.num_processes,
        args.gradient_accumulation_steps,
        args.learning_rate,
        how,
    )
    return accelerator


def claim_output_folder(args: argparse.Namespace, accelerator: Accelerator) -> None:
    """The main process locks --output_dir for this run and refuses a folder holding another run's files (unless
    resuming, or --overwrite_output_dir); every process gets the verdict, so all stop together."""
    error = None
    if accelerator.is_main_process:
        try:
            lock_output_folder(args.output_dir)
            inputs = {
                f"--{flag}": getattr(args, flag)
                for flag in ("model_name_or_path", "dataset_name", "train_dir", "validation_dir")
            }
            removed = prepare_output_folder(
                args.output_dir,
                bool(args.resume_from_checkpoint),
                args.overwrite_output_dir,
                inputs,
                can_resume=not args.eval_only,
            )
            if removed:
                logger.info("--overwrite_output_dir: deleted %s from %s", ", ".join(removed), args.output_dir)
        except OutputFolderError as refused:
            error = str(refused)
    error = broadcast_object_list([error])[0] if accelerator.num_processes > 1 else error
    if error:
        raise OutputFolderError(error)


def enable_cpu_fp16(accelerator: Accelerator, init_scale: float) -> None:
    """accelerate leaves fp16 off on CPUs; torch has fp16 autocast and a GradScaler there. Turn them on through
    accelerate's own switches, so that `prepare` wraps the forward in autocast and the optimizer with the scaler,
    `backward` scales, `clip_grad_norm_` unscales and `save_state` keeps the scaler: the step that runs on a GPU.
    CPUs emulate fp16 (slow): this is for parity with GPU runs and for testing them."""
    accelerator.native_amp = True
    accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=init_scale)


class DataError(ValueError):
    """The data cannot train this run: the message names the split, the row or file, and the flag."""


def load_data(args: argparse.Namespace, accelerator: Accelerator) -> tuple[DatasetDict, list[dict]]:
    """The "train" and "validation" splits, cut to --max_train_samples / --max_eval_samples and checked
    (`data_checks.check_data`); and the bad images dropped (--skip_bad_images). Problems raise DataError."""
    try:
        return _load_and_check_data(args, accelerator)
    except ValueError as error:  # BadImageError included
        raise DataError(str(error)) from error


def _load_and_check_data(args: argparse.Namespace, accelerator: Accelerator) -> tuple[DatasetDict, list[dict]]:
    with accelerator.main_process_first():
        dataset = load_image_dataset(
            args.dataset_name,
            args.dataset_config_name,
            args.train_dir,
            args.validation_dir,
            args.image_column_name,
            args.label_column_name,
            args.validation_fraction,
            args.validation_split_seed,
            args.cache_dir,
        )
    has_validation = dataset.sources["validation"].split != dataset.sources["train"].split
    if has_validation and args.validation_fraction != DEFAULT_VALIDATION_FRACTION:
        logger.warning(
            "--validation_fraction %g is not used: the dataset has its own validation split %r (only a dataset "
            "without one is split)",
            args.validation_fraction,
            dataset.sources["validation"].split,
        )
    for split, flag in (("train", "max_train_samples"), ("validation", "max_eval_samples")):
        limit, rows = getattr(args, flag), len(dataset[split])
        if limit is not None and limit > rows:
            logger.warning("--%s %d is more than split %r has (%d rows): using all of them", flag, limit, split, rows)
    if args.max_train_samples is not None:
        kept = min(args.max_train_samples, len(dataset["train"]))
        dataset["train"] = dataset["train"].shuffle(seed=args.seed).select(range(kept))
    if args.max_eval_samples is not None:
        kept = min(args.max_eval_samples, len(dataset["validation"]))
        dataset["validation"] = dataset["validation"].select(range(kept))
    start = time.perf_counter()
    dataset, bad_images = check_data(
        dataset,
        dataset.sources,
        args.skip_bad_images,
        args.per_device_train_batch_size,
        accelerator.process_index,
        accelerator.num_processes,
        training=not args.eval_only,
    )
    logger.info("data checks: %.2f s", time.perf_counter() - start)
    return dataset, bad_images


def load_image_processor(args: argparse.Namespace, image_size: int) -> BaseImageProcessor:
    """The run's image processor, at the size the run trains at (`image_size`, the model's): the starting
    checkpoint's if it has one (its normalisation), else the Tiny ImageNet one. Evaluation, best/ and the final
    model all use it, so one size holds everywhere, also when fine-tuning at another size than the checkpoint's."""
    if args.model_name_or_path is None:
        return make_image_processor(image_size)
    try:  # a local folder, or a Hub id (from the cache when offline)
        processor = AutoImageProcessor.from_pretrained(args.model_name_or_path, cache_dir=args.cache_dir)
    except OSError:  # the checkpoint has no image processor (a converted one, say)
        logger.info("%s has no image processor: the Tiny ImageNet one, at %d px", args.model_name_or_path, image_size)
        return make_image_processor(image_size)
    size = {"height": image_size, "width": image_size}
    if dict(processor.size) != size:
        logger.info(
            "%s's image processor resizes to %s; this run trains at %d px: its processor resizes to %d x %d",
            args.model_name_or_path,
            dict(processor.size),
            image_size,
            image_size,
            image_size,
        )
        processor.size = size
    if getattr(processor, "do_center_crop", False):  # a crop after the resize would change the size again
        processor.crop_size = size
    return processor


def build_eval_dataloader(
    args: argparse.Namespace, dataset: DatasetDict, image_processor: BaseImageProcessor
) -> DataLoader:
    transform = EvalTransform(image_processor, source=dataset.sources["validation"])
    return DataLoader(
        dataset["validation"].with_transform(transform),
        batch_size=args.per_device_eval_batch_size,
        collate_fn=eval_collate,
        num_workers=args.dataloader_num_workers,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=functools.partial(ignore_in_worker, args.preemption_signals),
    )


def build_training_data(
    args: argparse.Namespace, dataset: DatasetDict, image_size: int, image_processor: BaseImageProcessor
) -> TrainingData:
    """Both loaders, with the reference augmentation and the Mixup/CutMix collator on the training split."""
    num_labels = dataset["train"].features["label"].num_classes
    augmentation = ReferenceTrainAugmentation(
        image_size,
        list(image_processor.image_mean),
        list(image_processor.image_std),
        args.randaugment_magnitude,
        args.hflip_prob,
    )
    train_transform = TrainTransform(augmentation, args.seed, dataset.sources["train"], args.skip_bad_images)
    collator = MixupCutmixCollator(
        num_labels,
        args.mixup_alpha,
        args.cutmix_alpha,
        args.mixup_prob,
        args.cutmix_prob,
        args.label_smoothing,
        args.seed,
        args.num_train_epochs,
        args.mix_off_first_epochs,
        args.mix_off_last_epochs,
    )
    train_dataloader = DataLoader(
        dataset["train"].with_transform(train_transform),
        batch_size=args.per_device_train_batch_size,
        shuffle=True,
        collate_fn=collator,
        num_workers=args.dataloader_num_workers,
        drop_last=True,
        pin_memory=torch.cuda.is_available(),  # with the accelerator's non_blocking copies
        worker_init_fn=functools.partial(ignore_in_worker, args.preemption_signals),
    )
    eval_dataloader = build_eval_dataloader(args, dataset, image_processor)
    return TrainingData(train_dataloader, eval_dataloader, train_transform, collator, num_labels)


def build_optimizer_and_scheduler(
    args: argparse.Namespace, model, schedule: Schedule
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    optimizer = torch.optim.AdamW(
        parameter_groups(model, args.weight_decay),
        lr=args.learning_rate,
        betas=(args.adam_beta1, args.adam_beta2),
        # fused: one kernel for all parameters, and a step it can skip on the device (NonFiniteGuard, GradScaler)
        fused=True,
    )
    scheduler = warmup_cosine_scheduler(
        optimizer,
        round(args.warmup_epochs * schedule.steps_per_epoch),
        schedule.max_train_steps,
        args.min_learning_rate,
        args.warmup_start_factor,
    )
    return optimizer, scheduler


def warn_long_warmup(args: argparse.Namespace, schedule: Schedule) -> None:
    """A warmup as long as the run or longer never reaches the peak learning rate: say so, and where it ends."""
    warmup_steps = round(args.warmup_epochs * schedule.steps_per_epoch)
    if warmup_steps < schedule.max_train_steps:
        return
    last = learning_rate_at(
        schedule.max_train_steps - 1,
        args.learning_rate,
        warmup_steps,
        schedule.max_train_steps,
        args.min_learning_rate,
        args.warmup_start_factor,
    )
    logger.warning(
        "the warmup (--warmup_epochs %g: %d optimizer steps of %d per epoch) is as long as the run or longer (%d "
        "steps): the learning rate climbs from %.3e and never reaches its peak %.3e (it ends at %.3e). Lower "
        "--warmup_epochs or train longer.",
        args.warmup_epochs,
        warmup_steps,
        schedule.steps_per_epoch,
        schedule.max_train_steps,
        args.learning_rate * args.warmup_start_factor,
        args.learning_rate,
        last,
    )


def load_run_state(accelerator: Accelerator, checkpoint: Path) -> None:
    """accelerate's `load_state`, also for a checkpoint written without a grad scaler (fp32 or bf16) resumed in fp16
    (--resume_with_changes; `auto` gives bf16 on some CPUs, fp16 on a GPU): the scaler then starts afresh."""
    scaler = accelerator.scaler
    if scaler is not None and not (checkpoint / SCALER_NAME).exists():
        logger.warning("%s holds no grad scaler (written without fp16): the fp16 loss scale starts afresh", checkpoint)
        accelerator.scaler = None
    try:
        accelerator.load_state(str(checkpoint))
    finally:
        accelerator.scaler = scaler


class ResumeRefused(ValueError):
    """The checkpoint's settings differ from the new run's in ways that break an exact resume."""


def initial_state(
    args: argparse.Namespace,
    accelerator: Accelerator,
    resolved_args: dict,
    optimizer,
    scheduler,
    batches_per_epoch: int,
    checkpoint: Path | None,
) -> dict:
    """A fresh run's state (checkpoint None), or the state of the resolved --resume_from_checkpoint after loading
    its full accelerate state.

    The checkpoint's recorded settings are compared with this run's first: a change that breaks the exact resume
    is refused, or with --resume_with_changes applied (same epoch and position in samples, the step count of the
    new batch settings, new optimiser settings: resume_position). Either way the first optimizer step holds
    --gradient_accumulation_steps micro-batches, and the state names this run (its checkpoints replace no
    earlier run's: checkpointing.checkpoint_name)."""
    run_id = uuid.uuid4().hex
    if checkpoint is None:
        return {
            "completed_steps": 0,
            "epoch": 0,
            "batches_into_epoch": 0,
            "samples_into_epoch": 0,
            "samples_seen": 0,
            "nonfinite_run": 0,
            "history": [],
            "best_top1": -1.0,
            "bad_images": [],
            RUN_ID_KEY: run_id,
        }
    recorded = json.loads((checkpoint / ARGS_FILE).read_text()) if (checkpoint / ARGS_FILE).exists() else {}
    changes = changed_settings(recorded, resolved_args)
    if changes and not args.resume_with_changes:
        raise ResumeRefused(refusal(checkpoint, changes))
    load_run_state(accelerator, checkpoint)
    restart_accumulation(accelerator)
    state = load_training_state(checkpoint)
    state[RUN_ID_KEY] = run_id
    per_device, processes = args.per_device_train_batch_size, accelerator.num_processes
    recorded_micro_batch = recorded.get("per_device_train_batch_size", per_device) * recorded.get(
        "num_processes", processes
    )
    position = recorded_position(
        state, recorded_micro_batch, recorded.get("gradient_accumulation_steps", args.gradient_accumulation_steps)
    )
    logger.info(
        "resumed from %s at step %d (epoch %d, batch %d, %d training samples)",
        checkpoint,
        position.completed_steps,
        position.epoch,
        position.batches_into_epoch,
        position.samples_seen,
    )
    if changes:
        layout = EpochLayout(batches_per_epoch, per_device * processes, args.gradient_accumulation_steps)
        resumed = position_after_changes(position, layout)
        note = ""
        if position.samples_into_epoch > layout.samples_per_epoch:
            note = f" At the new batch the epoch is {layout.samples_per_epoch} samples (drop_last): it is done."
        elif resumed.samples_into_epoch < position.samples_into_epoch:
            note = (
                f" The epoch's position, {position.samples_into_epoch} samples, rounds down to a whole micro-batch of "
                f"{layout.samples_per_micro_batch}: {position.samples_into_epoch - resumed.samples_into_epoch} are "
                "trained again."
            )
        position = resumed
        apply_optimizer_settings(optimizer, scheduler, args, position.completed_steps)
        record = {"samples": position.samples_seen, "changes": {k: list(v) for k, v in changes.items()}}
        state["resume_changes"] = [*state.get("resume_changes", []), record]
        logger.warning(
            "--resume_with_changes: %s. Going on from %d training samples: step %d, batch %d of epoch %d, peak "
            "learning rate %.4g.%s",
            describe_changes(changes),
            position.samples_seen,
            position.completed_steps,
            position.batches_into_epoch,
            position.epoch + 1,
            args.learning_rate,
            note,
        )
    state["completed_steps"], state["batches_into_epoch"] = position.completed_steps, position.batches_into_epoch
    state["samples_into_epoch"], state["samples_seen"] = position.samples_into_epoch, position.samples_seen
    return state


def run_epochs(
    model,
    optimizer,
    scheduler,
    data: TrainingData,
    schedule: Schedule,
    accelerator: Accelerator,
    args: argparse.Namespace,
    state: dict,
    metric,
    save_best: Callable[[dict, list[dict]], None],
    resolved_args: dict,
    preemption: PreemptionHandler | None = None,
) -> dict:
    """The epoch loop: train, evaluate, record the history, keep the best model, checkpoint.

    Returns the last evaluation (the one recorded in the last history row). Raises Preempted after writing a
    checkpoint when a preemption signal comes, in training or in evaluation."""
    output_dir = Path(args.output_dir)
    progress = tqdm(
        range(schedule.max_train_steps),
        disable=not accelerator.is_local_main_process,
        initial=state["completed_steps"],
    )
    guard = NonFiniteGuard(args.max_nonfinite_steps, accelerator.device, state["nonfinite_run"], args.output_dir)
    results = {}
    while state["epoch"] < schedule.num_epochs:
        epoch = state["epoch"]
        data.set_epoch(epoch)
        train_dataloader = data.train_dataloader
        if state["batches_into_epoch"]:
            train_dataloader = accelerator.skip_first_batches(train_dataloader, state["batches_into_epoch"])
        train_metrics = train_one_epoch(
            model,
            optimizer,
            scheduler,
            train_dataloader,
            accelerator,
            args,
            progress,
            state,
            schedule.max_train_steps,
            output_dir,
            resolved_args,
            guard,
            preemption,
        )
        evaluation_start = time.perf_counter()
        stop_requested = preemption.stop_requested if preemption is not None else None
        try:
            results = evaluate_model(model, data.eval_dataloader, accelerator, metric, data.num_labels, stop_requested)
        except EvaluationInterrupted as interrupted:
            # the epoch is trained, not evaluated: a checkpoint at its last step resumes into this evaluation
            name = f"step_{state['completed_steps']}"
            written = save_run_checkpoint(accelerator, model, output_dir, name, state, resolved_args, args)
            raise Preempted(interrupted.signal.name, interrupted.signal.value, str(written)) from None
        train_metrics["eval_seconds"] = time.perf_counter() - evaluation_start
        train_split = data.train_transform.source.split if data.train_transform.source else "train"
        trained_on = [{"split": train_split, **entry, "epoch": epoch + 1} for entry in state["epoch_skipped"] or []]
        state["bad_images"] = record_bad_images(state.get("bad_images", []), trained_on)
        state["epoch"], state["batches_into_epoch"], state["samples_into_epoch"] = epoch + 1, 0, 0
        state["epoch_sums"] = None
        state["epoch_skipped"] = None
        write_failure = None
        if accelerator.is_main_process:
            row = {
                "epoch": epoch + 1,
                "step": state["completed_steps"],
                **train_metrics,
                "val_loss": results["val_loss"],
                "val_top1": results["val_top1"],
                "val_top5": results["val_top5"],
                "lr": learning_rate_used(scheduler, state["completed_steps"]),  # its last step's
            }
            state["history"].append(row)
            try:
                write_json_output(output_dir / "history.json", state["history"], "the history")
                logger.info("epoch %d: %s", epoch + 1, format_row(row))
                if results["val_top1"] > state["best_top1"]:
                    state["best_top1"] = results["val_top1"]
                    save_best(results_summary(results, epoch=epoch + 1), state["history"])
            except OutputWriteError as error:  # a full disk: raised below, on every process
                write_failure = error
            if args.with_tracking:
                accelerator.log(row, step=state["completed_steps"])
        raise_on_every_process(accelerator, write_failure)  # a collective: no process waits for one that stopped
        # everyone needs the same history in the checkpoint: the main process's is the one written
        if args.checkpointing_steps == "epoch":
            save_run_checkpoint(accelerator, model, output_dir, f"epoch_{epoch + 1}", state, resolved_args, args)
    if not results:  # resumed from a checkpoint taken after the last epoch: nothing was evaluated in this run
        results = evaluate_model(model, data.eval_dataloader, accelerator, metric, data.num_labels)
    return results


def finish(
    model,
    image_processor,
    args: argparse.Namespace,
    state: dict,
    results: dict,
    train_seconds: float,
    precision: str,
) -> dict:
    """Main process: the final model in output_dir, all_results.json, the curves, and the push of best/. A write
    that fails (a full disk) raises OutputWriteError and leaves nothing half-written."""
    output_dir = Path(args.output_dir)
    # `results` is the last evaluation, the one recorded as the last history row.
    all_results = results_summary(
        results,
        train_runtime=train_seconds,
        epoch=state["history"][-1]["epoch"],
        best_eval_accuracy=state["best_top1"],
        time_to_first_step_seconds=state.get("time_to_first_step_seconds"),
        bad_images={
            "dropped_at_start": state.get("dropped_at_start", {}),
            "skipped_in_training_per_epoch": [row.get("skipped_images", 0) for row in state["history"]],
            "listed": state.get("bad_images", []),
        },
    )
    write_model_in_place(  # output_dir/final, and a link in output_dir to each of its files
        output_dir,
        lambda folder: save_model_folder(
            model, image_processor, folder, args, all_results, state["history"], local_path=output_dir
        ),
        "the final model",
    )
    write_json_output(output_dir / "all_results.json", all_results, "the results")
    write_atomically(
        output_dir / "training_curves.png",
        lambda path: save_training_curves(state["history"], path),
        "the training curves",
    )
    logger.info("done: %s", json.dumps(all_results))
    defaults = vars(get_args_parser().parse_args(["--output_dir", str(output_dir)]))
    evaluation_flags = [*data_flags(vars(args), defaults), "--mixed_precision", precision]  # the run's arithmetic
    logger.info("%s", next_steps(output_dir, evaluation_flags, (output_dir / "best").is_dir()))
    if args.push_to_hub:
        from huggingface_hub import HfApi

        api = HfApi(token=args.hub_token)
        repo_id = api.create_repo(args.hub_model_id or output_dir.name, exist_ok=True).repo_id
        api.upload_folder(
            folder_path=str(output_dir / "best"),
            repo_id=repo_id,
            commit_message=f"best model: top-1 {state['best_top1']:.4f}",
        )
        logger.info("pushed %s to %s", output_dir / "best", repo_id)
    return all_results


# Errors that stop a run with a message of their own (no traceback), exit code 1.
STOPPING_ERRORS = (
    OutputFolderError,
    ResumeRefused,
    CheckpointWriteError,
    NonFiniteWeightsError,
    NonFiniteLossError,
    DataError,
    BadImageError,
    StartingModelError,
)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    try:
        accelerator = setup(args)
    except SettingsError as error:  # a rule between flags that needs the process count (the scaled learning rate)
        get_args_parser().error(str(error))
    # From the run's first moment: a signal while it locks its folder, loads the data or builds the model is
    # recorded, and honoured at the first step (or evaluation batch). The caller's handlers come back on every
    # way out, before `end` (a run that stopped before training leaves no handler of its own behind).
    preemption = PreemptionHandler(args.preemption_signals, args.preemption_check_steps).install()
    try:
        try:
            return run(args, accelerator, preemption)
        finally:
            preemption.restore()
    except Preempted as stop:
        if stop.checkpoint is None:
            logger.warning(
                "%s received: the evaluation stopped before its end and wrote nothing. Run the same command "
                "again (exit code %d).",
                stop.signal_name,
                stop.exit_code,
            )
        else:
            logger.warning(
                "%s received: stopped after a complete checkpoint, %s. Resume with the same command and "
                "--resume_from_checkpoint latest (exit code %d).",
                stop.signal_name,
                stop.checkpoint,
                stop.exit_code,
            )
        end(accelerator, args)
        raise SystemExit(stop.exit_code) from None
    except STOPPING_ERRORS as error:
        logger.error("%s", stopping_message(error, args))
        end(accelerator, args)
        raise SystemExit(1) from None
    except OSError as error:  # a full disk met by a writer the run does not guard itself (a tracker's event file)
        if error.errno != errno.ENOSPC:
            raise
        where = repr(error.filename) if error.filename else f"a file of the run in {args.output_dir!r}"
        logger.error("could not write %s: %s", where, describe_write_error(error, args.output_dir))
        with contextlib.suppress(OSError):  # a tracker's writer raises the same error again as it closes
            end(accelerator, args)
        raise SystemExit(1) from None
    finally:  # no worker outlives the run, whatever ended it (an error's traceback can hold their loader)
        stop_data_workers()
        if accelerator.is_main_process:  # and no error leaves the folder locked for the rest of this process
            release_output_folder(args.output_dir)


def stopping_message(error: Exception, args: argparse.Namespace) -> str:
    """The error's own message (a data-loader worker's error arrives wrapped in its traceback: its last line),
    with, for an image that failed in training, how to go on."""
    message = str(error).strip()
    if message.startswith("Caught ") and "Original Traceback" in message:
        message = message.splitlines()[-1].split(": ", 1)[-1]
    if isinstance(error, BadImageError) and not args.skip_bad_images:
        message += (
            ". To leave bad training images out and go on from the last checkpoint: the same command with "
            "--skip_bad_images --resume_from_checkpoint latest"
        )
    return message


def run(args: argparse.Namespace, accelerator: Accelerator, preemption: PreemptionHandler) -> dict:
    """Everything after setup: the output folder, data, model, and evaluation only or the training run.
    `preemption` (installed) is restored here before the end; main restores it on the other ways out."""
    claim_output_folder(args, accelerator)
    output_dir = Path(args.output_dir)
    dataset, bad_images = load_data(args, accelerator)
    label_names = dataset["train"].features["label"].names
    model = build_model(args, label_names)
    image_processor = load_image_processor(args, model.config.image_size)
    metric = load_metric(accelerator)
    resolved_args = {
        **vars(args),
        "hub_token": None,
        "mixed_precision_resolved": accelerator.mixed_precision,
        "num_processes": accelerator.num_processes,
        "model_config": model.config.to_diff_dict(),
    }

    if args.eval_only:
        eval_dataloader = build_eval_dataloader(args, dataset, image_processor)
        model, eval_dataloader = accelerator.prepare(model, eval_dataloader)
        start = time.perf_counter()
        try:
            results = evaluate_model(
                model, eval_dataloader, accelerator, metric, len(label_names), preemption.stop_requested
            )
            # with several processes the check runs every --preemption_check_steps batches: a last, agreed one
            signal_received = preemption.agreed_signal()
        except EvaluationInterrupted as interrupted:
            signal_received = interrupted.signal
        preemption.restore()
        if signal_received:  # an evaluation has nothing to resume from: it stops without writing its results
            raise Preempted(signal_received.name, signal_received.value, None)
        all_results, write_failure = {}, None
        if accelerator.is_main_process:
            all_results = results_summary(results, eval_seconds=time.perf_counter() - start, bad_images=bad_images)
            try:
                write_json_output(output_dir / "all_results.json", all_results, "the results")
            except OutputWriteError as error:
                write_failure = error
            logger.info("evaluation: %s", all_results)
        raise_on_every_process(accelerator, write_failure)
        end(accelerator, args)
        return all_results

    data = build_training_data(args, dataset, model.config.image_size, image_processor)
    # Data loaders first: their per-process length sets the schedule.
    data.train_dataloader, data.eval_dataloader = accelerator.prepare(data.train_dataloader, data.eval_dataloader)
    steps_per_epoch = max(math.ceil(len(data.train_dataloader) / args.gradient_accumulation_steps), 1)
    schedule = Schedule(steps_per_epoch, args.max_train_steps or args.num_train_epochs * steps_per_epoch)
    data.collator.num_epochs = schedule.num_epochs  # --mix_off_last_epochs counts back from the run's real end
    optimizer, scheduler = build_optimizer_and_scheduler(args, model, schedule)
    warn_long_warmup(args, schedule)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    # the checkpoint is resolved once: "latest" means the same folder for the state and the free-space check
    try:
        checkpoint = (
            resolve_checkpoint(args.resume_from_checkpoint, output_dir) if args.resume_from_checkpoint else None
        )
    except ValueError as error:  # no checkpoint there, or not a complete one
        raise ResumeRefused(str(error)) from None
    state = initial_state(
        args, accelerator, resolved_args, optimizer, scheduler, len(data.train_dataloader), checkpoint
    )
    if checkpoint is not None and state["completed_steps"] >= schedule.max_train_steps:
        logger.warning(
            "%s is at step %d (%d training samples), the run's end (%d optimizer steps of %d samples): nothing is "
            "left to train, the run only evaluates.%s",
            checkpoint,
            state["completed_steps"],
            state["samples_seen"],
            schedule.max_train_steps,
            args.global_batch_size,
            " --max_train_steps counts optimizer steps at this run's global batch: raise it to train on."
            if args.max_train_steps
            else "",
        )
    # bad images dropped at start (--skip_bad_images): found again on every resume, listed once
    state["bad_images"] = record_bad_images(state.get("bad_images", []), bad_images)
    state["dropped_at_start"] = {
        name: sum(1 for entry in bad_images if entry["dropped_from"] == name) for name in ("train", "validation")
    }
    if state.get("resume_changes"):  # recorded in args.json and the model card
        args.resumed_with_changes = resolved_args["resumed_with_changes"] = state["resume_changes"]
    if args.checkpointing_steps is not None:
        # weights, two AdamW moments and the rest: about 3x the weights (317 MB for the 64 px model)
        needed = folder_bytes(checkpoint) if checkpoint else 3 * sum(p.numel() * 4 for p in model.parameters())
        ensure_free_space(output_dir, needed, "a checkpoint")
    if args.with_tracking:
        tracked = {k: v for k, v in resolved_args.items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("swin_tiny_hf", config=tracked)
    logger.info(
        "%d training / %d validation images, %d classes; %d epochs of %d optimizer steps; %d processes, %s",
        len(dataset["train"]),
        len(dataset["validation"]),
        len(label_names),
        schedule.num_epochs,
        schedule.steps_per_epoch,
        accelerator.num_processes,
        accelerator.mixed_precision,
    )

    unwrapped = accelerator.unwrap_model(model)

    def save_best(best_results: dict, history: list[dict]) -> None:
        """Main process only: non-finite weights are not saved as best/ (the next checkpoint or the final model
        stops the run on every process). A failed write (a full disk) raises OutputWriteError, and leaves the
        previous best/ whole; the epoch loop then stops every process."""
        best = output_dir / "best"
        try:
            check_finite_weights(unwrapped, f"the best model {best}", output_dir)
        except NonFiniteWeightsError as error:
            logger.error("%s", error)
            return
        write_atomically(
            best,
            lambda folder: save_model_folder(unwrapped, image_processor, folder, args, best_results, history, best),
            "the best model",
        )

    train_start = time.perf_counter()
    try:
        results = run_epochs(
            model,
            optimizer,
            scheduler,
            data,
            schedule,
            accelerator,
            args,
            state,
            metric,
            save_best,
            resolved_args,
            preemption,
        )
    finally:  # from here on a signal has its default effect (the final model is written atomically)
        preemption.restore()
    if preemption.received is not None:  # after the last step's check: the training is complete
        logger.warning("%s received after the last training step: writing the final model", preemption.received.name)
    accelerator.wait_for_everyone()
    check_finite_weights(unwrapped, f"the final model in {output_dir}", output_dir)
    all_results, write_failure = {}, None
    if accelerator.is_main_process:
        try:
            all_results = finish(
                unwrapped,
                image_processor,
                args,
                state,
                results,
                time.perf_counter() - train_start,
                accelerator.mixed_precision,
            )
        except OutputWriteError as error:
            write_failure = error
    raise_on_every_process(accelerator, write_failure)
    end(accelerator, args)
    return all_results


def end(accelerator: Accelerator, args: argparse.Namespace) -> None:
    """Every process waits for the main one to finish writing, then trackers close and the process group is
    destroyed: a process that exits with its group alive can abort in gloo's or NCCL's threads (SIGABRT)."""
    accelerator.wait_for_everyone()
    try:
        accelerator.end_training()
    finally:  # the folder is free again even when a tracker fails to close (a full disk)
        if accelerator.is_main_process:
            release_output_folder(args.output_dir)


if __name__ == "__main__":
    main()
