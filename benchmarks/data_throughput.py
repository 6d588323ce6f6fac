"""Data-pipeline throughput per data-loader worker (one core): ours against plain torchvision v1 on PIL.

    python benchmarks/data_throughput.py [--images 1024] [--batch_size 64]

Both pipelines do the full per-batch work of a worker for the reference recipe: decode a 64x64 JPEG,
RandomResizedCrop(64, (0.9, 1)), flip, RandAugment(2, 5), ColorJitter(0.2, 0.2, 0.2, 0.05),
to float + normalise, RandomErasing(0.1), then collate with Mixup/CutMix and label smoothing.
- ours: `TrainTransform` (TorchCodec decoding, the batched recipe of `batch_augmentation.py` on uint8
  tensors, per-image parameters) + `MixupCutmixCollator`;
- baseline: PIL decoding, torchvision.transforms (v1) on PIL images, ToTensor, and the same collator.
Also prints how many such workers one training process needs to feed a given GPU rate.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as v1

from swin_tiny_hf.image_processing_swin_tiny import TINY_IMAGENET_MEAN as MEAN
from swin_tiny_hf.image_processing_swin_tiny import TINY_IMAGENET_STD as STD
from swin_tiny_hf.training.batch_augmentation import ReferenceTrainAugmentation
from swin_tiny_hf.training.collate import MixupCutmixCollator
from swin_tiny_hf.training.transforms import TrainTransform

OURS = "ours (batched, uint8 tensors, TorchCodec)"


def jpeg_batch(count: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    images = []
    for i in range(count):
        array = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        array = (array // 4 + np.linspace(0, 180, 64, dtype=np.uint8)[None, :, None]).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(array).convert("L" if i % 10 == 0 else "RGB").save(buffer, format="JPEG", quality=90)
        images.append({"bytes": buffer.getvalue(), "path": None})
    return images


def baseline_pipeline():
    return v1.Compose(
        [
            v1.RandomResizedCrop(64, scale=(0.9, 1.0)),
            v1.RandomHorizontalFlip(),
            v1.RandAugment(num_ops=2, magnitude=5),
            v1.ColorJitter(0.2, 0.2, 0.2, 0.05),
            v1.ToTensor(),
            v1.Normalize(MEAN, STD),
            v1.RandomErasing(p=0.1, scale=(0.02, 0.2), value="random"),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--gpu_images_per_second",
        type=float,
        default=None,
        help="training rate of one GPU process, to size the worker count",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # one data-loader worker = one core
    images = jpeg_batch(args.images)
    labels = [i % 200 for i in range(args.images)]
    collator = MixupCutmixCollator(200, off_first_epochs=0, mixup_prob=0.3, cutmix_prob=0.3)
    ours = TrainTransform(ReferenceTrainAugmentation(64, list(MEAN), list(STD)), seed=0)
    baseline = baseline_pipeline()

    def run_ours():
        for start in range(0, args.images, args.batch_size):
            rows = list(range(start, min(start + args.batch_size, args.images)))
            out = ours({"image": [images[r] for r in rows], "label": [labels[r] for r in rows], "row": rows})
            collator(
                [
                    {"pixel_values": p, "labels": l, "row": r}
                    for p, l, r in zip(out["pixel_values"], out["labels"], out["row"])
                ]
            )

    def run_baseline():
        for start in range(0, args.images, args.batch_size):
            rows = range(start, min(start + args.batch_size, args.images))
            examples = []
            for r in rows:
                with Image.open(io.BytesIO(images[r]["bytes"])) as image:
                    pixels = baseline(image.convert("RGB"))
                examples.append({"pixel_values": pixels, "labels": labels[r], "row": r})
            collator(examples)

    best = {OURS: float("inf"), "baseline (v1, PIL)": float("inf")}
    functions = dict(zip(best, (run_ours, run_baseline)))
    for function in functions.values():
        function()
    for _ in range(args.repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    ours_rate = args.images / best[OURS]
    print(f"## Data pipeline, one core (torch threads 1), {args.images} JPEG 64x64 images, batch {args.batch_size}")
    print("| pipeline | images/s per worker | ratio |")
    print("| --- | --- | --- |")
    for name, seconds in best.items():
        rate = args.images / seconds
        print(
            f"| {name} | {rate:.0f} | {ours_rate / rate:.2f}x |"
            if "baseline" in name
            else f"| {name} | {rate:.0f} | 1.00x |"
        )
    if args.gpu_images_per_second:
        workers = np.ceil(args.gpu_images_per_second / ours_rate)
        print(f"workers to feed {args.gpu_images_per_second:.0f} img/s: {workers:.0f}")


if __name__ == "__main__":
    main()
