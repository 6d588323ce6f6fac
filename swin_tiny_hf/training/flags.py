"""train.py's flags: one declaration per flag, carrying its type, its range and whether a resume may change it.

`flag(group, "--name", resume=FREE | EXACT, type=..., ...)` is argparse's `add_argument` with one more, required,
keyword: FREE for settings that only say where and how the run reports, saves or computes (a resume may change
them), EXACT for those that set the numbers it trains with (a resume with another value is refused unless
--resume_with_changes; `resume.changed_settings`). Ranges live in the types (`flag_types.ranged`), so that a new
flag is declared once, in one place, and cannot fall through a list of names kept elsewhere.

Flags follow transformers' run_image_classification_no_trainer.py where they overlap. Every SwinTinyConfig field
is a flag too (--drop_path_rate, --window_size 8 8 4 2, ...).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import fields

from swin_tiny_hf import SwinTinyConfig
from swin_tiny_hf.training.data import DEFAULT_DATASET, DEFAULT_VALIDATION_FRACTION
from swin_tiny_hf.training.flag_types import finite_float, parse_bool, ranged
from swin_tiny_hf.training.loaders import default_num_workers
from swin_tiny_hf.training.optimization import resolve_learning_rate
from swin_tiny_hf.training.preemption import DEFAULT_SIGNALS, parse_signals
from swin_tiny_hf.training.starting_model import model_config

logger = logging.getLogger("train")
DESCRIPTION = "Train SwinTinyForImageClassification with the Tiny ImageNet reference recipe, on accelerate."
FREE, EXACT = "free", "exact"  # whether a resume may change the flag (see the module's docstring)
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
    parser = argparse.ArgumentParser(description=DESCRIPTION, allow_abbrev=False)
    data = parser.add_argument_group("data")
    flag(
        data,
        "--dataset_name",
        resume=EXACT,
        default=DEFAULT_DATASET,
        help="Hub dataset, 'digits' (bundled, offline) or a save_to_disk folder",
    )
    flag(data, "--dataset_config_name", resume=EXACT, default=None)
    flag(data, "--train_dir", resume=EXACT, default=None, help="local image folder (one sub-folder per class)")
    flag(data, "--validation_dir", resume=EXACT, default=None)
    flag(data, "--image_column_name", resume=EXACT, default="image")
    flag(data, "--label_column_name", resume=EXACT, default="label")
    flag(
        data,
        "--validation_fraction",
        resume=EXACT,
        type=ranged(float, "(0, 1)"),
        default=DEFAULT_VALIDATION_FRACTION,
        help="stratified split of train when the dataset has no validation split",
    )
    flag(
        data,
        "--validation_split_seed",
        resume=EXACT,
        type=ranged(int, f"[0, {SEED_MAX}]"),
        default=0,
        help="seed of that split (and of the digits split); independent of --seed so that runs "
        "with different seeds are scored on the same images",
    )
    flag(
        data,
        "--max_train_samples",
        resume=EXACT,
        type=AT_LEAST_1,
        default=None,
        help="train on this many rows of the shuffled training split",
    )
    flag(
        data,
        "--max_eval_samples",
        resume=FREE,
        type=AT_LEAST_1,
        default=None,
        help="evaluate on the first N validation rows",
    )
    flag(
        data,
        "--skip_bad_images",
        resume=FREE,
        action="store_true",
        help="leave out images that cannot be read instead of stopping: found at start (every validation image is "
        "decoded then) or in training (skipped in its batch); each is logged, counted per epoch and listed in "
        "all_results.json",
    )
    flag(
        data,
        "--dataloader_num_workers",
        resume=FREE,
        type=ranged(int, "[0, inf)"),
        default=None,
        help="default: 0 on CPU (workers would steal the cores the model's threads spin on), "
        "else min(8, CPU cores per local process)",
    )
    flag(data, "--cache_dir", resume=FREE, default=None)

    model = parser.add_argument_group("model (any SwinTinyConfig field)")
    flag(
        model, "--model_name_or_path", resume=EXACT, default=None, help="start from a save_pretrained folder or Hub id"
    )
    flag(
        model,
        "--ignore_mismatched_sizes",
        resume=EXACT,
        action="store_true",
        help="with --model_name_or_path: a new classifier head when the number of classes differs",
    )
    for field in MODEL_FIELDS:
        kind = {"depths": int, "num_heads": int, "window_size": int}.get(field.name)
        if kind is not None:
            flag(model, f"--{field.name}", resume=EXACT, type=kind, nargs="+", default=None)
        elif field.type in ("bool",) or isinstance(field.default, bool):
            flag(model, f"--{field.name}", resume=EXACT, type=parse_bool, default=None)
        else:  # ranges are the config's to check (parse_args builds it), with its own messages
            kind = finite_float if isinstance(field.default, float) else type(field.default)
            flag(model, f"--{field.name}", resume=EXACT, type=kind, default=None)
    flag(model, "--attn_implementation", resume=FREE, choices=("sdpa", "eager"), default="sdpa")
    flag(
        model,
        "--torch_compile",
        resume=FREE,
        nargs="?",
        const="default",
        default=None,
        choices=COMPILE_MODES,
        help="compile the model with torch.compile (inductor), in this mode (default: 'default'; "
        "'reduce-overhead' uses CUDA graphs)",
    )

    optim = parser.add_argument_group("optimisation (reference recipe defaults)")
    flag(optim, "--per_device_train_batch_size", resume=EXACT, type=AT_LEAST_1, default=64)
    flag(optim, "--per_device_eval_batch_size", resume=FREE, type=AT_LEAST_1, default=128)
    flag(
        optim,
        "--learning_rate",
        resume=EXACT,
        type=ranged(float, "(0, inf)"),
        default=None,
        help="the peak learning rate as is; default: --lr_base scaled to the global batch",
    )
    flag(
        optim,
        "--lr_base",
        resume=EXACT,
        type=ranged(float, "(0, inf)"),
        default=2.5e-4,
        help="the peak learning rate at a global batch of --lr_base_size (reference: 2.5e-4 at 64)",
    )
    flag(optim, "--lr_base_size", resume=EXACT, type=AT_LEAST_1, default=64)
    flag(
        optim,
        "--lr_base_scale",
        resume=EXACT,
        choices=("linear", "sqrt"),
        default="linear",
        help="lr = lr_base x (global batch / lr_base_size), or its square root",
    )
    flag(optim, "--min_learning_rate", resume=EXACT, type=ranged(float, "[0, inf)"), default=5e-6)
    flag(optim, "--warmup_epochs", resume=EXACT, type=ranged(float, "[0, inf)"), default=10)
    flag(optim, "--warmup_start_factor", resume=EXACT, type=ranged(float, "(0, 1]"), default=0.01)
    flag(optim, "--weight_decay", resume=EXACT, type=ranged(float, "[0, inf)"), default=0.05)
    flag(optim, "--adam_beta1", resume=EXACT, type=ranged(float, "[0, 1)"), default=0.9)
    flag(optim, "--adam_beta2", resume=EXACT, type=ranged(float, "[0, 1)"), default=0.999)
    flag(optim, "--max_grad_norm", resume=EXACT, type=ranged(float, "[0, inf)"), default=3.0, help="0: no clipping")
    flag(optim, "--num_train_epochs", resume=EXACT, type=AT_LEAST_1, default=200)
    flag(
        optim,
        "--max_train_steps",
        resume=EXACT,
        type=AT_LEAST_1,
        default=None,
        help="the run's length in optimizer steps, instead of --num_train_epochs (its epochs: this many steps, "
        "rounded up to whole epochs, the last one cut short)",
    )
    flag(optim, "--gradient_accumulation_steps", resume=EXACT, type=AT_LEAST_1, default=1)
    flag(
        optim,
        "--max_nonfinite_steps",
        resume=FREE,
        type=AT_LEAST_1,
        default=5,
        help="stop after this many consecutive steps with a non-finite loss",
    )
    flag(
        optim,
        "--mixed_precision",
        resume=FREE,
        choices=("auto", "no", "fp16", "bf16"),
        default="auto",
        help="auto: what accelerate's config or launch flags say, else fp16 on CUDA, bf16 on CPUs with native bf16 "
        "(AVX512-BF16, AMX), fp32 on other CPUs",
    )
    flag(optim, "--seed", resume=EXACT, type=ranged(int, f"[0, {SEED_MAX}]"), default=42)
    flag(
        optim,
        "--fp16_init_scale",
        resume=EXACT,
        type=ranged(float, "(0, inf)"),
        default=65536.0,
        help="fp16: the GradScaler's first loss scale (torch's default); it halves on every overflow step",
    )

    aug = parser.add_argument_group("augmentation")
    flag(
        aug,
        "--randaugment_magnitude",
        resume=EXACT,
        type=ranged(int, "[0, 30]"),
        default=5,
        help="torchvision's 31 magnitude bins",
    )
    flag(
        aug,
        "--hflip_prob",
        resume=EXACT,
        type=ranged(float, "[0, 1]"),
        default=0.5,
        help="0 for data that is not mirror-symmetric",
    )
    flag(aug, "--mixup_alpha", resume=EXACT, type=ranged(float, "[0, inf)"), default=0.4)
    flag(aug, "--cutmix_alpha", resume=EXACT, type=ranged(float, "[0, inf)"), default=0.8)
    flag(aug, "--mixup_prob", resume=EXACT, type=ranged(float, "[0, 1]"), default=0.3)
    flag(aug, "--cutmix_prob", resume=EXACT, type=ranged(float, "[0, 1]"), default=0.3)
    flag(aug, "--label_smoothing", resume=EXACT, type=ranged(float, "[0, 1)"), default=0.05)
    flag(
        aug,
        "--mix_off_first_epochs",
        resume=EXACT,
        type=ranged(int, "[0, inf)"),
        default=1,
        help="no Mixup/CutMix in the first N epochs",
    )
    flag(
        aug,
        "--mix_off_last_epochs",
        resume=EXACT,
        type=ranged(int, "[0, inf)"),
        default=10,
        help="no Mixup/CutMix in the last N epochs of the run (its real length: --max_train_steps included)",
    )

    out = parser.add_argument_group("outputs")
    flag(out, "--output_dir", resume=FREE, required=True)
    flag(out, "--checkpointing_steps", resume=FREE, type=_steps, default=None, help="N optimizer steps, or 'epoch'")
    flag(
        out,
        "--checkpoints_total_limit",
        resume=FREE,
        type=AT_LEAST_1,
        default=None,
        help="keep only the newest N step/epoch checkpoints (317 MB each at 64 px); best/ and the final model are "
        "not counted; default: keep all",
    )
    flag(
        out,
        "--logging_steps",
        resume=FREE,
        type=AT_LEAST_1,
        default=50,
        help="every N optimizer steps: the non-finite-loss check, the running loss and the trackers "
        "(the only host-device syncs of the loop between checkpoints)",
    )
    flag(
        out,
        "--resume_from_checkpoint",
        resume=FREE,
        default=None,
        help="a checkpoint folder, or 'latest' in output_dir",
    )
    flag(
        out,
        "--resume_with_changes",
        resume=FREE,
        action="store_true",
        help="resume although the recipe's settings differ from the checkpoint's (batch, processes, learning rate, "
        "...): the run goes on from the same number of samples with the new settings (without it: refused)",
    )
    flag(
        out,
        "--overwrite_output_dir",
        resume=FREE,
        action="store_true",
        help="delete what a previous run left in --output_dir and start afresh (without it, a non-empty folder is "
        "refused unless the run resumes)",
    )
    flag(
        out,
        "--preemption_signals",
        resume=FREE,
        nargs="+",
        default=list(DEFAULT_SIGNALS),
        help="signals that stop the run at the next optimizer step after a checkpoint (exit code 128 + signal); "
        "'none' to leave them to their default action",
    )
    flag(
        out,
        "--preemption_check_steps",
        resume=FREE,
        type=AT_LEAST_1,
        default=10,
        help="with several processes: agree on a received signal every N optimizer steps (a host-side all-reduce "
        "that costs about a millisecond on a busy host); one process checks at every step",
    )
    flag(out, "--eval_only", resume=FREE, action="store_true", help="evaluate --model_name_or_path and exit")
    flag(out, "--with_tracking", resume=FREE, action="store_true")
    flag(
        out,
        "--report_to",
        resume=FREE,
        default="tensorboard",
        help="accelerate tracker(s): tensorboard, wandb, all, ...",
    )
    flag(out, "--push_to_hub", resume=FREE, action="store_true")
    flag(out, "--hub_model_id", resume=FREE, default=None)
    flag(out, "--hub_token", resume=FREE, default=None)
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
        model_config(args.model_name_or_path, model_overrides(args), cache_dir=args.cache_dir)
    except (ValueError, OSError) as error:
        parser.error(str(error))
    return args


def flag(group, *names: str, resume: str, **kwargs) -> argparse.Action:
    """`group.add_argument(*names, **kwargs)`, with whether a resume may change the flag (FREE or EXACT)."""
    if resume not in (FREE, EXACT):
        raise ValueError(f"resume must be {FREE!r} or {EXACT!r}, got {resume!r} for {names}")
    action = group.add_argument(*names, **kwargs)
    action.free_on_resume = resume == FREE
    return action


def free_on_resume(parser: argparse.ArgumentParser) -> frozenset[str]:
    """The flags (their `dest`s) that a resume may change: those declared FREE."""
    return frozenset(action.dest for action in parser._actions if getattr(action, "free_on_resume", False))


def flag_defaults() -> dict:
    """{flag: its default}, for every flag."""
    return {action.dest: action.default for action in get_args_parser()._actions if action.dest != "help"}


def model_overrides(args: argparse.Namespace) -> dict:
    """The SwinTinyConfig fields the flags set (those given)."""
    overrides = {f.name: getattr(args, f.name) for f in MODEL_FIELDS if getattr(args, f.name) is not None}
    if len(overrides.get("window_size", ())) == 1:  # one value: every stage, as an int in the config
        overrides["window_size"] = overrides["window_size"][0]
    return overrides


def resolve_flags(args: argparse.Namespace, num_processes: int, device_type: str) -> argparse.Namespace:
    """The flags with what depends on the processes worked out: the peak learning rate for the global batch, the
    global batch, the data-loader workers (SettingsError where --min_learning_rate is above that rate). A new
    namespace (the parsed one stays as given); args.json, the trackers and the model card record these values."""
    global_batch = args.per_device_train_batch_size * num_processes * args.gradient_accumulation_steps
    learning_rate, how = resolve_learning_rate(
        args.learning_rate, args.lr_base, args.lr_base_size, args.lr_base_scale, args.min_learning_rate, global_batch
    )
    workers = args.dataloader_num_workers
    if workers is None:
        workers = default_num_workers(device_type, num_processes)
    logger.info(
        "global batch %d (%d per device x %d processes x %d accumulation steps): peak learning rate %.4g (%s)",
        global_batch,
        args.per_device_train_batch_size,
        num_processes,
        args.gradient_accumulation_steps,
        learning_rate,
        how,
    )
    resolved = {"learning_rate": learning_rate, "global_batch_size": global_batch, "dataloader_num_workers": workers}
    return argparse.Namespace(**{**vars(args), **resolved})
