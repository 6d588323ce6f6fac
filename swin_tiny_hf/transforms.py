"""Per-example image transforms: the reference training augmentation, and evaluation via the image processor.

Both are `datasets` lazy transforms (`Dataset.with_transform`): they run inside the data-loader
workers on a whole batch at once (datasets implements `__getitems__`), decode the raw bytes there,
and return {"pixel_values": [(3, H, W) float tensors], "labels": [int], "row": [int]}.

Training randomness is seeded from (seed, epoch, rows of the batch), not from the process's global
RNG: the same batch gets the same augmentation whatever the number of workers, and a resumed run
replays exactly what the uninterrupted run would have drawn.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2
from transformers import BaseImageProcessor

from .data import decode_pil, image_bytes


def batch_seed(seed: int, epoch: int, rows: list[int], stream: int = 0) -> int:
    """A 63-bit seed that depends on the run's seed, the epoch, the batch's rows and a stream id."""
    return int(np.random.SeedSequence([seed, epoch, stream, *rows]).generate_state(2, np.uint64)[0] >> 1)


def decode_rgb_tensor(image: dict, split: str, row: int) -> torch.Tensor:
    """Raw image bytes -> (3, H, W) uint8 RGB (grayscale, palette and alpha images included)."""
    try:
        data = torch.frombuffer(bytearray(image_bytes(image)), dtype=torch.uint8)
        return decode_image(data, mode=ImageReadMode.RGB)
    except Exception as error:  # torchvision raises RuntimeError for corrupt data; be explicit about where
        raise ValueError(f"could not decode the image of split {split!r} row {row}: {error}") from error


def reference_train_augmentation(
    image_size: int, mean: list[float], std: list[float], randaugment_magnitude: int = 5, hflip_prob: float = 0.5
) -> v2.Compose:
    """The reference recipe, on uint8 tensors until the last steps (cheaper than PIL or float)."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(image_size, scale=(0.9, 1.0), antialias=True),
            v2.RandomHorizontalFlip(p=hflip_prob),
            v2.RandAugment(num_ops=2, magnitude=randaugment_magnitude),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=mean, std=std),
            v2.RandomErasing(p=0.1, scale=(0.02, 0.2), value="random"),
        ]
    )


class TrainTransform:
    """Decode, augment with the reference recipe, seeded per batch. Call `set_epoch` before each epoch."""

    def __init__(self, augmentation: v2.Transform, seed: int):
        self.augmentation = augmentation
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        rows = batch["row"]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(batch_seed(self.seed, self.epoch, rows))
            pixel_values = [
                self.augmentation(decode_rgb_tensor(image, "train", row)) for image, row in zip(batch["image"], rows)
            ]
        return {"pixel_values": pixel_values, "labels": batch["label"], "row": rows}


class EvalTransform:
    """Decode to RGB and run the model's own image processor: evaluation sees exactly what inference sees."""

    def __init__(self, image_processor: BaseImageProcessor, split: str = "validation"):
        self.image_processor = image_processor
        self.split = split

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        images = []
        for image, row in zip(batch["image"], batch["row"]):
            try:
                images.append(decode_pil(image))
            except Exception as error:
                raise ValueError(f"could not decode the image of split {self.split!r} row {row}: {error}") from error
        pixel_values = self.image_processor(images, return_tensors="pt")["pixel_values"]  # (B, 3, H, W)
        return {"pixel_values": list(pixel_values), "labels": batch["label"], "row": batch["row"]}
