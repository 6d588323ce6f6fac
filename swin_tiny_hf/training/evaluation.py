"""Evaluation: validation loss, top-1 and top-5 over every process, each sample counted once."""

from __future__ import annotations

from collections.abc import Callable

import evaluate
import torch
import torch.nn.functional as F
from accelerate import Accelerator

from swin_tiny_hf.training import top_k_accuracy


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
            logits = model(pixel_values=batch["pixel_values"]).logits  # (B, num_labels)
        losses = F.cross_entropy(logits.float(), batch["labels"], reduction="none")  # (B,)
        top_k = logits.topk(k, dim=-1).indices  # (B, k)
        top_k, labels, losses = accelerator.gather_for_metrics((top_k, batch["labels"], losses))
        total_loss += losses.cpu().double().sum().item()  # exact whatever the batches and processes group together
        total += labels.numel()
        if metric is not None:
            metric.add_batch(predictions=top_k.tolist(), references=labels.tolist())
    results = {"val_loss": total_loss / max(total, 1), "eval_samples": total}
    if metric is not None:
        scores = metric.compute(top_k=(1, k))
        results.update(val_top1=scores["top1_accuracy"], val_top5=scores[f"top{k}_accuracy"])
    return results


def results_summary(results: dict, **extra) -> dict:
    """evaluate_model's figures under the names of all_results.json and the model card."""
    return {
        "eval_accuracy": results["val_top1"],
        "eval_top5_accuracy": results["val_top5"],
        "eval_loss": results["val_loss"],
        "eval_samples": results["eval_samples"],
        **extra,
    }
