"""The lazy `datasets` transforms of the two splits: training augmentation and evaluation preprocessing.

Both run through `Dataset.with_transform` inside the data-loader workers on a whole batch at once
(datasets implements `__getitems__`), decode the raw bytes there, and return
{"pixel_values": [(3, H, W) float tensors], "labels": [int], "row": [int]}.

Training randomness is seeded from (seed, epoch, rows of the batch), not from the process's global
RNG: the same batch gets the same augmentation whatever the number of workers, and a resumed run
replays exactly what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import torch
from transformers import BaseImageProcessor

from .batch_augmentation import ReferenceTrainAugmentation
from .data import decode_rgb
from .seeding import batch_seed


class TrainTransform:
    """Decode, augment the batch with the reference recipe, seeded per batch. Call `set_epoch` before each epoch."""

    def __init__(self, augmentation: ReferenceTrainAugmentation, seed: int):
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        rows = batch["row"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_seed(self.seed, self.epoch, rows))
            images = [decode_rgb(image, "train", row) for image, row in zip(batch["image"], rows)]
            pixel_values = self.augmentation(images)  # (B, 3, S, S)
        return {"pixel_values": list(pixel_values), "labels": batch["label"], "row": rows}


class EvalTransform:
    """Decode to RGB and run the model's own image processor: evaluation sees exactly what inference sees."""

    def __init__(self, image_processor: BaseImageProcessor, split: str = "validation"):
        self.image_processor = image_processor
        self.split = split

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        images = [decode_rgb(image, self.split, row) for image, row in zip(batch["image"], batch["row"])]
        pixel_values = self.image_processor(images, return_tensors="pt")["pixel_values"]  # (B, 3, H, W)
        return {"pixel_values": list(pixel_values), "labels": batch["label"], "row": batch["row"]}
