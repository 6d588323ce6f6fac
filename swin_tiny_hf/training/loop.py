"""The training loop: one epoch of optimizer steps (`TrainingLoop.train_one_epoch`), and the epochs of a run,
each trained, evaluated, recorded and checkpointed (`run_epochs`).

A step reads nothing from the device on the host: the non-finite-loss guard and the running sums stay on the
device and are read every --logging_steps steps, before a checkpoint and at the end of the epoch. At every
optimizer-step boundary the preemption handler is asked whether a signal came (a host-side flag); if so, the
step's checkpoint is written and Preempted raised.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil  # an accelerate dependency
import torch
from accelerate import Accelerator

from swin_tiny_hf.training.checkpointing import (
    OutputWriteError,
    raise_on_every_process,
    save_checkpoint,
    write_json_output,
)
from swin_tiny_hf.training.data_checks import SkippedImages, record_bad_images
from swin_tiny_hf.training.evaluation import EvaluationInterrupted, evaluate_model, results_summary
from swin_tiny_hf.training.flag_types import FromFlags
from swin_tiny_hf.training.loaders import TrainingData
from swin_tiny_hf.training.nonfinite_guard import NonFiniteGuard
from swin_tiny_hf.training.optimization import Schedule, learning_rate_used, rescale_partial_step
from swin_tiny_hf.training.preemption import Preempted, PreemptionHandler
from swin_tiny_hf.training.run_state import RunState
from swin_tiny_hf.training.seeding import batch_seed

logger = logging.getLogger("train")


@dataclass(frozen=True)
class LoopSettings(FromFlags):
    seed: int  # with the step, micro-batch and process: the model's randomness (drop path)
    per_device_train_batch_size: int
    max_grad_norm: float  # 0: no clipping
    logging_steps: int
    checkpointing_steps: int | str | None  # N optimizer steps, "epoch" or None
    with_tracking: bool


@dataclass
class Checkpointer:
    """Writes the run's checkpoints (`checkpointing.save_checkpoint`): with the retention limit, the recorded
    settings (args.json), and from finite weights only. Call on every process."""

    accelerator: Accelerator
    model: torch.nn.Module  # as prepared: unwrapped for the finite-weights check
    output_dir: Path
    recorded_args: dict
    total_limit: int | None

    def save(self, name: str, state: RunState) -> Path:
        """`name` is step_N or epoch_N; the folder returned is step_N-2 (-3, ...) where an earlier run's
        checkpoint holds that name."""
        unwrapped = self.accelerator.unwrap_model(self.model)
        return save_checkpoint(
            self.accelerator,
            self.output_dir,
            name,
            state.to_json(),
            self.recorded_args,
            self.total_limit,
            model=unwrapped,
        )


def format_row(row: dict) -> str:
    """A history row for the log: the learning rate in scientific notation (2.500e-06, where rounding to 4
    decimals printed 0.0), other floats to 4 decimals, integers as they are."""
    parts = []
    for key, value in row.items():
        if isinstance(value, float):
            value = f"{value:.3e}" if key == "lr" else f"{round(value, 4)}"
        parts.append(f"{key} {value}")
    return ", ".join(parts)


def sums_dtype(device: torch.device) -> torch.dtype:
    """The dtype of the epoch's running sums: float64, except on Apple's MPS, which has none (float32 there)."""
    return torch.float32 if device.type == "mps" else torch.float64


@dataclass
class TrainingLoop:
    """What every step uses: the prepared model, optimizer and scheduler, the accelerator, the loop's flags, the
    checkpoint writer, the non-finite-loss guard, the progress bar and the preemption handler."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object  # accelerate's AcceleratedScheduler
    accelerator: Accelerator
    settings: LoopSettings
    checkpointer: Checkpointer
    guard: NonFiniteGuard
    progress: object  # tqdm
    preemption: PreemptionHandler | None = None

    def train_one_epoch(self, dataloader, state: RunState, max_train_steps: int) -> dict:
        """One pass over `dataloader`; advances `state` (its steps, batches, samples, nonfinite_run, epoch_sums).
        Returns the epoch's training figures."""
        accelerator, settings, guard = self.accelerator, self.settings, self.guard
        self.model.train()
        # Running sums of (loss * samples, correct, samples). A checkpoint stores them reduced over processes;
        # after a resume the main process starts from them, the others from zero, so the epoch-end reduction
        # gives the uninterrupted run's numbers: the sums are float64, in which adding float32 terms is exact
        # whatever the grouping (float32 sums rounded differently when two processes' sums met mid-epoch, and
        # counted samples exactly only up to 2**24).
        start_sums = state.epoch_sums if accelerator.is_main_process else None
        device = accelerator.device
        sums = torch.tensor(start_sums or [0.0, 0.0, 0.0], dtype=sums_dtype(device), device=device)  # (3,)
        skipped = SkippedImages(state.epoch_skipped if accelerator.is_main_process else None)
        # every micro-batch is full (drop_last): its samples across processes, counted on the host (resume_position)
        samples_per_micro_batch = settings.per_device_train_batch_size * accelerator.num_processes
        data_seconds = 0.0
        micro_batches_in_step = 0
        start = waiting = time.perf_counter()
        for batch in dataloader:
            data_seconds += time.perf_counter() - waiting
            if batch.get("skipped_images"):  # --skip_bad_images: rows the transform could not decode
                skipped.add(batch["skipped_images"])
            if state.completed_steps >= max_train_steps:  # resumed from the run's last step: only evaluation is left
                break
            # The model's randomness (drop path, dropout) is a function of (seed, step, micro-batch, process):
            # creating a data-loader iterator draws from the global RNG, so on resume the saved RNG state alone
            # would shift every later draw.
            micro_batch = [state.batches_into_epoch, accelerator.process_index]
            torch.manual_seed(batch_seed(settings.seed, state.completed_steps, micro_batch, stream=2))
            with accelerator.accumulate(self.model):
                outputs = self.model(pixel_values=batch["pixel_values"], labels=batch["labels"])
                finite = guard.observe(outputs.loss)  # a device bool
                accelerator.backward(outputs.loss)
                micro_batches_in_step += 1
                if accelerator.sync_gradients:
                    rescale_partial_step(self.model, micro_batches_in_step, accelerator.gradient_accumulation_steps)
                    micro_batches_in_step = 0
                    if settings.max_grad_norm > 0:
                        accelerator.clip_grad_norm_(self.model.parameters(), settings.max_grad_norm)
                    guard.arm(self.optimizer, accelerator)  # a non-finite loss anywhere skips this step, on the device
                self.optimizer.step()
                if accelerator.sync_gradients:
                    guard.disarm()
                    self.scheduler.step()  # once per optimizer step: the schedule counts optimizer steps
                self.optimizer.zero_grad(set_to_none=True)
            labels = batch["labels"]  # (B, num_labels): soft targets
            batch_sums = torch.stack(
                [
                    outputs.loss.detach().float() * labels.shape[0],
                    (outputs.logits.argmax(-1) == labels.argmax(-1)).sum().float(),
                    torch.full((), float(labels.shape[0]), device=sums.device),  # a fill, not a host-to-device copy
                ]
            )  # (3,)
            sums += torch.where(finite, batch_sums, 0.0).to(sums.dtype)  # a skipped micro-batch counts nowhere
            state.batches_into_epoch += 1
            state.samples_into_epoch += samples_per_micro_batch
            state.samples_seen += samples_per_micro_batch
            if accelerator.sync_gradients:
                self._after_step(state, sums, skipped)
            waiting = time.perf_counter()
        state.nonfinite_run = guard.check(state.completed_steps)  # a sync: the queued GPU work is done
        seconds = time.perf_counter() - start
        state.epoch_sums = accelerator.reduce(sums, reduction="sum").tolist()  # kept until the epoch is evaluated
        state.epoch_skipped = skipped.merged()
        loss_sum, correct, seen = state.epoch_sums
        return {
            "skipped_images": len(state.epoch_skipped),
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": correct / max(seen, 1),
            "images_per_second": seen / max(seconds, 1e-9),
            "epoch_seconds": seconds,
            "data_seconds": data_seconds,
        }

    def _after_step(self, state: RunState, sums: torch.Tensor, skipped: SkippedImages) -> None:
        """An optimizer step is done: count it, log, checkpoint, and stop here if a preemption signal came."""
        state.completed_steps += 1
        self.progress.update(1)
        if state.completed_steps == 1 and state.time_to_first_step_seconds is None:
            if self.accelerator.device.type == "cuda":
                torch.cuda.synchronize()  # once per run: the first step really done
            # from the process's start: Python, imports, data loading, model building, the first step
            state.time_to_first_step_seconds = time.time() - psutil.Process().create_time()
            logger.info("first optimizer step done %.1f s after start", state.time_to_first_step_seconds)
        if state.completed_steps % self.settings.logging_steps == 0:
            self.log_progress(state, sums)
        name = f"step_{state.completed_steps}"
        every = self.settings.checkpointing_steps
        saved = isinstance(every, int) and state.completed_steps % every == 0
        if saved:
            written = self.save_in_epoch(name, state, sums, skipped)
        if self.preemption is not None and (signal_received := self.preemption.stop_requested()):
            if not saved:
                written = self.save_in_epoch(name, state, sums, skipped)
            raise Preempted(signal_received.name, signal_received.value, str(written))

    def save_in_epoch(self, name: str, state: RunState, sums: torch.Tensor, skipped: SkippedImages) -> Path:
        """A checkpoint inside an epoch: the guard checked first (a tripped guard stops before saving), the
        epoch's running sums reduced, and its skipped images gathered, over processes into the state."""
        state.nonfinite_run = self.guard.check(state.completed_steps)
        state.epoch_sums = self.accelerator.reduce(sums.clone(), reduction="sum").tolist()
        state.epoch_skipped = skipped.merged()
        return self.checkpointer.save(name, state)

    def log_progress(self, state: RunState, sums: torch.Tensor) -> None:
        """Every --logging_steps optimizer steps (a host-device sync): the guard's check, the running loss and
        accuracy."""
        state.nonfinite_run = self.guard.check(state.completed_steps)
        loss_sum, correct, seen = self.accelerator.reduce(sums.clone(), reduction="sum").tolist()
        running = {
            "train_loss_running": loss_sum / max(seen, 1),
            "train_acc_running": correct / max(seen, 1),
            "lr": learning_rate_used(self.scheduler, state.completed_steps),
        }
        self.progress.set_postfix(loss=f"{running['train_loss_running']:.4f}", lr=f"{running['lr']:.3g}")
        if self.settings.with_tracking:
            self.accelerator.log(running, step=state.completed_steps)


