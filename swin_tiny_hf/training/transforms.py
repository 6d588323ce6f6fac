"""The lazy `datasets` transforms of the two splits: training augmentation and evaluation preprocessing.

Both run through `Dataset.with_transform` inside the data-loader workers on a whole batch at once
(datasets implements `__getitems__`), decode the raw bytes there, and return
{"pixel_values": [(3, H, W) float tensors], "labels": [int], "row": [int]}; the training transform adds
"bad_image": [None, or the error of an image it could not decode and skips (--skip_bad_images)], whose
rows the collator leaves out and reports.

Training randomness is seeded from (seed, epoch, rows of the batch), not from the process's global
RNG: the same batch gets the same augmentation whatever the number of workers, and a resumed run
replays exactly what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import torch
from transformers import BaseImageProcessor

from .batch_augmentation import ReferenceTrainAugmentation
from .data import BadImageError, SplitSource, decode_rgb
from .seeding import batch_seed


class TrainTransform:
    """Decode, augment the batch with the reference recipe, seeded per batch. Call `set_epoch` before each epoch.

    An image that cannot be decoded raises BadImageError, or with `skip_bad_images` is left out of the batch
    (its pixel_values None, its error in "bad_image"): the same rows are skipped on every run and resume."""

    def __init__(
        self,
        augmentation: ReferenceTrainAugmentation,
        seed: int,
        source: SplitSource | None = None,
        skip_bad_images: bool = False,
    ):
        self.augmentation = augmentation
        self.seed = seed
        self.source = source
        self.skip_bad_images = skip_bad_images
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        rows = batch["row"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_seed(self.seed, self.epoch, rows))
            images, errors = [], []
            for image, row in zip(batch["image"], rows):
                try:
                    images.append(decode_rgb(image, "train", row, self.source))
                    errors.append(None)
                except BadImageError as error:
                    if not self.skip_bad_images:
                        raise
                    errors.append(str(error))
            augmented = iter(self.augmentation(images) if images else ())  # (B - bad, 3, S, S)
        pixel_values = [None if error else next(augmented) for error in errors]
        return {"pixel_values": pixel_values, "labels": batch["label"], "row": rows, "bad_image": errors}


class EvalTransform:
    """Decode to RGB and run the model's own image processor: evaluation sees exactly what inference sees."""

    def __init__(
        self, image_processor: BaseImageProcessor, split: str = "validation", source: SplitSource | None = None
    ):
        self.image_processor = image_processor
        self.split = split
        self.source = source

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        images = [decode_rgb(image, self.split, row, self.source) for image, row in zip(batch["image"], batch["row"])]
        pixel_values = self.image_processor(images, return_tensors="pt")["pixel_values"]  # (B, 3, H, W)
        return {"pixel_values": list(pixel_values), "labels": batch["label"], "row": batch["row"]}
