"""Train SwinTinyForImageClassification with the Tiny ImageNet reference recipe, on accelerate.

    accelerate launch train.py --output_dir outputs/tiny-imagenet          # GPUs: fp16 by default
    python train.py --dataset_name digits --output_dir outputs/digits      # offline, CPU, minutes

This script is the run's orchestration: the phases in order and how each way of stopping ends the process. Each
concept is a module of `swin_tiny_hf/training/` (its index: that package's docstring): the flags (`flags.py`), the
accelerator and precision, the output folder, the data and loaders, the starting model, the optimizer and
schedule, resume, the loop, evaluation, and the saved artifacts.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import math
import time
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from swin_tiny_hf.cpu_memory import keep_freed_memory
from swin_tiny_hf.training.accelerator import build_accelerator
from swin_tiny_hf.training.artifacts import CardFacts, push_to_hub, save_model_folder, write_final_outputs
from swin_tiny_hf.training.checkpointing import (
    CheckpointWriteError,
    NonFiniteWeightsError,
    OutputWriteError,
    check_finite_weights,
    describe_write_error,
    ensure_free_space,
    folder_bytes,
    raise_on_every_process,
    resolve_checkpoint,
    write_atomically,
    write_json_output,
)
from swin_tiny_hf.training.data import BadImageError
from swin_tiny_hf.training.data_checks import record_bad_images
from swin_tiny_hf.training.evaluation import EvaluationInterrupted, evaluate_model, load_metric, results_summary
from swin_tiny_hf.training.flags import flag_defaults, get_args_parser, model_overrides, parse_args, resolve_flags
from swin_tiny_hf.training.loaders import (
    DataError,
    DataSettings,
    LoaderSettings,
    build_eval_dataloader,
    build_training_data,
    load_data,
)
from swin_tiny_hf.training.loop import Checkpointer, LoopSettings, TrainingLoop, run_epochs
from swin_tiny_hf.training.next_steps import data_flags, next_steps
from swin_tiny_hf.training.nonfinite_guard import NonFiniteGuard, NonFiniteLossError
from swin_tiny_hf.training.optimization import (
    OptimizerSettings,
    Schedule,
    SettingsError,
    build_optimizer_and_scheduler,
    long_warmup_warning,
)
from swin_tiny_hf.training.output_folder import OutputFolderError, claim_output_folder, release_output_folder
from swin_tiny_hf.training.preemption import Preempted, PreemptionHandler, stop_data_workers
from swin_tiny_hf.training.resume import ResumeRefused, initial_state
from swin_tiny_hf.training.run_state import RunState
from swin_tiny_hf.training.starting_model import StartingModelError, build_model, load_image_processor

logger = logging.getLogger("train")

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
    """Parse, set up, run; a stopping error or a preemption signal ends the process with its exit code (1, or
    128 + the signal) after its message, a parse error with 2. Returns all_results (empty on other processes)."""
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    accelerator = build_accelerator(
        args.mixed_precision,
        args.gradient_accumulation_steps,
        args.fp16_init_scale,
        project_dir=args.output_dir,
        log_with=args.report_to if args.with_tracking else None,
        torch_compile=args.torch_compile,
    )
    set_seed(args.seed)
    try:
        args = resolve_flags(args, accelerator.num_processes, accelerator.device.type)
    except SettingsError as error:  # a rule between flags that needs the process count (the scaled learning rate)
        get_args_parser().error(str(error))
    if accelerator.device.type == "cpu":
        keep_freed_memory()  # the step's large temporaries reuse freed memory, without page faults (cpu_memory.py)
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
        end(accelerator, args.output_dir)
        raise SystemExit(stop.exit_code) from None
    except STOPPING_ERRORS as error:
        logger.error("%s", stopping_message(error, args.skip_bad_images))
        end(accelerator, args.output_dir)
        raise SystemExit(1) from None
    except OSError as error:  # a full disk met by a writer the run does not guard itself (a tracker's event file)
        if error.errno != errno.ENOSPC:
            raise
        where = repr(error.filename) if error.filename else f"a file of the run in {args.output_dir!r}"
        logger.error("could not write %s: %s", where, describe_write_error(error, args.output_dir))
        with contextlib.suppress(OSError):  # a tracker's writer raises the same error again as it closes
            end(accelerator, args.output_dir)
        raise SystemExit(1) from None
    finally:  # no worker outlives the run, whatever ended it (an error's traceback can hold their loader)
        stop_data_workers()
        if accelerator.is_main_process:  # and no error leaves the folder locked for the rest of this process
            release_output_folder(args.output_dir)


def stopping_message(error: Exception, skip_bad_images: bool) -> str:
    """The error's own message (a data-loader worker's error arrives wrapped in its traceback: its last line),
    with, for an image that failed in training, how to go on."""
    message = str(error).strip()
    if message.startswith("Caught ") and "Original Traceback" in message:
        message = message.splitlines()[-1].split(": ", 1)[-1]
    if isinstance(error, BadImageError) and not skip_bad_images:
        message += (
            ". To leave bad training images out and go on from the last checkpoint: the same command with "
            "--skip_bad_images --resume_from_checkpoint latest"
        )
    return message


def run(args: argparse.Namespace, accelerator: Accelerator, preemption: PreemptionHandler) -> dict:
    """Everything after setup: the output folder, data, model, and evaluation only or the training run.
    `preemption` (installed) is restored here before the end; main restores it on the other ways out."""
    output_dir = Path(args.output_dir)
    inputs = {f"--{flag}": getattr(args, flag) for flag in ("model_name_or_path", "dataset_name", "train_dir")}
    inputs["--validation_dir"] = args.validation_dir
    removed = claim_output_folder(
        accelerator,
        output_dir,
        resuming=bool(args.resume_from_checkpoint),
        overwrite=args.overwrite_output_dir,
        inputs=inputs,
        can_resume=not args.eval_only,
    )
    if removed:
        logger.info("--overwrite_output_dir: deleted %s from %s", ", ".join(removed), output_dir)
    dataset, bad_images = load_data(DataSettings.from_args(args), accelerator)
    label_names = dataset["train"].features["label"].names
    model = build_model(
        args.model_name_or_path,
        model_overrides(args),
        label_names,
        ignore_mismatched_sizes=args.ignore_mismatched_sizes,
        attn_implementation=args.attn_implementation,
        cache_dir=args.cache_dir,
    )
    image_processor = load_image_processor(args.model_name_or_path, model.config.image_size, args.cache_dir)
    metric = load_metric(accelerator)
    if args.eval_only:
        return run_evaluation(args, accelerator, preemption, model, image_processor, dataset, bad_images, metric)
    return run_training(args, accelerator, preemption, model, image_processor, dataset, bad_images, metric)


def run_evaluation(args, accelerator, preemption, model, image_processor, dataset, bad_images, metric) -> dict:
    """--eval_only: the validation figures of --model_name_or_path into all_results.json. A preemption signal
    stops it without writing (there is nothing to resume)."""
    eval_dataloader = build_eval_dataloader(LoaderSettings.from_args(args), dataset, image_processor)
    model, eval_dataloader = accelerator.prepare(model, eval_dataloader)
    num_labels = len(dataset["train"].features["label"].names)
    start = time.perf_counter()
    try:
        results = evaluate_model(model, eval_dataloader, accelerator, metric, num_labels, preemption.stop_requested)
        # with several processes the check runs every --preemption_check_steps batches: a last, agreed one
        signal_received = preemption.agreed_signal()
    except EvaluationInterrupted as interrupted:
        signal_received = interrupted.signal
    preemption.restore()
    if signal_received:
        raise Preempted(signal_received.name, signal_received.value, None)
    all_results, write_failure = {}, None
    if accelerator.is_main_process:
        all_results = results_summary(results, eval_seconds=time.perf_counter() - start, bad_images=bad_images)
        try:
            write_json_output(Path(args.output_dir) / "all_results.json", all_results, "the results")
        except OutputWriteError as error:
            write_failure = error
        logger.info("evaluation: %s", all_results)
    raise_on_every_process(accelerator, write_failure)
    end(accelerator, args.output_dir)
    return all_results


def run_training(args, accelerator, preemption, model, image_processor, dataset, bad_images, metric) -> dict:
    """The training run: loaders, schedule, optimizer, the starting state (fresh or resumed), the epochs, the
    final model and its outputs."""
    output_dir = Path(args.output_dir)
    recorded_args = {  # args.json: what a resume compares (resume.changed_settings)
        **vars(args),
        "hub_token": None,
        "mixed_precision_resolved": accelerator.mixed_precision,
        "num_processes": accelerator.num_processes,
        "model_config": model.config.to_diff_dict(),
    }
    data = build_training_data(
        LoaderSettings.from_args(args), dataset, model.config.image_size, image_processor, args.num_train_epochs
    )
    # Data loaders first: their per-process length sets the schedule.
    data.train_dataloader, data.eval_dataloader = accelerator.prepare(data.train_dataloader, data.eval_dataloader)
    steps_per_epoch = max(math.ceil(len(data.train_dataloader) / args.gradient_accumulation_steps), 1)
    schedule = Schedule(steps_per_epoch, args.max_train_steps or args.num_train_epochs * steps_per_epoch)
    data.collator.num_epochs = schedule.num_epochs  # --mix_off_last_epochs counts back from the run's real end
    optimizer_settings = OptimizerSettings(
        args.learning_rate,
        args.min_learning_rate,
        args.warmup_epochs,
        args.warmup_start_factor,
        args.weight_decay,
        (args.adam_beta1, args.adam_beta2),
    )
    optimizer, scheduler = build_optimizer_and_scheduler(model, optimizer_settings, schedule)
    if (warning := long_warmup_warning(optimizer_settings, schedule)) and accelerator.is_main_process:
        logger.warning("%s", warning)  # once, not once per process
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    # the checkpoint is resolved once: "latest" means the same folder for the state and the free-space check
    try:
        checkpoint = (
            resolve_checkpoint(args.resume_from_checkpoint, output_dir) if args.resume_from_checkpoint else None
        )
    except ValueError as error:  # no checkpoint there, or not a complete one
        raise ResumeRefused(str(error)) from None
    state = initial_state(
        accelerator,
        checkpoint,
        recorded_args,
        args.resume_with_changes,
        optimizer,
        scheduler,
        optimizer_settings,
        len(data.train_dataloader),
    )
    if checkpoint is not None and state.completed_steps >= schedule.max_train_steps:
        logger.warning(
            "%s is at step %d (%d training samples), the run's end (%d optimizer steps of %d samples): nothing is "
            "left to train, the run only evaluates.%s",
            checkpoint,
            state.completed_steps,
            state.samples_seen,
            schedule.max_train_steps,
            args.global_batch_size,
            " --max_train_steps counts optimizer steps at this run's global batch: raise it to train on."
            if args.max_train_steps
            else "",
        )
    # bad images dropped at start (--skip_bad_images): found again on every resume, listed once
    state.bad_images = record_bad_images(state.bad_images, bad_images)
    state.dropped_at_start = {
        name: sum(1 for entry in bad_images if entry["dropped_from"] == name) for name in ("train", "validation")
    }
    if state.resume_changes:  # recorded in args.json and the model card
        recorded_args["resumed_with_changes"] = state.resume_changes
    if args.checkpointing_steps is not None:
        # weights, two AdamW moments and the rest: about 3x the weights (317 MB for the 64 px model)
        needed = folder_bytes(checkpoint) if checkpoint else 3 * sum(p.numel() * 4 for p in model.parameters())
        ensure_free_space(output_dir, needed, "a checkpoint")
    if args.with_tracking:
        tracked = {k: v for k, v in recorded_args.items() if isinstance(v, (int, float, str, bool))}
        accelerator.init_trackers("swin_tiny_hf", config=tracked)
    logger.info(
        "%d training / %d validation images, %d classes; %d epochs of %d optimizer steps; %d processes, %s",
        len(dataset["train"]),
        len(dataset["validation"]),
        data.num_labels,
        schedule.num_epochs,
        schedule.steps_per_epoch,
        accelerator.num_processes,
        accelerator.mixed_precision,
    )

    unwrapped = accelerator.unwrap_model(model)
    card = CardFacts.from_args(args, state.resume_changes)

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
            lambda folder: save_model_folder(unwrapped, image_processor, folder, card, best_results, history, best),
            "the best model",
        )

    loop = TrainingLoop(
        model,
        optimizer,
        scheduler,
        accelerator,
        LoopSettings.from_args(args),
        Checkpointer(accelerator, model, output_dir, recorded_args, args.checkpoints_total_limit),
        NonFiniteGuard(args.max_nonfinite_steps, accelerator.device, state.nonfinite_run, args.output_dir),
        tqdm(
            range(schedule.max_train_steps),
            disable=not accelerator.is_local_main_process,
            initial=state.completed_steps,
        ),
        preemption,
    )
    train_start = time.perf_counter()
    try:
        with logging_redirect_tqdm():  # log lines above the progress bar, not on its line
            results = run_epochs(loop, data, schedule, state, metric, save_best, output_dir)
    finally:  # from here on a signal has its default effect (the final model is written atomically)
        preemption.restore()
    if preemption.received is not None:  # after the last step's check: the training is complete
        logger.warning("%s received after the last training step: writing the final model", preemption.received.name)
    accelerator.wait_for_everyone()
    check_finite_weights(unwrapped, f"the final model in {output_dir}", output_dir)
    all_results, write_failure = {}, None
    if accelerator.is_main_process:
        try:
            seconds = time.perf_counter() - train_start
            all_results = finish(args, unwrapped, image_processor, card, state, results, seconds, accelerator)
        except OutputWriteError as error:
            write_failure = error
    raise_on_every_process(accelerator, write_failure)
    end(accelerator, args.output_dir)
    return all_results


def finish(args, model, image_processor, card: CardFacts, state: RunState, results: dict, seconds: float, accelerator):
    """Main process: the final outputs, what to do next (evaluating with the run's data and precision), and the
    push of best/ to the Hub."""
    output_dir = Path(args.output_dir)
    all_results = write_final_outputs(model, image_processor, output_dir, card, state, results, seconds)
    logger.info("done: %s", json.dumps(all_results))
    evaluation_flags = [*data_flags(vars(args), flag_defaults()), "--mixed_precision", accelerator.mixed_precision]
    logger.info("%s", next_steps(output_dir, evaluation_flags, (output_dir / "best").is_dir()))
    if args.push_to_hub:
        message = f"best model: top-1 {state.best_top1:.4f}"
        repo_id = push_to_hub(output_dir / "best", args.hub_model_id or output_dir.name, args.hub_token, message)
        logger.info("pushed %s to %s", output_dir / "best", repo_id)
    return all_results


def end(accelerator: Accelerator, output_dir: str) -> None:
    """Every process waits for the main one to finish writing, then trackers close and the process group is
    destroyed: a process that exits with its group alive can abort in gloo's or NCCL's threads (SIGABRT)."""
    accelerator.wait_for_everyone()
    try:
        accelerator.end_training()
    finally:  # the folder is free again even when a tracker fails to close (a full disk)
        if accelerator.is_main_process:
            release_output_folder(output_dir)


if __name__ == "__main__":
    main()
