"""Batch collation with Mixup/CutMix and label smoothing, producing soft targets (B, num_classes).

torchvision's v2 `MixUp` and `CutMix` do the mixing (lambda draws, boxes, label mixing); this module
adds what they do not: choosing between them per batch with given probabilities, folding label
smoothing in, switching mixing off for the first and last epochs, and per-batch seeding so that a
resumed run draws the same mixes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from .data import BadImageError
from .seeding import batch_seed


def smooth_one_hot(labels: torch.Tensor, num_classes: int, smoothing: float) -> torch.Tensor:
    """(B,) class ids -> (B, num_classes): 1 - smoothing + smoothing/K on the label, smoothing/K elsewhere."""
    return F.one_hot(labels, num_classes).float() * (1.0 - smoothing) + smoothing / num_classes


def mixing_enabled(epoch: int, num_epochs: int, off_first_epochs: int, off_last_epochs: int) -> bool:
    """Mixing is off in the first `off_first_epochs` epochs and the last `off_last_epochs` (0-based epoch)."""
    return off_first_epochs <= epoch < num_epochs - off_last_epochs


class MixupCutmixCollator:
    """Stack a batch and, with probability mixup_prob, Mixup it; with cutmix_prob, CutMix it; else leave it.

    Returns {"pixel_values": (B, 3, H, W), "labels": (B, num_classes) soft targets, "skipped_images":
    [(row, error)]}: examples whose image the training transform could not decode (--skip_bad_images) are left
    out of the batch and listed there, for the run to count and report.
    """

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.4,
        cutmix_alpha: float = 0.8,
        mixup_prob: float = 0.3,
        cutmix_prob: float = 0.3,
        label_smoothing: float = 0.05,
        seed: int = 0,
        num_epochs: int = 200,
        off_first_epochs: int = 1,
        off_last_epochs: int = 10,
    ):
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
        for name, value in (
            ("mixup_prob", mixup_prob),
            ("cutmix_prob", cutmix_prob),
            ("label_smoothing", label_smoothing),
        ):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}.")
        if mixup_prob + cutmix_prob > 1.0:
            raise ValueError(f"mixup_prob + cutmix_prob must be at most 1, got {mixup_prob} + {cutmix_prob}.")
        for name, value, prob in (
            ("mixup_alpha", mixup_alpha, mixup_prob),
            ("cutmix_alpha", cutmix_alpha, cutmix_prob),
        ):
            if prob > 0 and value <= 0:
                raise ValueError(f"{name} must be positive when its probability is > 0, got {value}.")
        self.num_classes = num_classes
        self.mixup_prob, self.cutmix_prob = mixup_prob, cutmix_prob
        self.label_smoothing = label_smoothing
        self.mixup = v2.MixUp(alpha=mixup_alpha, num_classes=num_classes) if mixup_prob > 0 else None
        self.cutmix = v2.CutMix(alpha=cutmix_alpha, num_classes=num_classes) if cutmix_prob > 0 else None
        self.seed = seed
        self.num_epochs, self.off_first_epochs, self.off_last_epochs = num_epochs, off_first_epochs, off_last_epochs
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def mixing(self) -> bool:
        return mixing_enabled(self.epoch, self.num_epochs, self.off_first_epochs, self.off_last_epochs)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        skipped = [(int(e["row"]), e["bad_image"]) for e in examples if e.get("bad_image")]
        if skipped:
            examples = [e for e in examples if not e.get("bad_image")]
            if not examples:
                # Decided: stop. A batch with no image cannot take part in the step every process makes together,
                # and training it as zeros would count samples that were never seen. A larger batch (or the rows
                # removed) goes on from the last checkpoint.
                raise BadImageError(
                    f"every image of a training batch of {len(skipped)} is bad, so --skip_bad_images has none left to "
                    f"train on: {'; '.join(m for _, m in skipped)}. Remove those rows from the dataset, or go on "
                    "from the last checkpoint with a larger batch: --resume_from_checkpoint latest "
                    "--resume_with_changes --per_device_train_batch_size N"
                )
        pixel_values = torch.stack([e["pixel_values"] for e in examples])  # (B, 3, H, W)
        labels = torch.tensor([e["labels"] for e in examples], dtype=torch.long)  # (B,)
        targets = smooth_one_hot(labels, self.num_classes, self.label_smoothing)  # (B, K)
        if self.mixing:
            rows = [int(e["row"]) for e in examples]
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(batch_seed(self.seed, self.epoch, rows, stream=1))
                draw = torch.rand(()).item()
                if draw < self.mixup_prob:
                    pixel_values, targets = self.mixup(pixel_values, targets)
                elif draw < self.mixup_prob + self.cutmix_prob:
                    pixel_values, targets = self.cutmix(pixel_values, targets)
        return {"pixel_values": pixel_values, "labels": targets, "skipped_images": skipped}


def eval_collate(examples: list[dict]) -> dict[str, torch.Tensor]:
    """Stack a batch with hard labels: {"pixel_values": (B, 3, H, W), "labels": (B,)}."""
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]),
        "labels": torch.tensor([e["labels"] for e in examples], dtype=torch.long),
    }