def run_epochs(
    loop: TrainingLoop,
    data: TrainingData,
    schedule: Schedule,
    state: RunState,
    metric,
    save_best: Callable[[dict, list[dict]], None],
    output_dir: Path,
) -> dict:
    """The epoch loop: train, evaluate, record the history, keep the best model, checkpoint.

    Returns the last evaluation (the one recorded in the last history row). Raises Preempted after writing a
    checkpoint when a preemption signal comes, in training or in evaluation."""
    accelerator, preemption = loop.accelerator, loop.preemption
    results = {}
    while state.epoch < schedule.num_epochs:
        epoch = state.epoch
        data.set_epoch(epoch)
        train_dataloader = data.train_dataloader
        if state.batches_into_epoch:
            train_dataloader = accelerator.skip_first_batches(train_dataloader, state.batches_into_epoch)
        train_metrics = loop.train_one_epoch(train_dataloader, state, schedule.max_train_steps)
        evaluation_start = time.perf_counter()
        stop_requested = preemption.stop_requested if preemption is not None else None
        try:
            results = evaluate_model(
                loop.model, data.eval_dataloader, accelerator, metric, data.num_labels, stop_requested
            )
        except EvaluationInterrupted as interrupted:
            # the epoch is trained, not evaluated: a checkpoint at its last step resumes into this evaluation
            written = loop.checkpointer.save(f"step_{state.completed_steps}", state)
            raise Preempted(interrupted.signal.name, interrupted.signal.value, str(written)) from None
        train_metrics["eval_seconds"] = time.perf_counter() - evaluation_start
        train_split = data.train_transform.source.split if data.train_transform.source else "train"
        trained_on = [{"split": train_split, **entry, "epoch": epoch + 1} for entry in state.epoch_skipped or []]
        state.bad_images = record_bad_images(state.bad_images, trained_on)
        state.epoch, state.batches_into_epoch, state.samples_into_epoch = epoch + 1, 0, 0
        state.epoch_sums = state.epoch_skipped = None
        write_failure = None
        if accelerator.is_main_process:
            row = {
                "epoch": epoch + 1,
                "step": state.completed_steps,
                **train_metrics,
                "val_loss": results["val_loss"],
                "val_top1": results["val_top1"],
                "val_top5": results["val_top5"],
                "lr": learning_rate_used(loop.scheduler, state.completed_steps),  # its last step's
            }
            state.history.append(row)
            try:
                write_json_output(output_dir / "history.json", state.history, "the history")
                logger.info("epoch %d: %s", epoch + 1, format_row(row))
                if results["val_top1"] > state.best_top1:
                    state.best_top1 = results["val_top1"]
                    save_best(results_summary(results, epoch=epoch + 1), state.history)
            except OutputWriteError as error:  # a full disk: raised below, on every process
                write_failure = error
            if loop.settings.with_tracking:
                accelerator.log(row, step=state.completed_steps)
        raise_on_every_process(accelerator, write_failure)  # a collective: no process waits for one that stopped
        # everyone needs the same history in the checkpoint: the main process's is the one written
        if loop.settings.checkpointing_steps == "epoch":
            loop.checkpointer.save(f"epoch_{epoch + 1}", state)
    if not results:  # resumed from a checkpoint taken after the last epoch: nothing was evaluated in this run
        results = evaluate_model(loop.model, data.eval_dataloader, accelerator, metric, data.num_labels)
    return results
